package keys_test

import (
	"context"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

const (
	alice = spec.UserID("@alice:test")
	bob   = spec.UserID("@bob:test")
	carol = spec.UserID("@carol:test")
)

func TestUploadAndQueryDeviceKeys(t *testing.T) {
	e := newEnv(t)
	a := newDevice(alice, "ALICE1")
	b := newDevice(bob, "BOB1")
	r := e.upload(a, 3)
	if got := r.get("one_time_key_counts", "signed_curve25519"); got != float64(3) {
		t.Fatalf("counts = %v, want 3", r.body)
	}
	dk, err := e.queryDevice(b, alice, "ALICE1")
	if err != nil {
		t.Fatal(err)
	}
	if dk["keys"].(map[string]any)["ed25519:ALICE1"] != a.edKey() {
		t.Fatalf("query returned %v", dk)
	}
	if _, ok := dk["signatures"].(map[string]any)[string(alice)].(map[string]any)["ed25519:ALICE1"]; !ok {
		t.Fatalf("self-signature missing: %v", dk)
	}
	if dk["unsigned"] != nil {
		t.Fatalf("bob sees alice's device name: %v", dk)
	}
	// The device's display name is shown to its owner only.
	if err := e.svc.DeviceUpdated(context.Background(), alice, "ALICE1", "Alice's phone"); err != nil {
		t.Fatal(err)
	}
	own, _ := e.queryDevice(a, alice, "ALICE1")
	if own["unsigned"].(map[string]any)["device_display_name"] != "Alice's phone" {
		t.Fatalf("alice does not see her device's name: %v", own)
	}
	if dk, _ := e.queryDevice(b, alice, "ALICE1"); dk["unsigned"] != nil {
		t.Fatalf("bob sees alice's device name: %v", dk)
	}
	// Re-uploading the same keys is a no-op; counts are also in memory.
	e.want(e.do(a, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": a.deviceKeys()}), 200)
	counts, _ := e.svc.OneTimeKeyCounts(context.Background(), alice, "ALICE1")
	if counts["signed_curve25519"] != 3 {
		t.Fatalf("in-memory counts = %v", counts)
	}
	// An unknown user and a remote user: an empty entry and a failure.
	r = e.do(b, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{"@nobody:test": []string{}, "@x:elsewhere": []string{}}})
	e.want(r, 200)
	if r.get("device_keys", "@nobody:test") == nil || r.get("failures", "elsewhere") == nil {
		t.Fatalf("query = %s", r.raw)
	}
}

// Every refused upload is answered with the spec's error and stores nothing.
func TestUploadRefusesBadDeviceKeys(t *testing.T) {
	e := newEnv(t)
	a := newDevice(alice, "ALICE1")
	other := newDevice(bob, "BOB1")
	forger := newDevice(alice, "ALICE1") // same IDs, different keys

	forAnotherUser := newDevice(bob, "ALICE1")
	forAnotherDevice := newDevice(alice, "OTHER")
	noSig := a.unsignedDeviceKeys()
	forged := a.unsignedDeviceKeys()
	forged = sign(forged, alice, "ed25519:ALICE1", forger.priv) // signed by a key that is not the one listed
	tampered := a.deviceKeys()
	tampered["algorithms"] = []string{"m.olm.v1.curve25519-aes-sha2"} // changed after signing
	noCurve := sign(map[string]any{"user_id": alice, "device_id": "ALICE1", "algorithms": []string{},
		"keys": map[string]string{"ed25519:ALICE1": a.edKey()}}, alice, "ed25519:ALICE1", a.priv)
	wrongKeyID := a.unsignedDeviceKeys()
	wrongKeyID["keys"].(map[string]string)["curve25519:OTHER"] = randomKey()
	wrongKeyID = sign(wrongKeyID, alice, "ed25519:ALICE1", a.priv)

	cases := []struct {
		name    string
		body    any
		status  int
		errcode string
	}{
		{"device keys of another user", map[string]any{"device_keys": forAnotherUser.deviceKeys()}, 400, "M_INVALID_PARAM"},
		{"device keys of another device", map[string]any{"device_keys": forAnotherDevice.deviceKeys()}, 400, "M_INVALID_PARAM"},
		{"missing self-signature", map[string]any{"device_keys": noSig}, 400, "M_INVALID_SIGNATURE"},
		{"forged self-signature", map[string]any{"device_keys": forged}, 400, "M_INVALID_SIGNATURE"},
		{"tampered after signing", map[string]any{"device_keys": tampered}, 400, "M_INVALID_SIGNATURE"},
		{"no curve25519 key", map[string]any{"device_keys": noCurve}, 400, "M_INVALID_PARAM"},
		{"key ID of another device", map[string]any{"device_keys": wrongKeyID}, 400, "M_INVALID_PARAM"},
		{"no algorithms, keys or signatures", map[string]any{"device_keys": map[string]any{"user_id": alice, "device_id": "ALICE1"}}, 400, "M_BAD_JSON"},
		{"no user_id", map[string]any{"device_keys": map[string]any{"device_id": "ALICE1", "algorithms": []string{}, "keys": map[string]string{}}}, 400, "M_BAD_JSON"},
		{"not JSON", "{not json", 400, "M_NOT_JSON"},
		{"array body", "[]", 400, "M_BAD_JSON"},
		{"device_keys a string", `{"device_keys":"x"}`, 400, "M_BAD_JSON"},
		{"keys of wrong type", map[string]any{"device_keys": map[string]any{"user_id": alice, "device_id": "ALICE1", "algorithms": []string{}, "keys": []int{1}}}, 400, "M_BAD_JSON"},
		{"user_id of wrong type", map[string]any{"device_keys": map[string]any{"user_id": 5, "device_id": "ALICE1"}}, 400, "M_BAD_JSON"},
		{"duplicate member", `{"device_keys":{"user_id":"@alice:test","user_id":"@alice:test"}}`, 400, "M_BAD_JSON"},
		{"fractional number", `{"device_keys":{"user_id":"@alice:test","x":1.5}}`, 400, "M_BAD_JSON"},
		{"oversize body", `{"device_keys":{"pad":"` + strings.Repeat("a", 70<<10) + `"}}`, 413, "M_TOO_LARGE"},
		{"one-time key with a forged signature", map[string]any{"device_keys": a.deviceKeys(), "one_time_keys": map[string]any{"signed_curve25519:AAA": sign(map[string]any{"key": randomKey()}, alice, "ed25519:ALICE1", other.priv)}}, 400, "M_INVALID_SIGNATURE"},
		{"one-time key not signed", map[string]any{"device_keys": a.deviceKeys(), "one_time_keys": map[string]any{"signed_curve25519:AAA": map[string]any{"key": randomKey()}}}, 400, "M_INVALID_SIGNATURE"},
		{"one-time key not base64", map[string]any{"device_keys": a.deviceKeys(), "one_time_keys": map[string]any{"signed_curve25519:AAA": sign(map[string]any{"key": "!!"}, alice, "ed25519:ALICE1", a.priv)}}, 400, "M_INVALID_PARAM"},
		{"one-time key ID without algorithm", map[string]any{"device_keys": a.deviceKeys(), "one_time_keys": map[string]any{"AAA": a.otk(false)}}, 400, "M_INVALID_PARAM"},
		{"one-time key of wrong type", map[string]any{"device_keys": a.deviceKeys(), "one_time_keys": map[string]any{"signed_curve25519:AAA": 5}}, 400, "M_BAD_JSON"},
		{"two fallback keys of one algorithm", map[string]any{"device_keys": a.deviceKeys(), "fallback_keys": map[string]any{"signed_curve25519:A": a.otk(true), "signed_curve25519:B": a.otk(true)}}, 400, "M_INVALID_PARAM"},
		{"too many one-time keys", map[string]any{"device_keys": a.deviceKeys(), "one_time_keys": manyKeys(a, 51)}, 413, "M_TOO_LARGE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.want(e.do(a, "POST", "/_matrix/client/v3/keys/upload", tc.body), tc.status, tc.errcode)
			if _, err := e.queryDevice(other, alice, "ALICE1"); err != errNotFound {
				t.Fatalf("a refused upload stored device keys")
			}
			if counts, _ := e.svc.OneTimeKeyCounts(context.Background(), alice, "ALICE1"); counts["signed_curve25519"] != 0 {
				t.Fatalf("a refused upload stored one-time keys: %v", counts)
			}
		})
	}
	if e.svc.DeviceListPosition() != 0 {
		t.Fatalf("a refused upload marked the device list changed")
	}
}

func manyKeys(d *device, n int) map[string]any {
	m := map[string]any{}
	for i := 0; i < n; i++ {
		m["signed_curve25519:K"+itoa(i)] = d.otk(false)
	}
	return m
}

func TestIdentityKeysCannotChange(t *testing.T) {
	e := newEnv(t)
	a := newDevice(alice, "ALICE1")
	e.upload(a, 0)
	imposter := newDevice(alice, "ALICE1")
	e.want(e.do(imposter, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
		"device_keys": imposter.deviceKeys(), "one_time_keys": map[string]any{"signed_curve25519:X": imposter.otk(false)},
	}), 400, "M_INVALID_PARAM")
	dk, err := e.queryDevice(a, alice, "ALICE1")
	if err != nil || dk["keys"].(map[string]any)["ed25519:ALICE1"] != a.edKey() {
		t.Fatalf("identity keys changed: %v %v", dk, err)
	}
	if counts, _ := e.svc.OneTimeKeyCounts(context.Background(), alice, "ALICE1"); counts["signed_curve25519"] != 0 {
		t.Fatalf("the refused upload stored a one-time key")
	}
	// One-time keys signed by the old key are accepted without device keys.
	e.want(e.do(a, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:Y": a.otk(false)}}), 200)
	// A reused key ID with another key is refused; the same key again is fine.
	k := a.otk(false)
	e.want(e.do(a, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:Z": k}}), 200)
	e.want(e.do(a, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:Z": k}}), 200)
	e.want(e.do(a, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:Z": a.otk(false)}}), 400, "M_INVALID_PARAM")
	if counts, _ := e.svc.OneTimeKeyCounts(context.Background(), alice, "ALICE1"); counts["signed_curve25519"] != 2 {
		t.Fatalf("counts = %v, want 2", counts)
	}
	// Signed keys for a device that never uploaded device keys are refused.
	fresh := newDevice(alice, "FRESH")
	e.want(e.do(fresh, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:A": fresh.otk(false)}}), 400, "M_INVALID_PARAM")
}

func TestQueryFiltersDevices(t *testing.T) {
	e := newEnv(t)
	a1, a2 := newDevice(alice, "A1"), newDevice(alice, "A2")
	e.upload(a1, 0)
	e.upload(a2, 0)
	r := e.do(a1, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{string(alice): []string{"A2"}}})
	e.want(r, 200)
	devs := r.get("device_keys", string(alice)).(map[string]any)
	if len(devs) != 1 || devs["A2"] == nil {
		t.Fatalf("query for A2 returned %v", devs)
	}
	for _, bad := range []string{`{}`, `{"device_keys":[]}`, `{"device_keys":{"alice":[]}}`, `{"device_keys":{"@alice:test":"A1"}}`} {
		r := e.do(a1, "POST", "/_matrix/client/v3/keys/query", bad)
		if r.status != 400 {
			t.Errorf("%s: got %d %s", bad, r.status, r.raw)
		}
	}
}
