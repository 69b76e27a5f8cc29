package sync_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/servertest"
	chatsync "github.com/chatalot/chatalot/sync"
)

// A sliding sync connection is woken only by a change that can alter its
// answer (issue 22): these tests watch the notifier's wake count and a
// sentinel connection that the change does concern, so that "not woken"
// is asserted once the change has been delivered, not after a sleep.

// poll is a sliding sync long-poll running in the background.
type poll struct {
	ts   *testServer
	done chan map[string]any
}

// startPoll starts a connection (one request answered at once) and then
// its long-poll; it returns once the long-poll waits for its changes.
func (ts *testServer) startPoll(token string, body map[string]any) *poll {
	ts.t.Helper()
	code, raw := ts.DoRaw(token, "POST", slidingURL(""), body)
	var first map[string]any
	if code != 200 || json.Unmarshal(raw, &first) != nil {
		ts.t.Fatalf("first request: %d %s", code, raw)
	}
	if td, ok := path(first, "extensions", "to_device").(map[string]any); ok {
		if ext, ok := body["extensions"].(map[string]any); ok {
			ext["to_device"] = map[string]any{"enabled": true, "since": td["next_batch"]}
		}
	}
	p := &poll{ts: ts, done: make(chan map[string]any, 1)}
	waiting := ts.Sync.Notifier().NarrowedWaiters()
	go func() {
		code, raw := ts.DoRaw(token, "POST", slidingURL(first["pos"].(string)), body)
		var r map[string]any
		if code != 200 || json.Unmarshal(raw, &r) != nil {
			r = map[string]any{"status": code, "body": string(raw)}
		}
		p.done <- r
	}()
	waitFor(ts.t, "the long-poll to wait", func() bool { return ts.Sync.Notifier().NarrowedWaiters() > waiting })
	return p
}

// slidingURL is a first request (pos "", answered at once) or a long-poll.
func slidingURL(pos string) string {
	if pos == "" {
		return chatsync.SlidingSyncPath + "?timeout=0"
	}
	return chatsync.SlidingSyncPath + "?timeout=20000&pos=" + pos
}

// answer waits for the long-poll's answer.
func (p *poll) answer(what string) map[string]any {
	p.ts.t.Helper()
	select {
	case r := <-p.done:
		if r["status"] != nil {
			p.ts.t.Fatalf("%s: %v", what, r)
		}
		return r
	case <-time.After(10 * time.Second):
		p.ts.t.Fatalf("%s: no answer", what)
		return nil
	}
}

// pending fails if the long-poll has answered.
func (p *poll) pending(what string) {
	p.ts.t.Helper()
	select {
	case r := <-p.done:
		p.ts.t.Fatalf("%s: the long-poll answered: %v", what, r)
	default:
	}
}

// quietThrough runs change, which must wake the sentinel and nothing else,
// and checks that the long-poll still waits.
func (ts *testServer) quietThrough(what string, p, sentinel *poll, change func()) {
	ts.t.Helper()
	n := ts.Sync.Notifier()
	before := n.Wakes()
	change()
	sentinel.answer(what + " (the sentinel)")
	if woken := n.Wakes() - before; woken != 1 {
		ts.t.Fatalf("%s woke %d waiters, want 1 (the sentinel)", what, woken)
	}
	p.pending(what)
}

func subBody(conn, room string) map[string]any {
	return map[string]any{"conn_id": conn, "room_subscriptions": map[string]any{room: map[string]any{"timeline_limit": 5}}}
}

func timelineBodies(r map[string]any, room string) []string {
	var out []string
	for _, ev := range path(r, "rooms", room, "timeline").([]any) {
		out = append(out, path(ev, "content", "body").(string))
	}
	return out
}

// A connection subscribed to room A sleeps through a message of the same
// user's room B, and answers a message in A with A's event alone.
func TestSlidingWakesOnlyForTheWatchedRoom(t *testing.T) {
	ts := newTestServer(t)
	a := ts.createRoom(bob, nil)
	b := ts.createRoom(bob, nil)
	tok := ts.Token(bob)
	p := ts.startPoll(tok, subBody("a", a))
	sentinel := ts.startPoll(tok, subBody("b", b))
	ts.quietThrough("a message in B", p, sentinel, func() { ts.send(bob, b, "in B") })

	ts.send(bob, a, "in A")
	r := p.answer("a message in A")
	if got := timelineBodies(r, a); len(got) != 1 || got[0] != "in A" || len(roomsOf(r)) != 1 {
		t.Fatalf("the answer is A's new event alone: %v", r)
	}
}

// A list connection wakes when a room enters its window (a bump in a room
// below it, a new room), not for a change that leaves its window as it is
// (state that does not bump, outside the window); a filtered list sleeps
// through a bump in a room its filter leaves out.
func TestSlidingListWakesWhenARoomEntersTheWindow(t *testing.T) {
	ts := newTestServer(t)
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, ts.createRoom(bob, nil))
	}
	tok := ts.Token(bob)
	top := map[string]any{"conn_id": "top", "lists": map[string]any{"l": map[string]any{"ranges": [][]int{{0, 0}}, "timeline_limit": 1}}}

	p := ts.startPoll(tok, top)
	sentinel := ts.startPoll(tok, subBody("s", ids[1]))
	ts.quietThrough("a topic below the window", p, sentinel, func() {
		ts.must(bob, "PUT", "/_matrix/client/v3/rooms/"+ids[1]+"/state/m.room.topic/", map[string]any{"topic": "no bump"})
	})
	ts.send(bob, ids[0], "bump")
	r := p.answer("a bump below the window")
	if room, _ := roomsOf(r)[ids[0]].(map[string]any); room == nil || room["initial"] != true || len(roomsOf(r)) != 1 {
		t.Fatalf("the bumped room enters the window whole: %v", r)
	}

	// An invite to a room that has been quiet: no bump, a new room.
	invited := ts.createRoom(alice, nil)
	p = ts.startPoll(tok, top)
	ts.must(alice, "POST", "/_matrix/client/v3/rooms/"+invited+"/invite", map[string]any{"user_id": bob})
	r = p.answer("an invite")
	if count := path(r, "lists", "l", "count"); count != float64(4) || roomsOf(r)[invited] == nil {
		t.Fatalf("the invite enters the list, at the top: %v", r)
	}

	// is_dm: the DM is in the window; a bump of a room that is no DM
	// cannot bring it in.
	dm := ids[2]
	if err := ts.Auth.SetAccountData(context.Background(), bob, "", "m.direct", json.RawMessage(`{"@alice:test":["`+dm+`"]}`)); err != nil {
		t.Fatal(err)
	}
	dms := map[string]any{"conn_id": "dms", "lists": map[string]any{"dm": map[string]any{"ranges": [][]int{{0, 9}}, "timeline_limit": 1,
		"filters": map[string]any{"is_dm": true}}}}
	p = ts.startPoll(tok, dms)
	sentinel = ts.startPoll(tok, subBody("s2", ids[1]))
	ts.quietThrough("a bump in a room that is no DM", p, sentinel, func() { ts.send(bob, ids[1], "not a DM") })
	ts.send(bob, dm, "in the DM")
	if got := timelineBodies(p.answer("a message in the DM"), dm); len(got) != 1 || got[0] != "in the DM" {
		t.Fatalf("the DM's message: %v", got)
	}
}

// Element X's encryption connection (to_device and e2ee only) sleeps
// through room messages and a to-device message for another device, and
// answers one for its own.
func TestSlidingEncryptionConnectionWakesForToDeviceOnly(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	ts.must(bob, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})
	tok := ts.Token(bob)
	code, login := ts.do("", "POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": "bob"}, "password": servertest.Password, "device_id": "OTHER"})
	if code != 200 {
		t.Fatalf("login: %d %v", code, login)
	}
	other := login["access_token"].(string)
	encryption := func() map[string]any {
		return map[string]any{"conn_id": "encryption", "extensions": map[string]any{
			"to_device": map[string]any{"enabled": true}, "e2ee": map[string]any{"enabled": true}}}
	}
	toDevice := func(device, text string) {
		ts.must(alice, "PUT", "/_matrix/client/v3/sendToDevice/m.test/t"+itoa(int(txn.Add(1))), map[string]any{
			"messages": map[string]any{bob: map[string]any{device: map[string]any{"body": text}}}})
	}

	p := ts.startPoll(tok, encryption())
	sentinel := ts.startPoll(tok, subBody("s", room))
	ts.quietThrough("a room message", p, sentinel, func() { ts.send(alice, room, "hello") })
	sentinel = ts.startPoll(other, encryption())
	ts.quietThrough("a to-device message for another device", p, sentinel, func() { toDevice("OTHER", "not yours") })

	toDevice(servertest.DeviceID, "yours")
	r := p.answer("a to-device message for the device")
	evs, _ := path(r, "extensions", "to_device", "events").([]any)
	if len(evs) != 1 || path(evs[0], "content", "body") != "yours" {
		t.Fatalf("the answer carries the message: %v", r)
	}
}
