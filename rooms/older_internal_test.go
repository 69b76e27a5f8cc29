package rooms

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

// The tests of the older events that memory keeps, which reach into the
// service; the rest of the package's tests run on the whole server
// (helpers_test.go).

// newTestService is the rooms service alone on a fresh database.
func newTestService(t testing.TB) *Service {
	t.Helper()
	db, err := storage.Open(filepath.Join(t.TempDir(), "chatalot.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(context.Background(), Schema); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	s, err := New(context.Background(), Deps{
		DB: db, Key: events.SigningKey{ServerName: "test", KeyID: "ed25519:1", Private: priv},
		Server: "test", Config: Config{Encryption: "optional"}, Log: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const userA = "@alice:test"

var sendCount atomic.Int64

// sendText sends a text message as user and returns its ID.
func sendText(t testing.TB, s *Service, user spec.UserID, room spec.RoomID, body string) string {
	t.Helper()
	id, err := s.Send(context.Background(), Sender{User: user, Device: "D"}, room,
		SendRequest{Type: "m.room.message", TxnID: fmt.Sprint("t", sendCount.Add(1)), Content: []byte(`{"body":` + fmt.Sprintf("%q", body) + `,"msgtype":"m.text"}`)})
	if err != nil {
		t.Fatal(err)
	}
	return string(id)
}

// pageBack pages back through a room's timeline as user, 30 events a page
// as /messages does, and returns the events by ID.
func pageBack(t testing.TB, s *Service, user spec.UserID, room spec.RoomID) map[string]*Event {
	t.Helper()
	out := map[string]*Event{}
	req := MessagesRequest{Backwards: true, Limit: 30}
	for {
		page, err := s.Messages(context.Background(), user, room, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Events {
			out[string(ev.PDU.EventID())] = ev
		}
		if !page.HasEnd {
			return out
		}
		end := page.End
		req.From = &end
	}
}

// TestOlderEventsReadBeforeAPurgeAreNotKept: events read from the database
// before a purge are not put in memory after it, where they would come
// back in /messages.
func TestOlderEventsReadBeforeAPurgeAreNotKept(t *testing.T) {
	s := newTestService(t)
	room, _, err := s.CreateRoom(t.Context(), userA, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var sent []string
	for i := range recentSize + 20 {
		sent = append(sent, sendText(t, s, userA, room, fmt.Sprint(i)))
	}
	r := s.room(room)
	r.histMu.RLock()
	floor, rewritten := r.recentFloor, r.rewritten
	r.histMu.RUnlock()
	older, err := s.eventsBetween(t.Context(), r.id, eventRange{to: floor})
	if err != nil {
		t.Fatal(err)
	}
	purged, err := s.PurgeHistory(t.Context(), r.id, floor)
	if err != nil || purged == 0 {
		t.Fatalf("purge: %d, %v", purged, err)
	}
	s.keepOlder(r, floor, rewritten, 0, older)
	if r.recentFloor != floor {
		t.Fatal("events read before the purge were kept")
	}
	if _, ok := pageBack(t, s, userA, room)[sent[0]]; ok {
		t.Fatal("/messages serves a purged event")
	}
}

// TestOlderEventsStayWithinTheirBudget: older events kept in memory never
// cost more than a room's share or, over all rooms, the budget; the rooms
// that kept some least recently give theirs back first, and new events
// push a room's older events out rather than grow them.
func TestOlderEventsStayWithinTheirBudget(t *testing.T) {
	s := newTestService(t)
	room, _, err := s.CreateRoom(t.Context(), userA, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bigID := sendText(t, s, userA, room, strings.Repeat("x", 40000))
	big, err := s.eventByID(t.Context(), spec.EventID(bigID))
	if err != nil {
		t.Fatal(err)
	}
	// Rooms whose memory starts after position 100, each with every
	// position below in the database; each keeps what fits.
	rooms := make([]*liveRoom, 8)
	for i := range rooms {
		r := newLiveRoom(spec.RoomID(fmt.Sprintf("!r%d:test", i)), big.PDU.Version())
		for p := int64(100); p <= 100+recentSize; p++ {
			r.record(&Event{PDU: big.PDU, Position: p})
		}
		var asc []*Event
		for p := int64(1); p < 100; p++ {
			asc = append(asc, &Event{PDU: big.PDU, Position: p})
		}
		s.keepOlder(r, 100, 0, 0, asc)
		if r.recentFloor == 100 || r.olderCost() > r.olderMax || r.olderMax > roomOlderMax {
			t.Fatalf("room %d: floor %d, older events cost %d of %d", i, r.recentFloor, r.olderCost(), r.olderMax)
		}
		if r.recent[0].Position != r.recentFloor+1 {
			t.Fatalf("room %d: memory starts at %d, after floor %d", i, r.recent[0].Position, r.recentFloor)
		}
		rooms[i] = r
	}
	var sum int64
	for _, r := range rooms {
		sum += r.olderMax
	}
	if sum != s.older.bytes || sum > olderBudget {
		t.Fatalf("allowances sum to %d, accounted %d, budget %d", sum, s.older.bytes, olderBudget)
	}
	if first, last := rooms[0], rooms[len(rooms)-1]; first.olderMax != 0 || len(first.recent) != recentSize || last.olderMax == 0 {
		t.Fatalf("the least recent room kept %d, the most recent %d", first.olderMax, last.olderMax)
	}

	r := rooms[len(rooms)-1]
	floor := r.recentFloor
	for p := int64(200); p < 210; p++ {
		r.record(&Event{PDU: big.PDU, Position: p})
	}
	if r.recentFloor <= floor || r.olderCost() > r.olderMax {
		t.Fatalf("new events grew the older ones: floor %d → %d, cost %d of %d", floor, r.recentFloor, r.olderCost(), r.olderMax)
	}
	s.older.forget(r)
	if r.olderMax != 0 || len(r.recent) != recentSize {
		t.Fatalf("a forgotten room keeps %d events", len(r.recent))
	}
}
