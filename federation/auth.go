// Package federation is the server-server side of Chatalot: finding other
// servers, proving who we are to them and checking who they are. Nothing in
// it runs unless federation is turned on.
package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
)

// Request is what a server signs when it calls another (server-server API,
// "Request Authentication"): the method, the path with its query, both
// server names and the JSON body if there is one.
type Request struct {
	Method      string
	URI         string // path and query exactly as sent, e.g. "/_matrix/federation/v1/send/1"
	Origin      string
	Destination string
	Content     []byte // JSON body, nil when the request has none
}

// signedBytes is the canonical JSON that is signed for r.
func (r Request) signedBytes() ([]byte, error) {
	obj := map[string]any{
		"method":      r.Method,
		"uri":         r.URI,
		"origin":      r.Origin,
		"destination": r.Destination,
	}
	if len(r.Content) > 0 {
		obj["content"] = json.RawMessage(r.Content)
	}
	return events.MarshalCanonical(obj)
}

// Sign returns the Authorization header value for r, signed with key.
func Sign(r Request, key events.SigningKey) (string, error) {
	b, err := r.signedBytes()
	if err != nil {
		return "", err
	}
	sig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(key.Private, b))
	return `X-Matrix origin="` + r.Origin + `",destination="` + r.Destination +
		`",key="` + key.KeyID + `",sig="` + sig + `"`, nil
}

// Authorization is a parsed X-Matrix header.
type Authorization struct {
	Origin, Destination, Key, Sig string
}

// ParseAuthorization reads an X-Matrix Authorization header. The parameters
// are RFC 9110 auth-params: a token name, optional whitespace around "=", and
// a token or quoted-string value; names are case-insensitive.
func ParseAuthorization(h string) (Authorization, bool) {
	var a Authorization
	scheme, rest, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "X-Matrix") {
		return a, false
	}
	p := rest
	for {
		p = strings.TrimLeft(p, " \t,")
		if p == "" {
			break
		}
		eq := strings.IndexByte(p, '=')
		if eq <= 0 {
			return a, false
		}
		name := strings.ToLower(strings.TrimSpace(p[:eq]))
		if !isToken(name) {
			return a, false
		}
		p = strings.TrimLeft(p[eq+1:], " \t")
		var value string
		if strings.HasPrefix(p, `"`) {
			var b strings.Builder
			i := 1
			closed := false
			for ; i < len(p); i++ {
				c := p[i]
				if c == '\\' && i+1 < len(p) {
					i++
					b.WriteByte(p[i])
					continue
				}
				if c == '"' {
					closed = true
					break
				}
				b.WriteByte(c)
			}
			if !closed {
				return a, false
			}
			value, p = b.String(), p[i+1:]
		} else {
			end := strings.IndexAny(p, " \t,")
			if end < 0 {
				end = len(p)
			}
			value, p = p[:end], p[end:]
			if !isToken(value) {
				return a, false
			}
		}
		p = strings.TrimLeft(p, " \t")
		if p != "" && p[0] != ',' {
			return a, false
		}
		switch name {
		case "origin":
			a.Origin = value
		case "destination":
			a.Destination = value
		case "key":
			a.Key = value
		case "sig":
			a.Sig = value
		}
	}
	return a, a.Origin != "" && a.Key != "" && a.Sig != ""
}

// isToken is RFC 9110's token: visible ASCII but for delimiters.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			// ':' and '/' are delimiters in RFC 9110 but appear unquoted in key
			// IDs and server names sent by some servers; accept them.
			if c == ':' || c == '/' {
				continue
			}
			return false
		}
	}
	return true
}

// KeySource finds a server's verify key valid at a time.
type KeySource interface {
	VerifyKey(ctx context.Context, server, keyID string, at time.Time) (ed25519.PublicKey, error)
}

// Verify checks an incoming request's Authorization headers and returns the
// origin that signed it. ourName is this server's name: a header naming
// another destination is refused. Any header that verifies is enough.
func Verify(ctx context.Context, headers []string, r Request, ourName string, keys KeySource) (string, error) {
	if len(headers) == 0 {
		return "", spec.NewError(spec.ErrUnauthorized, "missing X-Matrix Authorization header")
	}
	var last error = spec.NewError(spec.ErrUnauthorized, "no valid X-Matrix Authorization header")
	for _, h := range headers {
		a, ok := ParseAuthorization(h)
		if !ok {
			last = spec.NewError(spec.ErrUnauthorized, "malformed X-Matrix Authorization header")
			continue
		}
		if a.Destination != "" && a.Destination != ourName {
			last = spec.NewError(spec.ErrUnauthorized, "request is for %s, not this server", a.Destination)
			continue
		}
		if !strings.HasPrefix(a.Key, "ed25519:") {
			last = spec.NewError(spec.ErrUnauthorized, "unsupported key algorithm")
			continue
		}
		pub, err := keys.VerifyKey(ctx, a.Origin, a.Key, time.Now())
		if err != nil {
			last = spec.NewError(spec.ErrUnauthorized, "cannot get key %s of %s: %v", a.Key, a.Origin, err)
			continue
		}
		sig, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(a.Sig, "="))
		if err != nil || len(sig) != ed25519.SignatureSize {
			last = spec.NewError(spec.ErrUnauthorized, "signature is not base64 ed25519")
			continue
		}
		rr := r
		rr.Origin, rr.Destination = a.Origin, ourName
		b, err := rr.signedBytes()
		if err != nil {
			return "", err
		}
		if !ed25519.Verify(pub, b, sig) {
			last = spec.NewError(spec.ErrUnauthorized, "signature does not verify")
			continue
		}
		return a.Origin, nil
	}
	return "", last
}
