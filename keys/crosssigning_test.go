package keys_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
)

const deviceSigningPath = "/_matrix/client/v3/keys/device_signing/upload"
const signaturesPath = "/_matrix/client/v3/keys/signatures/upload"

func (e *env) query(as *device, users ...string) resp {
	e.t.Helper()
	q := map[string]any{}
	for _, u := range users {
		q[u] = []string{}
	}
	r := e.do(as, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": q})
	e.want(r, 200)
	return r
}

func sigsOf(v any, user string) map[string]any {
	m, _ := v.(map[string]any)
	s, _ := m["signatures"].(map[string]any)
	u, _ := s[user].(map[string]any)
	return u
}

func TestCrossSigningUpload(t *testing.T) {
	e := newEnv(t)
	a := newDevice(alice, "ALICE1")
	b := newDevice(bob, "BOB1")
	e.upload(a, 0)
	x := newCrossSigning(alice)

	// Refusals first, each storing nothing.
	otherMaster := newCrossSigning(alice)
	forgedSelf := x.upload()
	forgedSelf["self_signing_key"] = x.signedBy("self_signing", x.selfPriv, otherMaster.masterPriv)
	unsignedUser := x.upload()
	unsignedUser["user_signing_key"] = x.key("user_signing", x.usrPriv)
	wrongUser := x.upload()
	wrongUser["master_key"].(map[string]any)["user_id"] = bob
	wrongUsage := x.upload()
	wrongUsage["master_key"].(map[string]any)["usage"] = []string{"self_signing"}
	badKeyID := x.upload()
	badKeyID["master_key"].(map[string]any)["keys"] = map[string]string{"ed25519:x": x.masterPub()}
	for name, tc := range map[string]struct {
		body    any
		status  int
		errcode string
	}{
		"self-signing key not signed by the master key": {forgedSelf, 400, "M_INVALID_SIGNATURE"},
		"user-signing key not signed":                   {unsignedUser, 400, "M_INVALID_SIGNATURE"},
		"self-signing key without any master key":       {map[string]any{"self_signing_key": x.signedBy("self_signing", x.selfPriv, x.masterPriv)}, 400, "M_MISSING_PARAM"},
		"master key of another user":                    {wrongUser, 400, "M_INVALID_PARAM"},
		"wrong usage":                                   {wrongUsage, 400, "M_INVALID_PARAM"},
		"key ID not the public key":                     {badKeyID, 400, "M_INVALID_PARAM"},
		"master key not an object":                      {map[string]any{"master_key": "x"}, 400, "M_BAD_JSON"},
	} {
		t.Run(name, func(t *testing.T) {
			e.want(e.do(a, "POST", deviceSigningPath, tc.body), tc.status, tc.errcode)
			r := e.query(b, string(alice))
			if r.get("master_keys", string(alice)) != nil || r.get("self_signing_keys", string(alice)) != nil {
				t.Fatalf("a refused upload stored keys: %s", r.raw)
			}
		})
	}

	// The first upload needs no UIA.
	e.want(e.do(a, "POST", deviceSigningPath, x.upload()), 200)
	if e.uia.calls != 0 {
		t.Fatalf("UIA asked for the first upload")
	}
	// Retrying the same keys is idempotent and needs no UIA either.
	e.want(e.do(a, "POST", deviceSigningPath, x.upload()), 200)
	if e.uia.calls != 0 {
		t.Fatalf("UIA asked for an identical retry")
	}

	// Others see the master and self-signing keys, not the user-signing key.
	r := e.query(b, string(alice))
	if r.get("master_keys", string(alice), "keys", "ed25519:"+x.masterPub()) != x.masterPub() {
		t.Fatalf("master key missing: %s", r.raw)
	}
	if sigsOf(r.get("self_signing_keys", string(alice)), string(alice))["ed25519:"+x.masterPub()] == nil {
		t.Fatalf("self-signing key lacks the master signature: %s", r.raw)
	}
	if r.get("user_signing_keys", string(alice)) != nil {
		t.Fatalf("another user sees alice's user-signing key: %s", r.raw)
	}
	if e.query(a, string(alice)).get("user_signing_keys", string(alice)) == nil {
		t.Fatalf("alice does not see her own user-signing key")
	}

	// Replacing the keys needs UIA.
	y := newCrossSigning(alice)
	e.want(e.do(a, "POST", deviceSigningPath, y.upload()), 401)
	if e.query(b, string(alice)).get("master_keys", string(alice), "keys", "ed25519:"+x.masterPub()) == nil {
		t.Fatalf("keys replaced without UIA")
	}
	body := y.upload()
	body["auth"] = map[string]any{"type": "m.login.password", "password": "secret"}
	e.want(e.do(a, "POST", deviceSigningPath, body), 200)
	if e.query(b, string(alice)).get("master_keys", string(alice), "keys", "ed25519:"+y.masterPub()) == nil {
		t.Fatalf("keys not replaced after UIA")
	}
	// A new self-signing key alone must be signed by the stored master key.
	z := newCrossSigning(alice)
	e.want(e.do(a, "POST", deviceSigningPath, map[string]any{"self_signing_key": z.signedBy("self_signing", z.selfPriv, z.masterPriv)}), 400, "M_INVALID_SIGNATURE")
}

func TestCrossSigningKeyMayNotBeADeviceID(t *testing.T) {
	e := newEnv(t)
	x := newCrossSigning(alice)
	d := newDevice(alice, x.masterPub())
	e.upload(d, 0)
	e.want(e.do(d, "POST", deviceSigningPath, x.upload()), 403, "M_FORBIDDEN")
}

func TestSignaturesUpload(t *testing.T) {
	e := newEnv(t)
	a := newDevice(alice, "ALICE1")
	b := newDevice(bob, "BOB1")
	c := newDevice(carol, "CAROL1")
	for _, d := range []*device{a, b, c} {
		e.upload(d, 0)
	}
	xa, xb := newCrossSigning(alice), newCrossSigning(bob)
	e.want(e.do(a, "POST", deviceSigningPath, xa.upload()), 200)
	e.want(e.do(b, "POST", deviceSigningPath, xb.upload()), 200)

	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	body := map[string]any{
		string(alice): map[string]any{
			// Alice's self-signing key signs her device: valid.
			"ALICE1": sign(a.deviceKeys(), alice, "ed25519:"+xa.selfPub(), xa.selfPriv),
			// Alice's device signs her master key: valid.
			xa.masterPub(): sign(xa.master(), alice, "ed25519:ALICE1", a.priv),
			// An unknown key.
			"NOSUCHDEVICE": sign(a.deviceKeys(), alice, "ed25519:"+xa.selfPub(), xa.selfPriv),
		},
		string(bob): map[string]any{
			// Alice's user-signing key signs Bob's master key: valid.
			xb.masterPub(): sign(xb.master(), alice, "ed25519:"+xa.userPub(), xa.usrPriv),
			// A forged signature under the self-signing key's ID.
			"BOB1": sign(b.deviceKeys(), alice, "ed25519:"+xa.selfPub(), stranger),
		},
	}
	r := e.do(a, "POST", signaturesPath, body)
	e.want(r, 200)
	if r.get("failures", string(alice), "NOSUCHDEVICE", "errcode") != "M_NOT_FOUND" {
		t.Errorf("unknown key: %s", r.raw)
	}
	if r.get("failures", string(bob), "BOB1", "errcode") == nil {
		t.Errorf("signing another user's device was accepted: %s", r.raw)
	}
	if r.get("failures", string(alice), "ALICE1") != nil || r.get("failures", string(bob), xb.masterPub()) != nil {
		t.Errorf("valid signatures failed: %s", r.raw)
	}

	// A forged signature by Alice's self-signing key on her own device.
	forged := map[string]any{string(alice): map[string]any{"ALICE1": sign(a.deviceKeys(), alice, "ed25519:"+xa.selfPub(), stranger)}}
	r = e.do(a, "POST", signaturesPath, forged)
	e.want(r, 200)
	if r.get("failures", string(alice), "ALICE1", "errcode") != "M_INVALID_SIGNATURE" {
		t.Fatalf("forged signature: %s", r.raw)
	}
	// A signed object that differs from the stored key.
	changed := a.unsignedDeviceKeys()
	changed["algorithms"] = []string{"x"}
	r = e.do(a, "POST", signaturesPath, map[string]any{string(alice): map[string]any{"ALICE1": sign(changed, alice, "ed25519:"+xa.selfPub(), xa.selfPriv)}})
	if r.get("failures", string(alice), "ALICE1", "errcode") != "M_INVALID_SIGNATURE" {
		t.Fatalf("mismatched object: %s", r.raw)
	}

	// What each user sees.
	asCarol := e.query(c, string(alice), string(bob))
	dev := asCarol.get("device_keys", string(alice), "ALICE1")
	if sigsOf(dev, string(alice))["ed25519:"+xa.selfPub()] == nil {
		t.Errorf("carol does not see alice's self-signature on her device: %s", asCarol.raw)
	}
	if sigsOf(asCarol.get("master_keys", string(alice)), string(alice))["ed25519:ALICE1"] == nil {
		t.Errorf("carol does not see alice's device signature on alice's master key")
	}
	if sigsOf(asCarol.get("master_keys", string(bob)), string(alice)) != nil {
		t.Errorf("carol sees alice's user-signing signature on bob's master key: %s", asCarol.raw)
	}
	if sigsOf(asCarol.get("device_keys", string(alice), "ALICE1"), string(alice))["ed25519:"+pubOf(stranger)] != nil {
		t.Errorf("a forged signature was stored")
	}
	asAlice := e.query(a, string(bob))
	if sigsOf(asAlice.get("master_keys", string(bob)), string(alice))["ed25519:"+xa.userPub()] == nil {
		t.Errorf("alice does not see her own signature on bob's master key: %s", asAlice.raw)
	}
	if sigsOf(asAlice.get("device_keys", string(bob), "BOB1"), string(alice)) != nil {
		t.Errorf("a signature on another user's device was stored")
	}
	asBob := e.query(b, string(bob))
	if sigsOf(asBob.get("master_keys", string(bob)), string(alice)) != nil {
		t.Errorf("bob sees alice's user-signing signature on his master key")
	}
}

func TestSignaturesUploadBadInput(t *testing.T) {
	e := newEnv(t)
	a := newDevice(alice, "ALICE1")
	for _, body := range []string{`[]`, `{"alice":{}}`, `{"@alice:test":[]}`, `not json`} {
		if r := e.do(a, "POST", signaturesPath, body); r.status != 400 {
			t.Errorf("%s: got %d %s", body, r.status, r.raw)
		}
	}
	r := e.do(a, "POST", signaturesPath, `{"@alice:test":{"K":"x"}}`)
	e.want(r, 200)
	if r.get("failures", string(alice), "K", "errcode") != "M_BAD_JSON" {
		t.Fatalf("got %s", r.raw)
	}
}
