package main

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkHotPathReads sends events into a warm room and answers
// incremental syncs, counting the statements run on the database's read
// pool meanwhile (storage.DB.ReadCount): the hot paths hold current state,
// membership and power levels in memory, so the figure should be zero.
//
//	go test -tags 'sqlite_fts5 goolm nomsgpack' -run '^$' -bench HotPathReads ./cmd/chatalot
func BenchmarkHotPathReads(b *testing.B) {
	t := &testing.T{}
	app, srv := newTestApp(t)
	defer srv.Close()
	alice := registerUser(t, srv.URL, "alice")
	bob := registerUser(t, srv.URL, "bob")
	_, raw := request(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", alice, `{"preset":"public_chat"}`)
	room := between(raw, `"room_id":"`, `"`)
	request(t, "POST", srv.URL+"/_matrix/client/v3/join/"+room, bob, `{}`)
	_, raw = request(t, "GET", srv.URL+"/_matrix/client/v3/sync?timeout=0", bob, "")
	since := between(raw, `"next_batch":"`, `"`)
	// Warm up: one round of each path.
	request(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+room+"/send/m.room.message/warm", alice, `{"msgtype":"m.text","body":"warm"}`)
	_, raw = request(t, "GET", srv.URL+"/_matrix/client/v3/sync?timeout=0&since="+since, bob, "")
	since = between(raw, `"next_batch":"`, `"`)

	b.ResetTimer()
	sendReads, syncReads := int64(0), int64(0)
	for i := 0; i < b.N; i++ {
		before := app.db.ReadCount()
		code, raw := request(t, "PUT", srv.URL+fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/b%d", room, i), alice, `{"msgtype":"m.text","body":"hello"}`)
		if code != 200 {
			b.Fatalf("send: %d %s", code, raw)
		}
		mid := app.db.ReadCount()
		code, raw = request(t, "GET", srv.URL+"/_matrix/client/v3/sync?timeout=0&since="+since, bob, "")
		if code != 200 || !strings.Contains(raw, "hello") {
			b.Fatalf("sync: %d %s", code, raw)
		}
		since = between(raw, `"next_batch":"`, `"`)
		sendReads += mid - before
		syncReads += app.db.ReadCount() - mid
	}
	b.ReportMetric(float64(sendReads)/float64(b.N), "db-reads/send")
	b.ReportMetric(float64(syncReads)/float64(b.N), "db-reads/sync")
}
