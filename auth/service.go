package auth

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
	"github.com/rs/zerolog"
)

// Notifier wakes /sync for users whose account data changed at a stream
// position; sync implements it.
type Notifier interface {
	Notify(pos int64, c wake.Change, users ...spec.UserID)
}

// RoomHooks is what auth needs from rooms (nil: auth alone, as the CLI
// and auth's own tests run it).
type RoomHooks interface {
	// LeaveAllRooms makes a deactivated user leave every room.
	LeaveAllRooms(ctx context.Context, user spec.UserID) error
	// ProfileChanged sends the new membership events after a display name
	// or avatar change.
	ProfileChanged(ctx context.Context, user spec.UserID, displayName, avatarURL string) error
	// InDirectoryOf reports whether target is in user's user-directory
	// scope (who may read whose profile): sharing a room, or joined to a
	// public or world-readable one.
	InDirectoryOf(user, target spec.UserID) bool
	// JoinedRooms lists the rooms a user is joined to (what a profile
	// change costs).
	JoinedRooms(user spec.UserID) []spec.RoomID
}

// DeviceHooks is what auth tells the E2EE directory (keys) about devices;
// nil until keys exists. The hooks run after the change committed.
type DeviceHooks interface {
	// DeviceAdded: a new device exists (login, registration).
	DeviceAdded(ctx context.Context, user spec.UserID, deviceID, displayName string) error
	// DeviceUpdated: a device's display name changed (it is part of the
	// device list other users see).
	DeviceUpdated(ctx context.Context, user spec.UserID, deviceID, displayName string) error
	// DeviceDeleted: a device and its tokens are gone; its keys must go.
	DeviceDeleted(ctx context.Context, user spec.UserID, deviceID string) error
}

// Deps is what the service needs.
type Deps struct {
	DB         *storage.DB
	ServerName spec.ServerName
	Config     Config
	Log        zerolog.Logger
	Notify     Notifier       // may be nil
	Rooms      RoomHooks      // may be nil
	Devices    DeviceHooks    // may be nil; keys and push join a *DeviceEvents (devices.go)
	Directory  DirectoryRooms // may be nil: the user directory finds no one
	// Policy can refuse requests and logins (admin's; nil: every active
	// account may act).
	Policy AccessPolicy
	// Limiter is the rate limiter, shared with the packages that limit
	// their own routes (nil: one built from Config).
	Limiter *Limiter
	// OAuth tells user-interactive auth about the OAuth 2.0 API's sessions,
	// for the m.oauth stage (uiaoauth.go); nil with the OAuth 2.0 API off.
	OAuth OAuthSessions
	// Eraser erases the rest of an account deactivated with erase (nil:
	// only auth's own rows go).
	Eraser AccountEraser
	// RemoteProfiles asks other servers for their users' profiles
	// (federation's query/profile; nil without federation).
	RemoteProfiles RemoteProfiles
}

// RemoteProfiles looks up the profile of another server's user.
type RemoteProfiles interface {
	QueryProfile(ctx context.Context, user spec.UserID) (displayName, avatarURL string, err error)
}

// Service is accounts and sessions.
type Service struct {
	db         *storage.DB
	serverName spec.ServerName
	cfg        Config
	log        zerolog.Logger
	notify     Notifier
	rooms      RoomHooks
	devices    DeviceHooks
	policy     AccessPolicy  // admin.go; nil: every active account may act
	eraser     AccountEraser // erase.go; may be nil
	directory  DirectoryRooms
	profiles   *profileIndex  // directory.go
	oauth      OAuthSessions  // uiaoauth.go; nil with the OAuth 2.0 API off
	remote     RemoteProfiles // profile.go; nil without federation
	// cluster: the database is one node's of a cluster; other nodes
	// write too (follow.go).
	cluster bool

	now      func() time.Time // the clock; tests move it
	hasher   *hasher
	tokens   *tokenCache
	uia      *uiaStore
	limiter  *Limiter
	jwt      *jwtVerifier
	reserved map[string]bool

	// loginTokens are m.login.token tokens (by hash): short-lived and single
	// use, so kept in memory only.
	loginMu     sync.Mutex
	loginTokens map[string]loginToken

	// nonces for shared-secret registration.
	nonceMu sync.Mutex
	nonces  map[string]time.Time

	// accountDataPos is each user's highest account data position;
	// ignored is each user's m.ignored_user_list, which push reads for
	// every recipient of every event and sync for every response.
	adMu           sync.RWMutex
	accountDataPos map[spec.UserID]int64
	ignored        map[spec.UserID]map[spec.UserID]bool
}

type loginToken struct {
	user    spec.UserID
	expires time.Time
}

// New builds the service: it validates the configuration and loads live
// tokens and account data positions into memory. The database must be
// migrated with Schema.
func New(d Deps) (*Service, error) {
	cfg := d.Config
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if _, err := spec.ParseServerName(string(d.ServerName)); err != nil {
		return nil, fmt.Errorf("auth: server name: %w", err)
	}
	h, err := newHasher(cfg.Argon2, cfg.HashConcurrency, cfg.HashQueue)
	if err != nil {
		return nil, err
	}
	s := &Service{
		db: d.DB, serverName: d.ServerName, cfg: cfg, log: d.Log,
		notify: d.Notify, rooms: d.Rooms, devices: d.Devices, directory: d.Directory, policy: d.Policy, oauth: d.OAuth,
		eraser:         d.Eraser,
		remote:         d.RemoteProfiles,
		profiles:       newProfileIndex(),
		now:            time.Now,
		hasher:         h,
		tokens:         newTokenCache(),
		uia:            newUIAStore(cfg.UIASessionLifetime),
		limiter:        d.Limiter,
		reserved:       map[string]bool{},
		loginTokens:    map[string]loginToken{},
		nonces:         map[string]time.Time{},
		accountDataPos: map[spec.UserID]int64{},
		ignored:        map[spec.UserID]map[spec.UserID]bool{},
		cluster:        d.DB.Node() != "",
	}
	if s.limiter == nil {
		s.limiter = NewLimiter(cfg.RateLimits, cfg.Rates)
	}
	for _, r := range cfg.ReservedLocalparts {
		s.reserved[strings.ToLower(r)] = true
	}
	if len(cfg.JWTKey) > 0 {
		if s.jwt, err = newJWTVerifier(cfg.JWTKey, cfg.JWTIssuer, cfg.JWTAudience); err != nil {
			return nil, fmt.Errorf("auth: jwt key: %w", err)
		}
	}
	ctx := context.Background()
	if s.cluster {
		err = s.loadFollowing(ctx)
	} else {
		err = s.loadMemory(func(q string, args ...any) (*sql.Rows, error) { return s.db.Query(ctx, q, args...) })
	}
	if err != nil {
		return nil, err
	}
	if err := s.loadProfileIndex(ctx); err != nil {
		return nil, fmt.Errorf("auth: load profiles: %w", err)
	}
	return s, nil
}

// loadMemory loads the live tokens and the account data memory.
func (s *Service) loadMemory(query rowsQuerier) error {
	rows, admins, err := loadTokens(query)
	if err != nil {
		return fmt.Errorf("auth: load tokens: %w", err)
	}
	now := time.Now().UnixMilli()
	for _, r := range rows {
		s.cacheToken(r, admins[r.user], now)
	}
	if err := s.loadAccountDataMemory(query); err != nil {
		return fmt.Errorf("auth: load account data positions: %w", err)
	}
	return nil
}

// Limiter is the rate limiter, for other packages' limits (sending).
func (s *Service) Limiter() *Limiter { return s.limiter }

// ServerName is the server's name in user IDs.
func (s *Service) ServerName() spec.ServerName { return s.serverName }

// Capabilities are auth's entries of GET /capabilities.
func (s *Service) Capabilities() map[string]any {
	on := map[string]bool{"enabled": true}
	return map[string]any{
		"m.change_password": on,
		"m.set_displayname": on,
		"m.set_avatar_url":  on,
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": on,
		"m.profile_fields":  map[string]any{"enabled": true, "allowed": []string{"displayname", "avatar_url"}},
	}
}

// ErrUserExists is returned by CreateUser for a taken (or once used) ID.
var ErrUserExists = errors.New("user ID already taken")

// CreateUser creates an account: the CLI, shared-secret registration and
// the admin API use it. Reserved names are allowed here; the grammar and
// password rules still apply. An empty password makes an account that
// cannot log in with a password (JWT or admin-issued logins only).
func (s *Service) CreateUser(ctx context.Context, localpart, password string, admin bool) (spec.UserID, error) {
	id, err := s.newUserID(localpart)
	if err != nil {
		return "", err
	}
	var hash string
	if password != "" {
		if err := checkNewPassword(password, s.cfg.MinPasswordLength); err != nil {
			return "", err
		}
		if hash, err = s.hasher.Hash(ctx, password); err != nil {
			return "", err
		}
	}
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		return s.insertAccount(tx, id, hash, admin, localpart)
	})
	if err != nil {
		return "", err
	}
	s.log.Info().Str("user_id", string(id)).Bool("admin", admin).Msg("account created")
	return id, nil
}

// insertAccount inserts a new account, refusing an ID that exists or ever
// existed (deactivated accounts keep their row so IDs are never reused).
func (s *Service) insertAccount(tx *storage.Tx, id spec.UserID, hash string, admin bool, displayName string) error {
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM users WHERE user_id = $1`, string(id)).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return spec.NewError(spec.ErrUserInUse, "the user ID is already taken")
	}
	if err := insertUser(tx, id, hash, admin, displayName, time.Now().UnixMilli()); err != nil {
		return err
	}
	tx.AfterCommit(func() { s.profiles.set(id, displayName, "") })
	return nil
}

// newUserID validates a requested localpart for a new account (lower-cased,
// as user IDs are case-sensitive but people are not).
func (s *Service) newUserID(localpart string) (spec.UserID, error) {
	if len(localpart) > 255 {
		return "", spec.NewError(spec.ErrInvalidUsername, "the user name is too long")
	}
	localpart = strings.ToLower(localpart)
	if err := spec.ValidateLocalpart(localpart); err != nil {
		return "", err
	}
	id := spec.NewUserID(localpart, s.serverName)
	if _, err := spec.ParseUserID(string(id)); err != nil {
		return "", spec.NewError(spec.ErrInvalidUsername, "the user ID would be longer than 255 bytes")
	}
	return id, nil
}

// UserExists reports whether a user has an active account here.
func (s *Service) UserExists(ctx context.Context, user spec.UserID) (bool, error) {
	u, found, err := loadUser(s.reader(ctx), user)
	return found && !u.Deactivated, err
}

// IsAdmin reports whether a user is a server admin.
func (s *Service) IsAdmin(ctx context.Context, user spec.UserID) (bool, error) {
	u, found, err := loadUser(s.reader(ctx), user)
	return found && !u.Deactivated && u.IsAdmin, err
}

// IsDeactivated reports whether an account existed and was deactivated.
func (s *Service) IsDeactivated(ctx context.Context, user spec.UserID) (bool, error) {
	return NewUserReader(s.db).IsDeactivated(ctx, user)
}

// SetAdmin grants or removes server admin rights; live sessions see the
// change at once.
func (s *Service) SetAdmin(ctx context.Context, user spec.UserID, admin bool) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(`UPDATE users SET is_admin = $1 WHERE user_id = $2 AND NOT deactivated`, admin, string(user))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return spec.NotFound("no such user")
		}
		tx.AfterCommit(func() { s.tokens.setAdmin(user, admin) })
		return s.changed(tx, changeTokens, user)
	})
}

// Profile returns a local user's display name and avatar URL; M_NOT_FOUND
// for unknown or deactivated users.
func (s *Service) Profile(ctx context.Context, user spec.UserID) (displayName, avatarURL string, err error) {
	return NewUserReader(s.db).Profile(ctx, user)
}

// IgnoredUsers is the user's m.ignored_user_list, from memory (nil when
// empty). The map is replaced, never changed: callers only read it.
func (s *Service) IgnoredUsers(user spec.UserID) map[spec.UserID]bool {
	s.adMu.RLock()
	defer s.adMu.RUnlock()
	return s.ignored[user]
}

// AccountDataPosition is the highest stream position of the user's account
// data, from memory: /sync compares it with its since token and reads
// nothing when there is nothing new.
func (s *Service) AccountDataPosition(user spec.UserID) int64 {
	s.adMu.RLock()
	defer s.adMu.RUnlock()
	return s.accountDataPos[user]
}

// AccountData returns the user's account data events ({"type","content"})
// whose position is in (since, until]: global ones, and per room. Only the
// latest content of each type is kept, so each type appears once.
func (s *Service) AccountData(ctx context.Context, user spec.UserID, since, until int64) (global []json.RawMessage, rooms map[spec.RoomID][]json.RawMessage, err error) {
	if s.AccountDataPosition(user) <= since {
		return nil, nil, nil
	}
	return s.accountDataBetween(ctx, user, since, until)
}

// lookupLocal turns a user given as a localpart or full ID into a local
// user ID; ok is false for another server's user or an invalid ID.
func (s *Service) lookupLocal(user string) (spec.UserID, bool) {
	if strings.HasPrefix(user, "@") {
		id, err := spec.ParseUserID(user)
		if err != nil || id.Server() != s.serverName {
			return "", false
		}
		return spec.NewUserID(strings.ToLower(id.Localpart()), s.serverName), true
	}
	if user == "" || strings.ContainsAny(user, ":\x00") {
		return "", false
	}
	id := spec.NewUserID(strings.ToLower(user), s.serverName)
	if _, err := spec.ParseUserID(string(id)); err != nil {
		return "", false
	}
	return id, true
}
