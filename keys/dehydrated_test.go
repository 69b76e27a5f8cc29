package keys_test

import (
	"net/url"
	"testing"
)

const dehydratedPath = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"

func dehydratedBody(d *device) map[string]any {
	dk := d.unsignedDeviceKeys()
	dk["dehydrated"] = true
	return map[string]any{
		"device_id":                   d.id,
		"device_data":                 map[string]any{"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "opaque"},
		"initial_device_display_name": "Dehydrated device",
		"device_keys":                 sign(dk, d.user, "ed25519:"+d.id, d.priv),
		"one_time_keys":               map[string]any{"signed_curve25519:AAAA": d.otk(false)},
		"fallback_keys":               map[string]any{"signed_curve25519:AAAB": d.otk(true)},
	}
}

func TestDehydratedDevice(t *testing.T) {
	e := newEnv(t)
	a := newDevice(alice, "ALICE1")
	b := newDevice(bob, "BOB1")
	e.want(e.do(a, "GET", dehydratedPath, nil), 404, "M_NOT_FOUND")

	dd := newDevice(alice, "a+b/c"+randomKey()[5:]) // its ID is its curve25519 key (base64: "+" and "/")
	r := e.do(a, "PUT", dehydratedPath, dehydratedBody(dd))
	e.want(r, 200)
	if r.body["device_id"] != dd.id {
		t.Fatalf("put = %s", r.raw)
	}
	r = e.do(a, "GET", dehydratedPath, nil)
	if r.body["device_id"] != dd.id || r.get("device_data", "device_pickle") != "opaque" {
		t.Fatalf("get = %s", r.raw)
	}
	// Others see its keys and can claim its one-time key.
	if _, err := e.queryDevice(b, alice, dd.id); err != nil {
		t.Fatalf("dehydrated device keys not served: %v", err)
	}
	if id := claimedKeyID(e.claim(b, dd), dd); id != "signed_curve25519:AAAA" {
		t.Fatalf("claimed %q", id)
	}
	// Messages sent to it are kept across batches until it is replaced.
	for i := 0; i < 3; i++ {
		e.want(e.send(b, "t"+itoa(i), map[string]any{string(alice): map[string]any{"*": map[string]any{"i": i}}}), 200)
	}
	events := dehydratedPath + "/" + url.PathEscape(dd.id) + "/events"
	r = e.do(a, "POST", events, map[string]any{})
	e.want(r, 200)
	if evs := r.body["events"].([]any); len(evs) != 3 {
		t.Fatalf("events = %s", r.raw)
	}
	next := r.body["next_batch"].(string)
	r = e.do(a, "POST", events, map[string]any{"next_batch": next})
	if evs := r.body["events"].([]any); len(evs) != 0 || r.body["next_batch"] != next {
		t.Fatalf("last batch = %s", r.raw)
	}
	if r := e.do(a, "POST", events, map[string]any{}); len(r.body["events"].([]any)) != 3 {
		t.Fatalf("messages were deleted by reading them: %s", r.raw)
	}
	e.want(e.do(a, "POST", dehydratedPath+"/ALICE1/events", map[string]any{}), 403, "M_FORBIDDEN")
	e.want(e.do(a, "POST", events, map[string]any{"next_batch": "x"}), 400)

	// Bad uploads store nothing.
	forged := dehydratedBody(newDevice(alice, "FORGED"))
	forged["device_keys"] = sign(newDevice(alice, "FORGED").unsignedDeviceKeys(), alice, "ed25519:FORGED", a.priv)
	e.want(e.do(a, "PUT", dehydratedPath, forged), 400, "M_INVALID_SIGNATURE")
	noKeys := dehydratedBody(newDevice(alice, "NOKEYS"))
	delete(noKeys, "device_keys")
	e.want(e.do(a, "PUT", dehydratedPath, noKeys), 400, "M_MISSING_PARAM")
	noData := dehydratedBody(newDevice(alice, "NODATA"))
	noData["device_data"] = "x"
	e.want(e.do(a, "PUT", dehydratedPath, noData), 400, "M_BAD_JSON")
	if r := e.do(a, "GET", dehydratedPath, nil); r.body["device_id"] != dd.id {
		t.Fatalf("a refused upload replaced the dehydrated device: %s", r.raw)
	}

	// Replacing it deletes the old one, its keys and messages.
	dd2 := newDevice(alice, randomKey())
	e.want(e.do(a, "PUT", dehydratedPath, dehydratedBody(dd2)), 200)
	if _, err := e.queryDevice(b, alice, dd.id); err != errNotFound {
		t.Fatalf("old dehydrated device still served")
	}
	if r := e.do(a, "POST", dehydratedPath+"/"+url.PathEscape(dd2.id)+"/events", map[string]any{}); len(r.body["events"].([]any)) != 0 {
		t.Fatalf("new device got old messages: %s", r.raw)
	}
	r = e.do(a, "DELETE", dehydratedPath, nil)
	e.want(r, 200)
	if r.body["device_id"] != dd2.id {
		t.Fatalf("delete = %s", r.raw)
	}
	e.want(e.do(a, "GET", dehydratedPath, nil), 404)
	e.want(e.do(a, "DELETE", dehydratedPath, nil), 404)
}
