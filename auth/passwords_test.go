package auth

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

func TestPHC(t *testing.T) {
	h, err := newHasher(MinArgon2, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	enc, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$") || len(strings.Split(enc, "$")) != 6 {
		t.Fatalf("PHC string %q", enc)
	}
	if ok, stale, _ := h.Verify(ctx, enc, "correct horse"); !ok || stale {
		t.Fatal("verify", ok, stale)
	}
	if ok, _, _ := h.Verify(ctx, enc, "correct horsf"); ok {
		t.Fatal("wrong password accepted")
	}
	// No stored hash never matches, whatever is typed.
	if ok, _, _ := h.Verify(ctx, "", "chatalot dummy password"); ok {
		t.Fatal("empty hash matched")
	}
	// Other parameters: still verifies, reported stale.
	old, _ := newHasher(fastParams, 1, 1)
	oldEnc, _ := old.Hash(ctx, "pw")
	if ok, stale, _ := h.Verify(ctx, oldEnc, "pw"); !ok || !stale {
		t.Fatal("stale", ok, stale)
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=16$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=999999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=65536,t=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=65536,t=2,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA"} {
		if _, _, _, err := decodePHC(bad); err == nil {
			t.Errorf("decoded %q", bad)
		}
	}
}

func TestArgon2ParameterFloor(t *testing.T) {
	for _, p := range []Argon2Params{{19456, 2, 1}, {47104, 1, 1}, {12288, 3, 1}, {65536, 3, 4}} {
		if err := p.check(); err != nil {
			t.Errorf("%+v refused: %v", p, err)
		}
	}
	for _, p := range []Argon2Params{{19455, 2, 1}, {47104, 0, 1}, {4096, 10, 1}, {19456, 1, 1}, {19456, 2, 0}} {
		if err := p.check(); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
	c := Config{Argon2: Argon2Params{1024, 1, 1}}
	if err := c.validate(); err == nil {
		t.Fatal("weak config accepted")
	}
}

// A hash made with older parameters is replaced at the next login.
func TestRehashOnLogin(t *testing.T) {
	ts := newTestServerHashing(t, false)
	ctx := context.Background()
	if _, err := ts.svc.CreateUser(ctx, "alice", "password1", false); err != nil {
		t.Fatal(err)
	}
	old, _ := newHasher(Argon2Params{MemoryKiB: 12288, Iterations: 3, Parallelism: 1}, 1, 1)
	oldHash, _ := old.Hash(ctx, "password1")
	if err := ts.db.Write(ctx, func(tx *storage.Tx) error { return setPasswordHash(tx, "@alice:test.local", oldHash) }); err != nil {
		t.Fatal(err)
	}
	ts.login("alice", "password1").must(t, 200)
	u, _, _ := loadUser(ts.svc.reader(ctx), "@alice:test.local")
	if !strings.HasPrefix(u.PasswordHash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("not upgraded: %s", u.PasswordHash)
	}
	ts.login("alice", "password1").must(t, 200)
}

func TestHashQueueBound(t *testing.T) {
	h, _ := newHasher(fastParams, 2, 4)
	ctx := context.Background()
	// Hold both slots.
	h.acquire(ctx)
	h.acquire(ctx)
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ { // queue + slots may wait
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := h.Hash(ctx, "pw"); err != nil {
				t.Error(err)
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.waiting.Load() < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d waiting", h.waiting.Load())
		}
		runtime.Gosched()
	}
	_, err := h.Hash(ctx, "pw")
	var se *spec.Error
	if !errors.As(err, &se) || se.Code != spec.ErrLimitExceeded {
		t.Fatalf("overflow: %v", err)
	}
	// A cancelled wait gives up.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	h2, _ := newHasher(fastParams, 1, 4)
	h2.acquire(ctx)
	if _, err := h2.Hash(cctx, "pw"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	h.release()
	h.release()
	wg.Wait()
	if p := h.peak.Load(); p > 2 {
		t.Fatalf("%d hashes ran at once", p)
	}
}

// A flood of logins with real Argon2id parameters keeps memory bounded by
// the hashing slots: without the semaphore, 32 concurrent hashes would
// allocate 32 × 19 MiB at once.
func TestLoginFloodBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("hashes with real parameters")
	}
	ts := newTestServerHashing(t, false, func(c *Config) { c.HashConcurrency = 2 })
	ts.svc.CreateUser(context.Background(), "alice", "password1", false)
	peak, stop := sampleHeap()
	const n = 32
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			user := "alice"
			if i%2 == 1 {
				user = fmt.Sprintf("nobody%d", i) // unknown users cost the same
			}
			ts.login(user, "wrong-password").mustErr(t, 403, "M_FORBIDDEN")
		}(i)
	}
	wg.Wait()
	base, top := stop()
	if p := ts.svc.hasher.peak.Load(); p > 2 {
		t.Fatalf("%d hashes ran at once, limit 2", p)
	}
	perHash := uint64(MinArgon2.MemoryKiB) << 10
	// Live memory: 2 hashes; the garbage collector may keep up to as much
	// again in garbage (GOGC=100), plus slack for everything else.
	limit := 4*2*perHash + 64<<20
	t.Logf("heap grew by %d MiB at most (limit %d MiB; unbounded would be %d MiB)", (top-base)>>20, limit>>20, n*perHash>>20)
	if top-base > limit {
		t.Fatalf("heap grew by %d MiB", (top-base)>>20)
	}
	_ = peak
}

// sampleHeap watches HeapAlloc until stop is called.
func sampleHeap() (peak *uint64, stop func() (base, top uint64)) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	top := base
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > top {
					top = ms.HeapAlloc
				}
			}
		}
	}()
	return &top, func() (uint64, uint64) {
		close(done)
		<-finished
		return base, top
	}
}
