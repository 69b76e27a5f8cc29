package main

import (
	"strconv"
	"strings"
	"testing"
)

// BenchmarkSlidingSync sets the cost of Element X's first room-list answer
// for an account in 500 rooms (range 0–19, timeline_limit 1, the SDK's 17
// required_state entries) beside a /v3/sync of an account in 20 rooms, and
// counts the database reads of an empty sliding sync long-poll answer,
// which should be none: it answers from memory.
//
//	go test -tags 'sqlite_fts5 goolm nomsgpack' -run '^$' -bench SlidingSync ./cmd/chatalot
func BenchmarkSlidingSync(b *testing.B) {
	t := &testing.T{}
	app, srv := newTestApp(t)
	defer srv.Close()
	base := srv.URL
	f := ssFixture(t)
	big := registerUser(t, base, "big")
	small := registerUser(t, base, "small")
	for i := 0; i < 500; i++ {
		room := createRoom(t, base, big, `{"preset":"private_chat","name":"room `+strconv.Itoa(i)+`"}`)
		sendText(t, base, big, room, "m", "hello")
		if i < 20 {
			room = createRoom(t, base, small, `{"preset":"private_chat","name":"room `+strconv.Itoa(i)+`"}`)
			sendText(t, base, small, room, "m", "hello")
		}
	}
	first := string(f["room_list_first"])

	b.Run("v3-initial-20-rooms-timeline-1", func(b *testing.B) {
		filter := `{"room":{"timeline":{"limit":1}}}`
		for i := 0; i < b.N; i++ {
			code, raw := request(t, "GET", base+"/_matrix/client/v3/sync?timeout=0&filter="+filter, small, "")
			if code != 200 || strings.Count(raw, `"m.room.create"`) < 20 {
				b.Fatalf("sync: %d", code)
			}
		}
	})
	b.Run("sliding-first-0-19-of-500-rooms", func(b *testing.B) {
		code, r, raw := slide(t, base, big, "", 0, first)
		if code != 200 || len(r.Rooms) != 20 || r.Lists["all_rooms"].Count != 500 {
			b.Fatalf("sliding: %d %.300s", code, raw)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			// Not decoded here, as /v3/sync's is not: the figure is the
			// server's.
			code, raw := request(t, "POST", base+slidingPath+"?timeout=0", big, first)
			if code != 200 || strings.Count(raw, `"m.room.create"`) < 20 {
				b.Fatalf("sliding: %d", code)
			}
		}
	})
	b.Run("sliding-empty-long-poll-answer", func(b *testing.B) {
		_, r, _ := slide(t, base, big, "", 0, first)
		pos := r.Pos
		reads := int64(0)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			before := app.db.ReadCount()
			code, r, raw := slide(t, base, big, pos, 0, first)
			if code != 200 || len(r.Rooms) != 0 {
				b.Fatalf("empty: %d %.300s", code, raw)
			}
			reads += app.db.ReadCount() - before
			pos = r.Pos
		}
		b.ReportMetric(float64(reads)/float64(b.N), "db-reads/op")
	})
}
