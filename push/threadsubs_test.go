package push_test

import (
	"net/url"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

func subscriptionPath(room, root string) string {
	return "/_matrix/client/unstable/io.element.msc4306/rooms/" + url.PathEscape(room) + "/thread/" + url.PathEscape(root) + "/subscription"
}

func inThread(root, body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": body, "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}
}

// TestThreadSubscriptionEndpoints: subscribing manually and automatically,
// unsubscribing, and the MSC's errors, including an automatic subscription
// caused by an event older than the last unsubscription.
func TestThreadSubscriptionEndpoints(t *testing.T) {
	ts := newTestServer(t)
	room := ts.room(alice, bob)
	root := ts.text(alice, room, "a thread")
	sub := subscriptionPath(room, root)

	ts.wantError(bob, "GET", sub, nil, 404, "M_NOT_FOUND")
	ts.must(bob, "DELETE", sub, nil) // unsubscribing without a subscription is fine
	ts.must(bob, "PUT", sub, map[string]any{})
	if got := ts.must(bob, "GET", sub, nil); got["automatic"] != false {
		t.Fatalf("manual subscription: %v", got)
	}
	// Only an event of the thread, not its root nor another thread's event,
	// can cause an automatic subscription.
	other := ts.text(alice, room, "another thread")
	otherReply := ts.send(alice, room, "m.room.message", inThread(other, "elsewhere"))
	for _, cause := range []string{root, otherReply, "$nosuchevent", "not an ID"} {
		ts.wantError(bob, "PUT", sub, map[string]any{"automatic": cause}, 400, spec.ErrNotInThread)
	}
	// A manual subscription stays manual.
	reply1 := ts.send(alice, room, "m.room.message", inThread(root, "one"))
	ts.must(bob, "PUT", sub, map[string]any{"automatic": reply1})
	if got := ts.must(bob, "GET", sub, nil); got["automatic"] != false {
		t.Fatalf("after an automatic PUT: %v", got)
	}

	// Unsubscribe after reply2: reply1 and reply2 can no longer subscribe
	// automatically, reply3 can.
	ts.must(bob, "DELETE", sub, nil)
	ts.wantError(bob, "GET", sub, nil, 404, "M_NOT_FOUND")
	reply2 := ts.send(alice, room, "m.room.message", inThread(root, "two"))
	ts.must(bob, "PUT", sub, map[string]any{"automatic": reply2})
	ts.must(bob, "DELETE", sub, nil)
	reply3 := ts.send(alice, room, "m.room.message", inThread(root, "three"))
	for _, old := range []string{reply1, reply2} {
		ts.wantError(bob, "PUT", sub, map[string]any{"automatic": old}, 409, spec.ErrConflictingUnsubscription)
	}
	ts.must(bob, "PUT", sub, map[string]any{"automatic": reply3})
	if got := ts.must(bob, "GET", sub, nil); got["automatic"] != true {
		t.Fatalf("automatic subscription: %v", got)
	}
	// A manual subscription overrides an automatic one.
	ts.must(bob, "PUT", sub, map[string]any{})
	if got := ts.must(bob, "GET", sub, nil); got["automatic"] != false {
		t.Fatalf("manual over automatic: %v", got)
	}

	// Threads that do not exist or that the user cannot see are 404.
	ts.wantError(bob, "PUT", subscriptionPath(room, "$nosuchevent"), map[string]any{}, 404, "M_NOT_FOUND")
	ts.wantError(carol, "PUT", sub, map[string]any{}, 404, "M_NOT_FOUND")
	ts.wantError(carol, "GET", sub, nil, 404, "M_NOT_FOUND")
	ts.wantError(bob, "PUT", sub, map[string]any{"automatic": 5}, 400, "M_BAD_JSON")
	ts.wantError(bob, "PUT", subscriptionPath("notaroom", root), map[string]any{}, 400, "M_INVALID_PARAM")
}

// TestThreadSubscriptionPushRules: a followed thread notifies with a sound
// (.io.element.msc4306.rule.subscribed_thread); with the unsubscribed_thread
// rule turned on, other threads are silent except for mentions. The
// subscriptions survive a restart of the service.
func TestThreadSubscriptionPushRules(t *testing.T) {
	dir := t.TempDir()
	ts := startTestServer(t, dir)
	room := ts.room(alice, bob, carol)
	followed := ts.text(alice, room, "followed")
	ignored := ts.text(alice, room, "not followed")
	ts.must(bob, "PUT", subscriptionPath(room, followed), map[string]any{})
	ts.receipt(bob, room, "m.read", ignored, "")
	ts.wantCounts(bob, room, [2]int64{0, 0})

	ts.send(alice, room, "m.room.message", inThread(followed, "news"))
	ts.wantCounts(bob, room, [2]int64{1, 0})
	list := ts.must(bob, "GET", "/_matrix/client/v3/notifications?limit=1", nil)["notifications"].([]any)
	if len(list) == 0 || !hasAction(list[0], `{"set_tweak":"sound","value":"default"}`) {
		t.Fatalf("a followed thread's message has no sound: %v", list)
	}
	// By default other threads notify as before.
	ts.send(alice, room, "m.room.message", inThread(ignored, "chatter"))
	ts.wantCounts(bob, room, [2]int64{2, 0})

	ts.must(bob, "PUT", rulesPath+"global/override/.io.element.msc4306.rule.unsubscribed_thread/enabled", map[string]any{"enabled": true})
	ts.send(alice, room, "m.room.message", inThread(ignored, "more chatter"))
	ts.wantCounts(bob, room, [2]int64{2, 0})
	mention := inThread(ignored, "bob, look")
	mention["m.mentions"] = map[string]any{"user_ids": []string{bob}}
	ts.send(alice, room, "m.room.message", mention)
	ts.wantCounts(bob, room, [2]int64{3, 1})
	ts.send(alice, room, "m.room.message", inThread(followed, "still followed"))
	ts.wantCounts(bob, room, [2]int64{4, 1})
	// carol follows nothing and kept the defaults.
	ts.wantCounts(carol, room, [2]int64{7, 0})

	// After a restart the subscription is still there.
	sent := ts.txn.Load()
	ts.close()
	ts = startTestServer(t, dir)
	ts.txn.Store(sent) // new transaction IDs
	if got := ts.must(bob, "GET", subscriptionPath(room, followed), nil); got["automatic"] != false {
		t.Fatalf("after a restart: %v", got)
	}
	ts.wantError(bob, "GET", subscriptionPath(room, ignored), nil, 404, "M_NOT_FOUND")
	ts.send(alice, room, "m.room.message", inThread(followed, "after the restart"))
	ts.wantCounts(bob, room, [2]int64{5, 1})
}
