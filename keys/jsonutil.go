package keys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// asSpecError returns err if it is a *spec.Error, else fallback.
func asSpecError(err error, fallback *spec.Error) error {
	var se *spec.Error
	if errors.As(err, &se) {
		return se
	}
	return fallback
}

// object splits a JSON object into its members by exact (case-sensitive)
// name. encoding/json's struct decoding matches names case-insensitively,
// which would let "USER_ID" stand in for "user_id": members are read
// through this instead.
func object(raw json.RawMessage, what string) (map[string]json.RawMessage, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, spec.BadJSON("%s must be an object", what)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, spec.BadJSON("%s must be an object", what)
	}
	return m, nil
}

// readObjectBody reads a request body of at most limit bytes as canonical
// JSON and splits the object into its members.
func readObjectBody(c *gin.Context, limit int64) (map[string]json.RawMessage, error) {
	body, err := api.ReadCanonical(c, limit)
	if err != nil {
		return nil, err
	}
	return object(body, "the request body")
}

// requiredObject reads the object member name of m, which must be there.
func requiredObject(m map[string]json.RawMessage, name string) (map[string]json.RawMessage, error) {
	raw, ok := m[name]
	if !ok {
		return nil, spec.MissingParam("%s is required", name)
	}
	return object(raw, name)
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// str reads a string member; a missing member is "" with ok false.
func str(m map[string]json.RawMessage, name, what string) (string, bool, error) {
	raw, ok := m[name]
	if !ok || isNull(raw) {
		return "", false, nil
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false, spec.BadJSON("%s.%s must be a string", what, name)
	}
	return s, true, nil
}

func requiredStr(m map[string]json.RawMessage, name, what string) (string, error) {
	s, ok, err := str(m, name, what)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", spec.MissingParam("%s.%s is required", what, name)
	}
	return s, nil
}

// strMap reads an object of strings.
func strMap(raw json.RawMessage, what string) (map[string]string, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, spec.BadJSON("%s must be an object of strings", what)
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, spec.BadJSON("%s must be an object of strings", what)
	}
	return m, nil
}

// strList reads an array of strings.
func strList(raw json.RawMessage, what string) ([]string, error) {
	if len(raw) == 0 || raw[0] != '[' {
		return nil, spec.BadJSON("%s must be an array of strings", what)
	}
	var l []string
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, spec.BadJSON("%s must be an array of strings", what)
	}
	return l, nil
}

// signaturesOf reads the "signatures" member: user ID → key ID → signature.
// A missing member is an empty map.
func signaturesOf(m map[string]json.RawMessage, what string) (map[string]map[string]string, error) {
	raw, ok := m["signatures"]
	if !ok || isNull(raw) {
		return map[string]map[string]string{}, nil
	}
	if raw[0] != '{' {
		return nil, spec.BadJSON("%s.signatures must be an object", what)
	}
	var sigs map[string]map[string]string
	if err := json.Unmarshal(raw, &sigs); err != nil {
		return nil, spec.BadJSON("%s.signatures must map user IDs to objects of key IDs and signatures", what)
	}
	return sigs, nil
}

// decodeKey decodes an unpadded base64 (standard alphabet) 32-byte public
// key. Padded input is accepted too, as some clients pad.
func decodeKey(s string) ([]byte, bool) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != 32 {
		return nil, false
	}
	return b, true
}

// canonicalKey reports whether s is the canonical unpadded base64 of a
// 32-byte key (the form stored and compared).
func canonicalKey(s string) bool {
	b, ok := decodeKey(s)
	return ok && base64.RawStdEncoding.EncodeToString(b) == s
}

// verify checks a signature by user's key keyID ("ed25519:…") with the
// base64 public key pub over the canonical object obj.
func verify(obj []byte, user spec.UserID, keyID, pub string) error {
	b, ok := decodeKey(pub)
	if !ok {
		return spec.NewError(spec.ErrInvalidSignature, "the signing key is not an ed25519 public key")
	}
	return events.VerifyJSON(obj, string(user), keyID, ed25519.PublicKey(b))
}

// withoutSignatures returns the canonical object without its "signatures"
// and "unsigned" members: what a signature covers, and what must match when
// a client re-sends a stored key with new signatures.
func withoutSignatures(obj []byte) ([]byte, error) {
	m, err := object(obj, "key")
	if err != nil {
		return nil, err
	}
	delete(m, "signatures")
	delete(m, "unsigned")
	b, err := json.Marshal(m)
	if err != nil {
		return nil, spec.BadJSON("invalid key object")
	}
	return events.Canonical(b)
}

// checkDeviceID checks a device ID taken from a request.
func checkDeviceID(id string) error {
	if id == "" || len(id) > 255 || !utf8.ValidString(id) || strings.IndexByte(id, 0) >= 0 {
		return spec.InvalidParam("invalid device ID")
	}
	return nil
}

// checkName checks an algorithm, key ID, transaction ID, event type or
// session ID: 1-255 bytes of UTF-8 without NUL.
func checkName(what, s string) error {
	if s == "" || len(s) > 255 || !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return spec.InvalidParam("invalid %s", what)
	}
	return nil
}

// mergeSignatures returns the stored key object obj with extra signatures
// added beside its own, and with unsigned set when given. Members other than
// "signatures" and "unsigned" are copied byte for byte.
func mergeSignatures(obj []byte, extra map[string]map[string]string, unsigned map[string]any) (json.RawMessage, error) {
	if len(extra) == 0 && unsigned == nil {
		return obj, nil
	}
	m, err := object(obj, "key")
	if err != nil {
		return nil, err
	}
	sigs, err := signaturesOf(m, "key")
	if err != nil {
		return nil, err
	}
	for u, byKey := range extra {
		if sigs[u] == nil {
			sigs[u] = map[string]string{}
		}
		for k, v := range byKey {
			sigs[u][k] = v
		}
	}
	if len(sigs) > 0 {
		if m["signatures"], err = encode(sigs); err != nil {
			return nil, err
		}
	}
	if unsigned != nil {
		if m["unsigned"], err = encode(unsigned); err != nil {
			return nil, err
		}
	}
	return encode(m)
}

// encode is json.Marshal without HTML escaping, so that stored strings go
// back out byte for byte.
func encode(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}
