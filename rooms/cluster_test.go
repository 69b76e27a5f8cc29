package rooms_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/internal/servertest"
)

// Two nodes of a cluster on one PostgreSQL database (docs/scaling.md, step
// 1): node A writes the rooms, node B follows and answers reads. Only A
// writes rooms here: a room is written by the node holding its lease
// (lease_test.go), and forwarding a write to that node is a later step.
//
// Each user logs in on each node, as clients behind a load balancer would
// (a token issued on one node works on the other too: auth/cluster_test.go).
// B's devices are named apart from A's, since logging in with an existing
// device ID replaces that device's token.

// nodeDevice is the device each user logs in with on node B.
const nodeDevice = "NODEB"

func onB(user string) string { return user + "|" + nodeDevice }

// joinedTimeline is the event IDs of a joined room's timeline in a /sync
// answer, and whether the room is there at all.
func joinedTimeline(res map[string]any, room string) ([]string, bool) {
	r, ok := path(res, "rooms", "join", room).(map[string]any)
	if !ok {
		return nil, false
	}
	return ids(path(r, "timeline", "events")), true
}

func TestClusterNodeFollowsRooms(t *testing.T) {
	dsn := pgtest.DSN(t)
	a := servertest.NewNode(t, dsn, "a")
	// A room that exists before B starts: B loads it.
	before := a.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	beforeMsg := a.MustJSON(userA, http.MethodPut, "/_matrix/client/v3/rooms/"+esc(before)+"/send/m.room.message/t0",
		map[string]any{"msgtype": "m.text", "body": "before"})["event_id"].(string)
	b := servertest.NewNode(t, dsn, "b")

	// A token A issues once B runs is found by B (auth follows).
	if code, _ := b.Do(a.Token(userB), http.MethodGet, "/_matrix/client/v3/account/whoami", nil); code != http.StatusOK {
		t.Fatalf("node B refuses a token node A issued after B started: %d", code)
	}
	initial, err := b.SyncQuery(b.DeviceToken(userA, nodeDevice), "")
	if err != nil {
		t.Fatal(err)
	}
	if tl, ok := joinedTimeline(initial, before); !ok || !slices.Contains(tl, beforeMsg) {
		t.Fatalf("B's initial sync: room created before B started: %v (%v)", tl, ok)
	}

	// A long-poll on B wakes for what A writes.
	type result struct {
		res map[string]any
		err error
	}
	since := initial["next_batch"].(string)
	woken := make(chan result, 1)
	tok := b.DeviceToken(userA, nodeDevice)
	go func() {
		res, err := b.SyncQuery(tok, "timeout=20000&since="+url.QueryEscape(since))
		woken <- result{res, err}
	}()
	// Let the long-poll start waiting: a change before it would answer
	// at once and prove nothing about the wake.
	deadline := time.Now().Add(10 * time.Second)
	for b.Sync.Notifier().Waiters() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("B's long-poll never started waiting")
		}
		time.Sleep(5 * time.Millisecond)
	}
	room := a.CreateRoom(userA, map[string]any{"preset": "public_chat", "name": "followed"})
	var r result
	select {
	case r = <-woken:
	case <-time.After(15 * time.Second):
		t.Fatal("B's long-poll was not woken by A's createRoom")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if _, ok := joinedTimeline(r.res, room); !ok {
		t.Fatalf("B's incremental sync woken without the new room: %v", path(r.res, "rooms"))
	}

	msg := a.MustJSON(userA, http.MethodPut, "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/t1",
		map[string]any{"msgtype": "m.text", "body": "hello from A"})["event_id"].(string)
	since = r.res["next_batch"].(string)
	b.WaitSync(t, b.DeviceToken(userA, nodeDevice), &since, func(res map[string]any) bool {
		tl, _ := joinedTimeline(res, room)
		return slices.Contains(tl, msg)
	}, "A's message in B's incremental sync")

	// Reads on B: an initial sync, /messages, /state, /joined_members.
	initial, err = b.SyncQuery(b.DeviceToken(userA, nodeDevice), "")
	if err != nil {
		t.Fatal(err)
	}
	if tl, _ := joinedTimeline(initial, room); !slices.Contains(tl, msg) {
		t.Fatalf("B's initial sync timeline %v lacks %s", tl, msg)
	}
	if name := roomStateContent(initial, room, "m.room.name"); name["name"] != "followed" {
		t.Fatalf("B's initial sync: room name %v", name)
	}
	page := b.MustJSON(onB(userA), http.MethodGet, "/_matrix/client/v3/rooms/"+esc(room)+"/messages?dir=b&limit=50", nil)
	if got := ids(page["chunk"]); len(got) == 0 || got[0] != msg {
		t.Fatalf("B's /messages: %v, want %s first", got, msg)
	}
	code, raw := b.DoAs(onB(userA), http.MethodGet, "/_matrix/client/v3/rooms/"+esc(room)+"/state", nil)
	var state []map[string]any
	if code != http.StatusOK || json.Unmarshal(raw, &state) != nil {
		t.Fatalf("B's /state: %d %s", code, raw)
	}
	if !slices.ContainsFunc(state, func(ev map[string]any) bool { return ev["type"] == "m.room.name" }) {
		t.Fatalf("B's /state lacks m.room.name: %s", raw)
	}
	members := b.MustJSON(onB(userA), http.MethodGet, "/_matrix/client/v3/rooms/"+esc(room)+"/joined_members", nil)
	if _, ok := path(members, "joined", userA).(map[string]any); !ok {
		t.Fatalf("B's joined_members: %v", members)
	}

	// A second user joins on A: B's /sync for them shows the room, and
	// alice's incremental sync on B shows the join.
	a.MustJSON(userB, http.MethodPost, "/_matrix/client/v3/join/"+esc(room), map[string]any{})
	b.WaitSync(t, b.DeviceToken(userA, nodeDevice), &since, func(res map[string]any) bool {
		return roomStateOrTimeline(res, room, "m.room.member", userB)
	}, "bob's join in alice's incremental sync on B")
	var bobs map[string]any
	deadline = time.Now().Add(10 * time.Second)
	for {
		if bobs, err = b.SyncQuery(b.DeviceToken(userB, nodeDevice), ""); err != nil {
			t.Fatal(err)
		}
		if _, ok := joinedTimeline(bobs, room); ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := joinedTimeline(bobs, room); !ok {
		t.Fatalf("bob's sync on B lacks the room he joined on A: %v", path(bobs, "rooms"))
	}
	members = b.MustJSON(onB(userB), http.MethodGet, "/_matrix/client/v3/rooms/"+esc(room)+"/joined_members", nil)
	if _, ok := path(members, "joined", userB).(map[string]any); !ok {
		t.Fatalf("B's joined_members after bob's join: %v", members)
	}

	// A receipt stored on A reaches alice's sync on B (sync follows them).
	a.MustJSON(userB, http.MethodPost, "/_matrix/client/v3/rooms/"+esc(room)+"/receipt/m.read/"+esc(msg), map[string]any{})
	b.WaitSync(t, b.DeviceToken(userA, nodeDevice), &since, func(res map[string]any) bool {
		list, _ := path(res, "rooms", "join", room, "ephemeral", "events").([]any)
		for _, e := range list {
			if path(e, "type") == "m.receipt" && path(e, "content", msg, "m.read", userB) != nil {
				return true
			}
		}
		return false
	}, "bob's receipt in alice's incremental sync on B")

	// A redaction on A: B's memory holds the redacted event.
	a.MustJSON(userA, http.MethodPut, "/_matrix/client/v3/rooms/"+esc(room)+"/redact/"+esc(msg)+"/t2", map[string]any{})
	b.WaitSync(t, b.DeviceToken(userA, nodeDevice), &since, func(res map[string]any) bool {
		return roomStateOrTimeline(res, room, "m.room.redaction", "")
	}, "the redaction in B's incremental sync")
	initial, err = b.SyncQuery(b.DeviceToken(userA, nodeDevice), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range timelineEvents(initial, room) {
		if ev["event_id"] == msg {
			if c, _ := ev["content"].(map[string]any); len(c) != 0 {
				t.Fatalf("B's sync still shows the redacted event's content: %v", ev)
			}
			if path(ev, "unsigned", "redacted_because") == nil {
				t.Fatalf("B's sync: the redacted event has no redacted_because: %v", ev)
			}
		}
	}
}

// timelineEvents is a joined room's timeline in a /sync answer.
func timelineEvents(res map[string]any, room string) []map[string]any {
	var out []map[string]any
	list, _ := path(res, "rooms", "join", room, "timeline", "events").([]any)
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// roomStateContent is the content of a state event (state_key "") in a
// joined room's state or timeline in a /sync answer.
func roomStateContent(res map[string]any, room, typ string) map[string]any {
	var found map[string]any
	for _, section := range []string{"state", "timeline"} {
		list, _ := path(res, "rooms", "join", room, section, "events").([]any)
		for _, e := range list {
			if m, ok := e.(map[string]any); ok && m["type"] == typ && m["state_key"] == "" {
				found, _ = m["content"].(map[string]any)
			}
		}
	}
	return found
}

// roomStateOrTimeline reports whether a joined room's state or timeline in
// a /sync answer holds an event of the type (and state key, if not "").
func roomStateOrTimeline(res map[string]any, room, typ, stateKey string) bool {
	for _, section := range []string{"state", "timeline"} {
		list, _ := path(res, "rooms", "join", room, section, "events").([]any)
		for _, e := range list {
			if m, ok := e.(map[string]any); ok && m["type"] == typ && (stateKey == "" || m["state_key"] == stateKey) {
				return true
			}
		}
	}
	return false
}
