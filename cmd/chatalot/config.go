package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/chatalot/chatalot/admin"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/push"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Config is the whole server configuration. Each field is settable, in
// increasing precedence, by its default, the TOML file, a CHATALOT_* variable
// and a command-line flag; the `toml` tag names the key in all three
// (flag --key-with-dashes, variable CHATALOT_KEY_IN_CAPITALS).
type Config struct {
	ServerName         string `toml:"server_name"      help:"the server name in user IDs (@alice:NAME), lower case, no port; the data directory records it at the first start and refuses another"`
	Listen             string `toml:"listen"           help:"address to listen on (HOST:PORT)"`
	DataDir            string `toml:"data_dir"         help:"directory for the database, signing key and media"`
	Database           string `toml:"database"         help:"empty: the SQLite file chatalot.db in data_dir; or a postgres://USER:PASSWORD@HOST:PORT/DB URL to keep the data in PostgreSQL (the signing key and media stay in data_dir)" secret:"true"`
	PublicBaseURL      string `toml:"public_baseurl"   help:"URL clients reach the server at, for .well-known (default http://LISTEN)"`
	Registration       string `toml:"registration"     help:"who may register: token (invite codes), open, or closed"`
	SharedSecret       string `toml:"registration_shared_secret" help:"enables /_synapse/admin/v1/register for bots and tools (secret)" secret:"true"`
	ProfileLookup      string `toml:"profile_lookup"   help:"who may read profiles: shared_rooms (logged-in users, their own and those of users the user directory shows them: room-mates and members of public rooms), authenticated (any logged-in user) or open (anyone, without a token)"`
	Encryption         string `toml:"encryption"       help:"required (refuse plaintext in encrypted rooms), default (encrypt new rooms), or optional"`
	DefaultRoomVersion string `toml:"default_room_version" help:"room version of new rooms when the client names none (any stable version, 1 to 12)"`
	RateLimits         string `toml:"rate_limits"      help:"on or off (off only for test deployments)"`
	LogLevel           string `toml:"log_level"        help:"debug, info, warn or error"`
	LogFormat          string `toml:"log_format"       help:"console or json"`
	LogIPAddresses     bool   `toml:"log_ip_addresses" help:"log client IP addresses (off: no IP history is kept)"`
	TrustedProxies     string `toml:"trusted_proxies"  help:"comma-separated addresses or CIDR ranges of reverse proxies whose X-Forwarded-For is believed (e.g. 127.0.0.1 behind Caddy or nginx)"`
	MaxBodyBytes       int64  `toml:"max_body_bytes"   help:"largest JSON request body in bytes"`
	Durability         string `toml:"durability"       help:"normal (survives a process crash) or full (fsync at every commit, survives power loss)"`
	ShutdownGrace      string `toml:"shutdown_grace"   help:"how long in-flight requests may take to finish at shutdown"`
	HeaderTimeout      string `toml:"read_header_timeout" help:"how long a client may take to send its request headers (slow clients are cut off)"`
	BodyIdle           string `toml:"body_idle_timeout" help:"how long a request body (an upload) may stall before the client is cut off"`
	BodyMinRate        int64  `toml:"body_min_rate"     help:"least average rate in bytes per second a request body must arrive at once body_idle_timeout has passed (0: no minimum)"`
	WriteIdle          string `toml:"write_idle_timeout" help:"how long a client may stop reading a response before it is cut off (long-polls may wait as long as they ask before answering)"`
	MaxConnsPerIP      int64  `toml:"max_connections_per_address" help:"open connections one client address (IPv6: one /64) may hold; trusted_proxies are exempt (0: no cap)"`
	Presence           bool   `toml:"presence"         help:"share online/offline presence with people in the same rooms (kept in memory only)"`

	MaxUploadBytes       int64  `toml:"max_upload_bytes"     help:"largest media upload in bytes"`
	MediaQuotaBytes      int64  `toml:"media_quota_bytes"    help:"media storage each user may use, in bytes (0: no quota)"`
	MaxThumbnailPixels   int64  `toml:"max_thumbnail_pixels" help:"largest image (width x height) decoded to make a thumbnail; larger ones get none"`
	UnauthenticatedMedia bool   `toml:"unauthenticated_media" help:"serve the deprecated unauthenticated /_matrix/media/v3 download and thumbnail endpoints to anyone who knows an mxc:// URI (off: frozen, as the spec recommends)"`
	TURNURIs             string `toml:"turn_uris"            help:"comma-separated turn: and turns: URIs handed to clients for calls (none by default)"`
	TURNSharedSecret     string `toml:"turn_shared_secret"   help:"static-auth-secret shared with the TURN server (coturn use-auth-secret)" secret:"true"`
	TURNUserLifetime     string `toml:"turn_user_lifetime"   help:"how long issued TURN credentials stay valid"`

	PasswordMinLength    int64  `toml:"password_min_length"    help:"shortest password accepted, in characters"`
	Argon2MemoryKiB      int64  `toml:"argon2_memory_kib"      help:"Argon2id memory per password hash in KiB (OWASP minimum 19456 with 2 iterations)"`
	Argon2Iterations     int64  `toml:"argon2_iterations"      help:"Argon2id passes per password hash"`
	Argon2Parallelism    int64  `toml:"argon2_parallelism"     help:"Argon2id lanes per password hash"`
	HashConcurrency      int64  `toml:"hash_concurrency"       help:"password hashes computed at once (bounds memory under a login flood; 0: one per CPU)"`
	AccessTokenLifetime  string `toml:"access_token_lifetime"  help:"lifetime of access tokens for clients that support refresh tokens, such as 1h (empty: tokens do not expire and no refresh tokens are issued)"`
	RefreshTokenLifetime string `toml:"refresh_token_lifetime" help:"how long an unused refresh token stays valid, such as 720h (empty: until used)"`
	JWTKeyFile           string `toml:"jwt_key_file"           help:"enables org.matrix.login.jwt: file with the verification key (PEM public key, JWK or JWK set, or an HMAC secret)"`
	JWTIssuer            string `toml:"jwt_issuer"             help:"required iss claim of login JWTs (empty: not checked)"`
	JWTAudience          string `toml:"jwt_audience"           help:"required aud claim of login JWTs (empty: not checked)"`
	RateLimitLogin       string `toml:"rate_limit_login"       help:"login attempts per client address, COUNT/PERIOD"`
	RateLimitLoginFail   string `toml:"rate_limit_login_failures" help:"failed password checks per account from one client address, COUNT/PERIOD"`
	RateLimitRegister    string `toml:"rate_limit_register"    help:"registration requests per client address, COUNT/PERIOD"`
	RateLimitSend        string `toml:"rate_limit_send"        help:"events sent per user, COUNT/PERIOD (admins are exempt)"`
	RateLimitRooms       string `toml:"rate_limit_rooms"       help:"rooms created (createRoom, upgrades) per user, COUNT/PERIOD"`
	RateLimitMembership  string `toml:"rate_limit_membership"  help:"joins, knocks, invites, leaves, kicks, bans, unbans and forgets per user, COUNT/PERIOD"`
	RateLimitProfile     string `toml:"rate_limit_profile"     help:"member events made by profile changes per user (a change costs one per joined room), COUNT/PERIOD"`
	RateLimitReports     string `toml:"rate_limit_reports"     help:"reports of rooms, events and users per user, COUNT/PERIOD"`
	RateLimitAccountData string `toml:"rate_limit_account_data" help:"account data and tag writes per user, COUNT/PERIOD"`
	RateLimitToDevice    string `toml:"rate_limit_to_device"   help:"to-device messages per user (one per recipient device, or per user for *), COUNT/PERIOD"`
	RateLimitWrites      string `toml:"rate_limit_writes"      help:"authenticated requests that are not reads (GET), of any kind, per user, COUNT/PERIOD"`
	OAuth                bool   `toml:"oauth"                  help:"serve the spec's OAuth 2.0 API (sign-in pages, client registration, tokens) at public_baseurl, and advertise it at /_matrix/client/v1/auth_metadata; /login keeps working beside it"`
	OAuthTokenLifetime   string `toml:"oauth_access_token_lifetime" help:"lifetime of the access tokens the OAuth 2.0 API issues (clients renew them with their refresh token)"`
	PasswordLogin        bool   `toml:"password_login"         help:"offer password login (m.login.password) at /login; turn off with oauth = true so that people sign in only on the OAuth 2.0 API's pages (token and JWT logins stay)"`

	Metrics       bool   `toml:"metrics"        help:"serve Prometheus metrics at /metrics: counts and latencies, never identifiers; nothing is sent anywhere"`
	MetricsListen string `toml:"metrics_listen" help:"address of the metrics listener, loopback unless metrics_token is set (empty: /metrics on the main listener, token required)"`
	MetricsToken  string `toml:"metrics_token"  help:"bearer token scrapers must send for /metrics (empty: none, loopback listener only)" secret:"true"`

	PushAllowPrivateGateways bool   `toml:"push_allow_private_gateways" help:"let pushers use push gateways on loopback, private or link-local addresses, and plain http (tests and LAN gateways only: otherwise a user could make the server reach its own network)"`
	PushFullFormat           bool   `toml:"push_full_format"            help:"send message content, sender and room name to push gateways whose pusher did not ask for event_id_only (off: only event and room IDs and counts leave the server)"`
	PushRetryBackoff         string `toml:"push_retry_backoff"          help:"delay before retrying a failed push to a gateway, doubled at each failure up to 5m"`
	PushRetryLimit           string `toml:"push_retry_limit"            help:"how long a push to a gateway is retried before it is dropped"`

	SupportAdminContacts    string `toml:"support_admin_contacts"    help:"comma-separated Matrix IDs and email addresses of the server's admins, published at /.well-known/matrix/support"`
	SupportSecurityContacts string `toml:"support_security_contacts" help:"comma-separated Matrix IDs and email addresses for security reports, published at /.well-known/matrix/support"`
	SupportPage             string `toml:"support_page"              help:"URL of a help page for this server's users, published at /.well-known/matrix/support"`
	ServerNoticesUser       string `toml:"server_notices_user"       help:"localpart of the account that sends server notices (created without a password on first use)"`
	AdminAPI                string `toml:"admin_api"                 help:"where /_synapse/admin is served: loopback (requests made on this machine, not through a reverse proxy), on (everywhere; admin tokens still required) or off"`

	Federation         bool   `toml:"federation"            help:"share rooms with other Matrix servers (off: no federation routes but the server key and version, and nothing leaves the server); server_name may then have a port"`
	FederationListen   string `toml:"federation_listen"     help:"address of the federation listener, served over TLS with federation_tls_cert and federation_tls_key (empty: federation is served on the main listener, behind a reverse proxy that terminates TLS)"`
	FederationCert     string `toml:"federation_tls_cert"   help:"PEM certificate chain of the federation listener, valid for server_name's host"`
	FederationKey      string `toml:"federation_tls_key"    help:"PEM private key of federation_tls_cert" secret:"true"`
	FederationCA       string `toml:"federation_ca_file"    help:"PEM bundle of CAs trusted, beside the system roots, to verify other servers' certificates (a private or test CA)"`
	FederationAllow    string `toml:"federation_allow"      help:"comma-separated server names: the only servers federated with (empty: any server not denied)"`
	FederationDeny     string `toml:"federation_deny"       help:"comma-separated server names never federated with: their requests are refused and nothing is sent to them"`
	FederationPresence bool   `toml:"federation_presence"   help:"send presence to other servers and accept theirs (only with presence on; typing and read receipts are always shared with a room's servers)"`

	RetentionDefault  string `toml:"retention_default_max_lifetime" help:"how long messages are kept in rooms whose m.room.retention sets no max_lifetime, such as 720h (empty: until purged)"`
	RetentionMin      string `toml:"retention_min_lifetime"         help:"shortest max_lifetime a room's m.room.retention may set; shorter ones are raised to it (empty: no minimum)"`
	RetentionMax      string `toml:"retention_max_lifetime"         help:"longest max_lifetime a room's m.room.retention may set; longer ones are lowered to it (empty: no maximum)"`
	RetentionInterval string `toml:"retention_purge_interval"       help:"how often messages past their room's lifetime are purged"`

	ForgottenRoomRetention   string `toml:"forgotten_room_retention_period"  help:"purge, with every row about it, a room that every local member has left and forgotten (or whose accounts are deactivated) and where nothing happened for this long, unless it is in the room directory (empty: never)"`
	MediaRetentionUnaccessed string `toml:"media_retention_local_unaccessed" help:"delete this server's media not downloaded for this long, such as 2160h (empty: kept; quarantined media is always kept)"`
	MediaRetentionMaxAge     string `toml:"media_retention_max_age"          help:"delete this server's media uploaded this long ago, however often it is downloaded, such as 8760h (empty: kept; quarantined media is always kept)"`
	MediaRetentionInterval   string `toml:"media_retention_interval"         help:"how often expired media and orphaned files are deleted, when a media retention is set"`
	MediaRetentionRemote     string `toml:"media_retention_remote_unaccessed" help:"delete the cached copies of other servers' media not downloaded for this long, such as 720h (empty: kept; fetched again when asked for after a deletion)"`

	// durations are the duration settings above, parsed once by Validate;
	// the rest of the program reads these, never the strings.
	durations durations
}

// durations are the configuration's duration settings as time.Duration.
type durations struct {
	shutdownGrace, headerTimeout, bodyIdle, writeIdle time.Duration
	accessTokenLifetime, refreshTokenLifetime         time.Duration // 0: none
	turnUserLifetime, oauthTokenLifetime              time.Duration
	pushRetryBackoff, pushRetryLimit                  time.Duration
	retention                                         admin.RetentionPolicy // 0: no bound
	mediaRetention                                    admin.MediaRetention  // 0: media kept
	forgottenRoomRetention                            time.Duration         // 0: never collected
}

// defaults are what a server started with no configuration uses.
func defaults() Config {
	return Config{
		ServerName:         "localhost",
		Listen:             "127.0.0.1:8008",
		DataDir:            "./data",
		Registration:       "token",
		ProfileLookup:      auth.ProfileLookupSharedRooms,
		Encryption:         "required",
		DefaultRoomVersion: string(spec.DefaultRoomVersion),
		RateLimits:         "on",
		LogLevel:           "info",
		LogFormat:          "console",
		MaxBodyBytes:       1 << 20,
		Durability:         "normal",
		ShutdownGrace:      "10s",
		HeaderTimeout:      "10s",
		BodyIdle:           "30s",
		BodyMinRate:        1024,
		WriteIdle:          "30s",
		MaxConnsPerIP:      100,
		Presence:           true,

		MaxUploadBytes:     50 << 20,
		MediaQuotaBytes:    2 << 30,
		MaxThumbnailPixels: 32 << 20,
		TURNUserLifetime:   "1h",

		PasswordMinLength:    8,
		Argon2MemoryKiB:      int64(auth.MinArgon2.MemoryKiB),
		Argon2Iterations:     int64(auth.MinArgon2.Iterations),
		Argon2Parallelism:    int64(auth.MinArgon2.Parallelism),
		RateLimitLogin:       auth.DefaultRates()[auth.RateLogin].String(),
		RateLimitLoginFail:   auth.DefaultRates()[auth.RateLoginFailures].String(),
		RateLimitRegister:    auth.DefaultRates()[auth.RateRegister].String(),
		RateLimitSend:        auth.DefaultRates()[auth.RateSend].String(),
		RateLimitRooms:       auth.DefaultRates()[auth.RateRooms].String(),
		RateLimitMembership:  auth.DefaultRates()[auth.RateMembership].String(),
		RateLimitProfile:     auth.DefaultRates()[auth.RateProfile].String(),
		RateLimitReports:     auth.DefaultRates()[auth.RateReports].String(),
		RateLimitAccountData: auth.DefaultRates()[auth.RateAccountData].String(),
		RateLimitToDevice:    auth.DefaultRates()[auth.RateToDevice].String(),
		RateLimitWrites:      auth.DefaultRates()[auth.RateWrites].String(),
		OAuthTokenLifetime:   "5m",
		PasswordLogin:        true,

		MetricsListen: "127.0.0.1:8009",

		RetentionInterval:      "1m",
		MediaRetentionInterval: "1h",
		ForgottenRoomRetention: "24h",

		PushRetryBackoff: "1s",
		PushRetryLimit:   "1h",

		ServerNoticesUser: "server",
		AdminAPI:          "loopback",
	}
}

// Problem is one invalid setting, named by its key.
type Problem struct{ Key, Message string }

func (p Problem) String() string { return p.Key + ": " + p.Message }

// ConfigError lists every problem found.
type ConfigError []Problem

func (e ConfigError) Error() string {
	lines := make([]string, len(e))
	for i, p := range e {
		lines[i] = p.String()
	}
	return "invalid configuration:\n  " + strings.Join(lines, "\n  ")
}

// Validate checks every field and returns all problems at once.
func (c *Config) Validate() ConfigError {
	var ps ConfigError
	add := func(key, format string, args ...any) { ps = append(ps, Problem{key, fmt.Sprintf(format, args...)}) }
	c.durations = durations{}
	if _, err := spec.ParseServerName(c.ServerName); err != nil {
		add("server_name", "%q is not a valid server name", c.ServerName)
	}
	c.validateAddresses(add) // configcheck.go
	if c.DataDir == "" {
		add("data_dir", "must not be empty")
	}
	if c.Database != "" && !storage.IsPostgresURL(c.Database) {
		add("database", "must be empty (SQLite in data_dir) or a postgres:// URL")
	}
	if c.PublicBaseURL != "" && !strings.HasPrefix(c.PublicBaseURL, "http://") && !strings.HasPrefix(c.PublicBaseURL, "https://") {
		add("public_baseurl", "must start with http:// or https://")
	}
	oneOf := func(key, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		add(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}
	oneOf("registration", c.Registration, "token", "open", "closed")
	oneOf("profile_lookup", c.ProfileLookup, auth.ProfileLookupSharedRooms, auth.ProfileLookupAuthenticated, auth.ProfileLookupOpen)
	oneOf("encryption", c.Encryption, "required", "default", "optional")
	if !spec.RoomVersion(c.DefaultRoomVersion).Supported() {
		add("default_room_version", "%q is not a stable room version (1 to 12)", c.DefaultRoomVersion)
	}
	oneOf("rate_limits", c.RateLimits, "on", "off")
	oneOf("log_level", c.LogLevel, "debug", "info", "warn", "error")
	oneOf("log_format", c.LogFormat, "console", "json")
	oneOf("durability", c.Durability, "normal", "full")
	for _, p := range c.trustedProxies() {
		if net.ParseIP(p) == nil {
			if _, _, err := net.ParseCIDR(p); err != nil {
				add("trusted_proxies", "%q is not an IP address or CIDR range", p)
			}
		}
	}
	if c.MaxBodyBytes < 65536 {
		add("max_body_bytes", "must be at least 65536 (the event size limit)")
	}
	if d, err := time.ParseDuration(c.ShutdownGrace); err != nil || d < 0 {
		add("shutdown_grace", "%q is not a duration such as 10s", c.ShutdownGrace)
	} else {
		c.durations.shutdownGrace = d
	}
	if d, err := time.ParseDuration(c.BodyIdle); err != nil || d <= 0 {
		add("body_idle_timeout", "%q is not a positive duration such as 30s", c.BodyIdle)
	} else {
		c.durations.bodyIdle = d
	}
	if d, err := time.ParseDuration(c.WriteIdle); err != nil || d <= 0 {
		add("write_idle_timeout", "%q is not a positive duration such as 30s", c.WriteIdle)
	} else {
		c.durations.writeIdle = d
	}
	if c.BodyMinRate < 0 {
		add("body_min_rate", "must not be negative (0 means no minimum)")
	}
	if c.MaxConnsPerIP < 0 {
		add("max_connections_per_address", "must not be negative (0 means no cap)")
	}
	if d, err := time.ParseDuration(c.HeaderTimeout); err != nil || d <= 0 {
		add("read_header_timeout", "%q is not a positive duration such as 10s", c.HeaderTimeout)
	} else {
		c.durations.headerTimeout = d
	}
	c.validateMedia(add)
	c.validateAuth(add)
	c.validateMetrics(add)
	c.validatePush(add)
	c.validateAdmin(add) // admin.go
	c.validateFederation(add)
	return ps
}

// validateAuth checks the accounts and sessions settings.
func (c *Config) validateAuth(add func(key, format string, args ...any)) {
	if c.PasswordMinLength < 1 || c.PasswordMinLength > auth.MaxPasswordLength {
		add("password_min_length", "must be 1 to %d", auth.MaxPasswordLength)
	}
	if c.Argon2MemoryKiB < 1 || c.Argon2MemoryKiB > 4<<20 || c.Argon2Iterations < 1 || c.Argon2Iterations > 64 ||
		c.Argon2Parallelism < 1 || c.Argon2Parallelism > 255 {
		add("argon2_memory_kib", "argon2 parameters out of range")
	} else if err := c.argon2().Check(); err != nil {
		add("argon2_memory_kib", "%v", err)
	}
	if c.HashConcurrency < 0 || c.HashConcurrency > 1024 {
		add("hash_concurrency", "must be 0 to 1024")
	}
	for _, l := range []struct {
		key, v string
		d      *time.Duration
		min    time.Duration
	}{
		{"access_token_lifetime", c.AccessTokenLifetime, &c.durations.accessTokenLifetime, time.Minute},
		{"refresh_token_lifetime", c.RefreshTokenLifetime, &c.durations.refreshTokenLifetime, 0},
	} {
		if l.v == "" {
			continue // no lifetime
		}
		d, err := time.ParseDuration(l.v)
		if err != nil || d <= 0 {
			add(l.key, "%q is not a duration such as 1h", l.v)
		} else {
			*l.d = d
		}
		if err == nil && d < l.min {
			add(l.key, "must be at least %s", strings.TrimSuffix(l.min.String(), "0s"))
		}
	}
	rp, mr := &c.durations.retention, &c.durations.mediaRetention.RetentionPolicy
	for _, l := range []struct {
		key, v string
		d      *time.Duration
	}{
		{"retention_default_max_lifetime", c.RetentionDefault, &rp.Default},
		{"retention_min_lifetime", c.RetentionMin, &rp.Min},
		{"retention_max_lifetime", c.RetentionMax, &rp.Max},
		{"retention_purge_interval", c.RetentionInterval, &rp.Interval},
		{"media_retention_local_unaccessed", c.MediaRetentionUnaccessed, &mr.LocalUnaccessed},
		{"media_retention_max_age", c.MediaRetentionMaxAge, &mr.MaxAge},
		{"media_retention_interval", c.MediaRetentionInterval, &c.durations.mediaRetention.Interval},
		{"media_retention_remote_unaccessed", c.MediaRetentionRemote, &mr.RemoteUnaccessed},
		{"forgotten_room_retention_period", c.ForgottenRoomRetention, &c.durations.forgottenRoomRetention},
	} {
		if l.v == "" {
			continue // no bound
		}
		if d, err := time.ParseDuration(l.v); err != nil || d <= 0 {
			add(l.key, "%q is not a duration such as 720h", l.v)
		} else {
			*l.d = d
		}
	}
	if c.RetentionInterval == "" {
		add("retention_purge_interval", "must be a duration such as 1m")
	}
	if c.MediaRetentionInterval == "" {
		add("media_retention_interval", "must be a duration such as 1h")
	}
	if lo, hi := rp.Min, rp.Max; lo > 0 && hi > 0 && lo > hi {
		add("retention_min_lifetime", "is longer than retention_max_lifetime")
	}
	if !c.PasswordLogin && !c.OAuth && c.JWTKeyFile == "" {
		add("password_login", "off needs oauth = true or jwt_key_file: otherwise nobody could sign in")
	}
	if d, err := time.ParseDuration(c.OAuthTokenLifetime); err != nil || d < time.Minute {
		add("oauth_access_token_lifetime", "%q is not a duration of at least 1m", c.OAuthTokenLifetime)
	} else {
		c.durations.oauthTokenLifetime = d
	}
	if c.JWTKeyFile != "" {
		if _, err := os.Stat(c.JWTKeyFile); err != nil {
			add("jwt_key_file", "%v", err)
		}
	}
	for class, v := range c.rates() {
		if _, err := auth.ParseRate(v); err != nil {
			add("rate_limit_"+class, "%v", err)
		}
	}
}

// authConfig turns the configuration into the auth package's; it reads the
// JWT key file.
func (c *Config) authConfig() (auth.Config, error) {
	a := auth.DefaultConfig()
	a.Registration = c.Registration
	a.SharedSecret = c.SharedSecret
	a.NoPasswordLogin = !c.PasswordLogin
	a.ProfileLookup = c.ProfileLookup
	a.RateLimits = c.RateLimits == "on"
	a.MinPasswordLength = int(c.PasswordMinLength)
	a.Argon2 = c.argon2()
	if c.HashConcurrency > 0 {
		a.HashConcurrency = int(c.HashConcurrency)
	}
	a.AccessTokenLifetime = c.durations.accessTokenLifetime
	a.RefreshTokenLifetime = c.durations.refreshTokenLifetime
	for class, v := range c.rates() {
		r, err := auth.ParseRate(v)
		if err != nil {
			return a, fmt.Errorf("rate limit %s: %w", class, err)
		}
		a.Rates[class] = r
	}
	if c.JWTKeyFile != "" {
		key, err := os.ReadFile(c.JWTKeyFile)
		if err != nil {
			return a, fmt.Errorf("jwt_key_file: %w", err)
		}
		a.JWTKey, a.JWTIssuer, a.JWTAudience = key, c.JWTIssuer, c.JWTAudience
	}
	return a, nil
}

// rates are the rate_limit_CLASS settings by auth's rate limit class.
func (c *Config) rates() map[string]string {
	return map[string]string{
		auth.RateLogin: c.RateLimitLogin, auth.RateLoginFailures: c.RateLimitLoginFail,
		auth.RateRegister: c.RateLimitRegister, auth.RateSend: c.RateLimitSend,
		auth.RateRooms: c.RateLimitRooms, auth.RateMembership: c.RateLimitMembership,
		auth.RateProfile: c.RateLimitProfile, auth.RateReports: c.RateLimitReports,
		auth.RateAccountData: c.RateLimitAccountData, auth.RateToDevice: c.RateLimitToDevice,
		auth.RateWrites: c.RateLimitWrites,
	}
}

func (c *Config) argon2() auth.Argon2Params {
	return auth.Argon2Params{MemoryKiB: uint32(c.Argon2MemoryKiB), Iterations: uint32(c.Argon2Iterations), Parallelism: uint8(c.Argon2Parallelism)}
}

// validateMedia checks the media and TURN settings.
func (c *Config) validateMedia(add func(key, format string, args ...any)) {
	if c.MaxUploadBytes < 1 {
		add("max_upload_bytes", "must be at least 1")
	}
	if c.MediaQuotaBytes < 0 {
		add("media_quota_bytes", "must not be negative (0 means no quota)")
	}
	if c.MaxThumbnailPixels < 1 {
		add("max_thumbnail_pixels", "must be at least 1")
	}
	for _, u := range c.turnURIs() {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			add("turn_uris", "%q is not a turn: or turns: URI", u)
		}
	}
	if (len(c.turnURIs()) == 0) != (c.TURNSharedSecret == "") {
		add("turn_uris", "turn_uris and turn_shared_secret go together: set both or neither")
	}
	if d, err := time.ParseDuration(c.TURNUserLifetime); err != nil || d < time.Minute {
		add("turn_user_lifetime", "%q is not a duration of a minute or more, such as 1h", c.TURNUserLifetime)
	} else {
		c.durations.turnUserLifetime = d
	}
}

// turnURIs splits turn_uris at commas.
func (c *Config) turnURIs() []string {
	var out []string
	for _, u := range strings.Split(c.TURNURIs, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// trustedProxies splits trusted_proxies.
func (c *Config) trustedProxies() []string {
	var out []string
	for _, p := range strings.Split(c.TrustedProxies, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// BaseURL is the URL clients use to reach the server.
func (c *Config) BaseURL() string {
	if c.PublicBaseURL != "" {
		return strings.TrimRight(c.PublicBaseURL, "/")
	}
	return "http://" + c.Listen
}

// fields lists the configurable fields (those with a TOML key) in
// declaration order.
func fields() []reflect.StructField {
	t := reflect.TypeOf(Config{})
	out := make([]reflect.StructField, 0, t.NumField())
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("toml") != "" {
			out = append(out, f)
		}
	}
	return out
}

func flagName(f reflect.StructField) string {
	return strings.ReplaceAll(f.Tag.Get("toml"), "_", "-")
}

func envName(f reflect.StructField) string {
	return "CHATALOT_" + strings.ToUpper(f.Tag.Get("toml"))
}

// setField parses s into the field named by its TOML key.
func setField(c *Config, f reflect.StructField, s string) error {
	v := reflect.ValueOf(c).Elem().FieldByIndex(f.Index)
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		v.SetInt(n)
	default:
		return errors.New("unsupported type")
	}
	return nil
}

// configFlags registers a flag per setting plus --config on fs; the values
// it returns hold what was set on the command line.
func configFlags(fs *flag.FlagSet) (configPath *string, set map[string]*string) {
	configPath = fs.String("config", "", "configuration file (TOML); also CHATALOT_CONFIG")
	set = map[string]*string{}
	for _, f := range fields() {
		name := flagName(f)
		if f.Type.Kind() == reflect.Bool {
			b := fs.Bool(name, false, f.Tag.Get("help"))
			s := new(string)
			set[name] = s
			fs.Lookup(name).Value = boolFlag{b: b, s: s}
			continue
		}
		set[name] = fs.String(name, "", f.Tag.Get("help"))
	}
	return configPath, set
}

type boolFlag struct {
	b *bool
	s *string
}

func (f boolFlag) String() string {
	if f.b == nil {
		return "false"
	}
	return strconv.FormatBool(*f.b)
}
func (f boolFlag) Set(v string) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return err
	}
	*f.b, *f.s = b, strconv.FormatBool(b)
	return nil
}
func (f boolFlag) IsBoolFlag() bool { return true }

// loadConfig builds the effective configuration: defaults, then the file,
// then the environment, then flags. Unknown keys and invalid values are
// refused with the key named.
func loadConfig(fs *flag.FlagSet, configPath *string, set map[string]*string) (Config, string, error) {
	c := defaults()
	path := *configPath
	if path == "" {
		path = os.Getenv("CHATALOT_CONFIG")
	}
	var problems ConfigError
	if path != "" {
		fileProblems, err := decodeConfigFile(path, &c)
		if err != nil {
			return c, path, fmt.Errorf("config file %s: %w", path, err)
		}
		problems = append(problems, fileProblems...)
	}
	envProblems, _ := unknownVariables(os.Environ())
	problems = append(problems, envProblems...)
	for _, f := range fields() {
		if v, ok := os.LookupEnv(envName(f)); ok {
			if err := setField(&c, f, v); err != nil {
				problems = append(problems, Problem{envName(f), err.Error()})
			}
		}
	}
	visited := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { visited[fl.Name] = true })
	for _, f := range fields() {
		name := flagName(f)
		if visited[name] {
			if err := setField(&c, f, *set[name]); err != nil {
				problems = append(problems, Problem{"--" + name, err.Error()})
			}
		}
	}
	problems = append(problems, c.Validate()...)
	if len(problems) > 0 {
		sort.SliceStable(problems, func(i, j int) bool { return problems[i].Key < problems[j].Key })
		return c, path, problems
	}
	return c, path, nil
}

// exampleConfig is the commented file `chatalot config init` writes.
func exampleConfig() string {
	var b strings.Builder
	b.WriteString("# Chatalot configuration (TOML).\n# Every key is optional; the value shown is the default.\n# Each key can also be set with a flag (--key-name) or a CHATALOT_KEY_NAME variable.\n\n")
	d := defaults()
	v := reflect.ValueOf(d)
	for _, f := range fields() {
		fmt.Fprintf(&b, "# %s\n", f.Tag.Get("help"))
		val := v.FieldByIndex(f.Index)
		switch val.Kind() {
		case reflect.String:
			if val.String() == "" {
				fmt.Fprintf(&b, "# %s = \"\"\n\n", f.Tag.Get("toml"))
			} else {
				fmt.Fprintf(&b, "%s = %q\n\n", f.Tag.Get("toml"), val.String())
			}
		default:
			fmt.Fprintf(&b, "%s = %v\n\n", f.Tag.Get("toml"), val.Interface())
		}
	}
	return b.String()
}

// masked returns the configuration as TOML with secrets replaced.
func (c Config) masked() string {
	v := reflect.ValueOf(c)
	var b strings.Builder
	for _, f := range fields() {
		val := v.FieldByIndex(f.Index)
		if f.Tag.Get("secret") == "true" && val.String() != "" {
			fmt.Fprintf(&b, "%s = \"********\"\n", f.Tag.Get("toml"))
			continue
		}
		if val.Kind() == reflect.String {
			fmt.Fprintf(&b, "%s = %q\n", f.Tag.Get("toml"), val.String())
		} else {
			fmt.Fprintf(&b, "%s = %v\n", f.Tag.Get("toml"), val.Interface())
		}
	}
	return b.String()
}

// validatePush checks the push gateway settings.
func (c *Config) validatePush(add func(key, format string, args ...any)) {
	for _, l := range []struct {
		key, v string
		d      *time.Duration
	}{
		{"push_retry_backoff", c.PushRetryBackoff, &c.durations.pushRetryBackoff},
		{"push_retry_limit", c.PushRetryLimit, &c.durations.pushRetryLimit},
	} {
		if d, err := time.ParseDuration(l.v); err != nil || d <= 0 {
			add(l.key, "%q is not a positive duration such as 1s", l.v)
		} else {
			*l.d = d
		}
	}
}

// pushConfig turns the server configuration into the push package's.
func (c *Config) pushConfig() push.Config {
	pc := push.DefaultConfig()
	pc.AllowPrivateGateways = c.PushAllowPrivateGateways
	pc.FullFormat = c.PushFullFormat
	pc.RetryBackoff, pc.RetryLimit = c.durations.pushRetryBackoff, c.durations.pushRetryLimit
	return pc
}

// databaseAt is what storage.Open opens for the data directory p: the
// database setting if it names PostgreSQL, else the SQLite file in p.
func (c *Config) databaseAt(p dataPaths) string {
	if c.Database != "" {
		return c.Database
	}
	return p.db
}

// onPostgres reports whether the data is in PostgreSQL.
func (c *Config) onPostgres() bool { return storage.IsPostgresURL(c.Database) }
