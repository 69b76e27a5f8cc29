package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Server-side key backup (the spec's "Server-side key backups"). The server
// stores only what clients encrypted to the backup's public key; it sees room
// and session IDs, never a session key.

// backupVersion is a stored backup version.
type backupVersion struct {
	version   int64
	algorithm string
	authData  string
	etag      int64
}

func notFoundVersion() *spec.Error { return spec.NotFound("unknown backup version") }

// parseVersion reads a version string; anything but a positive decimal names
// no backup.
func parseVersion(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || strconv.FormatInt(n, 10) != v {
		return 0, false
	}
	return n, true
}

// currentVersion returns the user's latest live backup version, or nil.
func currentVersion(q interface {
	QueryRow(string, ...any) *sql.Row
}, user spec.UserID) (*backupVersion, error) {
	var b backupVersion
	err := q.QueryRow(`SELECT version, algorithm, auth_data, etag FROM backup_versions
		WHERE user_id = $1 AND NOT deleted ORDER BY version DESC LIMIT 1`, string(user)).Scan(&b.version, &b.algorithm, &b.authData, &b.etag)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// readQuerier adapts the read pool to currentVersion.
type readQuerier struct {
	ctx context.Context
	s   *Service
}

func (r readQuerier) QueryRow(q string, args ...any) *sql.Row {
	return r.s.db.QueryRow(r.ctx, q, args...)
}

func (s *Service) liveVersion(ctx context.Context, user spec.UserID, version int64) (*backupVersion, error) {
	var b backupVersion
	err := s.db.QueryRow(ctx, `SELECT version, algorithm, auth_data, etag FROM backup_versions
		WHERE user_id = $1 AND version = $2 AND NOT deleted`, string(user), version).Scan(&b.version, &b.algorithm, &b.authData, &b.etag)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &b, nil
}

func countKeys(q interface {
	QueryRow(string, ...any) *sql.Row
}, user spec.UserID, version int64) (int64, error) {
	var n int64
	err := q.QueryRow(`SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2`, string(user), version).Scan(&n)
	return n, err
}

// parseBackupInfo validates a backup version body: a non-empty algorithm and
// an auth_data object.
func parseBackupInfo(body []byte) (algorithm string, authData json.RawMessage, m map[string]json.RawMessage, err error) {
	m, err = object(body, "the request body")
	if err != nil {
		return "", nil, nil, err
	}
	algorithm, err = requiredStr(m, "algorithm", "the request body")
	if err != nil {
		return "", nil, nil, err
	}
	if err := checkName("algorithm", algorithm); err != nil {
		return "", nil, nil, err
	}
	authData, ok := m["auth_data"]
	if !ok || isNull(authData) {
		return "", nil, nil, spec.MissingParam("auth_data is required")
	}
	if authData[0] != '{' {
		return "", nil, nil, spec.BadJSON("auth_data must be an object")
	}
	return algorithm, authData, m, nil
}

// POST /_matrix/client/v3/room_keys/version: create a backup version, which
// becomes the current one.
func (s *Service) handleCreateBackup(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	body, err := api.ReadCanonical(c, s.cfg.MaxKeyUploadBytes)
	if err != nil {
		return err
	}
	alg, authData, _, err := parseBackupInfo(body)
	if err != nil {
		return err
	}
	var version int64
	err = s.db.Write(c.Request.Context(), func(tx *storage.Tx) error {
		if err := tx.QueryRow(`SELECT COALESCE(MAX(version), 0) + 1 FROM backup_versions WHERE user_id = $1`,
			string(dev.UserID)).Scan(&version); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)`,
			string(dev.UserID), version, alg, string(authData))
		return err
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"version": strconv.FormatInt(version, 10)})
	return nil
}

// GET /_matrix/client/v3/room_keys/version[/{version}]: a backup version's
// algorithm, auth_data, count and etag; without a version, the current one.
func (s *Service) handleGetBackup(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	var b *backupVersion
	var err error
	if v := c.Param("version"); v != "" {
		n, ok := parseVersion(v)
		if !ok {
			return notFoundVersion()
		}
		b, err = s.liveVersion(c.Request.Context(), dev.UserID, n)
	} else {
		b, err = currentVersion(readQuerier{c.Request.Context(), s}, dev.UserID)
	}
	if err != nil {
		return err
	}
	if b == nil {
		return spec.NotFound("no backup found")
	}
	n, err := countKeys(readQuerier{c.Request.Context(), s}, dev.UserID, b.version)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{
		"algorithm": b.algorithm,
		"auth_data": json.RawMessage(b.authData),
		"count":     n,
		"etag":      strconv.FormatInt(b.etag, 10),
		"version":   strconv.FormatInt(b.version, 10),
	})
	return nil
}

// PUT /_matrix/client/v3/room_keys/version/{version}: replace a version's
// auth_data; the algorithm (and version, if given) must match.
func (s *Service) handleUpdateBackup(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	n, ok := parseVersion(c.Param("version"))
	if !ok {
		return notFoundVersion()
	}
	body, err := api.ReadCanonical(c, s.cfg.MaxKeyUploadBytes)
	if err != nil {
		return err
	}
	alg, authData, m, err := parseBackupInfo(body)
	if err != nil {
		return err
	}
	if v, ok, err := str(m, "version", "the request body"); err != nil {
		return err
	} else if ok && v != c.Param("version") {
		return spec.InvalidParam("the version in the body does not match the one in the path")
	}
	err = s.db.Write(c.Request.Context(), func(tx *storage.Tx) error {
		var stored string
		err := tx.QueryRow(`SELECT algorithm FROM backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted`,
			string(dev.UserID), n).Scan(&stored)
		if errors.Is(err, sql.ErrNoRows) {
			return notFoundVersion()
		}
		if err != nil {
			return err
		}
		if stored != alg {
			return spec.InvalidParam("the algorithm does not match the backup's")
		}
		_, err = tx.Exec(`UPDATE backup_versions SET auth_data = $1 WHERE user_id = $2 AND version = $3`,
			string(authData), string(dev.UserID), n)
		return err
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// DELETE /_matrix/client/v3/room_keys/version/{version}: delete a version and
// all its keys. Deleting an already deleted version succeeds.
func (s *Service) handleDeleteBackup(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	n, ok := parseVersion(c.Param("version"))
	if !ok {
		return notFoundVersion()
	}
	err := s.db.Write(c.Request.Context(), func(tx *storage.Tx) error {
		res, err := tx.Exec(`UPDATE backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2`, string(dev.UserID), n)
		if err != nil {
			return err
		}
		if rows, _ := res.RowsAffected(); rows == 0 {
			return notFoundVersion()
		}
		_, err = tx.Exec(`DELETE FROM backup_keys WHERE user_id = $1 AND version = $2`, string(dev.UserID), n)
		return err
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// backupKey is one session's backed-up key.
type backupKey struct {
	room, session     string
	firstMessageIndex int64
	forwardedCount    int64
	isVerified        bool
	sessionData       string
}

// betterThan is the spec's rule for which of two keys of a session the
// backup keeps: a verified one, then the lower first_message_index, then
// the lower forwarded_count. A key that is no better leaves the stored one.
func (k backupKey) betterThan(old backupKey) bool {
	if k.isVerified != old.isVerified {
		return k.isVerified
	}
	if k.firstMessageIndex != old.firstMessageIndex {
		return k.firstMessageIndex < old.firstMessageIndex
	}
	return k.forwardedCount < old.forwardedCount
}

func (s *Service) parseKeyBackupData(raw json.RawMessage, room, session string) (backupKey, error) {
	what := "session " + session
	m, err := object(raw, what)
	if err != nil {
		return backupKey{}, err
	}
	k := backupKey{room: room, session: session}
	ints := []struct {
		name string
		dst  *int64
	}{{"first_message_index", &k.firstMessageIndex}, {"forwarded_count", &k.forwardedCount}}
	for _, f := range ints {
		v, ok := m[f.name]
		if !ok {
			return k, spec.MissingParam("%s: %s is required", what, f.name)
		}
		if err := json.Unmarshal(v, f.dst); err != nil || *f.dst < 0 {
			return k, spec.BadJSON("%s: %s must be a non-negative integer", what, f.name)
		}
	}
	v, ok := m["is_verified"]
	if !ok {
		return k, spec.MissingParam("%s: is_verified is required", what)
	}
	if err := json.Unmarshal(v, &k.isVerified); err != nil {
		return k, spec.BadJSON("%s: is_verified must be a boolean", what)
	}
	sd, ok := m["session_data"]
	if !ok || isNull(sd) {
		return k, spec.MissingParam("%s: session_data is required", what)
	}
	if sd[0] != '{' {
		return k, spec.BadJSON("%s: session_data must be an object", what)
	}
	if len(sd) > s.cfg.MaxSessionDataBytes {
		return k, spec.TooLarge("%s: session_data is over %d bytes", what, s.cfg.MaxSessionDataBytes)
	}
	k.sessionData = string(sd)
	return k, nil
}

// parseSessions reads {"sessions": {id: KeyBackupData}} for a room.
func (s *Service) parseSessions(raw json.RawMessage, room string, out *[]backupKey) error {
	m, err := object(raw, "room "+room)
	if err != nil {
		return err
	}
	sessRaw, ok := m["sessions"]
	if !ok {
		return spec.MissingParam("room %s: sessions is required", room)
	}
	sessions, err := object(sessRaw, "room "+room+" sessions")
	if err != nil {
		return err
	}
	for id, data := range sessions {
		if err := checkName("session ID", id); err != nil {
			return err
		}
		k, err := s.parseKeyBackupData(data, room, id)
		if err != nil {
			return err
		}
		*out = append(*out, k)
	}
	return nil
}

// PUT /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version=:
// store keys in the current backup version.
func (s *Service) handlePutBackupKeys(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	vs := c.Query("version")
	if vs == "" {
		return spec.MissingParam("the version query parameter is required")
	}
	room, session := c.Param("roomId"), c.Param("sessionId")
	if room != "" {
		if _, err := spec.ParseRoomID(room); err != nil {
			return err
		}
	}
	body, err := api.ReadCanonical(c, s.cfg.MaxBackupUploadBytes)
	if err != nil {
		return err
	}
	var keys []backupKey
	switch {
	case session != "":
		if err := checkName("session ID", session); err != nil {
			return err
		}
		k, err := s.parseKeyBackupData(body, room, session)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	case room != "":
		if err := s.parseSessions(body, room, &keys); err != nil {
			return err
		}
	default:
		m, err := object(body, "the request body")
		if err != nil {
			return err
		}
		rooms, err := requiredObject(m, "rooms")
		if err != nil {
			return err
		}
		for r, raw := range rooms {
			if _, err := spec.ParseRoomID(r); err != nil {
				return err
			}
			if err := s.parseSessions(raw, r, &keys); err != nil {
				return err
			}
		}
	}
	etag, count, err := s.PutBackupKeys(c.Request.Context(), dev.UserID, vs, keys)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"etag": strconv.FormatInt(etag, 10), "count": count})
	return nil
}

// PutBackupKeys stores keys in the user's backup version, which must be the
// current one (else M_WRONG_ROOM_KEYS_VERSION naming the current version),
// keeping for each session the better key by the spec's rule. The etag
// changes whenever a key is stored.
func (s *Service) PutBackupKeys(ctx context.Context, user spec.UserID, version string, keys []backupKey) (etag, count int64, err error) {
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		cur, err := currentVersion(tx, user)
		if err != nil {
			return err
		}
		if cur == nil {
			return notFoundVersion()
		}
		if n, ok := parseVersion(version); !ok || n != cur.version {
			return spec.NewError(spec.ErrWrongRoomKeysVersion, "version %s is not the current backup version", version).
				With("current_version", strconv.FormatInt(cur.version, 10))
		}
		changed := false
		for _, k := range keys {
			var old backupKey
			err := tx.QueryRow(`SELECT first_message_index, forwarded_count, is_verified FROM backup_keys
				WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`,
				string(user), cur.version, k.room, k.session).Scan(&old.firstMessageIndex, &old.forwardedCount, &old.isVerified)
			switch {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return err
			case !k.betterThan(old):
				continue
			}
			if _, err := tx.Exec(`INSERT INTO backup_keys (user_id, version, room_id, session_id,
					first_message_index, forwarded_count, is_verified, session_data)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
					first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count,
					is_verified = excluded.is_verified, session_data = excluded.session_data`,
				string(user), cur.version, k.room, k.session, k.firstMessageIndex, k.forwardedCount, k.isVerified, k.sessionData); err != nil {
				return err
			}
			changed = true
		}
		etag = cur.etag
		if changed {
			etag++
			if _, err := tx.Exec(`UPDATE backup_versions SET etag = $1 WHERE user_id = $2 AND version = $3`,
				etag, string(user), cur.version); err != nil {
				return err
			}
		}
		count, err = countKeys(tx, user, cur.version)
		return err
	})
	return etag, count, err
}

// GET /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version=.
func (s *Service) handleGetBackupKeys(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	vs := c.Query("version")
	if vs == "" {
		return spec.MissingParam("the version query parameter is required")
	}
	n, ok := parseVersion(vs)
	if !ok {
		return notFoundVersion()
	}
	b, err := s.liveVersion(c.Request.Context(), dev.UserID, n)
	if err != nil {
		return err
	}
	if b == nil {
		return notFoundVersion()
	}
	room, session := c.Param("roomId"), c.Param("sessionId")
	q := `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
		FROM backup_keys WHERE user_id = $1 AND version = $2`
	args := []any{string(dev.UserID), n}
	if room != "" {
		q += ` AND room_id = $3`
		args = append(args, room)
	}
	if session != "" {
		q += ` AND session_id = $4`
		args = append(args, session)
	}
	rows, err := s.db.Query(c.Request.Context(), q+` ORDER BY room_id, session_id`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	out := map[string]map[string]map[string]any{}
	found := false
	for rows.Next() {
		var k backupKey
		if err := rows.Scan(&k.room, &k.session, &k.firstMessageIndex, &k.forwardedCount, &k.isVerified, &k.sessionData); err != nil {
			return err
		}
		found = true
		if out[k.room] == nil {
			out[k.room] = map[string]map[string]any{}
		}
		out[k.room][k.session] = map[string]any{
			"first_message_index": k.firstMessageIndex,
			"forwarded_count":     k.forwardedCount,
			"is_verified":         k.isVerified,
			"session_data":        json.RawMessage(k.sessionData),
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	switch {
	case session != "":
		if !found {
			return spec.NotFound("no key found for this session")
		}
		c.JSON(http.StatusOK, out[room][session])
	case room != "":
		sessions := out[room]
		if sessions == nil {
			sessions = map[string]map[string]any{}
		}
		c.JSON(http.StatusOK, gin.H{"sessions": sessions})
	default:
		rooms := map[string]any{}
		for r, sessions := range out {
			rooms[r] = gin.H{"sessions": sessions}
		}
		c.JSON(http.StatusOK, gin.H{"rooms": rooms})
	}
	return nil
}

// DELETE /_matrix/client/v3/room_keys/keys[/{roomId}[/{sessionId}]]?version=.
func (s *Service) handleDeleteBackupKeys(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	vs := c.Query("version")
	if vs == "" {
		return spec.MissingParam("the version query parameter is required")
	}
	n, ok := parseVersion(vs)
	if !ok {
		return notFoundVersion()
	}
	room, session := c.Param("roomId"), c.Param("sessionId")
	var etag, count int64
	err := s.db.Write(c.Request.Context(), func(tx *storage.Tx) error {
		err := tx.QueryRow(`SELECT etag FROM backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted`,
			string(dev.UserID), n).Scan(&etag)
		if errors.Is(err, sql.ErrNoRows) {
			return notFoundVersion()
		}
		if err != nil {
			return err
		}
		q := `DELETE FROM backup_keys WHERE user_id = $1 AND version = $2`
		args := []any{string(dev.UserID), n}
		if room != "" {
			q += ` AND room_id = $3`
			args = append(args, room)
		}
		if session != "" {
			q += ` AND session_id = $4`
			args = append(args, session)
		}
		res, err := tx.Exec(q, args...)
		if err != nil {
			return err
		}
		if deleted, _ := res.RowsAffected(); deleted > 0 {
			etag++
			if _, err := tx.Exec(`UPDATE backup_versions SET etag = $1 WHERE user_id = $2 AND version = $3`,
				etag, string(dev.UserID), n); err != nil {
				return err
			}
		}
		count, err = countKeys(tx, dev.UserID, n)
		return err
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"etag": strconv.FormatInt(etag, 10), "count": count})
	return nil
}
