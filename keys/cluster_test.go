package keys_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/internal/servertest"
)

// Two nodes of a cluster on one PostgreSQL database (docs/scaling.md, step
// 2): what keys keeps in memory for /sync on node B follows what node A
// writes: one-time key counts (upload and claim), to-device messages (with
// a woken long-poll) and device-list changes.

func otkCount(res map[string]any) any {
	c, _ := res["device_one_time_keys_count"].(map[string]any)
	return c["signed_curve25519"]
}

func TestClusterKeysFollow(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := servertest.NewNode(t, dsn, "a")
	b := servertest.NewNode(t, dsn, "b")
	tok := a.Token(alice) // works on B too (auth follows)
	initial, err := b.SyncQuery(tok, "")
	if err != nil {
		t.Fatal(err)
	}
	since := initial["next_batch"].(string)

	// Alice uploads two one-time keys on A: B's /sync counts them.
	dev := servertest.DeviceID
	d := newDevice(alice, dev)
	a.MustJSON(string(alice), http.MethodPost, "/_matrix/client/v3/keys/upload", map[string]any{
		"device_keys":   d.deviceKeys(),
		"one_time_keys": map[string]any{"signed_curve25519:k1": d.otk(false), "signed_curve25519:k2": d.otk(false)},
	})
	b.WaitSync(t, tok, &since, func(res map[string]any) bool { return otkCount(res) == float64(2) }, "two one-time keys counted on B")

	// Bob claims one on A: B's count drops.
	a.MustJSON(string(bob), http.MethodPost, "/_matrix/client/v3/keys/claim", map[string]any{
		"one_time_keys": map[string]any{string(alice): map[string]string{dev: "signed_curve25519"}},
	})
	b.WaitSync(t, tok, &since, func(res map[string]any) bool { return otkCount(res) == float64(1) }, "the claimed key gone from B's count")

	// A to-device message sent on A wakes alice's long-poll on B.
	b.WokenSync(t, tok, &since, func() {
		a.MustJSON(string(bob), http.MethodPut, "/_matrix/client/v3/sendToDevice/org.example.ping/t1", map[string]any{
			"messages": map[string]any{string(alice): map[string]any{dev: map[string]any{"hello": "from A"}}},
		})
	}, func(res map[string]any) bool {
		list, _ := res["to_device"].(map[string]any)["events"].([]any)
		return len(list) == 1 && list[0].(map[string]any)["type"] == "org.example.ping"
	}, "A's to-device message")

	// Bob joins a room of alice's on A, then logs in a new device there:
	// alice's sync on B lists bob's devices as changed.
	room := a.CreateRoom(string(alice), map[string]any{"preset": "public_chat"})
	a.MustJSON(string(bob), http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{})
	b.WaitSync(t, tok, &since, func(res map[string]any) bool {
		_, ok := res["rooms"].(map[string]any)["join"].(map[string]any)[room]
		return ok
	}, "the room on B")
	a.DeviceToken(bob, "BOB2")
	b.WaitSync(t, tok, &since, func(res map[string]any) bool {
		dl, _ := res["device_lists"].(map[string]any)
		changed, _ := dl["changed"].([]any)
		return slices.Contains(changed, any(string(bob)))
	}, "bob in device_lists.changed on B")
}
