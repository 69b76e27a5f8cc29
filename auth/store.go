package auth

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Schema is the auth package's tables. Only this file touches them.
var Schema = storage.Schema{Domain: "auth", Migrations: []string{`
CREATE TABLE users (
	user_id       TEXT    PRIMARY KEY,
	password_hash TEXT,
	is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
	deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
	displayname   TEXT,
	avatar_url    TEXT,
	created_ts    BIGINT  NOT NULL,
	CHECK (NOT deactivated OR password_hash IS NULL)
);
CREATE TABLE devices (
	user_id      TEXT   NOT NULL REFERENCES users (user_id),
	device_id    TEXT   NOT NULL CHECK (device_id <> ''),
	display_name TEXT,
	created_ts   BIGINT NOT NULL,
	last_seen_ts BIGINT,
	PRIMARY KEY (user_id, device_id)
);
CREATE TABLE access_tokens (
	token_hash         TEXT   PRIMARY KEY,
	user_id            TEXT   NOT NULL,
	device_id          TEXT   NOT NULL,
	expires_ts         BIGINT,
	refresh_hash       TEXT   UNIQUE,
	refresh_expires_ts BIGINT,
	parent_hash        TEXT,
	created_ts         BIGINT NOT NULL,
	FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
CREATE INDEX access_tokens_parent ON access_tokens (parent_hash);
CREATE TABLE registration_tokens (
	token        TEXT    PRIMARY KEY CHECK (length(token) BETWEEN 1 AND 64),
	uses_allowed INTEGER CHECK (uses_allowed IS NULL OR uses_allowed >= 0),
	completed    INTEGER NOT NULL DEFAULT 0 CHECK (completed >= 0),
	expiry_ts    BIGINT,
	created_ts   BIGINT  NOT NULL,
	CHECK (uses_allowed IS NULL OR completed <= uses_allowed)
);
CREATE TABLE registration_token_reservations (
	session    TEXT   PRIMARY KEY,
	token      TEXT   NOT NULL REFERENCES registration_tokens (token) ON DELETE CASCADE,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX registration_token_reservations_token ON registration_token_reservations (token);
CREATE TABLE account_data (
	user_id  TEXT   NOT NULL REFERENCES users (user_id),
	room_id  TEXT   NOT NULL,
	type     TEXT   NOT NULL CHECK (type <> ''),
	content  TEXT   NOT NULL,
	position BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_position ON account_data (user_id, position);
CREATE TABLE openid_tokens (
	token_hash TEXT   PRIMARY KEY,
	user_id    TEXT   NOT NULL REFERENCES users (user_id),
	expires_ts BIGINT NOT NULL
);`, `
CREATE TABLE auth_changes (
	position   BIGINT NOT NULL,
	kind       TEXT   NOT NULL,
	user_id    TEXT   NOT NULL,
	created_ts BIGINT NOT NULL
);
CREATE INDEX auth_changes_position ON auth_changes (position);
CREATE INDEX auth_changes_created ON auth_changes (created_ts);
CREATE INDEX account_data_by_position ON account_data (position);`,
	// 3: m.login.token tokens of a cluster node (login.go), so that a
	// token issued on one node logs in on another; a single server keeps
	// them in memory.
	`
CREATE TABLE auth_login_tokens (
	token_hash TEXT   PRIMARY KEY,
	user_id    TEXT   NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX auth_login_tokens_user ON auth_login_tokens (user_id);
CREATE INDEX auth_login_tokens_expiry ON auth_login_tokens (expires_ts);`,
}}

// auth_changes are the changes of a cluster node (docs/scaling.md) that
// have no stream position of their own, such as a revoked token: the
// writing node stores one at a new position, and the other nodes' followers
// drop what they keep of the user (follow.go). Written only on a cluster
// node.

// changesKept is how long a change row is kept: followers read them within
// moments, and a node that was away longer reloads at start.
const changesKept = 24 * time.Hour

func insertChange(tx *storage.Tx, kind string, user spec.UserID, now time.Time) error {
	if _, err := tx.Exec(`DELETE FROM auth_changes WHERE created_ts < $1`, now.Add(-changesKept).UnixMilli()); err != nil {
		return err
	}
	_, err := tx.Exec(`INSERT INTO auth_changes (position, kind, user_id, created_ts) VALUES ($1, $2, $3, $4)`,
		tx.NextPosition(), kind, string(user), now.UnixMilli())
	return err
}

// change is one auth_changes row.
type change struct {
	kind string
	user spec.UserID
}

func changesBetween(tx *storage.Tx, from, to int64) ([]change, error) {
	rows, err := tx.Query(`SELECT kind, user_id FROM auth_changes WHERE position > $1 AND position <= $2 ORDER BY position`, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []change
	for rows.Next() {
		var c change
		if err := rows.Scan(&c.kind, &c.user); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// accountDataRow is one stored account data entry.
type accountDataRow struct {
	user    spec.UserID
	room    spec.RoomID
	typ     string
	content string
	pos     int64
}

func accountDataAt(tx *storage.Tx, from, to int64) ([]accountDataRow, error) {
	rows, err := tx.Query(`SELECT user_id, room_id, type, content, position FROM account_data
		WHERE position > $1 AND position <= $2 ORDER BY position`, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []accountDataRow
	for rows.Next() {
		var r accountDataRow
		if err := rows.Scan(&r.user, &r.room, &r.typ, &r.content, &r.pos); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// tokenByHash reads one live access token (found is false for an unknown
// or revoked token, or a deactivated account's).
func (s *Service) tokenByHash(ctx context.Context, hash string) (t tokenRow, admin, found bool, err error) {
	var exp sql.NullInt64
	var parent sql.NullString
	err = s.db.QueryRow(ctx, `SELECT t.user_id, t.device_id, t.expires_ts, t.parent_hash, u.is_admin
		FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = $1 AND NOT u.deactivated`, hash).
		Scan(&t.user, &t.deviceID, &exp, &parent, &admin)
	if errors.Is(err, sql.ErrNoRows) {
		return t, false, false, nil
	}
	t.hash, t.expires, t.parent = hash, exp.Int64, parent.String
	return t, admin, err == nil, err
}

// userRow is one account as stored.
type userRow struct {
	ID           spec.UserID
	PasswordHash string
	IsAdmin      bool
	Deactivated  bool
}

type querier interface {
	QueryRow(query string, args ...any) *sql.Row
}

// dbQuerier adapts the read pool to querier.
type dbQuerier struct {
	db  *storage.DB
	ctx context.Context
}

func (q dbQuerier) QueryRow(query string, args ...any) *sql.Row {
	return q.db.QueryRow(q.ctx, query, args...)
}

func (s *Service) reader(ctx context.Context) querier { return dbQuerier{s.db, ctx} }

// loadUser reads an account; found is false if it never existed.
func loadUser(q querier, id spec.UserID) (u userRow, found bool, err error) {
	var hash sql.NullString
	err = q.QueryRow(`SELECT user_id, password_hash, is_admin, deactivated FROM users WHERE user_id = $1`, string(id)).
		Scan(&u.ID, &hash, &u.IsAdmin, &u.Deactivated)
	if errors.Is(err, sql.ErrNoRows) {
		return u, false, nil
	}
	if err != nil {
		return u, false, err
	}
	u.PasswordHash = hash.String
	return u, true, nil
}

func insertUser(tx *storage.Tx, id spec.UserID, hash string, admin bool, displayName string, now int64) error {
	var h any
	if hash != "" {
		h = hash
	}
	_, err := tx.Exec(`INSERT INTO users (user_id, password_hash, is_admin, displayname, created_ts) VALUES ($1, $2, $3, $4, $5)`,
		string(id), h, admin, displayName, now)
	return err
}

func setPasswordHash(tx *storage.Tx, id spec.UserID, hash string) error {
	_, err := tx.Exec(`UPDATE users SET password_hash = $1 WHERE user_id = $2 AND NOT deactivated`, hash, string(id))
	return err
}

// insertDevice creates the device if it does not exist; existed reports
// whether it did (its display name is then unchanged).
func insertDevice(tx *storage.Tx, user spec.UserID, deviceID, displayName string, now int64) (existed bool, err error) {
	var name any
	if displayName != "" {
		name = displayName
	}
	res, err := tx.Exec(`INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, device_id) DO NOTHING`, string(user), deviceID, name, now, now)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 0, err
}

// deleteDeviceTokens removes every token of a device and returns their hashes.
func deleteDeviceTokens(tx *storage.Tx, user spec.UserID, deviceID string) ([]string, error) {
	return queryStrings(tx, `DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2 RETURNING token_hash`, string(user), deviceID)
}

// deleteDevice removes a device and (by cascade) its tokens; it reports
// whether the device existed.
func deleteDevice(tx *storage.Tx, user spec.UserID, deviceID string) (bool, error) {
	res, err := tx.Exec(`DELETE FROM devices WHERE user_id = $1 AND device_id = $2`, string(user), deviceID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

type tokenRow struct {
	hash           string
	user           spec.UserID
	deviceID       string
	expires        int64 // unix ms, 0: never
	refreshHash    string
	refreshExpires int64
	parent         string
}

func insertToken(tx *storage.Tx, t tokenRow, now int64) error {
	_, err := tx.Exec(`INSERT INTO access_tokens (token_hash, user_id, device_id, expires_ts, refresh_hash, refresh_expires_ts, parent_hash, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		t.hash, string(t.user), t.deviceID, nullInt(t.expires), nullString(t.refreshHash), nullInt(t.refreshExpires), nullString(t.parent), now)
	return err
}

func tokenByRefresh(tx *storage.Tx, refreshHash string) (t tokenRow, found bool, err error) {
	var exp, rexp sql.NullInt64
	var parent sql.NullString
	err = tx.QueryRow(`SELECT token_hash, user_id, device_id, expires_ts, refresh_expires_ts, parent_hash FROM access_tokens WHERE refresh_hash = $1`, refreshHash).
		Scan(&t.hash, &t.user, &t.deviceID, &exp, &rexp, &parent)
	if errors.Is(err, sql.ErrNoRows) {
		return t, false, nil
	}
	t.refreshHash = refreshHash
	t.expires, t.refreshExpires, t.parent = exp.Int64, rexp.Int64, parent.String
	return t, err == nil, err
}

func deleteToken(tx *storage.Tx, hash string) error {
	_, err := tx.Exec(`DELETE FROM access_tokens WHERE token_hash = $1`, hash)
	return err
}

// deleteChildren removes the successors of a token that were never used.
func deleteChildren(tx *storage.Tx, parent string) ([]string, error) {
	return queryStrings(tx, `DELETE FROM access_tokens WHERE parent_hash = $1 RETURNING token_hash`, parent)
}

func clearParent(tx *storage.Tx, hash string) error {
	_, err := tx.Exec(`UPDATE access_tokens SET parent_hash = NULL WHERE token_hash = $1`, hash)
	return err
}

// rowsQuerier runs a query on the read pool or in a write (loads).
type rowsQuerier func(query string, args ...any) (*sql.Rows, error)

// loadTokens reads every live token for the in-memory cache.
func loadTokens(query rowsQuerier) ([]tokenRow, map[spec.UserID]bool, error) {
	rows, err := query(`SELECT t.token_hash, t.user_id, t.device_id, t.expires_ts, t.parent_hash, u.is_admin
		FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE NOT u.deactivated`)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var out []tokenRow
	admins := map[spec.UserID]bool{}
	for rows.Next() {
		var t tokenRow
		var exp sql.NullInt64
		var parent sql.NullString
		var admin bool
		if err := rows.Scan(&t.hash, &t.user, &t.deviceID, &exp, &parent, &admin); err != nil {
			return nil, nil, err
		}
		t.expires, t.parent = exp.Int64, parent.String
		if admin {
			admins[t.user] = true
		}
		out = append(out, t)
	}
	return out, admins, rows.Err()
}

// deviceRow is one device as GET /devices shows it.
type deviceRow struct {
	DeviceID    string
	DisplayName sql.NullString
	LastSeenTS  sql.NullInt64
}

func (s *Service) listDevices(ctx context.Context, user spec.UserID, deviceID string) ([]deviceRow, error) {
	q := `SELECT device_id, display_name, last_seen_ts FROM devices WHERE user_id = $1`
	args := []any{string(user)}
	if deviceID != "" {
		q += ` AND device_id = $2`
		args = append(args, deviceID)
	}
	rows, err := s.db.Query(ctx, q+` ORDER BY device_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []deviceRow
	for rows.Next() {
		var d deviceRow
		if err := rows.Scan(&d.DeviceID, &d.DisplayName, &d.LastSeenTS); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func queryStrings(tx *storage.Tx, q string, args ...any) ([]string, error) {
	rows, err := tx.Query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func nullInt(v int64) any {
	if v == 0 {
		return nil
	}
	return v
}

func nullString(v string) any {
	if v == "" {
		return nil
	}
	return v
}
