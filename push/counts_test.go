package push_test

import (
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/push"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

func unreadIn(resp map[string]any, room string) (n, h any) {
	u := path(resp, "rooms", "join", room, "unread_notifications")
	return path(u, "notification_count"), path(u, "highlight_count")
}

func TestCountsClearedByReceipts(t *testing.T) {
	ts := newTestServer(t)
	room := ts.room(alice, bob, carol)
	first := ts.syncOnce(bob, "", "")
	if n, h := unreadIn(first, room); n != 0.0 || h != 0.0 {
		t.Fatalf("initial counts: %v %v", n, h)
	}
	e1 := ts.text(alice, room, "one")
	e2 := ts.text(alice, room, "two")
	ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "three", "m.mentions": map[string]any{"user_ids": []string{bob}}})
	e4 := ts.text(alice, room, "four")

	// The counts come with the events, in the same incremental sync.
	resp := ts.syncOnce(bob, first["next_batch"].(string), "")
	if n, h := unreadIn(resp, room); n != 4.0 || h != 1.0 {
		t.Fatalf("counts with the events: %v %v", n, h)
	}
	since := resp["next_batch"].(string)

	// m.read up to e2 leaves three and four.
	ts.receipt(bob, room, "m.read", e2, "")
	ts.wantCounts(bob, room, [2]int64{2, 1})
	// A receipt is a change of the room: the incremental sync has the new
	// counts.
	resp = ts.syncOnce(bob, since, "")
	if n, h := unreadIn(resp, room); n != 2.0 || h != 1.0 {
		t.Fatalf("counts after the receipt: %v %v", n, h)
	}
	since = resp["next_batch"].(string)

	// m.read.private counts too; the further receipt wins.
	ts.receipt(bob, room, "m.read.private", e4, "")
	ts.wantCounts(bob, room, [2]int64{0, 0})
	ts.receipt(bob, room, "m.read", e1, "")
	ts.wantCounts(bob, room, [2]int64{0, 0})
	resp = ts.syncOnce(bob, since, "")
	if n, h := unreadIn(resp, room); n != 0.0 || h != 0.0 {
		t.Fatalf("counts after the private receipt: %v %v", n, h)
	}
	since = resp["next_batch"].(string)
	// Nothing changed since: the room is not repeated.
	if resp := ts.syncOnce(bob, since, ""); path(resp, "rooms", "join", room) != nil {
		t.Fatalf("unchanged room repeated: %v", path(resp, "rooms", "join", room))
	}

	// carol's counts are hers: bob's receipts did not touch them.
	ts.wantCounts(carol, room, [2]int64{4, 0})
	// Sending is reading: carol's message clears her counts.
	ts.text(carol, room, "read it all")
	ts.wantCounts(carol, room, [2]int64{0, 0})
	ts.wantCounts(bob, room, [2]int64{1, 0})
}

func TestThreadCounts(t *testing.T) {
	ts := newTestServer(t)
	room := ts.room(alice, bob, carol)
	root := ts.text(alice, room, "root")
	reply := ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "in thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "again",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	// A reply to a thread event without rel_type m.thread is in the thread
	// too (the spec's relation hops).
	ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "quote",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": reply}, "event_id": reply, "rel_type": "org.example.ref"}})
	n, h, threads, _ := ts.push.Counts(bob, spec.RoomID(room))
	if n != 1 || h != 0 || threads[root] != [2]int64{3, 0} {
		t.Fatalf("main %d/%d, threads %v", n, h, threads)
	}
	// Without unread_thread_notifications: the whole room.
	resp := ts.syncOnce(bob, "", "")
	if n, _ := unreadIn(resp, room); n != 4.0 {
		t.Fatalf("whole-room count: %v", n)
	}
	// With it: the main timeline, and each thread.
	filter := `{"room":{"timeline":{"unread_thread_notifications":true}}}`
	resp = ts.syncOnce(bob, "", filter)
	if n, _ := unreadIn(resp, room); n != 1.0 {
		t.Fatalf("main timeline count: %v", n)
	}
	if c := path(resp, "rooms", "join", room, "unread_thread_notifications", root, "notification_count"); c != 3.0 {
		t.Fatalf("thread count: %v", path(resp, "rooms", "join", room, "unread_thread_notifications"))
	}
	// A threaded receipt clears its thread only.
	ts.receipt(bob, room, "m.read", reply, root)
	n, _, threads, _ = ts.push.Counts(bob, spec.RoomID(room))
	if n != 1 || threads[root] != [2]int64{2, 0} {
		t.Fatalf("after the thread receipt: main %d, threads %v", n, threads)
	}
	ts.receipt(bob, room, "m.read", root, "main")
	n, _, threads, _ = ts.push.Counts(bob, spec.RoomID(room))
	if n != 0 || threads[root] != [2]int64{2, 0} {
		t.Fatalf("after the main receipt: main %d, threads %v", n, threads)
	}
	// An unthreaded receipt on the latest event clears everything.
	last := ts.text(alice, room, "last")
	ts.receipt(bob, room, "m.read", last, "")
	ts.wantCounts(bob, room, [2]int64{0, 0})
}

func TestCountsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	ts := startTestServer(t, dir)
	room := ts.room(alice, bob, carol)
	ts.text(alice, room, "one")
	e2 := ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "two", "m.mentions": map[string]any{"user_ids": []string{bob}}})
	ts.text(alice, room, "three")
	ts.receipt(bob, room, "m.read", e2, "")
	ts.wantCounts(bob, room, [2]int64{1, 0})
	ts.wantCounts(carol, room, [2]int64{3, 0})
	ts.close()

	ts = startTestServer(t, dir)
	ts.wantCounts(bob, room, [2]int64{1, 0})
	ts.wantCounts(carol, room, [2]int64{3, 0})
	// The read position survived too: an old receipt changes nothing.
	ts.receipt(bob, room, "m.read", e2, "")
	ts.wantCounts(bob, room, [2]int64{1, 0})
}

// TestLongPollGetsCounts: a waiting /sync is woken by the event and answers
// with its counts in the same response.
func TestLongPollGetsCounts(t *testing.T) {
	ts := newTestServer(t)
	room := ts.room(alice, bob, carol)
	since := ts.syncOnce(bob, "", "")["next_batch"].(string)
	got := make(chan map[string]any, 1)
	go func() {
		_, resp := ts.do(bob, "GET", "/_matrix/client/v3/sync?timeout=20000&since="+url.QueryEscape(since), nil)
		got <- resp
	}()
	// Wait until the long-poll is registered, then send.
	deadline := time.Now().Add(10 * time.Second)
	for ts.sync.Notifier().Waiters() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the long-poll never started waiting")
		}
		time.Sleep(time.Millisecond)
	}
	id := ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "ping", "m.mentions": map[string]any{"user_ids": []string{bob}}})
	select {
	case resp := <-got:
		evs, _ := path(resp, "rooms", "join", room, "timeline", "events").([]any)
		if len(evs) != 1 || path(evs[0], "event_id") != id {
			t.Fatalf("timeline: %v", evs)
		}
		if n, h := unreadIn(resp, room); n != 1.0 || h != 1.0 {
			t.Fatalf("counts in the same response: %v %v", n, h)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the long-poll did not answer")
	}
}

func TestNotificationsList(t *testing.T) {
	ts := newTestServer(t)
	room := ts.room(alice, bob, carol)
	e1 := ts.text(alice, room, "one")
	e2 := ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "two", "m.mentions": map[string]any{"user_ids": []string{bob}}})
	// The first two move out of staging, one event per write; the list
	// reads both tables.
	ts.push.FlushWithForTest(1, 2)
	var staged int
	if err := ts.db.QueryRow(t.Context(), `SELECT count(*) FROM push_staged`).Scan(&staged); err != nil || staged != 0 {
		t.Fatalf("%d events still staged (%v)", staged, err)
	}
	ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.notice", "body": "not listed"})
	e3 := ts.text(alice, room, "three")
	ts.receipt(bob, room, "m.read", e1, "")
	checkNotificationsList(t, ts, room, e1, e2, e3)
	ts.push.FlushForTest()
	checkNotificationsList(t, ts, room, e1, e2, e3)
}

func checkNotificationsList(t *testing.T, ts *testServer, room, e1, e2, e3 string) {
	t.Helper()
	list := ts.must(bob, "GET", "/_matrix/client/v3/notifications", nil)
	ns := list["notifications"].([]any)
	if len(ns) != 3 || list["next_token"] != nil {
		t.Fatalf("notifications: %v", list)
	}
	wantIDs := []string{e3, e2, e1} // newest first
	wantRead := []bool{false, false, true}
	for i, n := range ns {
		if path(n, "event", "event_id") != wantIDs[i] || path(n, "read") != wantRead[i] || path(n, "room_id") != room {
			t.Fatalf("notification %d: %v", i, n)
		}
		if _, ok := path(n, "ts").(float64); !ok {
			t.Fatalf("notification %d has no ts: %v", i, n)
		}
	}
	// only=highlight keeps the mention.
	hl := ts.must(bob, "GET", "/_matrix/client/v3/notifications?only=highlight", nil)["notifications"].([]any)
	if len(hl) != 1 || path(hl[0], "event", "event_id") != e2 {
		t.Fatalf("highlights: %v", hl)
	}
	// Pagination: one at a time, following next_token.
	var seen []string
	from := ""
	for range 5 {
		q := "/_matrix/client/v3/notifications?limit=1"
		if from != "" {
			q += "&from=" + from
		}
		page := ts.must(bob, "GET", q, nil)
		for _, n := range page["notifications"].([]any) {
			seen = append(seen, path(n, "event", "event_id").(string))
		}
		next, ok := page["next_token"].(string)
		if !ok {
			break
		}
		from = next
	}
	if !equal(seen, wantIDs) {
		t.Fatalf("paginated: %v", seen)
	}
	ts.wantError(bob, "GET", "/_matrix/client/v3/notifications?limit=x", nil, 400, spec.ErrInvalidParam)
	ts.wantError(bob, "GET", "/_matrix/client/v3/notifications?only=everything", nil, 400, spec.ErrInvalidParam)
	ts.wantError(bob, "GET", "/_matrix/client/v3/notifications?from=abc", nil, 400, spec.ErrInvalidParam)
	// alice was notified of nothing.
	if n := ts.must(alice, "GET", "/_matrix/client/v3/notifications", nil)["notifications"].([]any); len(n) != 0 {
		t.Fatalf("alice's notifications: %v", n)
	}
}

// TestCountsBeyondTracked: past push.MaxTracked unread notifications, the older
// ones are only counted in memory; receipts among them are recounted from
// the database, before and after a restart, and agree with /sync.
func TestCountsBeyondTracked(t *testing.T) {
	dir := t.TempDir()
	ts := startTestServer(t, dir)
	room := ts.room(alice, bob)
	n := push.MaxTracked + 10
	ids := make([]string, n)
	for i := range ids {
		content := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)}
		if i%4 == 0 { // every fourth mentions bob: a highlight
			content["m.mentions"] = map[string]any{"user_ids": []string{bob}}
		}
		ids[i] = ts.send(alice, room, "m.room.message", content)
	}
	// unreadAfter is what stays unread once the i-th event is read.
	unreadAfter := func(i int) [2]int64 {
		var c [2]int64
		for j := i + 1; j < n; j++ {
			c[0]++
			if j%4 == 0 {
				c[1]++
			}
		}
		return c
	}
	ts.wantCounts(bob, room, unreadAfter(-1))
	ts.receipt(bob, room, "m.read", ids[3], "") // among the untracked
	ts.wantCounts(bob, room, unreadAfter(3))
	ts.receipt(bob, room, "m.read", ids[8], "main") // a threaded receipt, main timeline
	ts.wantCounts(bob, room, unreadAfter(8))
	ts.close()

	ts = startTestServer(t, dir)
	ts.wantCounts(bob, room, unreadAfter(8))
	ts.receipt(bob, room, "m.read", ids[20], "") // loaded as a tally: recounted
	ts.wantCounts(bob, room, unreadAfter(20))
	resp := ts.syncOnce(bob, "", "")
	want := unreadAfter(20)
	if n, h := unreadIn(resp, room); n != float64(want[0]) || h != float64(want[1]) {
		t.Fatalf("/sync counts %v %v, want %v", n, h, want)
	}
	ts.receipt(bob, room, "m.read", ids[n-1], "")
	ts.wantCounts(bob, room, [2]int64{0, 0})
	ts.close()

	ts = startTestServer(t, dir)
	ts.wantCounts(bob, room, [2]int64{0, 0})
}

// TestSendingReadsWhatTheSameBatchNotified: a reply written in the same
// batch as the message it follows (the room's sends are pipelined) still
// clears the replier's count of that message.
func TestSendingReadsWhatTheSameBatchNotified(t *testing.T) {
	ts := newTestServer(t)
	room := ts.room(alice, bob)
	// Hold the writer until both sends are queued behind it, so that they
	// are written in one batch.
	started, release := make(chan struct{}), make(chan struct{})
	held := ts.db.Submit(t.Context(), nil, func(*storage.Tx) error { close(started); <-release; return nil })
	// A failed wait must not leave the writer held.
	var once sync.Once
	defer once.Do(func() { close(release) })
	<-started // the queue now holds only what comes after
	waitQueued := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for ts.db.Queued() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d writes queued, want %d", ts.db.Queued(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	done := make(chan string, 2)
	go func() { done <- ts.text(alice, room, "question") }()
	waitQueued(1)
	go func() { done <- ts.text(bob, room, "answer") }()
	waitQueued(2)
	once.Do(func() { close(release) })
	if err := held.Wait(); err != nil {
		t.Fatal(err)
	}
	<-done
	<-done
	ts.wantCounts(bob, room, [2]int64{0, 0})
	ts.wantCounts(alice, room, [2]int64{1, 0})
}

// TestStagedRowsMoveOnceABurstIsOver: the server does not sit on work it
// owes: staged notifications move soon after the sends stop, well before
// the push.FlushDelay a steady stream waits for.
func TestStagedRowsMoveOnceABurstIsOver(t *testing.T) {
	ts := newTestServer(t)
	room := ts.room(alice, bob, carol)
	for i := range 5 {
		ts.text(alice, room, fmt.Sprint("burst ", i))
	}
	deadline := time.Now().Add(push.FlushDelay - time.Second)
	for {
		var staged int
		if err := ts.db.QueryRow(t.Context(), `SELECT count(*) FROM push_staged`).Scan(&staged); err != nil {
			t.Fatal(err)
		}
		if staged == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still staged %v after the burst", staged, push.FlushDelay-time.Second)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var notified int
	if err := ts.db.QueryRow(t.Context(), `SELECT count(*) FROM push_notified`).Scan(&notified); err != nil || notified < 10 {
		t.Fatalf("%d rows moved (%v), want at least 10", notified, err)
	}
}

// TestLegacyMentionRules: the v1.11 body-mention rules highlight a message
// that names the user (localpart, display name in the room, "@room" from a
// sender allowed to notify the room), and stand aside when the event has
// m.mentions, whatever it holds (spec v1.7, MSC3952).
func TestLegacyMentionRules(t *testing.T) {
	ts := newTestServer(t)
	room := ts.room(alice, bob, carol)
	ts.state(bob, room, "m.room.member", bob, map[string]any{"membership": "join", "displayname": "Bobby Tables"})
	noMentions := map[string]any{}
	cases := []struct {
		name      string
		sender    string
		body      string
		mentions  any // nil: no m.mentions property
		highlight bool
	}{
		{"localpart", alice, "lunch, bob?", nil, true},
		{"localpart in a user ID", alice, "ping @bob:test!", nil, true},
		{"localpart inside a word", alice, "a bobcat", nil, false},
		{"localpart with m.mentions", alice, "lunch, bob?", noMentions, false},
		{"display name", alice, "bobby tables, look", nil, true},
		{"display name with m.mentions", alice, "Bobby Tables, look", map[string]any{"user_ids": []string{}}, false},
		{"@room from the creator", alice, "@room: release", nil, true},
		{"@room without the power", carol, "@room: release", nil, false},
		{"@room with m.mentions", alice, "@room: release", noMentions, false},
		{"m.mentions of bob", alice, "hi", map[string]any{"user_ids": []string{bob}}, true},
	}
	for _, c := range cases {
		before := ts.counts(bob, room)
		content := map[string]any{"msgtype": "m.text", "body": c.body}
		if c.mentions != nil {
			content["m.mentions"] = c.mentions
		}
		ts.send(c.sender, room, "m.room.message", content)
		got := ts.counts(bob, room)
		want := [2]int64{before[0] + 1, before[1]}
		if c.highlight {
			want[1]++
		}
		if got != want {
			t.Errorf("%s: counts went from %v to %v, want %v", c.name, before, got, want)
		}
	}
	// The legacy rules are the user's to turn off, like any default rule.
	ts.must(bob, "PUT", rulesPath+"global/content/.m.rule.contains_user_name/enabled", map[string]any{"enabled": false})
	before := ts.counts(bob, room)
	ts.text(alice, room, "lunch, bob?")
	if got := ts.counts(bob, room); got != [2]int64{before[0] + 1, before[1]} {
		t.Errorf("disabled contains_user_name: counts went from %v to %v", before, got)
	}
}
