package tests

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/tests/harness"
)

// TestDehydratedDeviceLifecycle drives the MSC3814 endpoints over HTTP on the
// real server: the dehydrated device gets a device row (GET /devices lists
// it), its keys are served, and deleting it removes both.
func TestDehydratedDeviceLifecycle(t *testing.T) {
	s := harness.Start(t)
	user, token := registerDummy(t, s, "dehydrator"+randomSuffix())
	call := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		code, _, raw := doRequest(t, method, s.URL+path, token, body)
		var out map[string]any
		_ = json.Unmarshal(raw, &out)
		return code, out
	}

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	curve := make([]byte, 32)
	_, _ = rand.Read(curve)
	id := base64.RawStdEncoding.EncodeToString(curve)
	dk, _ := json.Marshal(map[string]any{
		"user_id": user, "device_id": id, "dehydrated": true,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + id: base64.RawStdEncoding.EncodeToString(pub), "curve25519:" + id: id},
	})
	signed, err := events.SignJSON(dk, events.SigningKey{ServerName: user, KeyID: "ed25519:" + id, Private: priv})
	if err != nil {
		t.Fatal(err)
	}
	const path = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
	status, body := call("PUT", path, map[string]any{
		"device_id":                   id,
		"device_data":                 map[string]any{"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "opaque"},
		"initial_device_display_name": "Dehydrated device",
		"device_keys":                 json.RawMessage(signed),
	})
	if status != 200 || body["device_id"] != id {
		t.Fatalf("PUT dehydrated_device: %d %v", status, body)
	}
	if status, body := call("GET", path, nil); status != 200 || body["device_id"] != id {
		t.Fatalf("GET dehydrated_device: %d %v", status, body)
	}
	listed := func() bool {
		_, body := call("GET", "/_matrix/client/v3/devices", nil)
		devs, _ := body["devices"].([]any)
		for _, d := range devs {
			if m, _ := d.(map[string]any); m["device_id"] == id {
				return true
			}
		}
		return false
	}
	if !listed() {
		t.Fatal("the dehydrated device is not in GET /devices")
	}
	_, q := call("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{user: []string{}}})
	if dks, _ := q["device_keys"].(map[string]any)[user].(map[string]any); dks[id] == nil {
		t.Fatalf("the dehydrated device's keys are not served: %v", q)
	}
	if status, body := call("DELETE", path, nil); status != 200 || body["device_id"] != id {
		t.Fatalf("DELETE dehydrated_device: %d %v", status, body)
	}
	if listed() {
		t.Fatal("the deleted dehydrated device is still in GET /devices")
	}
	if status, _ := call("GET", path, nil); status != 404 {
		t.Fatalf("GET after delete: %d", status)
	}
}

// registerDummy registers a user through the m.login.dummy flow and
// returns the user ID and access token.
func registerDummy(t *testing.T, s *harness.Server, localpart string) (string, string) {
	t.Helper()
	post := func(body map[string]any) (int, map[string]any) {
		b, _ := json.Marshal(body)
		res, err := http.Post(s.URL+"/_matrix/client/v3/register", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	req := map[string]any{"username": localpart, "password": "correct horse battery staple"}
	status, body := post(req)
	if status == 401 {
		req["auth"] = map[string]any{"type": "m.login.dummy", "session": body["session"]}
		status, body = post(req)
	}
	if status != 200 {
		t.Fatalf("register %s: %d %v", localpart, status, body)
	}
	return body["user_id"].(string), body["access_token"].(string)
}
