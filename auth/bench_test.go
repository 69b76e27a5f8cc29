package auth

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// Benchmarks with the real (default) Argon2id parameters:
//
//	go test -tags 'sqlite_fts5 goolm nomsgpack' -run '^$' -bench . -benchtime 20x ./auth
//
// BenchmarkArgon2idHash is the cost of one hash on this machine;
// BenchmarkLoginParallel is password-login throughput under concurrency
// (each login hashes once and writes a device and a token);
// BenchmarkLoginFlood shows that a flood of logins keeps memory bounded by
// the hashing slots; BenchmarkAuthenticatedRequest is the middleware's hot
// path (no database read).

func BenchmarkArgon2idHash(b *testing.B) {
	h, err := newHasher(MinArgon2, 1, 1)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.Hash(ctx, "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(MinArgon2.MemoryKiB)/1024, "MiB/hash")
}

func BenchmarkLoginParallel(b *testing.B) {
	ts := newTestServerHashing(b, false)
	ctx := context.Background()
	if _, err := ts.svc.CreateUser(ctx, "alice", "password1", false); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(4) // 4 × GOMAXPROCS clients at once
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := ts.login("alice", "password1"); r.Status != 200 {
				b.Errorf("login: %d %s", r.Status, r.Raw)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
	b.ReportMetric(float64(ts.svc.hasher.peak.Load()), "peak-hashes")
}

func BenchmarkLoginFlood(b *testing.B) {
	ts := newTestServerHashing(b, false)
	ts.svc.CreateUser(context.Background(), "alice", "password1", false)
	const flood = 64
	slots := cap(ts.svc.hasher.slots)
	_, stop := sampleHeap()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		for j := 0; j < flood; j++ {
			wg.Add(1)
			go func(j int) {
				defer wg.Done()
				ts.login(fmt.Sprint("user", j), "wrong-password")
			}(j)
		}
		wg.Wait()
	}
	b.StopTimer()
	base, top := stop()
	b.ReportMetric(float64(top-base)/(1<<20), "peak-heap-growth-MiB")
	b.ReportMetric(float64(flood)*float64(MinArgon2.MemoryKiB)/1024, "unbounded-MiB")
	b.ReportMetric(float64(ts.svc.hasher.peak.Load()), "peak-hashes")
	b.ReportMetric(float64(slots), "hash-slots")
	b.ReportMetric(float64(runtime.NumCPU()), "cpus")
}

func BenchmarkAuthenticatedRequest(b *testing.B) {
	ts := newTestServer(b)
	tok, _ := ts.register("alice", "password1")
	reads := ts.db.ReadCount()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := ts.do("GET", v3+"/account/whoami", tok, nil); r.Status != 200 {
				b.Errorf("whoami: %d", r.Status)
				return
			}
		}
	})
	b.ReportMetric(float64(ts.db.ReadCount()-reads)/float64(b.N), "db-reads/op")
}
