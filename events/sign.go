package events

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"

	"github.com/chatalot/chatalot/spec"
)

// SigningKey is a server's ed25519 signing key and the names it signs under.
type SigningKey struct {
	ServerName string
	KeyID      string // "ed25519:" and the key version, e.g. "ed25519:a_Bc1"
	Private    ed25519.PrivateKey
}

func (k SigningKey) check() error {
	if k.ServerName == "" {
		return spec.Internal("signing key has no server name")
	}
	if !strings.HasPrefix(k.KeyID, "ed25519:") || len(k.KeyID) == len("ed25519:") {
		return spec.Internal("signing key ID must be ed25519:<version>")
	}
	if len(k.Private) != ed25519.PrivateKeySize {
		return spec.Internal("signing key is not an ed25519 private key")
	}
	return nil
}

// SignJSON signs a JSON object (appendices, "Signing Details"): the canonical
// form without "signatures" and "unsigned" is signed, the signature is added
// under signatures.<server>.<key ID> beside any existing signatures, and
// "unsigned" is put back. The result is canonical JSON.
func SignJSON(obj []byte, key SigningKey) ([]byte, error) {
	if err := key.check(); err != nil {
		return nil, err
	}
	c, err := CanonicalObject(obj)
	if err != nil {
		return nil, err
	}
	return signCanonical(c, key)
}

func signCanonical(c []byte, key SigningKey) ([]byte, error) {
	sigs, hasSigs := member(c, "signatures")
	unsigned, hasUnsigned := member(c, "unsigned")
	stripped, ok := without(c, "signatures", "unsigned")
	if !ok {
		return nil, spec.BadJSON("expected a JSON object")
	}
	sig := ed25519.Sign(key.Private, stripped)
	if !hasSigs {
		sigs = []byte("{}")
	}
	sigs, err := addSignature(sigs, key, sig)
	if err != nil {
		return nil, err
	}
	out, ok := withMember(stripped, "signatures", sigs)
	if ok && hasUnsigned {
		out, ok = withMember(out, "unsigned", unsigned)
	}
	if !ok {
		return nil, spec.BadJSON("expected a JSON object")
	}
	return out, nil
}

// addSignature sets sigs.<server>.<key ID> in a canonical signatures object.
func addSignature(sigs []byte, key SigningKey, sig []byte) ([]byte, error) {
	if !isObject(sigs) {
		return nil, spec.BadJSON("signatures must be an object")
	}
	server := []byte("{}")
	if old, ok := memberString(sigs, key.ServerName); ok {
		if !isObject(old) {
			return nil, spec.BadJSON("signatures of a server must be an object")
		}
		server = old
	}
	enc := make([]byte, 0, 90)
	enc = append(enc, '"')
	enc = base64.RawStdEncoding.AppendEncode(enc, sig)
	enc = append(enc, '"')
	server, ok := withMember(server, key.KeyID, enc)
	if ok {
		sigs, ok = withMember(sigs, key.ServerName, server)
	}
	if !ok {
		return nil, spec.BadJSON("invalid signatures object")
	}
	return sigs, nil
}

// memberString finds a member by its decoded key, for keys that are not plain
// protocol names (server names, key IDs).
func memberString(obj []byte, key string) ([]byte, bool) {
	ek, ok := appendString(nil, key)
	if !ok {
		return nil, false
	}
	return member(obj, string(ek[1:len(ek)-1]))
}

// VerifyJSON checks that a JSON object carries a valid signature by serverName
// under keyID made with pub (appendices, "Checking for a Signature"). Only
// ed25519 is understood. Any missing, malformed or wrong piece is an error:
// the caller must treat every error as "not signed".
func VerifyJSON(obj []byte, serverName, keyID string, pub ed25519.PublicKey) error {
	c, err := CanonicalObject(obj)
	if err != nil {
		return err
	}
	return verifyCanonical(c, serverName, keyID, pub)
}

func verifyCanonical(c []byte, serverName, keyID string, pub ed25519.PublicKey) error {
	if !strings.HasPrefix(keyID, "ed25519:") {
		return spec.NewError(spec.ErrInvalidSignature, "unsupported signing algorithm")
	}
	if len(pub) != ed25519.PublicKeySize {
		return spec.NewError(spec.ErrInvalidSignature, "verification key is not an ed25519 public key")
	}
	sigs, ok := member(c, "signatures")
	if !ok || !isObject(sigs) {
		return spec.NewError(spec.ErrInvalidSignature, "object is not signed")
	}
	server, ok := memberString(sigs, serverName)
	if !ok || !isObject(server) {
		return spec.NewError(spec.ErrInvalidSignature, "no signature from %s", serverName)
	}
	raw, ok := memberString(server, keyID)
	if !ok || !isString(raw) {
		return spec.NewError(spec.ErrInvalidSignature, "no signature from %s with key %s", serverName, keyID)
	}
	s, _ := unquote(raw)
	sig, err := decodeBase64(s)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return spec.NewError(spec.ErrInvalidSignature, "signature is not valid base64 of an ed25519 signature")
	}
	stripped, ok := without(c, "signatures", "unsigned")
	if !ok {
		return spec.NewError(spec.ErrInvalidSignature, "expected a JSON object")
	}
	if !ed25519.Verify(pub, stripped, sig) {
		return spec.NewError(spec.ErrInvalidSignature, "signature does not verify")
	}
	return nil
}

// SignEvent hashes and signs an event for room version v (server-server API,
// "Adding hashes and signatures to outgoing events"): it sets the content
// hash, signs the redacted event and copies the signature to the full event.
// Unsigned data in the input is kept.
func SignEvent(event []byte, v spec.RoomVersion, key SigningKey) ([]byte, error) {
	if err := key.check(); err != nil {
		return nil, err
	}
	c, err := canonicalEvent(event, v)
	if err != nil {
		return nil, err
	}
	signed, _, err := signEvent(c, v, key)
	return signed, err
}

// signEvent returns the hashed and signed event and the bytes it signed,
// which are also the input of the reference hash.
func signEvent(ev []byte, v spec.RoomVersion, key SigningKey) (signed, redacted []byte, err error) {
	ev, err = addContentHash(ev)
	if err != nil {
		return nil, nil, err
	}
	r, err := redactCanonical(ev, v)
	if err != nil {
		return nil, nil, err
	}
	r, ok := without(r, "signatures", "unsigned")
	if !ok {
		return nil, nil, spec.BadJSON("event is not a JSON object")
	}
	sig := ed25519.Sign(key.Private, r)
	sigs, ok := member(ev, "signatures")
	if !ok {
		sigs = []byte("{}")
	}
	if sigs, err = addSignature(sigs, key, sig); err != nil {
		return nil, nil, err
	}
	out, ok := withMember(ev, "signatures", sigs)
	if !ok {
		return nil, nil, spec.BadJSON("event is not a JSON object")
	}
	return out, r, nil
}

// VerifyEvent checks the signature of serverName on an event of room version
// v: the signature covers the redacted event, so it holds for a redacted
// copy too (server-server API, "Validating hashes and signatures on received
// events"). The content hash is checked separately by CheckContentHash.
func VerifyEvent(event []byte, v spec.RoomVersion, serverName, keyID string, pub ed25519.PublicKey) error {
	c, err := canonicalEvent(event, v)
	if err != nil {
		return err
	}
	r, err := redactCanonical(c, v)
	if err != nil {
		return err
	}
	return verifyCanonical(r, serverName, keyID, pub)
}
