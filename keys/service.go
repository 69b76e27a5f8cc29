// Package keys is the end-to-end encryption directory: device keys, one-time
// and fallback keys, cross-signing keys and their signatures, key backup,
// dehydrated devices, to-device messages and device-list changes.
//
// The server is an untrusted relay here. It verifies every signature it can
// (device self-signatures, cross-signing keys signed by the master key,
// uploaded signatures) so that it never stores or serves a forgery, and it
// never sees a private key or a plaintext.
package keys

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"sync"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
)

// Notifier wakes the long-polling /sync requests of users when a change at
// stream position pos concerns them.
type Notifier interface {
	Notify(pos int64, c wake.Change, users ...spec.UserID)
}

// RoomMembership tells which users share a joined room with a user. The
// rooms package implements it from memory.
type RoomMembership interface {
	UsersSharingRoomsWith(user spec.UserID) []spec.UserID
}

// LeftTracker may also be implemented by the RoomMembership in Deps: the users
// with whom user stopped sharing every room between the stream positions
// since and until. /keys/changes reports them in "left"; without it "left" is
// empty.
type LeftTracker interface {
	UsersLeftBetween(user spec.UserID, since, until int64) []spec.UserID
}

// UIAFunc is auth's Reauthenticate: user-interactive authentication by
// password for a request whose raw body is body. Until the user has
// authenticated it returns the error to answer with (the 401 challenge is
// already written); then finish, to call once the change is stored.
type UIAFunc func(c *gin.Context, dev *auth.Device, body []byte) (finish func(), err error)

// Devices is what keys needs from the accounts package for dehydrated
// devices. With a nil Devices, dehydrated devices exist only in this
// package (no device row, no entry in GET /devices).
type Devices interface {
	// CreateDehydratedDevice creates a device row (with no access token) for
	// a dehydrated device. It fails if the device ID is taken.
	CreateDehydratedDevice(ctx context.Context, user spec.UserID, deviceID, displayName string) error
	// DeleteDevices deletes devices as DELETE /devices/{deviceId} does
	// (their tokens, and through Service.DeviceDeleted their keys).
	DeleteDevices(ctx context.Context, user spec.UserID, deviceIDs ...string) error
}

// Config holds the limits of the package. Zero values take the defaults.
type Config struct {
	// ServerName is this server's name: users on other servers cannot be
	// served without federation and are reported in "failures".
	ServerName spec.ServerName
	// MaxKeyUploadBytes caps the body of /keys/upload, the cross-signing
	// uploads and the dehydrated device upload (default 256 KiB).
	MaxKeyUploadBytes int64
	// MaxToDeviceBytes caps a whole /sendToDevice body (default 1 MiB), and
	// MaxToDeviceMessageBytes one message's content in it (default 64 KiB).
	MaxToDeviceBytes        int64
	MaxToDeviceMessageBytes int
	// MaxOneTimeKeys is how many unclaimed one-time keys one device may hold
	// per algorithm (default 1000).
	MaxOneTimeKeys int
	// MaxBackupUploadBytes caps a key-backup upload (default 8 MiB), and
	// MaxSessionDataBytes one session's encrypted data (default 16 KiB).
	MaxBackupUploadBytes int64
	MaxSessionDataBytes  int
	// MaxQueryUsers caps the users of one /keys/query and the devices of one
	// /keys/claim (default 10000).
	MaxQueryUsers int
}

func (c *Config) setDefaults() {
	if c.MaxKeyUploadBytes <= 0 {
		c.MaxKeyUploadBytes = 256 << 10
	}
	if c.MaxToDeviceBytes <= 0 {
		c.MaxToDeviceBytes = 1 << 20
	}
	if c.MaxToDeviceMessageBytes <= 0 {
		c.MaxToDeviceMessageBytes = 64 << 10
	}
	if c.MaxOneTimeKeys <= 0 {
		c.MaxOneTimeKeys = 1000
	}
	if c.MaxBackupUploadBytes <= 0 {
		c.MaxBackupUploadBytes = 8 << 20
	}
	if c.MaxSessionDataBytes <= 0 {
		c.MaxSessionDataBytes = 16 << 10
	}
	if c.MaxQueryUsers <= 0 {
		c.MaxQueryUsers = 10000
	}
}

// Deps are the dependencies of the Service. DB is required; Notify, Rooms,
// UIA and Devices may be nil (in tests). With a nil UIA, replacing
// cross-signing keys is refused.
type Deps struct {
	DB      *storage.DB
	Log     zerolog.Logger
	Notify  Notifier
	Rooms   RoomMembership
	UIA     UIAFunc
	Devices Devices
	Config  Config
	// ParseSyncToken turns a /sync next_batch token into its stream
	// position, for /keys/changes. Nil: the token must be a decimal position.
	ParseSyncToken func(token string) (int64, error)
	// Limiter rate-limits to-device messages per sender (nil: no limits).
	Limiter *auth.Limiter
	// DeviceEvents is auth's list of device hooks: keys joins it, to hear
	// of every device auth adds, renames or deletes (nil: the caller tells
	// keys itself). Keys re-checks passwords through auth, so auth is built
	// first and keys joins the list auth was given.
	DeviceEvents *auth.DeviceEvents
	// Federation reaches other servers' users (federation.Peers): their
	// keys are queried and claimed there, to-device messages and this
	// server's device-list changes are queued for them (nil: federation
	// off, other servers are reported in "failures").
	Federation RemoteKeys
	// Commits is rooms' commit-hook list: with Federation, keys joins it
	// to drop remote device lists that may have gone stale (PrepareCommit).
	Commits *rooms.CommitHooks
}

// Service is the E2EE directory.
type Service struct {
	db      *storage.DB
	log     zerolog.Logger
	notify  Notifier
	rooms   RoomMembership
	uia     UIAFunc
	devices Devices
	limiter *auth.Limiter
	cfg     Config
	parse   func(string) (int64, error)
	fed     RemoteKeys

	resyncs sync.Map // remote users whose device list is being fetched again
	// cluster: the database is one node's of a cluster (follow.go).
	cluster bool

	// mu guards the in-memory state below. It is updated only in
	// AfterCommit hooks (which run in commit order on the writer goroutine)
	// and at start-up, so it always matches what is committed; readers (the
	// /sync hot path) never touch the database for it.
	mu    sync.RWMutex
	devs  map[devKey]*deviceState
	lists deviceLists
}

type devKey struct {
	user   spec.UserID
	device string
}

// deviceState is what /sync asks about a device on every request.
type deviceState struct {
	otkCounts      map[string]int // unclaimed one-time keys per algorithm
	unusedFallback []string       // algorithms of unused fallback keys, sorted
	pending        int64          // highest position of an undelivered to-device message, 0 if none
	acked          int64          // every message at or below this is deleted
}

// New loads the in-memory state from the database (migrated beforehand with
// Schema) and returns the service.
func New(d Deps) (*Service, error) {
	if d.DB == nil {
		return nil, fmt.Errorf("keys: no database")
	}
	d.Config.setDefaults()
	s := &Service{
		db:      d.DB,
		log:     d.Log,
		notify:  d.Notify,
		rooms:   d.Rooms,
		uia:     d.UIA,
		devices: d.Devices,
		cfg:     d.Config,
		parse:   d.ParseSyncToken,
		limiter: d.Limiter,
		fed:     d.Federation,
		devs:    map[devKey]*deviceState{},
		cluster: d.DB.Node() != "",
	}
	if s.parse == nil {
		s.parse = parsePosition
	}
	ctx := context.Background()
	var err error
	if s.cluster {
		err = s.loadFollowing(ctx)
	} else {
		err = s.load(func(q string, args ...any) (*sql.Rows, error) { return s.db.Query(ctx, q, args...) })
	}
	if err != nil {
		return nil, fmt.Errorf("keys: load: %w", err)
	}
	if d.DeviceEvents != nil {
		d.DeviceEvents.Join(s)
	}
	if d.Commits != nil && d.Federation != nil {
		d.Commits.Join(s)
	}
	return s, nil
}

// rowsQuerier runs a query on the read pool or in a write (loads).
type rowsQuerier func(query string, args ...any) (*sql.Rows, error)

// load reads the per-device counters and the device-list log. It runs
// before the server serves anything, so no write of this node can race
// with it (a cluster node loads inside a write: follow.go).
func (s *Service) load(query rowsQuerier) error {
	rows, err := query(`SELECT user_id, device_id, algorithm, COUNT(*) FROM one_time_keys
		GROUP BY user_id, device_id, algorithm`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var u, d, alg string
		var n int
		if err := rows.Scan(&u, &d, &alg, &n); err != nil {
			rows.Close()
			return err
		}
		st := s.stateLocked(devKey{spec.UserID(u), d})
		if st.otkCounts == nil {
			st.otkCounts = map[string]int{}
		}
		st.otkCounts[alg] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	rows, err = query(`SELECT user_id, device_id, algorithm FROM fallback_keys WHERE NOT used ORDER BY algorithm`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var u, d, alg string
		if err := rows.Scan(&u, &d, &alg); err != nil {
			rows.Close()
			return err
		}
		st := s.stateLocked(devKey{spec.UserID(u), d})
		st.unusedFallback = append(st.unusedFallback, alg)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	rows, err = query(`SELECT user_id, device_id, MAX(position) FROM to_device_messages GROUP BY user_id, device_id`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var u, d string
		var pos int64
		if err := rows.Scan(&u, &d, &pos); err != nil {
			rows.Close()
			return err
		}
		s.stateLocked(devKey{spec.UserID(u), d}).pending = pos
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	rows, err = query(`SELECT user_id, position FROM device_list_changes ORDER BY position`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		var pos int64
		if err := rows.Scan(&u, &pos); err != nil {
			return err
		}
		s.lists.add(spec.UserID(u), pos)
	}
	return rows.Err()
}

// stateLocked returns the state of a device, creating it; s.mu must be held
// for writing (or the service not yet shared).
func (s *Service) stateLocked(k devKey) *deviceState {
	st := s.devs[k]
	if st == nil {
		st = &deviceState{}
		s.devs[k] = st
	}
	return st
}

// OneTimeKeyCounts returns the number of unclaimed one-time keys of a device
// per algorithm, for /sync's device_one_time_keys_count. It reads memory
// only. signed_curve25519 is always present (0 when none are left), as
// clients expect.
func (s *Service) OneTimeKeyCounts(_ context.Context, user spec.UserID, deviceID string) (map[string]int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]int{"signed_curve25519": 0}
	if st := s.devs[devKey{user, deviceID}]; st != nil {
		for alg, n := range st.otkCounts {
			out[alg] = n
		}
	}
	return out, nil
}

// UnusedFallbackKeyTypes returns the algorithms for which the device has a
// fallback key that no claim has returned yet, for /sync's
// device_unused_fallback_key_types. It reads memory only and never returns
// nil (the field is required).
func (s *Service) UnusedFallbackKeyTypes(_ context.Context, user spec.UserID, deviceID string) ([]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.devs[devKey{user, deviceID}]
	if st == nil {
		return []string{}, nil
	}
	return append([]string{}, st.unusedFallback...), nil
}

// setCounts records a device's committed one-time key counts and unused
// fallback algorithms (in an AfterCommit hook).
func (s *Service) setCounts(k devKey, counts map[string]int, unused []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stateLocked(k)
	st.otkCounts = counts
	sort.Strings(unused)
	st.unusedFallback = unused
}

// readCounts reads a device's one-time key counts and unused fallback
// algorithms inside a write, after its changes.
func readCounts(tx *storage.Tx, k devKey) (map[string]int, []string, error) {
	rows, err := tx.Query(`SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`,
		string(k.user), k.device)
	if err != nil {
		return nil, nil, err
	}
	counts := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			rows.Close()
			return nil, nil, err
		}
		counts[alg] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	rows, err = tx.Query(`SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used`,
		string(k.user), k.device)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	unused := []string{}
	for rows.Next() {
		var alg string
		if err := rows.Scan(&alg); err != nil {
			return nil, nil, err
		}
		unused = append(unused, alg)
	}
	return counts, unused, rows.Err()
}

// isLocal reports whether a user belongs to this server. With no server name
// configured (package tests) every user is local.
func (s *Service) isLocal(u spec.UserID) bool {
	return s.cfg.ServerName == "" || u.Server() == s.cfg.ServerName
}

// ensureDevice records that a device exists, inside a write.
func ensureDevice(tx *storage.Tx, user spec.UserID, deviceID string) error {
	_, err := tx.Exec(`INSERT INTO key_devices (user_id, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
		string(user), deviceID)
	return err
}

// DeviceAdded records a new device of a user (login, registration) and
// marks the user's device list changed. The accounts package calls it after
// the device is committed, never inside its own write.
func (s *Service) DeviceAdded(ctx context.Context, user spec.UserID, deviceID, displayName string) error {
	if err := checkDeviceID(deviceID); err != nil {
		return err
	}
	watchers := s.watchers(user)
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(`INSERT INTO key_devices (user_id, device_id, display_name) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name`,
			string(user), deviceID, displayName); err != nil {
			return err
		}
		if err := s.announceDevices(tx, watchers, user, deviceID); err != nil {
			return err
		}
		return s.markChanged(tx, watchers, user)
	})
}

// DeviceUpdated records a device's new display name. Only the device's
// owner sees it in /keys/query, but their other devices learn of it through
// the device list, which is marked changed.
func (s *Service) DeviceUpdated(ctx context.Context, user spec.UserID, deviceID, displayName string) error {
	watchers := s.watchers(user)
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(`UPDATE key_devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3`,
			displayName, string(user), deviceID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		if err := s.announceDevices(tx, watchers, user, deviceID); err != nil {
			return err
		}
		return s.markChanged(tx, watchers, user)
	})
}

// DeviceDeleted removes everything keys holds for a device: its device keys,
// one-time and fallback keys, the signatures made on it and by it, its
// dehydrated-device record and its undelivered to-device messages (which are
// dropped: no one can read them any more). The user's device list is marked
// changed. The accounts package calls it when a device is deleted.
func (s *Service) DeviceDeleted(ctx context.Context, user spec.UserID, deviceID string) error {
	watchers := s.watchers(user)
	k := devKey{user, deviceID}
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		// The cascade removes device_keys, one_time_keys, fallback_keys,
		// to_device_messages and dehydrated_devices.
		if _, err := tx.Exec(`DELETE FROM key_devices WHERE user_id = $1 AND device_id = $2`, string(user), deviceID); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM key_signatures WHERE target_user = $1 AND target_key = $2`, string(user), deviceID); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM key_signatures WHERE signer_user = $1 AND signer_key_id = $2`, string(user), "ed25519:"+deviceID); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = $2`, string(user), deviceID); err != nil {
			return err
		}
		tx.AfterCommit(func() {
			s.mu.Lock()
			delete(s.devs, k)
			s.mu.Unlock()
		})
		if err := s.countsChanged(tx, k); err != nil {
			return err
		}
		if err := s.announceDevices(tx, watchers, user, deviceID); err != nil {
			return err
		}
		return s.markChanged(tx, watchers, user)
	})
}

// watchers are the users to wake when user's device list changes: the user
// (their other devices) and everyone sharing a room with them. It is read
// before the write, outside the writer goroutine, so that the writer never
// waits on the rooms package's locks.
func (s *Service) watchers(users ...spec.UserID) []spec.UserID {
	seen := map[spec.UserID]bool{}
	var out []spec.UserID
	add := func(u spec.UserID) {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	for _, u := range users {
		add(u)
		if s.rooms != nil {
			for _, o := range s.rooms.UsersSharingRoomsWith(u) {
				add(o)
			}
		}
	}
	return out
}
