package keys_test

import (
	"context"
	"sync"
	"testing"
)

func (e *env) claim(as *device, target *device) resp {
	e.t.Helper()
	r := e.do(as, "POST", "/_matrix/client/v3/keys/claim", map[string]any{
		"one_time_keys": map[string]any{string(target.user): map[string]string{target.id: "signed_curve25519"}},
	})
	e.want(r, 200)
	return r
}

// claimedKeyID returns the key ID a claim response gave for target, or "".
func claimedKeyID(r resp, target *device) string {
	keys, _ := r.get("one_time_keys", string(target.user), target.id).(map[string]any)
	for id := range keys {
		return id
	}
	return ""
}

func TestClaimThenFallback(t *testing.T) {
	e := newEnv(t)
	a := newDevice(alice, "ALICE1")
	b := newDevice(bob, "BOB1")
	fb := a.otk(true)
	e.want(e.do(a, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
		"device_keys":   a.deviceKeys(),
		"one_time_keys": map[string]any{"signed_curve25519:K1": a.otk(false)},
		"fallback_keys": map[string]any{"signed_curve25519:F1": fb},
	}), 200)
	ctx := context.Background()
	if types, _ := e.svc.UnusedFallbackKeyTypes(ctx, alice, "ALICE1"); len(types) != 1 || types[0] != "signed_curve25519" {
		t.Fatalf("unused fallback types = %v", types)
	}
	if id := claimedKeyID(e.claim(b, a), a); id != "signed_curve25519:K1" {
		t.Fatalf("first claim got %q, want the one-time key", id)
	}
	if counts, _ := e.svc.OneTimeKeyCounts(ctx, alice, "ALICE1"); counts["signed_curve25519"] != 0 {
		t.Fatalf("count after claim = %v", counts)
	}
	// None left: the fallback key, again and again, now marked used.
	for i := 0; i < 2; i++ {
		if id := claimedKeyID(e.claim(b, a), a); id != "signed_curve25519:F1" {
			t.Fatalf("claim %d got %q, want the fallback key", i, id)
		}
	}
	if types, _ := e.svc.UnusedFallbackKeyTypes(ctx, alice, "ALICE1"); len(types) != 0 {
		t.Fatalf("fallback key still unused: %v", types)
	}
	// Re-uploading the same fallback key keeps it used; a new one is unused.
	e.want(e.do(a, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"fallback_keys": map[string]any{"signed_curve25519:F1": fb}}), 200)
	if types, _ := e.svc.UnusedFallbackKeyTypes(ctx, alice, "ALICE1"); len(types) != 0 {
		t.Fatalf("re-upload reset the used flag: %v", types)
	}
	e.want(e.do(a, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"fallback_keys": map[string]any{"signed_curve25519:F2": a.otk(true)}}), 200)
	if types, _ := e.svc.UnusedFallbackKeyTypes(ctx, alice, "ALICE1"); len(types) != 1 {
		t.Fatalf("new fallback key not unused: %v", types)
	}
	// The in-memory counters survive a restart.
	e.restart()
	if types, _ := e.svc.UnusedFallbackKeyTypes(ctx, alice, "ALICE1"); len(types) != 1 {
		t.Fatalf("after restart: %v", types)
	}
	// A device with nothing to claim is left out.
	nokeys := newDevice(carol, "C1")
	e.upload(nokeys, 0)
	if id := claimedKeyID(e.claim(b, nokeys), nokeys); id != "" {
		t.Fatalf("claimed %q from a device with no keys", id)
	}
}

// Many concurrent claims of few one-time keys: each key is handed out
// exactly once, and the rest get nothing (no fallback key here).
func TestConcurrentClaimsHandOutEachKeyOnce(t *testing.T) {
	e := newEnv(t)
	a := newDevice(alice, "ALICE1")
	const keys, claimers = 5, 40
	e.upload(a, keys)
	var wg sync.WaitGroup
	got := make([]string, claimers)
	for i := 0; i < claimers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := newDevice(bob, "BOB"+itoa(i))
			got[i] = claimedKeyID(e.claim(c, a), a)
		}(i)
	}
	wg.Wait()
	seen := map[string]int{}
	for _, id := range got {
		if id != "" {
			seen[id]++
		}
	}
	if len(seen) != keys {
		t.Fatalf("%d distinct keys handed out, want %d: %v", len(seen), keys, got)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("key %s handed out %d times", id, n)
		}
	}
	if counts, _ := e.svc.OneTimeKeyCounts(context.Background(), alice, "ALICE1"); counts["signed_curve25519"] != 0 {
		t.Fatalf("count = %v", counts)
	}
}

// Two concurrent claims of one key: one gets it, one gets nothing.
func TestConcurrentDoubleClaimOfOneKey(t *testing.T) {
	for round := 0; round < 10; round++ {
		e := newEnv(t)
		a := newDevice(alice, "ALICE1")
		e.upload(a, 1)
		var wg sync.WaitGroup
		got := make([]string, 2)
		start := make(chan struct{})
		for i := range got {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-start
				got[i] = claimedKeyID(e.claim(newDevice(bob, "B"+itoa(i)), a), a)
			}(i)
		}
		close(start)
		wg.Wait()
		if (got[0] == "") == (got[1] == "") {
			t.Fatalf("round %d: claims got %q and %q; want exactly one key", round, got[0], got[1])
		}
	}
}

func TestClaimBadInput(t *testing.T) {
	e := newEnv(t)
	b := newDevice(bob, "BOB1")
	for _, body := range []string{`{}`, `{"one_time_keys":[]}`, `{"one_time_keys":{"bob":{}}}`, `{"one_time_keys":{"@a:test":{"D":5}}}`, `{"one_time_keys":{"@a:test":{"":"signed_curve25519"}}}`} {
		if r := e.do(b, "POST", "/_matrix/client/v3/keys/claim", body); r.status != 400 {
			t.Errorf("%s: got %d %s", body, r.status, r.raw)
		}
	}
	r := e.do(b, "POST", "/_matrix/client/v3/keys/claim", `{"one_time_keys":{"@a:elsewhere":{"D":"signed_curve25519"}}}`)
	e.want(r, 200)
	if r.get("failures", "elsewhere") == nil {
		t.Fatalf("no failure for a remote server: %s", r.raw)
	}
}
