// Package server answers the server-wide endpoints: the spec versions and
// features, discovery (.well-known), capabilities, the server's signing keys,
// health, and the small page at "/".
package server

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Deps is what the server endpoints need.
type Deps struct {
	ServerName spec.ServerName
	BaseURL    string // what clients use to reach the server
	Key        events.SigningKey
	Version    string // Chatalot's version
	// Capabilities contributed by the domain packages, merged into
	// GET /capabilities (m.room_versions is added here).
	Capabilities map[string]any
	// UnstableFeatures advertised in /versions.
	UnstableFeatures map[string]bool
	// Versions are the spec versions whose every endpoint Chatalot serves.
	Versions []string
	// DefaultRoomVersion is the m.room_versions default (empty:
	// spec.DefaultRoomVersion).
	DefaultRoomVersion spec.RoomVersion
	// Notary relays other servers' keys for the key query endpoints (nil,
	// federation off: only this server's own keys are answered).
	Notary Notary
}

// Notary gives another server's key response as that server signed it,
// valid until at least minValid if it can; nil when it has none.
type Notary interface {
	NotaryKeys(ctx context.Context, server spec.ServerName, minValid time.Time) []byte
}

// maxKeyQueryServers bounds the servers of one batch query: each may cost
// a request to that server.
const maxKeyQueryServers = 100

// Server holds the endpoint state.
type Server struct {
	d Deps

	keyOnce sync.Once
	keyJSON []byte
	keyErr  error
}

// New returns the server endpoints.
func New(d Deps) *Server { return &Server{d: d} }

// Routes mounts the server-wide endpoints on the root router.
func (s *Server) Routes(r *gin.Engine) {
	r.GET("/", api.Handle(s.index))
	r.GET("/health", func(c *gin.Context) { c.String(http.StatusOK, "OK") })
	r.GET("/_matrix/client/versions", api.Handle(s.versions))
	r.GET("/.well-known/matrix/client", api.Handle(s.wellKnownClient))
	// No /.well-known/matrix/server: federation is not there yet, and a
	// server that announced it would have other servers try to federate.
	r.GET("/_matrix/key/v2/server", api.Handle(s.serverKeys))
	r.GET("/_matrix/key/v2/server/:keyID", api.Handle(s.serverKeys)) // deprecated form, still requested
	r.GET("/_matrix/key/v2/query/:serverName", api.Handle(s.queryKeys))
	r.POST("/_matrix/key/v2/query", api.Handle(s.queryKeysBatch))
	r.GET("/_matrix/federation/v1/version", api.Handle(s.federationVersion))
}

// GET /_matrix/federation/v1/version: the implementation's name and version.
func (s *Server) federationVersion(c *gin.Context) error {
	c.JSON(http.StatusOK, gin.H{"server": gin.H{"name": "Chatalot", "version": s.d.Version}})
	return nil
}

// GET /_matrix/key/v2/query/{serverName}: a notary's answer for one server.
func (s *Server) queryKeys(c *gin.Context) error {
	minValid := time.Now()
	if v := c.Query("minimum_valid_until_ts"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return spec.InvalidParam("minimum_valid_until_ts must be a timestamp in milliseconds")
		}
		minValid = time.UnixMilli(ms)
	}
	return s.answerKeyQuery(c, map[string]time.Time{c.Param("serverName"): minValid})
}

// POST /_matrix/key/v2/query: the batch form of queryKeys.
func (s *Server) queryKeysBatch(c *gin.Context) error {
	var req struct {
		ServerKeys map[string]map[string]struct {
			MinimumValidUntilTS int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.ServerKeys == nil {
		return spec.MissingParam("server_keys is required")
	}
	if len(req.ServerKeys) > maxKeyQueryServers {
		return spec.InvalidParam("at most %d servers may be queried at once", maxKeyQueryServers)
	}
	now := time.Now()
	servers := make(map[string]time.Time, len(req.ServerKeys))
	for name, ids := range req.ServerKeys {
		// The spec's default is now; of several key IDs the latest wins.
		minValid := now
		for _, q := range ids {
			if t := time.UnixMilli(q.MinimumValidUntilTS); q.MinimumValidUntilTS > 0 && t.After(minValid) {
				minValid = t
			}
		}
		servers[name] = minValid
	}
	return s.answerKeyQuery(c, servers)
}

// answerKeyQuery answers with this server's own keys and, through the
// notary, the keys of the other servers it can get, each signed again by
// this server. A server it cannot get is left out, as the spec says.
func (s *Server) answerKeyQuery(c *gin.Context, servers map[string]time.Time) error {
	keys := []json.RawMessage{}
	for name, minValid := range servers {
		if _, err := spec.ParseServerName(name); err != nil {
			return spec.InvalidParam("%q is not a server name", name)
		}
		if name == string(s.d.ServerName) {
			own, err := s.ownKeys()
			if err != nil {
				return err
			}
			keys = append(keys, own)
			continue
		}
		if s.d.Notary == nil {
			continue
		}
		body := s.d.Notary.NotaryKeys(c.Request.Context(), spec.ServerName(name), minValid)
		if body == nil {
			continue
		}
		signed, err := events.SignJSON(body, s.d.Key)
		if err != nil {
			continue // not a JSON object this server can sign: nothing to vouch for
		}
		keys = append(keys, signed)
	}
	c.JSON(http.StatusOK, gin.H{"server_keys": keys})
	return nil
}

// ownKeys is the server's signed key object, built once.
func (s *Server) ownKeys() ([]byte, error) {
	s.keyOnce.Do(func() { s.keyJSON, s.keyErr = s.signedKeys() })
	return s.keyJSON, s.keyErr
}

// GET /_matrix/client/versions: spec versions and unstable features that are
// actually implemented.
func (s *Server) versions(c *gin.Context) error {
	features := s.d.UnstableFeatures
	if features == nil {
		features = map[string]bool{}
	}
	c.JSON(http.StatusOK, gin.H{"versions": s.d.Versions, "unstable_features": features})
	return nil
}

// GET /.well-known/matrix/client: where clients find the client-server API.
func (s *Server) wellKnownClient(c *gin.Context) error {
	c.JSON(http.StatusOK, gin.H{"m.homeserver": gin.H{"base_url": s.d.BaseURL}})
	return nil
}

// Capabilities is the handler for GET /_matrix/client/v3/capabilities; cmd
// mounts it behind the auth middleware, as the spec requires a token.
func (s *Server) Capabilities(c *gin.Context) error {
	versions := map[string]string{}
	for _, v := range spec.SupportedRoomVersions {
		versions[string(v)] = "stable"
	}
	def := s.d.DefaultRoomVersion
	if !def.Supported() {
		def = spec.DefaultRoomVersion
	}
	caps := map[string]any{
		"m.room_versions": gin.H{"default": string(def), "available": versions},
	}
	for k, v := range s.d.Capabilities {
		caps[k] = v
	}
	c.JSON(http.StatusOK, gin.H{"capabilities": caps})
	return nil
}

// GET /_matrix/key/v2/server: the server's verify key, signed by itself, as
// the server-server API specifies.
func (s *Server) serverKeys(c *gin.Context) error {
	own, err := s.ownKeys()
	if err != nil {
		return err
	}
	c.Data(http.StatusOK, "application/json", own)
	return nil
}

func (s *Server) signedKeys() ([]byte, error) {
	pub := s.d.Key.Private.Public().(ed25519.PublicKey)
	body := map[string]any{
		"server_name": string(s.d.ServerName),
		"verify_keys": map[string]any{
			s.d.Key.KeyID: map[string]string{"key": base64.RawStdEncoding.EncodeToString(pub)},
		},
		"old_verify_keys": map[string]any{},
		// The key does not rotate; a week is what other servers may cache it for.
		"valid_until_ts": time.Now().Add(7 * 24 * time.Hour).UnixMilli(),
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return events.SignJSON(raw, s.d.Key)
}

// indexPage is the page at "/"; {{.Name}} and {{.URL}} are replaced by the
// HTML-escaped server name and base URL. It is not an html/template: text/template
// calls methods by name, so a binary that executes a template keeps every
// exported method of every type that is ever put in an interface (here all of
// gin's and its codecs'): 9 MB of the binary, ~6 MiB of idle RSS (issue 12).
const indexPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Chatalot on {{.Name}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;line-height:1.5}code{background:#eee;padding:0 .3em}</style>
</head><body>
<h1>Chatalot</h1>
<p>This is a <strong>Chatalot</strong> server: a private, self-hosted chat server that speaks the Matrix protocol. Its server name is <code>{{.Name}}</code>.</p>
<h2>How to connect</h2>
<ol>
<li>Install a Matrix client: Element X on a phone, Element Web or Element Desktop, FluffyChat or Cinny.</li>
<li>Choose "sign in" or "create account" and change the homeserver to <code>{{.URL}}</code>.</li>
<li>Accounts are by invitation: ask the person who runs this server for an invite code.</li>
</ol>
<p>Messages are end-to-end encrypted: this server relays and stores them but cannot read them.</p>
</body></html>
`

// GET /: a small page saying what this is and how to connect.
func (s *Server) index(c *gin.Context) error {
	c.Header("Content-Type", "text/html; charset=utf-8")
	c.Header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	c.Status(http.StatusOK)
	page := strings.NewReplacer("{{.Name}}", html.EscapeString(string(s.d.ServerName)),
		"{{.URL}}", html.EscapeString(s.d.BaseURL))
	_, _ = page.WriteString(c.Writer, indexPage)
	return nil
}
