package rooms_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chatalot/chatalot/rooms"

	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
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
func benchSend(b *testing.B, roomCount int) {
	ts := newTestServer(&testing.T{}, "optional")
	ctx := context.Background()
	var ids []string
	for i := 0; i < roomCount; i++ {
		id, _, err := ts.s.CreateRoom(ctx, "@alice:test", rooms.CreateRequest{Preset: "public_chat"})
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
			if _, err := ts.s.Send(ctx, rooms.Sender{User: "@alice:test", Device: "D"}, spec.RoomID(room), rooms.SendRequest{Type: "m.room.message", TxnID: fmt.Sprint("t", i), Content: content}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	elapsed, cpu := time.Since(start).Seconds(), cpuSeconds()-cpu0
	b.ReportMetric(float64(b.N)/elapsed, "events/s")
	b.ReportMetric(cpu/float64(b.N)*1000, "cpu-s/1000events")
	ts.Close()
}

func BenchmarkSendOneRoom(b *testing.B)   { benchSend(b, 1) }
func BenchmarkSendManyRooms(b *testing.B) { benchSend(b, 64) }

// BenchmarkMessages pages back through a room of ten members and 60
// messages in pages of 50, as the load generator's rooms scenario does;
// one op is one page, served in-process without a network round trip.
func BenchmarkMessages(b *testing.B) {
	ts := newTestServer(&testing.T{}, "optional")
	ts.t = &testing.T{}
	room := ts.CreateRoom("@alice:test", map[string]any{"preset": "public_chat"})
	for i := range 9 {
		ts.join(fmt.Sprintf("@u%d:test", i), room)
	}
	for i := range 60 {
		ts.send(fmt.Sprintf("@u%d:test", i%9), room, map[string]any{"msgtype": "m.text", "body": fmt.Sprint("message ", i)})
	}
	h, tok := ts.Router, ts.Token("@u1:test")
	page := func(from string) string {
		req := httptest.NewRequest("GET", v3+room+"/messages?dir=b&limit=50"+from, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
		return gjson.GetBytes(w.Body.Bytes(), "end").String()
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuSeconds()
	end := ""
	for range b.N {
		if end = page(end); end != "" {
			end = "&from=" + end
		}
	}
	b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N)*1000, "cpu-ms/page")
}
