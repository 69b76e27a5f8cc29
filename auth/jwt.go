package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// JWT login (org.matrix.login.jwt, as Synapse offers it): an integration
// that the admin trusts signs {"sub": localpart or user ID, "exp": …} with
// its key, and the holder of the JWT may log in as that user. The user must
// already exist: a JWT does not create accounts. Tokens without an expiry
// are refused — a JWT that never expires is a password that cannot be
// changed.

type jwtVerifier struct {
	keys     []any // public keys or HMAC secrets to try
	algs     []jose.SignatureAlgorithm
	issuer   string
	audience string
	now      func() time.Time
}

// maxJWTLifetime refuses tokens valid for absurdly long.
const maxJWTLifetime = 24 * time.Hour

// newJWTVerifier reads the key: PEM (a public key or certificate), a JWK or
// JWK set (JSON), or else the bytes are an HMAC secret (at least 32 bytes).
func newJWTVerifier(material []byte, issuer, audience string) (*jwtVerifier, error) {
	v := &jwtVerifier{issuer: issuer, audience: audience, now: time.Now}
	trimmed := bytes.TrimSpace(material)
	switch {
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN")):
		rest := trimmed
		for {
			block, r := pem.Decode(rest)
			if block == nil {
				break
			}
			rest = r
			var pub any
			var err error
			switch block.Type {
			case "PUBLIC KEY":
				pub, err = x509.ParsePKIXPublicKey(block.Bytes)
			case "CERTIFICATE":
				var cert *x509.Certificate
				if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
					pub = cert.PublicKey
				}
			case "RSA PUBLIC KEY":
				pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
			default:
				return nil, fmt.Errorf("PEM block %q: expected a public key", block.Type)
			}
			if err != nil {
				return nil, err
			}
			v.keys = append(v.keys, pub)
		}
	case bytes.HasPrefix(trimmed, []byte("{")):
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(trimmed, &set); err == nil && len(set.Keys) > 0 {
			for _, k := range set.Keys {
				v.keys = append(v.keys, k.Key)
			}
		} else {
			var k jose.JSONWebKey
			if err := json.Unmarshal(trimmed, &k); err != nil {
				return nil, fmt.Errorf("not a JWK or JWK set: %w", err)
			}
			v.keys = append(v.keys, k.Key)
		}
	default:
		if len(trimmed) < 32 {
			return nil, errors.New("an HMAC secret must be at least 32 bytes")
		}
		v.keys = append(v.keys, trimmed)
	}
	if len(v.keys) == 0 {
		return nil, errors.New("no key found")
	}
	algs := map[jose.SignatureAlgorithm]bool{}
	for _, k := range v.keys {
		switch k := k.(type) {
		case *rsa.PublicKey:
			algs[jose.RS256], algs[jose.RS384], algs[jose.RS512] = true, true, true
			algs[jose.PS256], algs[jose.PS384], algs[jose.PS512] = true, true, true
		case *ecdsa.PublicKey:
			algs[jose.ES256], algs[jose.ES384], algs[jose.ES512] = true, true, true
		case ed25519.PublicKey:
			algs[jose.EdDSA] = true
		case []byte:
			algs[jose.HS256], algs[jose.HS384], algs[jose.HS512] = true, true, true
		default:
			return nil, fmt.Errorf("unsupported key type %T (private keys do not belong here)", k)
		}
	}
	for a := range algs {
		v.algs = append(v.algs, a)
	}
	return v, nil
}

// verify checks the JWT's signature and claims and returns its subject.
func (v *jwtVerifier) verify(token string) (string, error) {
	if token == "" {
		return "", errors.New("token is required")
	}
	if len(token) > 16384 {
		return "", errors.New("token too long")
	}
	tok, err := jwt.ParseSigned(token, v.algs)
	if err != nil {
		return "", errors.New("malformed token")
	}
	var claims jwt.Claims
	verified := false
	for _, k := range v.keys {
		if err := tok.Claims(k, &claims); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return "", errors.New("bad signature")
	}
	if claims.Expiry == nil {
		return "", errors.New("the token has no expiry (exp)")
	}
	now := v.now()
	exp := claims.Expiry.Time()
	if exp.Sub(now) > maxJWTLifetime {
		return "", errors.New("the token is valid for too long")
	}
	want := jwt.Expected{Issuer: v.issuer, Time: now}
	if v.audience != "" {
		want.AnyAudience = jwt.Audience{v.audience}
	}
	if err := claims.ValidateWithLeeway(want, 30*time.Second); err != nil {
		return "", err
	}
	if claims.Subject == "" {
		return "", errors.New("the token has no subject (sub)")
	}
	return claims.Subject, nil
}
