// Package oauth is Chatalot's own OAuth 2.0 authorisation server, the
// spec's "OAuth 2.0 API" (v1.15; MSC3861 and its parts): server metadata
// discovery, dynamic client registration, the authorisation code grant
// with PKCE, the refresh token grant with rotation, and token revocation.
// The sign-in and consent pages are served here as plain HTML.
//
// Sessions are auth's: a grant creates an auth device and its access token,
// so every authenticated route, the admin API and the CLI treat an OAuth
// session as any other device. What is OAuth's own is kept here: client
// registrations, grants and their refresh tokens (tables), and the
// short-lived authorisation requests and codes (memory).
package oauth

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
)

// Accounts is what oauth needs from accounts and sessions; auth.Service
// implements it.
type Accounts interface {
	// SignIn checks a password under the login rate limits; every failure
	// looks the same.
	SignIn(c *gin.Context, user, password string) (spec.UserID, error)
	// SignUp creates an account under the registration rules; inviteCode
	// is a registration token.
	SignUp(c *gin.Context, username, password, inviteCode string) (spec.UserID, error)
	// SignUpNeedsInviteCode tells whether sign-up needs an invite code,
	// and whether it is open at all.
	SignUpNeedsInviteCode() (needed, ok bool)
	// IssueDeviceToken creates the device if needed and replaces its
	// access tokens with a new one that expires after ttl.
	IssueDeviceToken(ctx context.Context, user spec.UserID, deviceID, displayName string, ttl time.Duration) (string, error)
	// HasDevice reports whether an active account still has the device.
	HasDevice(ctx context.Context, user spec.UserID, deviceID string) (bool, error)
	// AccessTokenOwner names a live access token's user and device.
	AccessTokenOwner(token string) (spec.UserID, string, bool)
	// DeleteDevices deletes devices and revokes their tokens.
	DeleteDevices(ctx context.Context, user spec.UserID, deviceIDs ...string) error
	// Devices lists a user's devices, for the account page.
	Devices(ctx context.Context, user spec.UserID) ([]auth.DeviceInfo, error)
	// SetPassword replaces a password; logoutDevices deletes every device
	// but keepDevice.
	SetPassword(ctx context.Context, user spec.UserID, password string, logoutDevices bool, keepDevice string) error
	// Deactivate closes an account for good.
	Deactivate(ctx context.Context, user spec.UserID, erase bool) error
	// CrossSigningResets lists the user's cross-signing resets waiting for
	// approval (the m.oauth UIA stage).
	CrossSigningResets(user spec.UserID) []auth.CrossSigningReset
	// ApproveCrossSigningReset approves the reset of a UIA session; false
	// if it is not the user's or is over.
	ApproveCrossSigningReset(user spec.UserID, session string) bool
	// IssueLoginToken makes a single-use m.login.token, for the legacy
	// SSO login.
	IssueLoginToken(user spec.UserID) string
}

// Config is the authorisation server's settings.
type Config struct {
	// AccessTokenLifetime: the spec wants OAuth access tokens short-lived;
	// clients refresh them with the refresh token.
	AccessTokenLifetime time.Duration
	// CodeLifetime bounds the time between consent and code exchange
	// (RFC 6749 section 4.1.2: ten minutes at most).
	CodeLifetime time.Duration
	// RequestLifetime bounds the time a person may take on the sign-in and
	// consent pages.
	RequestLifetime time.Duration
	// MaxPending bounds the authorisation requests and codes held in
	// memory, so that a flood of them cannot exhaust it.
	MaxPending int
}

// DefaultConfig is what a server uses unless configured otherwise.
func DefaultConfig() Config {
	return Config{
		AccessTokenLifetime: 5 * time.Minute,
		CodeLifetime:        5 * time.Minute,
		RequestLifetime:     15 * time.Minute,
		MaxPending:          10000,
	}
}

// Deps is what the service needs.
type Deps struct {
	DB         *storage.DB
	Accounts   Accounts
	Limiter    *auth.Limiter // the same limiter as password login
	BaseURL    string        // the public base URL: the issuer, and where the endpoints are
	ServerName spec.ServerName
	Config     Config
	Log        zerolog.Logger
}

// Service is the authorisation server.
type Service struct {
	db         *storage.DB
	accounts   Accounts
	limiter    *auth.Limiter
	base       string
	serverName spec.ServerName
	cfg        Config
	log        zerolog.Logger
	secure     bool // cookies only over https
	now        func() time.Time

	mu        sync.Mutex
	requests  map[string]*authRequest // by request ID
	codes     map[string]*authCode    // by code hash
	web       map[string]*webSession  // the account page's, by cookie hash
	devices   map[string]*deviceAuth  // device authorisations, by device code hash
	userCodes map[string]string       // device code hash by user code

	rendezvous rendezvous // QR-code login\'s (rendezvous.go)
}

// New builds the service. The database must be migrated with Schema.
func New(d Deps) *Service {
	base := strings.TrimRight(d.BaseURL, "/")
	return &Service{
		db: d.DB, accounts: d.Accounts, limiter: d.Limiter, base: base, serverName: d.ServerName,
		cfg: d.Config, log: d.Log, secure: strings.HasPrefix(base, "https://"), now: time.Now,
		requests: map[string]*authRequest{}, codes: map[string]*authCode{}, web: map[string]*webSession{},
		devices: map[string]*deviceAuth{}, userCodes: map[string]string{},
		rendezvous: rendezvous{sessions: map[string]*rendezvousSession{}},
	}
}

// Where the authorisation server's endpoints are. They are not under
// /_matrix: the spec leaves them to the server and clients find them in
// the metadata.
const (
	prefix          = "/_chatalot/oauth2"
	pathRegister    = prefix + "/register"
	pathAuthorize   = prefix + "/auth"
	pathSignIn      = prefix + "/auth/sign_in"
	pathConsent     = prefix + "/auth/consent"
	pathSignUp      = prefix + "/auth/sign_up"
	pathToken       = prefix + "/token"
	pathRevoke      = prefix + "/revoke"
	cookiePath      = prefix + "/auth"
	metadataPath    = "/_matrix/client/v1/auth_metadata"
	metadataMSC2965 = "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata"
)

// Routes mounts the discovery endpoint and the authorisation server.
func (s *Service) Routes(r *gin.Engine) {
	r.GET(metadataPath, api.Handle(s.metadata))
	r.GET(metadataMSC2965, api.Handle(s.metadata))
	r.POST(pathRegister, api.Handle(s.registerClient))
	r.GET(pathAuthorize, api.Handle(s.authorize))
	r.GET(pathSignIn, api.Handle(s.signInForm))
	r.POST(pathSignIn, api.Handle(s.signIn))
	r.GET(pathSignUp, api.Handle(s.signUpForm))
	r.POST(pathSignUp, api.Handle(s.signUp))
	r.GET(pathConsent, api.Handle(s.consentPage))
	r.POST(pathConsent, api.Handle(s.consent))
	r.POST(pathToken, api.Handle(s.token))
	r.POST(pathRevoke, api.Handle(s.revoke))
	r.POST(pathDevice, api.Handle(s.deviceAuthorization))
	r.GET(pathDeviceLink, api.Handle(s.deviceLink))

	s.rendezvousRoutes(r)
	s.ssoRoutes(r)

	r.GET(pathAccount, api.Handle(s.accountPage))
	r.POST(pathAccountSignIn, api.Handle(s.accountSignIn))
	r.POST(pathAccountSignOut, api.Handle(s.accountSignOut))
	r.POST(pathAccountDeleteDevice, api.Handle(s.accountDeleteDevice))
	r.POST(pathAccountPassword, api.Handle(s.accountPassword))
	r.POST(pathAccountDeactivate, api.Handle(s.accountDeactivate))
	r.POST(pathAccountCrossSigning, api.Handle(s.accountCrossSigningReset))
}

// GET /_matrix/client/v1/auth_metadata: the server metadata (RFC 8414) as
// the spec profiles it.
func (s *Service) metadata(c *gin.Context) error {
	c.Header("Cache-Control", "public, max-age=300")
	m := gin.H{
		"issuer":                                     s.base + "/",
		"authorization_endpoint":                     s.base + pathAuthorize,
		"token_endpoint":                             s.base + pathToken,
		"registration_endpoint":                      s.base + pathRegister,
		"revocation_endpoint":                        s.base + pathRevoke,
		"response_types_supported":                   []string{"code"},
		"response_modes_supported":                   []string{"query", "fragment"},
		"grant_types_supported":                      []string{grantAuthorizationCode, grantRefreshToken, grantDeviceCode},
		"device_authorization_endpoint":              s.base + pathDevice,
		"code_challenge_methods_supported":           []string{"S256"},
		"token_endpoint_auth_methods_supported":      []string{"none"},
		"revocation_endpoint_auth_methods_supported": []string{"none"},
		"scopes_supported":                           []string{scopeAPI},
		"account_management_uri":                     s.base + pathAccount,
		"account_management_actions_supported":       accountActions,
	}
	if _, ok := s.accounts.SignUpNeedsInviteCode(); ok {
		// prompt=create opens the sign-up page (spec "User registration").
		m["prompt_values_supported"] = []string{"create"}
	}
	c.JSON(http.StatusOK, m)
	return nil
}

// oauthError is an error answer of the token, registration and revocation
// endpoints: RFC 6749 section 5.2's shape, not a Matrix error.
func oauthError(c *gin.Context, status int, code, description string) error {
	c.Header("Cache-Control", "no-store")
	c.JSON(status, gin.H{"error": code, "error_description": description})
	return nil
}
