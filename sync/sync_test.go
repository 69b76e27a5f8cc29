package sync_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	stdsync "sync"
	"testing"
	"time"

	chatsync "github.com/chatalot/chatalot/sync"
)

const alice, bob, carol = "@alice:test", "@bob:test", "@carol:test"

func TestInitialAndIncrementalSync(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat", "name": "Lobby"})
	for i := 0; i < 15; i++ {
		ts.send(alice, room, fmt.Sprint("m", i))
	}
	first := ts.syncOnce(alice, "", 0, "")
	tl := path(first, "rooms", "join", room, "timeline").(map[string]any)
	if len(tl["events"].([]any)) != 10 || tl["limited"] != true || tl["prev_batch"] == "" {
		t.Fatalf("initial timeline: %d events, limited %v", len(tl["events"].([]any)), tl["limited"])
	}
	state := path(first, "rooms", "join", room, "state", "events").([]any)
	if len(state) == 0 {
		t.Fatal("initial sync has no state")
	}
	// prev_batch works with /messages to fetch what limited skipped.
	page := ts.must(alice, "GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=100&from="+tl["prev_batch"].(string), nil)
	if n := len(page["chunk"].([]any)); n < 5 {
		t.Fatalf("/messages from prev_batch returned %d events", n)
	}
	next := first["next_batch"].(string)
	// Nothing new: an empty answer with a usable token.
	empty := ts.syncOnce(alice, next, 0, "")
	if _, ok := empty["rooms"]; ok {
		t.Fatalf("empty incremental sync carries rooms: %v", empty["rooms"])
	}
	e1 := ts.send(alice, room, "new")
	inc := ts.syncOnce(alice, empty["next_batch"].(string), 0, "")
	if got := timeline(inc, room); len(got) != 1 || got[0] != e1 {
		t.Fatalf("incremental timeline %v, want [%s]", got, e1)
	}
	// The sender's own event carries its transaction ID.
	ev := path(inc, "rooms", "join", room, "timeline", "events").([]any)[0].(map[string]any)
	if path(ev, "unsigned", "transaction_id") == nil {
		t.Fatalf("own event without transaction_id: %v", ev)
	}
	sum := path(first, "rooms", "join", room, "summary").(map[string]any)
	if sum["m.joined_member_count"] != float64(1) {
		t.Fatalf("summary %v", sum)
	}
}

func TestLongPollWakesOnEventAndTimesOut(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	ts.must(bob, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})
	since := ts.syncOnce(bob, "", 0, "")["next_batch"].(string)

	start := time.Now()
	empty := ts.syncOnce(bob, since, 300, "")
	if time.Since(start) < 250*time.Millisecond {
		t.Fatalf("a long-poll with nothing new returned after %v, before its timeout", time.Since(start))
	}
	if _, ok := empty["rooms"]; ok || empty["next_batch"] == "" {
		t.Fatalf("timed-out sync: %v", empty)
	}

	got := make(chan map[string]any, 1)
	go func() { got <- ts.syncOnce(bob, since, 30000, "") }()
	waitFor(t, "bob's long-poll to wait", func() bool { return ts.Sync.Notifier().Waiters() == 1 })
	id := ts.send(alice, room, "wake up")
	select {
	case resp := <-got:
		if tl := timeline(resp, room); len(tl) != 1 || tl[0] != id {
			t.Fatalf("woken sync timeline %v", tl)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll did not return on a new event")
	}
	waitFor(t, "the waiter to be freed", func() bool { return ts.Sync.Notifier().Waiters() == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEachEventExactlyOnceInOrderUnderConcurrency(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	users := []string{bob, carol, "@dave:test"}
	for _, u := range users {
		ts.must(u, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})
	}
	senders := append([]string{alice}, users...)
	const perSender = 20
	tokens := map[string]string{}
	for _, u := range senders {
		tokens[u] = ts.syncOnce(u, "", 0, "")["next_batch"].(string)
	}
	var wg stdsync.WaitGroup
	sent := make(chan string, len(senders)*perSender)
	for _, u := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perSender; i++ {
				sent <- ts.send(u, room, fmt.Sprint(u, i))
			}
		}()
	}
	received := map[string][]string{}
	var rmu stdsync.Mutex
	var swg stdsync.WaitGroup
	for _, u := range senders {
		swg.Add(1)
		go func() {
			defer swg.Done()
			since := tokens[u]
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				resp := ts.syncOnce(u, since, 2000, "&filter="+url.QueryEscape(`{"room":{"timeline":{"limit":1000,"types":["m.room.message"]}}}`))
				since = resp["next_batch"].(string)
				rmu.Lock()
				received[u] = append(received[u], timeline(resp, room)...)
				done := len(received[u]) >= len(senders)*perSender
				rmu.Unlock()
				if done {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(sent)
	swg.Wait()
	all := map[string]bool{}
	for id := range sent {
		all[id] = true
	}
	var order []string
	for u, got := range received {
		seen := map[string]bool{}
		for _, id := range got {
			if seen[id] {
				t.Fatalf("%s received %s twice", u, id)
			}
			seen[id] = true
			if !all[id] {
				t.Fatalf("%s received an unknown event %s", u, id)
			}
		}
		if len(got) != len(all) {
			t.Fatalf("%s received %d events, want %d", u, len(got), len(all))
		}
		if order == nil {
			order = got
		} else {
			for i := range got {
				if got[i] != order[i] {
					t.Fatalf("%s saw events in another order than others", u)
				}
			}
		}
	}
}

func TestLeaveAndInviteAppearAndNothingAfterLeave(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "private_chat", "name": "Secret"})
	since := ts.syncOnce(bob, "", 0, "")["next_batch"].(string)
	ts.must(alice, "POST", "/_matrix/client/v3/rooms/"+room+"/invite", map[string]any{"user_id": bob})
	inv := ts.syncOnce(bob, since, 0, "")
	st := path(inv, "rooms", "invite", room, "invite_state", "events").([]any)
	if len(st) == 0 {
		t.Fatalf("no invite_state: %v", inv["rooms"])
	}
	// Bob's own invite comes in full (event ID and timestamp, as the
	// reference server sends it, without room_id); the rest is stripped
	// to the spec's four keys.
	var own map[string]any
	for _, e := range st {
		ev := e.(map[string]any)
		if ev["type"] == "m.room.member" && ev["state_key"] == bob {
			own = ev
			continue
		}
		for k := range ev {
			if k != "type" && k != "state_key" && k != "sender" && k != "content" {
				t.Errorf("stripped %v event has %q", ev["type"], k)
			}
		}
	}
	if own == nil || path(own, "content", "membership") != "invite" || own["sender"] != alice ||
		own["origin_server_ts"] == nil || own["event_id"] == nil || own["room_id"] != nil {
		t.Fatalf("bob's own invite in invite_state: %v", own)
	}
	ts.must(bob, "POST", "/_matrix/client/v3/rooms/"+room+"/join", map[string]any{})
	joined := ts.syncOnce(bob, inv["next_batch"].(string), 0, "")
	if path(joined, "rooms", "join", room, "state") == nil {
		t.Fatal("a newly joined room has no state")
	}
	ts.send(alice, room, "while bob is here")
	ts.must(bob, "POST", "/_matrix/client/v3/rooms/"+room+"/leave", map[string]any{})
	secret := ts.send(alice, room, "after bob left")
	left := ts.syncOnce(bob, joined["next_batch"].(string), 0, "")
	lr := path(left, "rooms", "leave", room).(map[string]any)
	for _, ev := range path(lr, "timeline", "events").([]any) {
		if ev.(map[string]any)["event_id"] == secret {
			t.Fatal("bob received an event sent after his leave")
		}
	}
	after := ts.syncOnce(bob, left["next_batch"].(string), 0, "")
	if _, ok := after["rooms"]; ok {
		t.Fatalf("bob still gets the room after leaving: %v", after["rooms"])
	}
}

func TestStateAfter(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat", "name": "One"})
	first := ts.syncOnce(alice, "", 0, "&use_state_after=true")
	sa := path(first, "rooms", "join", room, "state_after", "events").([]any)
	if len(sa) == 0 || path(first, "rooms", "join", room, "state") != nil && len(path(first, "rooms", "join", room, "state", "events").([]any)) > 0 {
		t.Fatalf("initial sync with use_state_after: state_after %d, state %v", len(sa), path(first, "rooms", "join", room, "state"))
	}
	ts.must(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.name/", map[string]any{"name": "Two"})
	inc := ts.syncOnce(alice, first["next_batch"].(string), 0, "&use_state_after=true")
	sa = path(inc, "rooms", "join", room, "state_after", "events").([]any)
	if len(sa) != 1 || path(sa[0], "content", "name") != "Two" {
		t.Fatalf("state_after after a rename: %v", sa)
	}
	// Many events: the timeline is limited and state_after still has the name.
	ts.must(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.name/", map[string]any{"name": "Three"})
	for i := 0; i < 12; i++ {
		ts.send(alice, room, "x")
	}
	lim := ts.syncOnce(alice, inc["next_batch"].(string), 0, "&use_state_after=true")
	if path(lim, "rooms", "join", room, "timeline", "limited") != true {
		t.Fatal("expected a limited timeline")
	}
	found := false
	for _, ev := range path(lim, "rooms", "join", room, "state_after", "events").([]any) {
		if path(ev, "content", "name") == "Three" {
			found = true
		}
	}
	if !found {
		t.Fatal("state_after misses a state change the limited timeline skipped")
	}
}

func TestTypingReceiptsAndPrivateReceipts(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	ts.must(bob, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})
	ev := ts.send(alice, room, "hello")
	since := ts.syncOnce(bob, "", 0, "")["next_batch"].(string)
	ts.must(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/typing/"+alice, map[string]any{"typing": true, "timeout": 200})
	resp := ts.syncOnce(bob, since, 0, "")
	eph := path(resp, "rooms", "join", room, "ephemeral", "events").([]any)
	if len(eph) != 1 || path(eph[0], "type") != "m.typing" || len(path(eph[0], "content", "user_ids").([]any)) != 1 {
		t.Fatalf("typing: %v", eph)
	}
	// The notice expires by itself and bob is told.
	expired := ts.syncOnce(bob, resp["next_batch"].(string), 5000, "")
	eph = path(expired, "rooms", "join", room, "ephemeral", "events").([]any)
	if len(eph) != 1 || len(path(eph[0], "content", "user_ids").([]any)) != 0 {
		t.Fatalf("typing expiry: %v", eph)
	}
	since = expired["next_batch"].(string)
	ts.must(alice, "POST", "/_matrix/client/v3/rooms/"+room+"/receipt/m.read.private/"+ev, map[string]any{})
	ts.must(alice, "POST", "/_matrix/client/v3/rooms/"+room+"/receipt/m.read/"+ev, map[string]any{})
	bobSees := ts.syncOnce(bob, since, 0, "")
	for _, e := range path(bobSees, "rooms", "join", room, "ephemeral", "events").([]any) {
		if m, ok := path(e, "content", ev, "m.read.private").(map[string]any); ok && len(m) > 0 {
			t.Fatal("bob sees alice's private receipt")
		}
		if _, ok := path(e, "content", ev, "m.read", alice).(map[string]any); path(e, "type") == "m.receipt" && !ok {
			t.Fatalf("bob does not see alice's public receipt: %v", e)
		}
	}
	aliceSees := ts.syncOnce(alice, since, 0, "")
	found := false
	for _, e := range path(aliceSees, "rooms", "join", room, "ephemeral", "events").([]any) {
		if m, ok := path(e, "content", ev, "m.read.private").(map[string]any); ok && m[alice] != nil {
			found = true
		}
	}
	if !found {
		t.Fatal("alice does not see her own private receipt")
	}
	code, body := ts.do(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/typing/"+bob, map[string]any{"typing": true})
	if code != 403 || body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("typing for someone else: %d %v", code, body)
	}
}

func TestFiltersAndLazyLoading(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	for _, u := range []string{bob, carol} {
		ts.must(u, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})
	}
	ts.send(bob, room, "from bob")
	created := ts.must(alice, "POST", "/_matrix/client/v3/user/"+alice+"/filter", map[string]any{
		"room": map[string]any{"timeline": map[string]any{"limit": 1}, "state": map[string]any{"lazy_load_members": true}},
	})
	fid := created["filter_id"].(string)
	got := ts.must(alice, "GET", "/_matrix/client/v3/user/"+alice+"/filter/"+fid, nil)
	if path(got, "room", "timeline", "limit") != float64(1) {
		t.Fatalf("stored filter %v", got)
	}
	resp := ts.syncOnce(alice, "", 0, "&filter="+fid)
	if n := len(path(resp, "rooms", "join", room, "timeline", "events").([]any)); n != 1 {
		t.Fatalf("timeline limit 1 gave %d events", n)
	}
	for _, ev := range path(resp, "rooms", "join", room, "state", "events").([]any) {
		if path(ev, "type") == "m.room.member" && path(ev, "state_key") == carol {
			t.Fatal("lazy-loading sent the member event of carol, who sent nothing shown")
		}
	}
	code, body := ts.do(alice, "GET", "/_matrix/client/v3/user/"+bob+"/filter/"+fid, nil)
	if code != 403 {
		t.Fatalf("reading another user's filter: %d %v", code, body)
	}
	for _, bad := range []string{"since=garbage", "since=s-1_0", "since=s1_x", "filter=%7Bnope", "filter=99999", "timeout=-5", "filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":"ten"}}}`)} {
		code, body := ts.do(alice, "GET", "/_matrix/client/v3/sync?"+bad, nil)
		if code != 400 {
			t.Errorf("sync?%s: %d %v, want 400", bad, code, body)
		}
	}
}

// A filter naming something that is not a room ID (or user ID) in its room
// or sender lists is refused with 400 M_BAD_JSON, stored or inline.
func TestFilterWithInvalidIDsIsRefused(t *testing.T) {
	ts := newTestServer(t)
	for _, f := range []map[string]any{
		{"room": map[string]any{"rooms": []string{"not_a_room_id"}}},
		{"room": map[string]any{"not_rooms": []string{"!"}}},
		{"room": map[string]any{"timeline": map[string]any{"rooms": []string{"not_a_room_id"}}}},
		{"room": map[string]any{"state": map[string]any{"not_rooms": []string{"#alias:test"}}}},
		{"room": map[string]any{"timeline": map[string]any{"senders": []string{"not_a_sender_id"}}}},
	} {
		code, body := ts.do(alice, "POST", "/_matrix/client/v3/user/"+alice+"/filter", f)
		if code != 400 || body["errcode"] != "M_BAD_JSON" {
			t.Errorf("filter %v: %d %v, want 400 M_BAD_JSON", f, code, body)
		}
		raw, _ := json.Marshal(f)
		if code, body := ts.do(alice, "GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(string(raw)), nil); code != 400 {
			t.Errorf("inline filter %s: %d %v, want 400", raw, code, body)
		}
	}
	ok := map[string]any{"room": map[string]any{"rooms": []string{"!abc:test"}, "timeline": map[string]any{"not_rooms": []string{"!def:test"}}}}
	ts.must(alice, "POST", "/_matrix/client/v3/user/"+alice+"/filter", ok)
}

func TestIgnoredUsersAreHidden(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	ts.must(bob, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})
	since := ts.syncOnce(alice, "", 0, "")["next_batch"].(string)
	if err := ts.Auth.SetAccountData(t.Context(), alice, "", "m.ignored_user_list", []byte(`{"ignored_users":{"@bob:test":{}}}`)); err != nil {
		t.Fatal(err)
	}
	ts.send(bob, room, "you should not see this")
	resp := ts.syncOnce(alice, since, 0, "")
	if got := timeline(resp, room); len(got) > 0 {
		t.Fatalf("alice sees events from an ignored user: %v", got)
	}
}

// TestHandWrittenEncodingMatchesEncodingJSON: the hand-written /sync
// encoder says the same as encoding/json would.
func TestHandWrittenEncodingMatchesEncodingJSON(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat", "name": "Enc"})
	other := ts.createRoom(carol, map[string]any{"preset": "private_chat", "invite": []string{alice}})
	ts.send(alice, room, "hello")
	hand, want, err := chatsync.EncodeForTest(t.Context(), ts.Sync, alice, "DEV")
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if err := json.Unmarshal(hand, &a); err != nil {
		t.Fatalf("hand-written JSON does not parse: %v", err)
	}
	json.Unmarshal(want, &b)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("encodings differ:\n%s\n%s", hand, want)
	}
	if path(a, "rooms", "invite", other) == nil {
		t.Fatal("the invite is missing")
	}
}

func TestThreadedReceiptsAndBundledAggregations(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	ts.must(bob, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})
	root := ts.send(alice, room, "root")
	reply := ts.must(bob, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/thr1", map[string]any{
		"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})["event_id"].(string)
	since := ts.syncOnce(alice, "", 0, "")["next_batch"].(string)
	ts.must(bob, "POST", "/_matrix/client/v3/rooms/"+room+"/receipt/m.read/"+reply, map[string]any{"thread_id": root})
	for _, bad := range []struct {
		event string
		body  map[string]any
	}{
		{reply, map[string]any{"thread_id": "main"}},
		{root, map[string]any{"thread_id": root}},
		{reply, map[string]any{"thread_id": ""}},
		{reply, map[string]any{"thread_id": "not an id"}},
	} {
		code, body := ts.do(bob, "POST", "/_matrix/client/v3/rooms/"+room+"/receipt/m.read/"+bad.event, bad.body)
		if code != 400 || body["errcode"] != "M_INVALID_PARAM" {
			t.Errorf("receipt %v on %s: %d %v, want 400 M_INVALID_PARAM", bad.body, bad.event, code, body)
		}
	}
	resp := ts.syncOnce(alice, since, 0, "")
	found := false
	for _, e := range path(resp, "rooms", "join", room, "ephemeral", "events").([]any) {
		if path(e, "content", reply, "m.read", bob, "thread_id") == root {
			found = true
		}
	}
	if !found {
		t.Fatalf("the threaded receipt is not delivered with its thread_id: %v", path(resp, "rooms", "join", room, "ephemeral"))
	}
	// A limited timeline whose filter hides the thread reply bundles the
	// thread summary on the root.
	for i := 0; i < 3; i++ {
		ts.send(alice, room, "more")
	}
	lim := ts.syncOnce(alice, "", 0, "&filter="+url.QueryEscape(`{"room":{"timeline":{"limit":4,"not_senders":["@bob:test"]}}}`))
	if path(lim, "rooms", "join", room, "timeline", "limited") != true {
		t.Fatal("expected a limited timeline")
	}
	sawRoot := false
	for _, ev := range path(lim, "rooms", "join", room, "timeline", "events").([]any) {
		if path(ev, "event_id") == root {
			sawRoot = true
			if path(ev, "unsigned", "m.relations", "m.thread", "count") != float64(1) {
				t.Fatalf("root in a limited timeline without its thread summary: %v", ev)
			}
		}
	}
	if !sawRoot {
		t.Fatal("the thread root is not in the timeline")
	}

	// An event related to the root by other relations (a reaction to a
	// reference) is in the main timeline, yet related to the thread: a
	// receipt may name either. One in another thread may not.
	ref := ts.must(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/ref1", map[string]any{
		"msgtype": "m.text", "body": "see root", "m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": root}})["event_id"].(string)
	reaction := ts.must(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.reaction/react1", map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": ref, "key": "👍"}})["event_id"].(string)
	other := ts.send(alice, room, "another root")
	for thread, want := range map[string]int{root: 200, "main": 200, other: 400} {
		if code, body := ts.do(bob, "POST", "/_matrix/client/v3/rooms/"+room+"/receipt/m.read.private/"+reaction, map[string]any{"thread_id": thread}); code != want {
			t.Errorf("receipt on the reaction in thread %s: %d %v, want %d", thread, code, body, want)
		}
	}
}

func TestKnockSection(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "private_chat", "name": "Knock here"})
	ts.must(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.join_rules/", map[string]any{"join_rule": "knock"})
	since := ts.syncOnce(bob, "", 0, "")["next_batch"].(string)
	ts.must(bob, "POST", "/_matrix/client/v3/knock/"+room, map[string]any{"reason": "let me in"})
	resp := ts.syncOnce(bob, since, 0, "")
	st := path(resp, "rooms", "knock", room, "knock_state", "events").([]any)
	found := false
	for _, ev := range st {
		if path(ev, "type") == "m.room.member" && path(ev, "content", "membership") == "knock" {
			found = true
		}
	}
	if !found {
		t.Fatalf("rooms.knock lacks the knock: %v", resp["rooms"])
	}
	// Alice, a member, sees the knock in her timeline.
	aliceSees := ts.syncOnce(alice, "", 0, "")
	knocked := false
	for _, ev := range path(aliceSees, "rooms", "join", room, "timeline", "events").([]any) {
		if path(ev, "content", "membership") == "knock" {
			knocked = true
		}
	}
	if !knocked {
		t.Fatal("the room's members do not see the knock")
	}
}

// presenceIn returns the m.presence events of a sync response by sender.
func presenceIn(resp map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	p, _ := resp["presence"].(map[string]any)
	evs, _ := p["events"].([]any)
	for _, e := range evs {
		ev := e.(map[string]any)
		if ev["type"] == "m.presence" {
			out[ev["sender"].(string)] = ev["content"].(map[string]any)
		}
	}
	return out
}

// TestPresenceThroughSync: a presence change reaches those who share a room
// with the user, once, with its status message intact, and not others;
// after many changes (the change list is compacted) each user appears once
// with their latest state.
func TestPresenceThroughSync(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	ts.must(bob, "POST", "/_matrix/client/v3/rooms/"+room+"/join", map[string]any{})
	bobSince := ts.syncOnce(bob, "", 0, "")["next_batch"].(string)
	carolSince := ts.syncOnce(carol, "", 0, "")["next_batch"].(string)

	status := "away \"for\" lunch ☕ \\ </script>"
	ts.must(alice, "PUT", "/_matrix/client/v3/presence/"+alice+"/status", map[string]any{"presence": "unavailable", "status_msg": status})
	resp := ts.syncOnce(bob, bobSince, 0, "")
	got := presenceIn(resp)[alice]
	if got == nil || got["presence"] != "unavailable" || got["status_msg"] != status || got["currently_active"] != false {
		t.Fatalf("bob's view of alice's presence: %v", resp["presence"])
	}
	if _, ok := got["last_active_ago"].(float64); !ok {
		t.Fatalf("no last_active_ago: %v", got)
	}
	if got := ts.must(bob, "GET", "/_matrix/client/v3/presence/"+alice+"/status", nil); got["presence"] != "unavailable" || got["status_msg"] != status {
		t.Fatalf("GET alice's presence: %v", got)
	}
	bobSince = resp["next_batch"].(string)
	if again := presenceIn(ts.syncOnce(bob, bobSince, 0, ""))[alice]; again != nil {
		t.Fatalf("the same change twice: %v", again)
	}
	if p := presenceIn(ts.syncOnce(carol, carolSince, 0, "")); p[alice] != nil {
		t.Fatalf("carol shares no room with alice but saw %v", p[alice])
	}

	// Many changes: each user once, in their latest state.
	states := []string{"online", "unavailable", "offline"}
	for i := range 100 {
		ts.must(alice, "PUT", "/_matrix/client/v3/presence/"+alice+"/status", map[string]any{"presence": states[i%3]})
	}
	resp = ts.syncOnce(bob, bobSince, 0, "")
	evs := resp["presence"].(map[string]any)["events"].([]any)
	n := 0
	for _, e := range evs {
		if e.(map[string]any)["sender"] == alice {
			n++
		}
	}
	if got := presenceIn(resp)[alice]; n != 1 || got["presence"] != states[99%3] {
		t.Fatalf("after 100 changes: %d events for alice, latest %v", n, got)
	}
}

// TestEmptySyncShortcut: in many rooms, an incremental sync with nothing
// new answers without looking at the rooms, and each kind of change in one
// of them still comes through.
func TestEmptySyncShortcut(t *testing.T) {
	ts := newTestServer(t)
	var rooms []string
	for range 12 {
		r := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
		ts.must(bob, "POST", "/_matrix/client/v3/rooms/"+r+"/join", map[string]any{})
		rooms = append(rooms, r)
	}
	since := ts.syncOnce(bob, "", 0, "")["next_batch"].(string)
	next := func(what string) map[string]any {
		t.Helper()
		resp := ts.syncOnce(bob, since, 0, "")
		since = resp["next_batch"].(string)
		if what == "" {
			if resp["rooms"] != nil {
				t.Fatalf("nothing happened, yet: %v", resp["rooms"])
			}
			return nil
		}
		room := path(resp, "rooms", "join", rooms[7])
		if room == nil {
			t.Fatalf("%s in room 7 did not come through: %v", what, resp["rooms"])
		}
		return room.(map[string]any)
	}
	next("")
	ev := ts.send(alice, rooms[7], "hello")
	if evs := path(next("a message"), "timeline", "events").([]any); len(evs) != 1 || path(evs[0], "event_id") != ev {
		t.Fatalf("timeline: %v", evs)
	}
	next("")
	ts.must(alice, "PUT", "/_matrix/client/v3/rooms/"+rooms[7]+"/typing/"+alice, map[string]any{"typing": true, "timeout": 30000})
	if eph := path(next("typing"), "ephemeral", "events").([]any); len(eph) != 1 || path(eph[0], "type") != "m.typing" {
		t.Fatalf("ephemeral: %v", eph)
	}
	ts.must(alice, "POST", "/_matrix/client/v3/rooms/"+rooms[7]+"/receipt/m.read/"+ev, map[string]any{})
	if eph := path(next("a receipt"), "ephemeral", "events").([]any); len(eph) != 1 || path(eph[0], "type") != "m.receipt" {
		t.Fatalf("ephemeral: %v", eph)
	}
	next("")
}

// A redacted event in a /sync timeline carries the redaction as
// unsigned.redacted_because.
func TestSyncRedactedEventCarriesRedactedBecause(t *testing.T) {
	ts := newTestServer(t)
	room := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	gone := ts.send(alice, room, "regret")
	redaction := ts.must(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/redact/"+gone+"/r1", map[string]any{})["event_id"].(string)
	resp := ts.syncOnce(alice, "", 0, "")
	for _, ev := range path(resp, "rooms", "join", room, "timeline", "events").([]any) {
		if path(ev, "event_id") != gone {
			continue
		}
		if path(ev, "unsigned", "redacted_because", "event_id") != redaction || path(ev, "unsigned", "redacted_because", "redacts") != gone {
			t.Fatalf("redacted event in /sync: %v", ev)
		}
		return
	}
	t.Fatal("the redacted event is not in the timeline")
}

// TestNewlyJoinedRoomTimelineLimited: a room newly joined in an incremental
// sync is new to the client, so its timeline is limited unless it starts at
// the room's creation — as an initial sync says of the same room — and
// prev_batch reaches what the client does not have.
func TestNewlyJoinedRoomTimelineLimited(t *testing.T) {
	ts := newTestServer(t)
	onlyMessages := "&filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":10,"types":["m.room.message"]},"state":{"types":[]}}}`)
	timelineOf := func(resp map[string]any, room string) (events []any, limited any, prevBatch string) {
		tl := path(resp, "rooms", "join", room, "timeline").(map[string]any)
		return tl["events"].([]any), tl["limited"], tl["prev_batch"].(string)
	}

	room := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	for i := range 4 {
		ts.send(alice, room, fmt.Sprint("before ", i))
	}
	since := ts.syncOnce(bob, "", 0, onlyMessages)["next_batch"].(string)
	for i := range 4 {
		ts.send(alice, room, fmt.Sprint("after ", i))
	}
	ts.must(bob, "POST", "/_matrix/client/v3/rooms/"+room+"/join", map[string]any{})

	// Every message fits the limit, but the room's state events before them
	// are not in the timeline: limited, in the incremental sync and in an
	// initial one alike.
	inc := ts.syncOnce(bob, since, 0, onlyMessages)
	evs, limited, prev := timelineOf(inc, room)
	if len(evs) != 8 || limited != true {
		t.Fatalf("newly joined room: %d events, limited %v; want 8, limited", len(evs), limited)
	}
	if evs, limited, _ := timelineOf(ts.syncOnce(bob, "", 0, onlyMessages), room); len(evs) != 8 || limited != true {
		t.Fatalf("initial sync: %d events, limited %v; want 8, limited", len(evs), limited)
	}
	// What the timeline left out is behind prev_batch.
	page := ts.must(bob, "GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=100&from="+url.QueryEscape(prev), nil)
	sawCreate := false
	for _, ev := range page["chunk"].([]any) {
		if ev.(map[string]any)["type"] == "m.room.create" {
			sawCreate = true
		}
	}
	if !sawCreate {
		t.Fatalf("/messages from prev_batch does not reach the room's creation: %v", page["chunk"])
	}

	// A timeline that starts at the room's creation is not limited.
	small := ts.createRoom(alice, map[string]any{"preset": "public_chat"})
	since = ts.syncOnce(bob, since, 0, "")["next_batch"].(string)
	ts.must(bob, "POST", "/_matrix/client/v3/rooms/"+small+"/join", map[string]any{})
	evs, limited, _ = timelineOf(ts.syncOnce(bob, since, 0, "&filter="+url.QueryEscape(`{"room":{"timeline":{"limit":50}}}`)), small)
	if limited != false || len(evs) == 0 || evs[0].(map[string]any)["type"] != "m.room.create" {
		t.Fatalf("room from its creation: %d events, limited %v", len(evs), limited)
	}
	// Once joined, the next incremental sync is continuous again.
	next := ts.syncOnce(bob, since, 0, onlyMessages)["next_batch"].(string)
	ts.send(alice, room, "later")
	if _, limited, _ := timelineOf(ts.syncOnce(bob, next, 0, onlyMessages), room); limited != false {
		t.Fatalf("continuous incremental timeline: limited %v", limited)
	}
}
