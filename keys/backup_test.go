package keys_test

import (
	"net/url"
	"testing"
)

const room = "!room:test"

func keyData(verified bool, first, forwarded int, marker string) map[string]any {
	return map[string]any{
		"first_message_index": first, "forwarded_count": forwarded, "is_verified": verified,
		"session_data": map[string]any{"ephemeral": "e", "ciphertext": marker, "mac": "m"},
	}
}

func TestKeyBackup(t *testing.T) {
	e := newEnv(t)
	a := newDevice(alice, "A")
	b := newDevice(bob, "B")
	e.want(e.do(a, "GET", "/_matrix/client/v3/room_keys/version", nil), 404, "M_NOT_FOUND")
	info := map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "abc"}}
	r := e.do(a, "POST", "/_matrix/client/v3/room_keys/version", info)
	e.want(r, 200)
	v1 := r.body["version"].(string)
	r = e.do(a, "GET", "/_matrix/client/v3/room_keys/version", nil)
	e.want(r, 200)
	if r.body["version"] != v1 || r.body["count"] != float64(0) || r.body["etag"] == nil {
		t.Fatalf("version info = %s", r.raw)
	}
	e.want(e.do(b, "GET", "/_matrix/client/v3/room_keys/version/"+v1, nil), 404) // not bob's

	put := func(session string, data any) resp {
		return e.do(a, "PUT", "/_matrix/client/v3/room_keys/keys/"+room+"/"+session+"?version="+v1, data)
	}
	get := func(session string) string {
		r := e.do(a, "GET", "/_matrix/client/v3/room_keys/keys/"+room+"/"+session+"?version="+v1, nil)
		e.want(r, 200)
		return r.get("session_data", "ciphertext").(string)
	}
	r = put("S1", keyData(false, 5, 1, "first"))
	e.want(r, 200)
	etag1 := r.body["etag"]
	if r.body["count"] != float64(1) {
		t.Fatalf("put = %s", r.raw)
	}
	// The spec's rule: verified wins, then lower first_message_index, then
	// lower forwarded_count; a key that is no better changes nothing.
	steps := []struct {
		data map[string]any
		want string
	}{
		{keyData(false, 6, 0, "worse index"), "first"},
		{keyData(false, 5, 1, "equal"), "first"},
		{keyData(false, 5, 0, "fewer forwards"), "fewer forwards"},
		{keyData(false, 2, 3, "lower index"), "lower index"},
		{keyData(true, 9, 9, "verified"), "verified"},
		{keyData(false, 0, 0, "unverified"), "verified"},
	}
	for _, s := range steps {
		e.want(put("S1", s.data), 200)
		if got := get("S1"); got != s.want {
			t.Fatalf("after %v: stored %q, want %q", s.data, got, s.want)
		}
	}
	r = e.do(a, "GET", "/_matrix/client/v3/room_keys/version/"+v1, nil)
	if r.body["etag"] == etag1 || r.body["count"] != float64(1) {
		t.Fatalf("etag did not change: %s", r.raw)
	}

	// Session IDs are base64 with "+" and "/": they must round-trip.
	odd := "a+b/c=="
	e.want(e.do(a, "PUT", "/_matrix/client/v3/room_keys/keys/"+room+"/"+url.PathEscape(odd)+"?version="+v1, keyData(false, 0, 0, "odd")), 200)
	r = e.do(a, "GET", "/_matrix/client/v3/room_keys/keys/"+room+"?version="+v1, nil)
	if r.get("sessions", odd, "session_data", "ciphertext") != "odd" {
		t.Fatalf("session %q not stored under its ID: %s", odd, r.raw)
	}
	e.want(e.do(a, "DELETE", "/_matrix/client/v3/room_keys/keys/"+room+"/"+url.PathEscape(odd)+"?version="+v1, nil), 200)

	// Bulk upload, and the three GET shapes.
	e.want(e.do(a, "PUT", "/_matrix/client/v3/room_keys/keys?version="+v1, map[string]any{"rooms": map[string]any{
		"!other:test": map[string]any{"sessions": map[string]any{"S2": keyData(false, 0, 0, "s2"), "S3": keyData(false, 0, 0, "s3")}},
	}}), 200)
	r = e.do(a, "GET", "/_matrix/client/v3/room_keys/keys?version="+v1, nil)
	if len(r.get("rooms").(map[string]any)) != 2 {
		t.Fatalf("all keys = %s", r.raw)
	}
	r = e.do(a, "GET", "/_matrix/client/v3/room_keys/keys/!empty:test?version="+v1, nil)
	e.want(r, 200)
	if len(r.get("sessions").(map[string]any)) != 0 {
		t.Fatalf("empty room = %s", r.raw)
	}
	e.want(e.do(a, "GET", "/_matrix/client/v3/room_keys/keys/"+room+"/NOPE?version="+v1, nil), 404, "M_NOT_FOUND")

	// Bad inputs store nothing.
	for name, body := range map[string]any{
		"missing is_verified":        map[string]any{"first_message_index": 0, "forwarded_count": 0, "session_data": map[string]any{}},
		"negative index":             keyData(false, -1, 0, "x"),
		"string index":               map[string]any{"first_message_index": "0", "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{}},
		"session_data not an object": map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": "x"},
		"fractional index":           `{"first_message_index":0.5,"forwarded_count":0,"is_verified":false,"session_data":{}}`,
	} {
		if r := put("BAD", body); r.status != 400 {
			t.Errorf("%s: got %d %s", name, r.status, r.raw)
		}
	}
	e.want(e.do(a, "GET", "/_matrix/client/v3/room_keys/keys/"+room+"/BAD?version="+v1, nil), 404)
	e.want(e.do(a, "PUT", "/_matrix/client/v3/room_keys/keys/"+room+"/S1", keyData(true, 0, 0, "x")), 400, "M_MISSING_PARAM")
	e.want(e.do(a, "PUT", "/_matrix/client/v3/room_keys/keys/notaroom/S1?version="+v1, keyData(true, 0, 0, "x")), 400)

	// Updating auth_data: the algorithm must match.
	e.want(e.do(a, "PUT", "/_matrix/client/v3/room_keys/version/"+v1, map[string]any{"algorithm": "other", "auth_data": map[string]any{}}), 400, "M_INVALID_PARAM")
	e.want(e.do(a, "PUT", "/_matrix/client/v3/room_keys/version/"+v1, map[string]any{"algorithm": info["algorithm"], "auth_data": map[string]any{"public_key": "def"}, "version": "99"}), 400, "M_INVALID_PARAM")
	e.want(e.do(a, "PUT", "/_matrix/client/v3/room_keys/version/"+v1, map[string]any{"algorithm": info["algorithm"], "auth_data": map[string]any{"public_key": "def"}}), 200)
	if e.do(a, "GET", "/_matrix/client/v3/room_keys/version/"+v1, nil).get("auth_data", "public_key") != "def" {
		t.Fatal("auth_data not updated")
	}

	// A new version becomes current: writing to the old one is refused with
	// the current version named.
	r = e.do(a, "POST", "/_matrix/client/v3/room_keys/version", info)
	v2 := r.body["version"].(string)
	r = put("S9", keyData(false, 0, 0, "old version"))
	e.want(r, 403, "M_WRONG_ROOM_KEYS_VERSION")
	if r.body["current_version"] != v2 {
		t.Fatalf("current_version = %s", r.raw)
	}
	// Deleting keys, then versions; a second delete still succeeds.
	r = e.do(a, "DELETE", "/_matrix/client/v3/room_keys/keys/"+room+"?version="+v1, nil)
	e.want(r, 200)
	if r.body["count"] != float64(2) {
		t.Fatalf("count after deleting a room = %s", r.raw)
	}
	e.want(e.do(a, "DELETE", "/_matrix/client/v3/room_keys/version/"+v2, nil), 200)
	e.want(e.do(a, "DELETE", "/_matrix/client/v3/room_keys/version/"+v2, nil), 200)
	e.want(e.do(a, "GET", "/_matrix/client/v3/room_keys/version/"+v2, nil), 404)
	e.want(e.do(a, "DELETE", "/_matrix/client/v3/room_keys/version/77", nil), 404)
	r = e.do(a, "GET", "/_matrix/client/v3/room_keys/version", nil)
	if r.body["version"] != v1 {
		t.Fatalf("current after deleting v2 = %s", r.raw)
	}
	r = e.do(a, "POST", "/_matrix/client/v3/room_keys/version", info)
	if r.body["version"] == v2 {
		t.Fatal("a deleted version number was reused")
	}
	e.want(e.do(a, "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": "x"}), 400, "M_MISSING_PARAM")
	e.want(e.do(a, "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": 5, "auth_data": map[string]any{}}), 400, "M_BAD_JSON")
}
