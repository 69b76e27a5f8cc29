package keys_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

func (e *env) send(from *device, txn string, messages map[string]any) resp {
	e.t.Helper()
	return e.do(from, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+txn, map[string]any{"messages": messages})
}

// inbox reads a device's queued messages as /sync would.
func (e *env) inbox(d *device, since int64) ([]map[string]any, int64) {
	e.t.Helper()
	msgs, last, err := e.svc.ToDevice(context.Background(), d.user, d.id, since, e.db.Position(), 100)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []map[string]any
	for _, m := range msgs {
		var v map[string]any
		if err := json.Unmarshal(m, &v); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, v)
	}
	return out, last
}

func TestSendToDevice(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := newDevice(alice, "ALICE1")
	b1, b2 := newDevice(bob, "BOB1"), newDevice(bob, "BOB2")
	for _, d := range []*device{a, b1, b2} {
		if err := e.svc.DeviceAdded(ctx, d.user, d.id, ""); err != nil {
			t.Fatal(err)
		}
	}
	if e.svc.ToDevicePosition(bob, "BOB1") != 0 {
		t.Fatal("pending messages before any was sent")
	}
	msg := map[string]any{string(bob): map[string]any{"BOB1": map[string]any{"n": 1}, "NOSUCH": map[string]any{"n": 0}}}
	e.want(e.send(a, "t1", msg), 200)
	e.want(e.send(a, "t1", msg), 200) // a retry: queued once
	pos := e.svc.ToDevicePosition(bob, "BOB1")
	if pos == 0 || e.notes.last(bob) != pos {
		t.Fatalf("position %d, bob woken at %d", pos, e.notes.last(bob))
	}
	got, last := e.inbox(b1, 0)
	if len(got) != 1 || got[0]["sender"] != string(alice) || got[0]["type"] != "m.test" || got[0]["content"].(map[string]any)["n"] != float64(1) {
		t.Fatalf("inbox = %v", got)
	}
	if got, _ := e.inbox(b2, 0); len(got) != 0 {
		t.Fatalf("BOB2 got a message for BOB1: %v", got)
	}
	// An empty sync reads nothing: the position says so from memory.
	reads := e.db.ReadCount()
	if msgs, _, _ := e.svc.ToDevice(ctx, bob, "BOB2", 0, e.db.Position(), 100); len(msgs) != 0 || e.db.ReadCount() != reads {
		t.Fatalf("an empty inbox read the database")
	}
	// "*" reaches every device of the user, in order after the first.
	e.want(e.send(a, "t2", map[string]any{string(bob): map[string]any{"*": map[string]any{"n": 2}}}), 200)
	got, _ = e.inbox(b1, 0)
	if len(got) != 2 || got[1]["content"].(map[string]any)["n"] != float64(2) {
		t.Fatalf("BOB1 inbox = %v", got)
	}
	if got, _ := e.inbox(b2, 0); len(got) != 1 {
		t.Fatalf("BOB2 inbox = %v", got)
	}
	// Acknowledging deletes what was delivered, and only that.
	if err := e.svc.AckToDevice(ctx, bob, "BOB1", last); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.inbox(b1, 0); len(got) != 1 || got[0]["content"].(map[string]any)["n"] != float64(2) {
		t.Fatalf("after ack: %v", got)
	}
	// Pending messages survive a restart.
	e.restart()
	if e.svc.ToDevicePosition(bob, "BOB2") == 0 {
		t.Fatal("pending position lost at restart")
	}
	// Deleting a device drops its messages.
	if err := e.svc.DeviceDeleted(ctx, bob, "BOB2"); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.inbox(b2, 0); len(got) != 0 || e.svc.ToDevicePosition(bob, "BOB2") != 0 {
		t.Fatalf("messages of a deleted device remain: %v", got)
	}
}

func TestToDeviceLimit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := newDevice(alice, "A"), newDevice(bob, "B")
	_ = e.svc.DeviceAdded(ctx, bob, "B", "")
	for i := 0; i < 5; i++ {
		e.want(e.send(a, "t"+itoa(i), map[string]any{string(bob): map[string]any{"B": map[string]any{"i": i}}}), 200)
	}
	until := e.db.Position()
	first, last, err := e.svc.ToDevice(ctx, bob, "B", 0, until, 3)
	if err != nil || len(first) != 3 || last >= until {
		t.Fatalf("first batch: %d messages, last %d (until %d), %v", len(first), last, until, err)
	}
	rest, last2, _ := e.svc.ToDevice(ctx, bob, "B", last, until, 3)
	if len(rest) != 2 || last2 != until {
		t.Fatalf("second batch: %d messages, last %d", len(rest), last2)
	}
	_ = b
}

func TestSendToDeviceBadInput(t *testing.T) {
	e := newEnv(t)
	a := newDevice(alice, "A")
	big := map[string]any{string(bob): map[string]any{"B": map[string]any{"pad": strings.Repeat("x", 65<<10)}}}
	e.want(e.send(a, "big", big), 413, "M_TOO_LARGE")
	for _, body := range []string{`{}`, `{"messages":[]}`, `{"messages":{"bob":{}}}`, `{"messages":{"@bob:test":{"B":"x"}}}`, `nope`} {
		if r := e.do(a, "PUT", "/_matrix/client/v3/sendToDevice/m.test/x", body); r.status != 400 {
			t.Errorf("%s: got %d %s", body, r.status, r.raw)
		}
	}
	huge := `{"messages":{"@bob:test":{"B":{"pad":"` + strings.Repeat("x", 1<<20) + `"}}}}`
	e.want(e.do(a, "PUT", "/_matrix/client/v3/sendToDevice/m.test/huge", huge), 413, "M_TOO_LARGE")
}

func TestDeviceListChanges(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b, c := newDevice(alice, "A"), newDevice(bob, "B"), newDevice(carol, "C")
	e.rooms.share(alice, bob)
	start := e.db.Position()
	e.upload(a, 0)
	p1 := e.svc.DeviceListPosition()
	if p1 <= start || e.notes.last(bob) != p1 || e.notes.last(alice) != p1 {
		t.Fatalf("upload: position %d, bob woken at %d", p1, e.notes.last(bob))
	}
	if e.notes.last(carol) != 0 {
		t.Fatalf("carol, who shares no room with alice, was woken")
	}
	e.upload(c, 0)
	changed, _ := e.svc.DeviceListChanges(ctx, start, e.db.Position())
	if len(changed) != 2 {
		t.Fatalf("changed = %v", changed)
	}
	if changed, _ := e.svc.DeviceListChanges(ctx, p1, e.db.Position()); len(changed) != 1 || changed[0] != carol {
		t.Fatalf("changed since p1 = %v", changed)
	}
	// /keys/changes shows bob only the users who share a room with him.
	r := e.do(b, "GET", "/_matrix/client/v3/keys/changes?from="+itoa(int(start))+"&to="+itoa(int(e.db.Position())), nil)
	e.want(r, 200)
	if ch, _ := r.body["changed"].([]any); len(ch) != 1 || ch[0] != string(alice) {
		t.Fatalf("keys/changes = %s", r.raw)
	}
	e.want(e.do(b, "GET", "/_matrix/client/v3/keys/changes?from=x&to=1", nil), 400)
	e.want(e.do(b, "GET", "/_matrix/client/v3/keys/changes", nil), 400)
	// Deleting a device marks the list changed again, and survives restart.
	if err := e.svc.DeviceDeleted(ctx, alice, "A"); err != nil {
		t.Fatal(err)
	}
	p2 := e.svc.DeviceListPosition()
	e.restart()
	if e.svc.DeviceListPosition() != p2 {
		t.Fatalf("device list position %d after restart, want %d", e.svc.DeviceListPosition(), p2)
	}
	if changed, _ := e.svc.DeviceListChanges(ctx, p1, p2); len(changed) != 2 {
		t.Fatalf("after restart changed = %v", changed)
	}
	if _, err := e.queryDevice(b, alice, "A"); err != errNotFound {
		t.Fatalf("keys of a deleted device are still served")
	}
	_ = spec.UserID("")
}
