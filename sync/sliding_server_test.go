package sync_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chatalot/chatalot/spec"
	chatsync "github.com/chatalot/chatalot/sync"
)

// slide is one sliding sync request of the test server.
func (ts *testServer) slide(user, pos string, timeoutMS int, body any) (int, map[string]any) {
	ts.t.Helper()
	q := chatsync.SlidingSyncPath + "?timeout=" + itoa(timeoutMS)
	if pos != "" {
		q += "&pos=" + pos
	}
	return ts.do(user, "POST", q, body)
}

func roomsOf(resp map[string]any) map[string]any {
	r, _ := resp["rooms"].(map[string]any)
	return r
}

func listBody(filters map[string]any) map[string]any {
	return map[string]any{"conn_id": "c", "lists": map[string]any{"l": map[string]any{
		"ranges": [][]int{{0, 99}}, "timeline_limit": 1, "required_state": [][]string{{"m.room.create", ""}}, "filters": filters}}}
}

// A long-poll answers for a change in a room it shows, not for a change in
// another user's room, and it frees its waiter.
func TestSlidingLongPollAnswersForItsRooms(t *testing.T) {
	ts := newTestServer(t)
	mine := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	ts.must(bob, "POST", "/_matrix/client/v3/join/"+mine, map[string]any{})
	other := ts.createRoom(carol, nil)
	body := listBody(nil)
	_, first := ts.slide(bob, "", 0, body)
	pos := first["pos"].(string)

	done := make(chan map[string]any, 1)
	go func() {
		_, r := ts.slide(bob, pos, 10000, body)
		done <- r
	}()
	waitFor(t, "bob's long-poll to wait", func() bool { return ts.Sync.Notifier().Waiters() == 1 })
	ts.send(carol, other, "not for bob")
	ts.syncOnce(carol, "", 0, "") // carol's message is committed and published
	select {
	case r := <-done:
		t.Fatalf("a message in another user's room answered bob's long-poll: %v", r)
	default:
	}
	if ts.Sync.Notifier().Waiters() != 1 {
		t.Fatal("bob's long-poll stopped waiting")
	}
	ts.send(alice, mine, "for bob")
	select {
	case r := <-done:
		if roomsOf(r)[mine] == nil {
			t.Fatalf("the answer lacks the room: %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a message in bob's room did not answer his long-poll")
	}
	waitFor(t, "the waiter to be freed", func() bool { return ts.Sync.Notifier().Waiters() == 0 })
}

// The filters the SDKs send: is_invite, is_dm, not_room_types, room_types,
// spaces, tags.
func TestSlidingListFilters(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	plain := ts.createRoom(bob, map[string]any{"name": "plain"})
	space := ts.createRoom(bob, map[string]any{"creation_content": map[string]any{"type": "m.space"}})
	child := ts.createRoom(bob, map[string]any{"name": "child"})
	ts.must(bob, "PUT", "/_matrix/client/v3/rooms/"+space+"/state/m.space.child/"+child, map[string]any{"via": []string{"test"}})
	dm := ts.createRoom(alice, map[string]any{"is_direct": true, "invite": []string{bob}})
	fav := ts.createRoom(bob, nil)
	if err := ts.Auth.SetAccountData(ctx, bob, "", "m.direct", json.RawMessage(`{"@alice:test":["`+dm+`"]}`)); err != nil {
		t.Fatal(err)
	}
	if err := ts.Auth.SetAccountData(ctx, bob, spec.RoomID(fav), "m.tag", json.RawMessage(`{"tags":{"m.favourite":{"order":0.5}}}`)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		filters map[string]any
		want    []string
	}{
		{"none", nil, []string{plain, space, child, dm, fav}},
		{"is_invite", map[string]any{"is_invite": true}, []string{dm}},
		{"not invites", map[string]any{"is_invite": false}, []string{plain, space, child, fav}},
		{"is_dm", map[string]any{"is_dm": true}, []string{dm}},
		{"not_room_types space", map[string]any{"not_room_types": []string{"m.space"}}, []string{plain, child, dm, fav}},
		{"room_types space", map[string]any{"room_types": []string{"m.space"}}, []string{space}},
		{"room_types null", map[string]any{"room_types": []any{nil}}, []string{plain, child, dm, fav}},
		{"spaces", map[string]any{"spaces": []string{space}}, []string{child}},
		{"tags", map[string]any{"tags": []string{"m.favourite"}}, []string{fav}},
		{"not_tags", map[string]any{"not_tags": []string{"m.favourite"}}, []string{plain, space, child, dm}},
	}
	for _, c := range cases {
		code, r := ts.slide(bob, "", 0, listBody(c.filters))
		if code != 200 {
			t.Fatalf("%s: %d %v", c.name, code, r)
		}
		got := roomsOf(r)
		count := r["lists"].(map[string]any)["l"].(map[string]any)["count"].(float64)
		if int(count) != len(c.want) || len(got) != len(c.want) {
			t.Errorf("%s: count %v, rooms %d, want %d", c.name, count, len(got), len(c.want))
			continue
		}
		for _, id := range c.want {
			if got[id] == nil {
				t.Errorf("%s: %s missing", c.name, id)
			}
		}
	}
}

// Ranges pick from the list sorted by recency, capped at count-1; a room
// that moves into the window is sent, one that stays is not sent again.
func TestSlidingRangesAndBumpOrder(t *testing.T) {
	ts := newTestServer(t)
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, ts.createRoom(bob, nil))
	}
	window := func(a, b int) map[string]any {
		return map[string]any{"conn_id": "w", "lists": map[string]any{"l": map[string]any{"ranges": [][]int{{a, b}}, "timeline_limit": 1}}}
	}
	_, r := ts.slide(bob, "", 0, window(0, 1))
	got := roomsOf(r)
	if len(got) != 2 || got[ids[4]] == nil || got[ids[3]] == nil {
		t.Fatalf("range [0,1] is the two newest rooms: %v", got)
	}
	ts.send(bob, ids[0], "bump")
	_, r = ts.slide(bob, r["pos"].(string), 0, window(0, 1))
	got = roomsOf(r)
	if len(got) != 1 || got[ids[0]] == nil || got[ids[0]].(map[string]any)["initial"] != true {
		t.Fatalf("the bumped room enters the window, whole; the others are not sent again: %v", got)
	}
	_, r = ts.slide(bob, r["pos"].(string), 0, window(3, 1000))
	if got = roomsOf(r); len(got) != 2 {
		t.Fatalf("range [3,1000] of 5 rooms is 2 rooms: %v", got)
	}
}

// Ranges up to the largest integer pick the newest rooms still.
func TestSlidingHugeRanges(t *testing.T) {
	ts := newTestServer(t)
	var ids []string
	for i := 0; i < 12; i++ {
		ids = append(ids, ts.createRoom(bob, nil))
	}
	body := map[string]any{"conn_id": "h", "lists": map[string]any{"l": map[string]any{
		"ranges": [][]int64{{0, 0}, {11, 9223372036854775807}}, "timeline_limit": 1}}}
	code, r := ts.slide(bob, "", 0, body)
	got := roomsOf(r)
	if code != 200 || len(got) != 2 || got[ids[11]] == nil || got[ids[0]] == nil {
		t.Fatalf("ranges [0,0] and [11,max] of 12 rooms are the newest and the oldest: %d %v", code, got)
	}
}

// A connection that watches one room by subscription is not answered for
// a message in another of the user's rooms, only for one in its room.
func TestSlidingSubscriptionAnswersForItsRoomOnly(t *testing.T) {
	ts := newTestServer(t)
	watched := ts.createRoom(bob, nil)
	other := ts.createRoom(bob, nil)
	body := map[string]any{"conn_id": "s", "room_subscriptions": map[string]any{watched: map[string]any{"timeline_limit": 5}}}
	_, first := ts.slide(bob, "", 0, body)
	if roomsOf(first)[watched] == nil || roomsOf(first)[other] != nil {
		t.Fatalf("the first answer is the subscribed room alone: %v", first)
	}
	done := make(chan map[string]any, 1)
	go func() {
		_, r := ts.slide(bob, first["pos"].(string), 10000, body)
		done <- r
	}()
	waitFor(t, "the long-poll to wait", func() bool { return ts.Sync.Notifier().Waiters() == 1 })
	ts.send(bob, other, "elsewhere")
	// The send woke the poll, which looked, found nothing for it and waits
	// again: its waiter is back.
	waitFor(t, "the long-poll to wait again", func() bool { return ts.Sync.Notifier().Waiters() == 1 })
	select {
	case r := <-done:
		t.Fatalf("a message in another room answered the subscription's long-poll: %v", r)
	default:
	}
	ts.send(bob, watched, "here")
	select {
	case r := <-done:
		if roomsOf(r)[watched] == nil || roomsOf(r)[other] != nil {
			t.Fatalf("the answer is the watched room alone: %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a message in the watched room did not answer")
	}
}
