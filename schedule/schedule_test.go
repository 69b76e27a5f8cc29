package schedule_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/chatalot/chatalot/schedule"
	"github.com/chatalot/chatalot/storage"
)

const testType = "org.example.delayed"

// TestDelayedMessageIsSent: a message sent with the delay parameter is
// scheduled (listed with its content, a retried transaction gets the same
// delay ID), then sent by the server at its time; the sender sees its delay
// ID in unsigned, another member does not.
func TestDelayedMessageIsSent(t *testing.T) {
	ts := newTestServer(t, t.TempDir(), schedule.Config{})
	room := ts.room(bob)
	path := v3 + room + "/send/" + testType + "/txn1" + delayQuery("300")
	id := ts.must(alice, "PUT", path, map[string]any{"n": 1})["delay_id"].(string)
	// The retry comes without a body, as Complement's does.
	if again := ts.must(alice, "PUT", path, nil)["delay_id"]; again != id {
		t.Fatalf("retry: %v, want %s", again, id)
	}
	list := ts.scheduled(alice)
	if len(list) != 1 {
		t.Fatalf("scheduled: %v", list)
	}
	d := list[0].(map[string]any)
	if d["delay_id"] != id || d["room_id"] != room || d["type"] != testType || d["delay"] != float64(300) ||
		d["content"].(map[string]any)["n"] != float64(1) || d["running_since"] == nil {
		t.Fatalf("scheduled event: %v", d)
	}
	if _, hasKey := d["state_key"]; hasKey {
		t.Fatalf("a message event has no state key: %v", d)
	}
	if len(ts.scheduled(bob)) != 0 || len(ts.timeline(alice, room, testType)) != 0 {
		t.Fatal("bob sees alice's delayed event, or it was sent at once")
	}
	waitFor(t, "the delayed message", func() bool { return len(ts.timeline(alice, room, testType)) == 1 })
	// The row goes in the write after the send's (schedule/service.go,
	// sendDue), so the list may still hold it for that moment.
	waitFor(t, "the sent event to leave the schedule", func() bool { return len(ts.scheduled(alice)) == 0 })
	mine := ts.timeline(alice, room, testType)[0]["unsigned"].(map[string]any)
	if mine["org.matrix.msc4140.delay_id"] != id || mine["transaction_id"] != nil {
		t.Fatalf("sender's unsigned: %v", mine)
	}
	if theirs, _ := ts.timeline(bob, room, testType)[0]["unsigned"].(map[string]any); theirs["org.matrix.msc4140.delay_id"] != nil {
		t.Fatalf("bob's unsigned: %v", theirs)
	}
}

// TestManagingDelayedEvents: restart, send and cancel, by delay ID and
// without an access token, on a delayed state event.
func TestManagingDelayedEvents(t *testing.T) {
	ts := newTestServer(t, t.TempDir(), schedule.Config{})
	room := ts.room()
	state := v3 + room + "/state/" + testType + "/k"
	id := ts.must(alice, "PUT", state+delayQuery("100000"), map[string]any{"v": "later"})["delay_id"].(string)
	if d := ts.scheduled(alice)[0].(map[string]any); d["state_key"] != "k" {
		t.Fatalf("state key: %v", d)
	}
	ts.wantErr(alice, "GET", state, nil, 404, "M_NOT_FOUND")

	since := ts.scheduled(alice)[0].(map[string]any)["running_since"].(float64)
	waitFor(t, "the clock to move", func() bool { return float64(time.Now().UnixMilli()) > since })
	ts.must("", "POST", base+"/"+id+"/restart", map[string]any{})
	if again := ts.scheduled(alice)[0].(map[string]any)["running_since"].(float64); again <= since {
		t.Fatalf("restart kept running_since %v (was %v)", again, since)
	}
	ts.must("", "POST", base+"/"+id+"/send", map[string]any{})
	if got := ts.must(alice, "GET", state, nil); got["v"] != "later" {
		t.Fatalf("state after send: %v", got)
	}
	if len(ts.scheduled(alice)) != 0 {
		t.Fatal("sent, yet still scheduled")
	}
	for _, action := range []string{"send", "cancel", "restart"} {
		ts.wantErr("", "POST", base+"/"+id+"/"+action, map[string]any{}, 404, "M_NOT_FOUND")
	}

	// A cancelled event is never sent: a later one sent after its time
	// proves the scheduler passed it.
	cancelled := ts.must(alice, "PUT", v3+room+"/state/"+testType+"/never"+delayQuery("50"), map[string]any{})["delay_id"].(string)
	ts.must("", "POST", base+"/"+cancelled, map[string]any{"action": "cancel"})
	ts.must(alice, "PUT", v3+room+"/state/"+testType+"/after"+delayQuery("100"), map[string]any{})
	waitFor(t, "the later event", func() bool {
		code, _ := ts.do(alice, "GET", v3+room+"/state/"+testType+"/after", nil)
		return code == 200
	})
	ts.wantErr(alice, "GET", v3+room+"/state/"+testType+"/never", nil, 404, "M_NOT_FOUND")
}

// TestDelayedEventErrors: bad delays, the limits, a room the user is not
// in, bad actions and unauthenticated lookups get Matrix errors.
func TestDelayedEventErrors(t *testing.T) {
	ts := newTestServer(t, t.TempDir(), schedule.Config{MaxDelay: time.Minute, MaxPerUser: 2})
	room := ts.room()
	send := func(txn, delay string) string { return v3 + room + "/send/" + testType + "/" + txn + delayQuery(delay) }
	for _, bad := range []string{"abc", "0", "-5", "1.5", ""} {
		ts.wantErr(alice, "PUT", send("bad", bad), map[string]any{}, 400, "M_INVALID_PARAM")
	}
	over := ts.wantErr(alice, "PUT", send("big", "60001"), map[string]any{}, 400, "ORG.MATRIX.MSC4140_MAX_DELAY_EXCEEDED")
	if over["org.matrix.msc4140.max_delay"] != float64(60000) {
		t.Fatalf("max delay: %v", over)
	}
	ts.wantErr(bob, "PUT", send("notin", "1000"), map[string]any{}, 403, "M_FORBIDDEN")
	// A second m.room.create is a bad request whatever the delay (as without one).
	ts.wantErr(alice, "PUT", v3+room+"/state/m.room.create/"+delayQuery("1000"), map[string]any{}, 400, "M_BAD_JSON")
	ts.wantErr(alice, "PUT", send("notjson", "1000"), nil, 400, "M_NOT_JSON")

	ts.must(alice, "PUT", send("one", "50000"), map[string]any{})
	ts.must(alice, "PUT", send("two", "50000"), map[string]any{})
	full := ts.wantErr(alice, "PUT", send("three", "50000"), map[string]any{}, 429, "M_LIMIT_EXCEEDED")
	if ms, _ := full["retry_after_ms"].(float64); ms <= 0 || ms > 50000 {
		t.Fatalf("retry_after_ms: %v", full)
	}

	ts.wantErr("", "GET", base, nil, 401, "M_MISSING_TOKEN")
	ts.wantErr(alice, "GET", base+"?status=pending", nil, 400, "M_INVALID_PARAM")
	if got, _ := ts.must(alice, "GET", base+"?status=finalised", nil)["delayed_events"].([]any); len(got) != 0 {
		t.Fatalf("finalised: %v", got)
	}
	ts.wantErr("", "POST", base+"/abc", map[string]any{}, 400, "M_MISSING_PARAM")
	ts.wantErr("", "POST", base+"/abc", map[string]any{"action": "oops"}, 400, "M_INVALID_PARAM")
	ts.wantErr("", "POST", base+"/abc/oops", map[string]any{}, 404, "M_UNRECOGNIZED")
	ts.wantErr(bob, "GET", base+"/"+ts.scheduled(alice)[0].(map[string]any)["delay_id"].(string), nil, 404, "M_NOT_FOUND")
}

// TestTheMSCsSchedulingEndpoint: PUT …/delayed_event/{type}/{txnId} with
// the delay and content in the body.
func TestTheMSCsSchedulingEndpoint(t *testing.T) {
	ts := newTestServer(t, t.TempDir(), schedule.Config{})
	room := ts.room()
	path := "/_matrix/client/unstable/org.matrix.msc4140/rooms/" + url.PathEscape(room) + "/delayed_event/" + testType + "/t1"
	id := ts.must(alice, "PUT", path, map[string]any{"delay": 100, "state_key": "s", "content": map[string]any{"a": 1}})["delay_id"]
	if again := ts.must(alice, "PUT", path, map[string]any{"delay": 100, "content": map[string]any{}})["delay_id"]; again != id {
		t.Fatalf("retry: %v want %v", again, id)
	}
	ts.wantErr(alice, "PUT", path+"x", map[string]any{"content": map[string]any{}}, 400, "M_MISSING_PARAM")
	waitFor(t, "the delayed state", func() bool {
		code, _ := ts.do(alice, "GET", v3+room+"/state/"+testType+"/s", nil)
		return code == 200
	})
}

// TestDelayedEventsSurviveARestart: what is scheduled when the server stops
// is sent after it starts again, once, even when the server had sent it but
// stopped before it could forget it.
func TestDelayedEventsSurviveARestart(t *testing.T) {
	dir := t.TempDir()
	ts := newTestServer(t, dir, schedule.Config{})
	room := ts.room()
	ts.must(alice, "PUT", v3+room+"/send/"+testType+"/t1"+delayQuery("400"), map[string]any{"n": 1})
	ts.close()

	ts = newTestServer(t, dir, schedule.Config{})
	waitFor(t, "the event after the restart", func() bool { return len(ts.timeline(alice, room, testType)) == 1 })
	// The row goes after the event is sent: wait for it, or the row put
	// back below would collide with it.
	waitFor(t, "the sent row to go", func() bool { return len(ts.scheduled(alice)) == 0 })

	// A crash between sending and forgetting leaves the row: put it back
	// as it was, and start again.
	id := ts.timeline(alice, room, testType)[0]["unsigned"].(map[string]any)["org.matrix.msc4140.delay_id"].(string)
	err := ts.db.Write(context.Background(), func(tx *storage.Tx) error {
		_, err := tx.Exec(`INSERT INTO delayed_events (delay_id, user_id, device_id, txn_id, room_id, type, content, delay_ms, running_since)
			VALUES ($1, $2, 'DEV', 't1', $3, $4, '{"n":1}', 1, 0)`, id, alice, room, testType)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.close()
	ts = newTestServer(t, dir, schedule.Config{})
	waitFor(t, "the replayed row to go", func() bool { return len(ts.scheduled(alice)) == 0 })
	if n := len(ts.timeline(alice, room, testType)); n != 1 {
		t.Fatalf("%d events after the replay, want 1", n)
	}
}
