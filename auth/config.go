package auth

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Registration modes.
const (
	RegistrationByToken = "token"  // invite-only: flow m.login.registration_token
	RegistrationOpen    = "open"   // anyone: flow m.login.dummy
	RegistrationClosed  = "closed" // only admins create accounts (CLI, admin API)
)

// Config is what an admin can tune about accounts and sessions. cmd fills it
// from its own configuration; DefaultConfig gives the values of a first run.
type Config struct {
	// Registration is token, open or closed.
	Registration string
	// SharedSecret enables /_synapse/admin/v1/register when not empty.
	SharedSecret string

	// Argon2 are the password hashing parameters for new hashes. A stored
	// hash with other parameters is re-hashed at the next successful login.
	Argon2 Argon2Params
	// HashConcurrency bounds how many hashes run at once, so that a flood of
	// logins costs at most HashConcurrency × Argon2.MemoryKiB of memory.
	HashConcurrency int
	// HashQueue bounds how many requests may wait for a hashing slot; past
	// it, logins are refused with 429 rather than piling up.
	HashQueue int

	// MinPasswordLength is the shortest password accepted (in characters).
	MinPasswordLength int
	// ReservedLocalparts cannot be registered through /register (the CLI
	// and the shared-secret API may still create them).
	ReservedLocalparts []string

	// AccessTokenLifetime, when positive, makes access tokens issued to
	// clients that support refresh tokens expire after this long; they then
	// use POST /refresh. Zero: tokens do not expire and no refresh token is
	// issued.
	AccessTokenLifetime time.Duration
	// RefreshTokenLifetime bounds how long an unused refresh token stays
	// valid (zero: until used or the device is deleted).
	RefreshTokenLifetime time.Duration

	// JWTKey is the verification key for org.matrix.login.jwt: the contents
	// of a PEM public key, a JWK or JWK set, or an HMAC secret. Empty: JWT
	// login is off.
	JWTKey []byte
	// JWTIssuer and JWTAudience, when set, must match the token's claims.
	JWTIssuer   string
	JWTAudience string
	// NoPasswordLogin stops offering m.login.password at /login, for a
	// server whose people sign in through the OAuth 2.0 API's pages; the
	// token and JWT logins, and the password in user-interactive auth,
	// stay.
	NoPasswordLogin bool

	// ProfileLookup says who may read a profile with GET /profile:
	// ProfileLookupSharedRooms (logged-in users, for themselves and users
	// they share a room with), ProfileLookupAuthenticated (any logged-in
	// user) or ProfileLookupOpen (anyone, without a token).
	ProfileLookup string

	// RateLimits switches every limit off when false (test deployments).
	RateLimits bool
	// Rates per limited action. Missing entries use DefaultRates.
	Rates map[string]Rate

	// UIASessionLifetime is how long a user-interactive auth session (and
	// the registration token use it reserves) lives.
	UIASessionLifetime time.Duration
	// LoginTokenLifetime is the lifetime of m.login.token tokens.
	LoginTokenLifetime time.Duration
	// OpenIDTokenLifetime is the lifetime of OpenID tokens.
	OpenIDTokenLifetime time.Duration
}

// Argon2Params are Argon2id's cost parameters.
type Argon2Params struct {
	MemoryKiB   uint32
	Iterations  uint32
	Parallelism uint8
}

// MinArgon2 is the floor below which Chatalot refuses to hash: the OWASP
// Password Storage Cheat Sheet's first Argon2id configuration
// (19 MiB, 2 iterations, 1 degree of parallelism).
var MinArgon2 = Argon2Params{MemoryKiB: 19456, Iterations: 2, Parallelism: 1}

// owaspArgon2 are the cheat sheet's equivalent Argon2id configurations.
var owaspArgon2 = []Argon2Params{
	{MemoryKiB: 47104, Iterations: 1}, {MemoryKiB: 19456, Iterations: 2},
	{MemoryKiB: 12288, Iterations: 3}, {MemoryKiB: 9216, Iterations: 4},
	{MemoryKiB: 7168, Iterations: 5},
}

// Profile lookup policies (GET /profile): the spec lets a server require
// authentication and answer only for users who share a room with the
// requester.
const (
	ProfileLookupSharedRooms   = "shared_rooms"
	ProfileLookupAuthenticated = "authenticated"
	ProfileLookupOpen          = "open"
)

// Rate limit classes.
const (
	RateLogin         = "login"          // per client address, every /login attempt
	RateLoginFailures = "login_failures" // per account and client address, failed password checks (login and UIA)
	RateRegister      = "register"       // per client address, /register and token validity
	RateSend          = "send"           // per user, sending events (rooms)
	RateDelayedEvents = "delayed_events" // per client address, managing delayed events (schedule)
	RateRooms         = "rooms"          // per user, rooms created (createRoom, upgrades)
	RateMembership    = "membership"     // per user, joins, knocks, invites, leaves, kicks, bans, unbans, forgets
	RateProfile       = "profile"        // per user, member events a profile change makes: one per joined room
	RateReports       = "reports"        // per user, reports of rooms, events and users
	RateAccountData   = "account_data"   // per user, account data and tag writes
	RateToDevice      = "to_device"      // per user, to-device messages: one per recipient device, or user for "*"
	RateWrites        = "writes"         // per user, every authenticated request that is not a read
)

// DefaultRates are the limits of a default deployment.
func DefaultRates() map[string]Rate {
	return map[string]Rate{
		RateLogin:         {Count: 10, Per: time.Minute},
		RateLoginFailures: {Count: 5, Per: time.Minute},
		RateRegister:      {Count: 10, Per: time.Hour},
		RateSend:          {Count: 20, Per: 10 * time.Second},
		// MatrixRTC clients restart their delayed "leave" every few
		// seconds while in a call; a household behind one address fits.
		RateDelayedEvents: {Count: 120, Per: time.Minute},
		RateRooms:         {Count: 10, Per: time.Minute},
		RateMembership:    {Count: 30, Per: time.Minute},
		RateProfile:       {Count: 100, Per: time.Minute},
		RateReports:       {Count: 10, Per: time.Minute},
		RateAccountData:   {Count: 60, Per: time.Minute},
		RateToDevice:      {Count: 3000, Per: time.Minute},
		RateWrites:        {Count: 600, Per: time.Minute},
	}
}

// DefaultConfig is the configuration of a first run.
func DefaultConfig() Config {
	return Config{
		Registration:        RegistrationByToken,
		ProfileLookup:       ProfileLookupSharedRooms,
		Argon2:              MinArgon2,
		HashConcurrency:     runtime.NumCPU(),
		HashQueue:           256,
		MinPasswordLength:   8,
		ReservedLocalparts:  DefaultReservedLocalparts,
		RateLimits:          true,
		Rates:               DefaultRates(),
		UIASessionLifetime:  15 * time.Minute,
		LoginTokenLifetime:  2 * time.Minute,
		OpenIDTokenLifetime: time.Hour,
	}
}

// DefaultReservedLocalparts are names people could mistake for the
// server's own voice.
var DefaultReservedLocalparts = []string{
	"admin", "administrator", "root", "system", "server", "chatalot", "support",
	"security", "abuse", "postmaster", "hostmaster", "webmaster", "moderator",
	"notices", "server-notices", "noreply", "no-reply",
}

// MaxPasswordLength is the longest password accepted, in bytes: enough for
// any passphrase, short enough that hashing cost does not depend on input.
const MaxPasswordLength = 512

// validate fills zero fields with defaults and refuses unsafe settings.
func (c *Config) validate() error {
	d := DefaultConfig()
	if c.Registration == "" {
		c.Registration = d.Registration
	}
	switch c.Registration {
	case RegistrationByToken, RegistrationOpen, RegistrationClosed:
	default:
		return fmt.Errorf("registration: %q is not token, open or closed", c.Registration)
	}
	if c.ProfileLookup == "" {
		c.ProfileLookup = d.ProfileLookup
	}
	switch c.ProfileLookup {
	case ProfileLookupSharedRooms, ProfileLookupAuthenticated, ProfileLookupOpen:
	default:
		return fmt.Errorf("profile_lookup: %q is not shared_rooms, authenticated or open", c.ProfileLookup)
	}
	if c.Argon2 == (Argon2Params{}) {
		c.Argon2 = d.Argon2
	}
	if err := c.Argon2.check(); err != nil {
		return err
	}
	if c.HashConcurrency <= 0 {
		c.HashConcurrency = d.HashConcurrency
	}
	if c.HashQueue <= 0 {
		c.HashQueue = d.HashQueue
	}
	if c.MinPasswordLength <= 0 {
		c.MinPasswordLength = d.MinPasswordLength
	}
	if c.MinPasswordLength > MaxPasswordLength {
		return fmt.Errorf("password_min_length: at most %d", MaxPasswordLength)
	}
	if c.ReservedLocalparts == nil {
		c.ReservedLocalparts = d.ReservedLocalparts
	}
	if c.AccessTokenLifetime < 0 || c.RefreshTokenLifetime < 0 {
		return errors.New("token lifetimes must not be negative")
	}
	if c.AccessTokenLifetime > 0 && c.AccessTokenLifetime < time.Minute {
		return errors.New("access_token_lifetime: at least 1m")
	}
	rates := DefaultRates()
	for k, v := range c.Rates {
		if _, ok := rates[k]; !ok {
			return fmt.Errorf("rate limit %q: unknown class", k)
		}
		if v.Count <= 0 || v.Per <= 0 {
			return fmt.Errorf("rate limit %q: count and period must be positive", k)
		}
		rates[k] = v
	}
	c.Rates = rates
	if c.UIASessionLifetime <= 0 {
		c.UIASessionLifetime = d.UIASessionLifetime
	}
	if c.LoginTokenLifetime <= 0 {
		c.LoginTokenLifetime = d.LoginTokenLifetime
	}
	if c.OpenIDTokenLifetime <= 0 {
		c.OpenIDTokenLifetime = d.OpenIDTokenLifetime
	}
	return nil
}

// Check refuses parameters below the OWASP floor (see MinArgon2).
func (p Argon2Params) Check() error { return p.check() }

func (p Argon2Params) check() error {
	if p.Parallelism == 0 {
		return errors.New("argon2 parallelism must be at least 1")
	}
	if p.Iterations == 0 || p.MemoryKiB < 8*uint32(p.Parallelism) {
		return errors.New("argon2 parameters out of range")
	}
	// Memory and passes trade against each other: OWASP lists equivalent
	// pairs. The parameters pass if they reach one pair in both.
	ok := false
	for _, floor := range owaspArgon2 {
		if p.MemoryKiB >= floor.MemoryKiB && p.Iterations >= floor.Iterations {
			ok = true
		}
	}
	if !ok {
		return fmt.Errorf("argon2 parameters m=%d,t=%d are below the OWASP minimum (m=%d,t=%d or an equivalent pair)",
			p.MemoryKiB, p.Iterations, MinArgon2.MemoryKiB, MinArgon2.Iterations)
	}
	if p.MemoryKiB > 4<<20 {
		return errors.New("argon2 memory above 4 GiB")
	}
	return nil
}

// Rate is a token bucket: Count actions at once, refilled at Count per Per.
type Rate struct {
	Count int
	Per   time.Duration
}

func (r Rate) String() string { return strconv.Itoa(r.Count) + "/" + r.Per.String() }

// ParseRate reads "COUNT/DURATION", for example "10/1m".
func ParseRate(s string) (Rate, error) {
	n, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, fmt.Errorf("%q is not COUNT/DURATION (for example 10/1m)", s)
	}
	count, err := strconv.Atoi(n)
	if err != nil || count <= 0 {
		return Rate{}, fmt.Errorf("%q: the count must be a positive integer", s)
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return Rate{}, fmt.Errorf("%q: the period must be a positive duration such as 1m", s)
	}
	return Rate{Count: count, Per: d}, nil
}
