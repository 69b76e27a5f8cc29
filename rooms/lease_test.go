package rooms_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/rooms"
)

// Room leases with fencing tokens (docs/scaling.md, "Room ownership"): a
// room is written by the one node holding its lease; another node's write
// is refused while the lease lives, takes the room over once it lapses,
// and the old owner's later write fails the fencing check and stores
// nothing.
//
// Node A is "frozen" by stopping its lease renewals (a test hook): it
// keeps serving and still believes it holds the lease, as a process that
// was stopped past its lease and resumed does before it learns otherwise.
func TestClusterRoomLeaseFencing(t *testing.T) {
	dsn := pgtest.DSN(t)
	cfg := servertest.Rooms(rooms.Config{Encryption: "optional", LeaseDuration: time.Second})
	a := servertest.NewNode(t, dsn, "a", cfg)
	b := servertest.NewNode(t, dsn, "b", cfg)
	room := a.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	send := func(s *servertest.Server, who, txn, body string) (int, map[string]any) {
		return s.JSONAs(who, http.MethodPut, "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/"+txn,
			map[string]any{"msgtype": "m.text", "body": body})
	}
	first := a.MustJSON(userA, http.MethodPut, "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/a1",
		map[string]any{"msgtype": "m.text", "body": "A owns the room"})["event_id"].(string)
	lease := func() (node string, token int64) {
		t.Helper()
		if err := a.DB.QueryRow(context.Background(), `SELECT node_id, token FROM room_leases WHERE room_id = $1`, room).Scan(&node, &token); err != nil {
			t.Fatal(err)
		}
		return node, token
	}
	if node, token := lease(); node != "a" || token != 1 {
		t.Fatalf("lease after A's writes: %s %d, want a 1", node, token)
	}

	// While A renews its lease (three times per second here), B's writes
	// are refused, for longer than the lease lasts.
	// B follows the room first, so that it knows alice is joined.
	waitMessages(t, b, onB(userA), room, first)
	for deadline := time.Now().Add(2500 * time.Millisecond); time.Now().Before(deadline); {
		code, res := send(b, onB(userA), "b1", "B while A's lease lives")
		if code != http.StatusServiceUnavailable || res["errcode"] != "M_UNKNOWN" || res["retry_after_ms"] == nil {
			t.Fatalf("B's send while A holds the lease: %d %v", code, res)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A stops renewing: once its lease lapses, B takes the room over with
	// the next token and writes. The retries are the client's, with the
	// same transaction ID.
	a.Rooms.StopLeaseRenewalsForTest()
	var taken string
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, res := send(b, onB(userA), "b1", "B after A's lease lapsed")
		if code == http.StatusOK {
			taken = res["event_id"].(string)
			break
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("B's send after A stopped renewing: %d %v", code, res)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if node, token := lease(); node != "b" || token != 2 {
		t.Fatalf("lease after B's takeover: %s %d, want b 2", node, token)
	}

	// A, which still believes it holds token 1, prepares and submits a
	// write built on what it followed: the fencing check refuses it.
	waitMessages(t, a, userA, room, taken)
	code, res := send(a, userA, "a2", "A after losing the lease")
	if msg, _ := res["error"].(string); code != http.StatusServiceUnavailable || res["errcode"] != "M_UNKNOWN" || !strings.Contains(msg, "nothing was stored") {
		t.Fatalf("A's send after B took the room over: %d %v, want the fencing check's refusal", code, res)
	}
	// A dropped the lease it lost: its next write is refused up front, as
	// B's were while A held the room.
	if code, res := send(a, userA, "a3", "A again"); code != http.StatusServiceUnavailable {
		t.Fatalf("A's second send after losing the lease: %d %v", code, res)
	}
	// B keeps writing.
	after := b.MustJSON(onB(userA), http.MethodPut, "/_matrix/client/v3/rooms/"+esc(room)+"/send/m.room.message/b2",
		map[string]any{"msgtype": "m.text", "body": "B again"})["event_id"].(string)

	// Both nodes' histories: every acknowledged event once, in order,
	// and nothing of A's refused writes.
	waitMessages(t, a, userA, room, after)
	for _, n := range []struct {
		s   *servertest.Server
		who string
	}{{a, userA}, {b, onB(userA)}} {
		page := n.s.MustJSON(n.who, http.MethodGet, "/_matrix/client/v3/rooms/"+esc(room)+"/messages?dir=b&limit=100", nil)
		var msgs []string
		for _, e := range page["chunk"].([]any) {
			ev := e.(map[string]any)
			if ev["type"] == "m.room.message" {
				msgs = append(msgs, ev["content"].(map[string]any)["body"].(string))
			}
		}
		want := []string{"B again", "B after A's lease lapsed", "A owns the room"}
		if !slices.Equal(msgs, want) {
			t.Fatalf("/messages on %s: %q, want %q", n.who, msgs, want)
		}
	}
}

// waitMessages waits until the node's /messages of the room holds the
// event (a node follows the other's writes shortly after they commit).
func waitMessages(t *testing.T, s *servertest.Server, who, room, event string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		page := s.MustJSON(who, http.MethodGet, "/_matrix/client/v3/rooms/"+esc(room)+"/messages?dir=b&limit=100", nil)
		if slices.Contains(ids(page["chunk"]), event) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never shows %s in /messages", who, event)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
