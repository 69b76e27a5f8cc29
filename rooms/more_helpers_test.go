package rooms_test

import (
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
)

// Helpers for the relations, threads, directory, upgrade, reports, spaces
// and search tests.

const v1 = "/_matrix/client/v1/rooms/"
const v3 = "/_matrix/client/v3/rooms/"

// sendType sends an event of any type and returns its ID.
func (ts *testServer) sendType(user, room, typ string, content map[string]any) string {
	ts.t.Helper()
	txnCounter++
	return ts.must(user, "PUT", v3+room+"/send/"+typ+"/m"+itoa(txnCounter), content)["event_id"].(string)
}

// putState sets a state event and returns its ID.
func (ts *testServer) putState(user, room, typ, key string, content map[string]any) string {
	ts.t.Helper()
	return ts.must(user, "PUT", v3+room+"/state/"+typ+"/"+url.PathEscape(key), content)["event_id"].(string)
}

func (ts *testServer) join(user, room string) {
	ts.t.Helper()
	ts.must(user, "POST", v3+room+"/join", map[string]any{})
}

// adminUser is a server admin account of every test server.
const adminUser = "@operator:test"

// asAdmin makes adminUser a server admin and returns a do function that
// sends as adminUser, whichever user the test names.
func (ts *testServer) asAdmin() func(user, method, path string, body any) (int, map[string]any) {
	ts.MakeAdmin(adminUser)
	return func(_, method, path string, body any) (int, map[string]any) {
		ts.t.Helper()
		return ts.do(adminUser, method, path, body)
	}
}

// pageBack pages back through a room's timeline as user, 30 events a page,
// and returns the events by ID.
func (ts *testServer) pageBack(user, room string) map[string]map[string]any {
	ts.t.Helper()
	out := map[string]map[string]any{}
	from := ""
	for {
		page := ts.must(user, "GET", v3+room+"/messages?dir=b&limit=30"+from, nil)
		for _, ev := range page["chunk"].([]any) {
			e := ev.(map[string]any)
			out[e["event_id"].(string)] = e
		}
		end, ok := page["end"].(string)
		if !ok {
			return out
		}
		from = "&from=" + end
	}
}

// ids lists the event_id of each event in a chunk.
func ids(chunk any) []string {
	var out []string
	list, _ := chunk.([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		id, _ := m["event_id"].(string)
		out = append(out, id)
	}
	return out
}

// path follows keys into nested JSON objects.
func path(m any, keys ...string) any {
	for _, k := range keys {
		o, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = o[k]
	}
	return m
}

func sameList(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
}

func esc(s string) string { return url.PathEscape(s) }

func roomID(s string) spec.RoomID   { return spec.RoomID(s) }
func eventID(s string) spec.EventID { return spec.EventID(s) }

// tickingClock makes every reading of the service's clock 1 ms later than
// the one before, so that events get distinct, ordered timestamps.
func (ts *testServer) tickingClock() {
	var n atomic.Int64
	base := time.Now()
	rooms.SetClockForTest(ts.s, func() time.Time { return base.Add(time.Duration(n.Add(1)) * time.Millisecond) })
}
