package oauth

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Grant types and the client kinds of the redirect URI rules.
const (
	grantAuthorizationCode = "authorization_code"
	grantRefreshToken      = "refresh_token"
	appWeb                 = "web"
	appNative              = "native"
)

// Limits on what a registration may carry: a client is a few URLs and a
// name, and registration needs no account.
const (
	maxRedirectURIs = 10
	maxURILength    = 2000
	maxNameLength   = 200
)

// clientMetadata is a client registration (RFC 7591) as Chatalot keeps it:
// the fields it understands, after validation. Localised variants
// ("client_name#fr") are not kept.
type clientMetadata struct {
	ClientID                string   `json:"client_id,omitempty"`
	ClientIDIssuedAt        int64    `json:"client_id_issued_at,omitempty"`
	ClientName              string   `json:"client_name,omitempty"`
	ClientURI               string   `json:"client_uri"`
	LogoURI                 string   `json:"logo_uri,omitempty"`
	TOSURI                  string   `json:"tos_uri,omitempty"`
	PolicyURI               string   `json:"policy_uri,omitempty"`
	RedirectURIs            []string `json:"redirect_uris"`
	ResponseTypes           []string `json:"response_types"`
	GrantTypes              []string `json:"grant_types"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	ApplicationType         string   `json:"application_type"`
}

// registrationRequest is what a client may send; fields are raw so that a
// wrong type is a clear invalid_client_metadata.
type registrationRequest struct {
	ClientName              *string  `json:"client_name"`
	ClientURI               *string  `json:"client_uri"`
	LogoURI                 *string  `json:"logo_uri"`
	TOSURI                  *string  `json:"tos_uri"`
	PolicyURI               *string  `json:"policy_uri"`
	RedirectURIs            []string `json:"redirect_uris"`
	ResponseTypes           []string `json:"response_types"`
	GrantTypes              []string `json:"grant_types"`
	TokenEndpointAuthMethod *string  `json:"token_endpoint_auth_method"`
	ApplicationType         *string  `json:"application_type"`
}

// metadataError is an RFC 7591 section 3.2.2 error.
type metadataError struct{ code, description string }

func (e *metadataError) Error() string { return e.code + ": " + e.description }

func badMetadata(format string, args ...any) *metadataError {
	return &metadataError{"invalid_client_metadata", fmt.Sprintf(format, args...)}
}

func badRedirect(format string, args ...any) *metadataError {
	return &metadataError{"invalid_redirect_uri", fmt.Sprintf(format, args...)}
}

// POST /_chatalot/oauth2/register: dynamic client registration (RFC 7591
// as the spec profiles it). Only public clients: no client secret is ever
// issued. No URL the client names is fetched.
func (s *Service) registerClient(c *gin.Context) error {
	if err := s.limiter.AllowIP(c, auth.RateRegister); err != nil {
		return oauthError(c, http.StatusTooManyRequests, "slow_down", "too many registrations; try again later")
	}
	body, err := api.ReadBody(c, 64<<10)
	if err != nil {
		return oauthError(c, http.StatusBadRequest, "invalid_client_metadata", "the body must be a JSON object of at most 64 KiB")
	}
	var req registrationRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return oauthError(c, http.StatusBadRequest, "invalid_client_metadata", "the body must be a JSON object of client metadata")
	}
	m, merr := validateClient(req)
	if merr != nil {
		return oauthError(c, http.StatusBadRequest, merr.code, merr.description)
	}
	// The registered metadata, before an ID is given, names the
	// registration: identical ones share a client_id.
	canonical, err := json.Marshal(m)
	if err != nil {
		return err
	}
	hash := hashSecret(string(canonical))
	m.ClientID = newSecret()
	m.ClientIDIssuedAt = s.now().Unix()
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	err = s.db.Write(c.Request.Context(), func(tx *storage.Tx) error {
		existing, found, err := clientByMetadata(tx, hash)
		if err != nil || found {
			raw = []byte(existing)
			return err
		}
		return insertClient(tx, m.ClientID, string(raw), hash, s.now().UnixMilli())
	})
	if err != nil {
		return err
	}
	c.Header("Cache-Control", "no-store")
	c.Data(http.StatusCreated, "application/json", raw)
	return nil
}

// validateClient checks a registration against the spec's rules and
// returns what is registered.
func validateClient(req registrationRequest) (clientMetadata, *metadataError) {
	m := clientMetadata{ApplicationType: appWeb, TokenEndpointAuthMethod: "none"}
	if req.ApplicationType != nil {
		m.ApplicationType = *req.ApplicationType
	}
	if m.ApplicationType != appWeb && m.ApplicationType != appNative {
		return m, badMetadata("application_type must be web or native")
	}
	if req.TokenEndpointAuthMethod != nil && *req.TokenEndpointAuthMethod != "none" {
		return m, badMetadata("only public clients are supported: token_endpoint_auth_method must be none")
	}
	if req.ClientName != nil {
		if len(*req.ClientName) > maxNameLength || !utf8.ValidString(*req.ClientName) || strings.ContainsAny(*req.ClientName, "\x00\r\n") {
			return m, badMetadata("client_name must be one line of at most %d bytes", maxNameLength)
		}
		m.ClientName = *req.ClientName
	}
	if req.ClientURI == nil {
		return m, badMetadata("client_uri is required")
	}
	clientURL, err := webURL(*req.ClientURI)
	if err != nil {
		return m, badMetadata("client_uri: %v", err)
	}
	m.ClientURI = *req.ClientURI
	host := clientURL.Hostname()
	for _, f := range []struct {
		name string
		v    *string
		dst  *string
	}{{"logo_uri", req.LogoURI, &m.LogoURI}, {"tos_uri", req.TOSURI, &m.TOSURI}, {"policy_uri", req.PolicyURI, &m.PolicyURI}} {
		if f.v == nil {
			continue
		}
		u, err := webURL(*f.v)
		if err == nil && !underHost(u.Hostname(), host) {
			err = fmt.Errorf("must be on the host of client_uri or a subdomain of it")
		}
		if err != nil {
			return m, badMetadata("%s: %v", f.name, err)
		}
		*f.dst = *f.v
	}
	m.ResponseTypes = []string{"code"}
	if req.ResponseTypes != nil && !slices.Contains(req.ResponseTypes, "code") {
		return m, badMetadata("response_types must include code")
	}
	m.GrantTypes = []string{grantAuthorizationCode, grantRefreshToken}
	if req.GrantTypes != nil {
		// Only the grants understood are registered (RFC 7591 section 2).
		m.GrantTypes = nil
		for _, g := range []string{grantAuthorizationCode, grantRefreshToken, grantDeviceCode} {
			if slices.Contains(req.GrantTypes, g) {
				m.GrantTypes = append(m.GrantTypes, g)
			}
		}
		if !slices.Contains(m.GrantTypes, grantAuthorizationCode) && !slices.Contains(m.GrantTypes, grantDeviceCode) {
			return m, badMetadata("grant_types must include authorization_code or " + grantDeviceCode)
		}
	}
	// Redirect URIs are for the code flow; a device-only client has none.
	if len(req.RedirectURIs) == 0 && slices.Contains(m.GrantTypes, grantAuthorizationCode) {
		return m, badRedirect("at least one redirect URI is required")
	}
	if len(req.RedirectURIs) > maxRedirectURIs {
		return m, badRedirect("at most %d redirect URIs", maxRedirectURIs)
	}
	for _, r := range req.RedirectURIs {
		if err := checkRedirectURI(r, m.ApplicationType, host); err != nil {
			return m, badRedirect("%q: %v", truncate(r, 100), err)
		}
	}
	m.RedirectURIs = req.RedirectURIs
	if m.RedirectURIs == nil {
		m.RedirectURIs = []string{}
	}
	return m, nil
}

// webURL parses an https URL without credentials or fragment.
func webURL(raw string) (*url.URL, error) {
	if len(raw) > maxURILength {
		return nil, fmt.Errorf("longer than %d bytes", maxURILength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("not a URL")
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("must use https")
	}
	if u.User != nil {
		return nil, fmt.Errorf("must not carry a user or password")
	}
	if u.Hostname() == "" || u.Opaque != "" || !plainHost(u.Host) {
		return nil, fmt.Errorf("must name a host")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, fmt.Errorf("must not have a fragment")
	}
	return u, nil
}

// plainHost reports whether an authority is a DNS name or an IP literal
// with an optional port: nothing else may reach a page's headers.
func plainHost(h string) bool {
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-.:[]", r)) {
			return false
		}
	}
	return h != ""
}

// underHost reports whether host is base or a subdomain of it.
func underHost(host, base string) bool {
	host, base = strings.ToLower(host), strings.ToLower(base)
	return host == base || strings.HasSuffix(host, "."+base)
}

// isLoopback reports whether host is one of the loopback names RFC 8252
// section 7.3 lets native clients redirect to.
func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// checkRedirectURI applies the spec's redirect URI rules ("Redirect URI
// validation"): web clients use https URLs under the client_uri's host;
// native ones may also use a private-use scheme named after that host in
// reverse-DNS order, or plain http on the loopback interface without a port
// (any port is then accepted when authorising).
func checkRedirectURI(raw, appType, clientHost string) error {
	if len(raw) > maxURILength {
		return fmt.Errorf("longer than %d bytes", maxURILength)
	}
	if strings.Contains(raw, "#") {
		return fmt.Errorf("must not have a fragment")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("not an absolute URI")
	}
	if u.Scheme == "https" || appType == appWeb {
		w, err := webURL(raw)
		if err != nil {
			return err
		}
		if !underHost(w.Hostname(), clientHost) {
			return fmt.Errorf("must be on the host of client_uri or a subdomain of it")
		}
		return nil
	}
	if u.Scheme == "http" {
		if u.User != nil || !isLoopback(u.Hostname()) {
			return fmt.Errorf("http is only for the loopback interface (localhost, 127.0.0.1, [::1])")
		}
		if u.Port() != "" {
			return fmt.Errorf("a loopback redirect URI must not name a port: any port is accepted")
		}
		return nil
	}
	// Private-use URI scheme (RFC 8252 section 7.1).
	reversed := reverseDNS(clientHost)
	if net.ParseIP(clientHost) != nil || !strings.Contains(clientHost, ".") {
		return fmt.Errorf("a private-use scheme needs a client_uri with a domain name")
	}
	if u.Scheme != reversed && !strings.HasPrefix(u.Scheme, reversed+".") {
		return fmt.Errorf("the scheme must be the client_uri's host in reverse order (%s or %s.*)", reversed, reversed)
	}
	if u.Host != "" || u.User != nil || strings.HasPrefix(raw[len(u.Scheme)+1:], "//") {
		return fmt.Errorf("a private-use scheme URI must not have an authority (use %s:/path)", u.Scheme)
	}
	return nil
}

// reverseDNS turns app.example.com into com.example.app.
func reverseDNS(host string) string {
	parts := strings.Split(strings.ToLower(host), ".")
	slices.Reverse(parts)
	return strings.Join(parts, ".")
}

// redirectMatches reports whether the redirect URI of an authorisation
// request is one the client registered: the same string, except that a
// loopback http URI may name any port (RFC 8252 section 7.3).
func redirectMatches(registered []string, requested string) bool {
	if slices.Contains(registered, requested) {
		return true
	}
	u, err := url.Parse(requested)
	if err != nil || u.Scheme != "http" || !isLoopback(u.Hostname()) || u.Port() == "" {
		return false
	}
	u.Host = u.Hostname()
	if strings.Contains(u.Host, ":") {
		u.Host = "[" + u.Host + "]"
	}
	return slices.Contains(registered, u.String())
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
