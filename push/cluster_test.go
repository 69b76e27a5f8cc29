package push_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/internal/servertest"
)

// Two nodes of a cluster on one PostgreSQL database (docs/scaling.md): the
// unread counts and push rules that one node's writes change reach the
// other's /sync. Each room is written by one node only (no leases yet).

func TestClusterCountsAndRulesFollow(t *testing.T) {
	const alice, bob = "@alice:test", "@bob:test"
	dsn := pgtest.DSN(t)
	a := servertest.NewNode(t, dsn, "a")
	b := servertest.NewNode(t, dsn, "b")
	esc := url.PathEscape

	room := a.CreateRoom(alice, map[string]any{"preset": "public_chat"})
	a.MustJSON(bob, http.MethodPost, "/_matrix/client/v3/join/"+esc(room), map[string]any{})
	bobB := b.DeviceToken(bob, "NODEB")
	initial, err := b.SyncQuery(bobB, "")
	if err != nil {
		t.Fatal(err)
	}
	since := initial["next_batch"].(string)

	// A mention on A: bob's long-poll on B wakes with the counts.
	var msg string
	b.WokenSync(t, bobB, &since, func() {
		msg = a.MustJSON(alice, http.MethodPut, "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/m1",
			map[string]any{"msgtype": "m.text", "body": "hello bob", "m.mentions": map[string]any{"user_ids": []string{bob}}})["event_id"].(string)
	}, func(res map[string]any) bool {
		n, h := unreadIn(res, room)
		return n == 1.0 && h == 1.0
	}, "the mention's counts on B")

	// A follower that comes after a flush moved the rows (a node that was
	// behind) finds them in push_notified.
	a.Push.FlushForTest()
	if got, err := b.Push.FollowedForTest(0, b.DB.Position()); err != nil || !slices.Contains(got, bob+" "+room) {
		t.Fatalf("the follower's read of moved notifications: %v %v", got, err)
	}

	// bob's receipt on A clears them on B.
	b.WokenSync(t, bobB, &since, func() {
		a.MustJSON(bob, http.MethodPost, "/_matrix/client/v3/rooms/"+esc(room)+"/receipt/m.read/"+esc(msg), map[string]any{})
	}, func(res map[string]any) bool {
		n, h := unreadIn(res, room)
		return n == 0.0 && h == 0.0
	}, "the receipt's cleared counts on B")
	if res, err := b.SyncQuery(bobB, ""); err != nil {
		t.Fatal(err)
	} else if n, h := unreadIn(res, room); n != 0.0 || h != 0.0 {
		t.Fatalf("B's initial sync after the receipt: %v %v", n, h)
	}

	// A room B writes, and a push rule bob changes on A: B evaluates B's
	// next event with it.
	other := b.CreateRoom(alice+"|NODEB", map[string]any{"preset": "public_chat"})
	b.MustJSON(bob+"|NODEB", http.MethodPost, "/_matrix/client/v3/join/"+esc(other), map[string]any{})
	b.MustJSON(alice+"|NODEB", http.MethodPut, "/_matrix/client/v3/rooms/"+esc(other)+"/send/m.room.message/o1",
		map[string]any{"msgtype": "m.text", "body": "one"})
	b.WaitSync(t, bobB, &since, func(res map[string]any) bool {
		n, _ := unreadIn(res, other)
		return n == 1.0
	}, "the first message's count in B's room")
	a.MustJSON(bob, http.MethodPut, "/_matrix/client/v3/pushrules/global/room/"+esc(other), map[string]any{"actions": []any{}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := b.JSONAs(bob+"|NODEB", http.MethodGet, "/_matrix/client/v3/pushrules/global/room/"+esc(other), nil)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B never served the room rule set on A: %d", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	two := b.MustJSON(alice+"|NODEB", http.MethodPut, "/_matrix/client/v3/rooms/"+esc(other)+"/send/m.room.message/o2",
		map[string]any{"msgtype": "m.text", "body": "two"})["event_id"].(string)
	b.WaitSync(t, bobB, &since, func(res map[string]any) bool {
		list, _ := path(res, "rooms", "join", other, "timeline", "events").([]any)
		for _, e := range list {
			if path(e, "event_id") == two {
				return true
			}
		}
		return false
	}, "the second message on B")
	res, err := b.SyncQuery(bobB, "")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := unreadIn(res, other); n != 1.0 {
		t.Fatalf("bob's count in B's room after muting it on A: %v, want 1 (the rule not applied on B?)", n)
	}
}
