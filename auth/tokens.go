package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"github.com/chatalot/chatalot/api"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Token prefixes make a leaked token recognisable (secret scanners, logs)
// and tell the kinds apart; the secret is the 256 random bits after them.
const (
	prefixAccess  = "cha_"
	prefixRefresh = "chr_"
	prefixLogin   = "chl_"
	prefixOpenID  = "cho_"
)

// newToken returns a token of 256 random bits, URL-safe.
func newToken(prefix string) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never happens on supported systems
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// hashToken is what is stored and looked up: tokens themselves are never
// kept, so a copy of the database does not let anyone act as a user. A
// plain SHA-256 is enough here (unlike passwords) because the token has 256
// bits of entropy: nothing to brute-force.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// session is one live access token in memory.
type session struct {
	hash     string
	user     spec.UserID
	deviceID string
	expires  int64 // unix ms; 0: never
	// dev is shared read-only by the requests using this token; a change
	// (admin flag) swaps in a new Device.
	dev atomic.Pointer[Device]
	// parent is the token this one replaced through /refresh; it stays
	// valid until this one is first used, then is revoked.
	parent atomic.Pointer[string]
	// lastSeen is when the token was last used; persisted lazily.
	lastSeen  atomic.Int64
	persisted atomic.Int64
	retiring  atomic.Bool
}

// tokenCache maps token hashes to sessions. Outside a cluster it holds
// every live token: the database is read once at start, so authenticating
// a request — including one with a made-up token — never reads the
// database. On a cluster node a miss reads the database (follow.go).
type tokenCache struct {
	mu     sync.RWMutex
	byHash map[string]*session
	byUser map[spec.UserID]map[string]*session
	// gen counts the changes that drop or change sessions: a session read
	// from the database is cached only if none happened during the read.
	gen uint64
}

func newTokenCache() *tokenCache {
	return &tokenCache{byHash: map[string]*session{}, byUser: map[spec.UserID]map[string]*session{}}
}

func (tc *tokenCache) get(hash string) *session {
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	return tc.byHash[hash]
}

func (tc *tokenCache) add(s *session) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.byHash[s.hash] = s
	m := tc.byUser[s.user]
	if m == nil {
		m = map[string]*session{}
		tc.byUser[s.user] = m
	}
	m[s.hash] = s
}

// generation is the count of changes so far (see addIfUnchanged).
func (tc *tokenCache) generation() uint64 {
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	return tc.gen
}

// addIfUnchanged caches s, read from the database when the cache was at
// generation gen, unless a change happened since (the read may predate
// it) or another request cached the token first; it returns the session
// to use either way.
func (tc *tokenCache) addIfUnchanged(s *session, gen uint64) *session {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if cached := tc.byHash[s.hash]; cached != nil {
		return cached
	}
	if tc.gen != gen {
		return s
	}
	tc.byHash[s.hash] = s
	m := tc.byUser[s.user]
	if m == nil {
		m = map[string]*session{}
		tc.byUser[s.user] = m
	}
	m[s.hash] = s
	return s
}

func (tc *tokenCache) remove(hashes ...string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.gen++
	for _, h := range hashes {
		s, ok := tc.byHash[h]
		if !ok {
			continue
		}
		delete(tc.byHash, h)
		if m := tc.byUser[s.user]; m != nil {
			delete(m, h)
			if len(m) == 0 {
				delete(tc.byUser, s.user)
			}
		}
	}
}

// removeDevice drops every token of one device ("" for all devices).
func (tc *tokenCache) removeDevice(user spec.UserID, deviceID string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.gen++
	for h, s := range tc.byUser[user] {
		if deviceID == "" || s.deviceID == deviceID {
			delete(tc.byHash, h)
			delete(tc.byUser[user], h)
		}
	}
	if len(tc.byUser[user]) == 0 {
		delete(tc.byUser, user)
	}
}

// removeUserExcept drops every token of a user except one.
func (tc *tokenCache) removeUserExcept(user spec.UserID, keep string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.gen++
	for h := range tc.byUser[user] {
		if h != keep {
			delete(tc.byHash, h)
			delete(tc.byUser[user], h)
		}
	}
	if len(tc.byUser[user]) == 0 {
		delete(tc.byUser, user)
	}
}

// setAdmin replaces the Device of every session of a user. Devices are
// shared read-only between requests, so they are replaced, not mutated.
func (tc *tokenCache) setAdmin(user spec.UserID, admin bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.gen++
	for _, s := range tc.byUser[user] {
		d := *s.dev.Load()
		d.IsAdmin = admin
		s.dev.Store(&d)
	}
}

// lastSeen is the latest use of a device's tokens seen in memory.
func (tc *tokenCache) lastSeen(user spec.UserID) map[string]int64 {
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	out := map[string]int64{}
	for _, s := range tc.byUser[user] {
		if t := s.lastSeen.Load(); t > out[s.deviceID] {
			out[s.deviceID] = t
		}
	}
	return out
}

func (tc *tokenCache) size() int {
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	return len(tc.byHash)
}

const (
	tokenHashKey = "chatalot.token_hash"
	// lastSeenPersistEvery: last_seen_ts is advisory ("may be a few minutes
	// out of date"), so it is written at most this often per token instead
	// of on every request.
	lastSeenPersistEvery = 5 * time.Minute
)

// bearerToken reads the access token from the Authorization header or,
// failing that, the access_token query parameter. The query parameter was
// deprecated in spec v1.11 and dropped in v1.20; Chatalot advertises older
// versions, whose clients and bots may still send it, so it is accepted
// (the header wins when both are there). The access log never records query
// strings, so such a token does not reach the logs.
func bearerToken(r *http.Request) (string, *spec.Error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if tok := r.URL.Query().Get("access_token"); tok != "" {
			return tok, nil
		}
		return "", spec.NewError(spec.ErrMissingToken, "missing access token")
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", spec.NewError(spec.ErrMissingToken, "the Authorization header must be \"Bearer TOKEN\"")
	}
	return strings.TrimSpace(tok), nil
}

func unknownToken(soft bool) *spec.Error {
	msg := "unknown access token"
	if soft {
		msg = "the access token has expired"
	}
	return spec.NewError(spec.ErrUnknownToken, "%s", msg).With("soft_logout", soft)
}

// Middleware requires a valid access token and sets the caller's Device on
// the request: 401 M_MISSING_TOKEN without one, 401 M_UNKNOWN_TOKEN for an
// unknown or revoked token (soft_logout false) or an expired one
// (soft_logout true: the client may refresh or log in again keeping its
// device). Outside a cluster it reads no database.
func (s *Service) Middleware() gin.HandlerFunc {
	return api.Middleware(func(c *gin.Context) error {
		tok, merr := bearerToken(c.Request)
		if merr != nil {
			return merr
		}
		sess, err := s.session(c.Request.Context(), hashToken(tok))
		if err != nil {
			return err
		}
		if sess == nil {
			return unknownToken(false)
		}
		now := s.now().UnixMilli()
		if sess.expires != 0 && now >= sess.expires {
			return unknownToken(true)
		}
		if sess.parent.Load() != nil {
			s.retireParent(c.Request.Context(), sess)
		}
		s.touch(sess, now)
		dev := sess.dev.Load()
		if s.policy != nil { // locked and suspended accounts (admin.go)
			if err := s.policy.CheckRequest(c, dev); err != nil {
				return err
			}
		}
		if changesSomething(c.Request.Method) {
			// The backstop under the tighter limits of each kind of
			// action: nothing an account stores is unlimited.
			if err := s.limiter.AllowUser(c, dev, RateWrites); err != nil {
				return err
			}
		}
		SetDevice(c, dev)
		c.Set(tokenHashKey, sess.hash)
		return nil
	})
}

// changesSomething reports whether a request method may store anything.
// Some POSTs only read (keys/query, search); they count all the same.
func changesSomething(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

// retireParent revokes the token that sess replaced, now that sess is in
// use (spec: the old refresh token stays valid until the new access or
// refresh token is used). A failure only delays it to the next request.
func (s *Service) retireParent(ctx context.Context, sess *session) {
	parent := sess.parent.Load()
	if parent == nil || !sess.retiring.CompareAndSwap(false, true) {
		return
	}
	defer sess.retiring.Store(false)
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := deleteToken(tx, *parent); err != nil {
			return err
		}
		if err := clearParent(tx, sess.hash); err != nil {
			return err
		}
		if err := s.changed(tx, changeTokens, sess.user); err != nil {
			return err
		}
		tx.AfterCommit(func() {
			s.tokens.remove(*parent)
			sess.parent.Store(nil)
		})
		return nil
	})
	if err != nil {
		s.log.Warn().Err(err).Msg("could not revoke a refreshed token")
	}
}

// touch records the token's use; the database copy is refreshed at most
// every lastSeenPersistEvery, off the request path.
func (s *Service) touch(sess *session, now int64) {
	sess.lastSeen.Store(now)
	p := sess.persisted.Load()
	if now-p < lastSeenPersistEvery.Milliseconds() || !sess.persisted.CompareAndSwap(p, now) {
		return
	}
	go func() {
		_ = s.db.Write(context.Background(), func(tx *storage.Tx) error {
			_, err := tx.Exec(`UPDATE devices SET last_seen_ts = $1 WHERE user_id = $2 AND device_id = $3`, now, string(sess.user), sess.deviceID)
			return err
		})
	}()
}

// issued is what login, registration and refresh return.
type issued struct {
	AccessToken  string `json:"access_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
}

// newTokenRow makes a token pair for a device. withRefresh asks for an
// expiring access token with a refresh token, when the server is configured
// for them.
func (s *Service) newTokenRow(user spec.UserID, deviceID string, withRefresh bool, now time.Time) (tokenRow, issued) {
	access := newToken(prefixAccess)
	row := tokenRow{hash: hashToken(access), user: user, deviceID: deviceID}
	out := issued{AccessToken: access}
	if withRefresh && s.cfg.AccessTokenLifetime > 0 {
		refresh := newToken(prefixRefresh)
		row.refreshHash = hashToken(refresh)
		row.expires = now.Add(s.cfg.AccessTokenLifetime).UnixMilli()
		if s.cfg.RefreshTokenLifetime > 0 {
			row.refreshExpires = now.Add(s.cfg.RefreshTokenLifetime).UnixMilli()
		}
		out.RefreshToken = refresh
		out.ExpiresInMS = s.cfg.AccessTokenLifetime.Milliseconds()
	}
	return row, out
}

// cacheToken registers a committed token in memory (call from AfterCommit).
func (s *Service) cacheToken(row tokenRow, admin bool, now int64) {
	s.tokens.add(s.newSession(row, admin, now))
}

// newSession is the session of a stored token.
func (s *Service) newSession(row tokenRow, admin bool, now int64) *session {
	sess := &session{hash: row.hash, user: row.user, deviceID: row.deviceID, expires: row.expires}
	sess.dev.Store(&Device{UserID: row.user, DeviceID: row.deviceID, IsAdmin: admin})
	if row.parent != "" {
		p := row.parent
		sess.parent.Store(&p)
	}
	sess.persisted.Store(now)
	sess.lastSeen.Store(now)
	return sess
}
