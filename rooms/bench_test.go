package rooms

import (
	"context"
	"fmt"
	"github.com/chatalot/chatalot/spec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// cpuSeconds is this process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// benchSend measures events persisted per second by concurrent senders,
// through the service (build, sign, authorise, commit), and reports CPU
// seconds per 1000 events.
func benchSend(b *testing.B, rooms int) {
	ts := newTestServer(&testing.T{}, "optional")
	ctx := context.Background()
	var ids []string
	for i := 0; i < rooms; i++ {
		id, _, err := ts.s.CreateRoom(ctx, "@alice:test", CreateRequest{Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, string(id))
	}
	content := []byte(`{"body":"hello there, this is a benchmark message","msgtype":"m.text"}`)
	var n atomic.Int64
	b.SetParallelism(8) // 8×GOMAXPROCS concurrent senders
	b.ResetTimer()
	cpu0, start := cpuSeconds(), time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			room := ids[int(i)%len(ids)]
			if _, err := ts.s.Send(ctx, Sender{User: "@alice:test", Device: "D"}, spec.RoomID(room), "m.room.message", nil, fmt.Sprint("t", i), content); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	elapsed, cpu := time.Since(start).Seconds(), cpuSeconds()-cpu0
	b.ReportMetric(float64(b.N)/elapsed, "events/s")
	b.ReportMetric(cpu/float64(b.N)*1000, "cpu-s/1000events")
	ts.srv.Close()
	ts.db.Close()
}

func BenchmarkSendOneRoom(b *testing.B)   { benchSend(b, 1) }
func BenchmarkSendManyRooms(b *testing.B) { benchSend(b, 64) }
