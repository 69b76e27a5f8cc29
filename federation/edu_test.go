package federation

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// TestReliableEDUs: EDUs queued for a destination that is down cost no
// request each (the sender backs off), and once it is back they all go,
// in order, and leave the queue; an ephemeral EDU goes in the next
// transaction.
func TestReliableEDUs(t *testing.T) {
	a, b, n, ca := pair(t)
	var mu sync.Mutex
	up := false
	requests := 0
	var got []string
	b.onSend = func(body []byte) int {
		mu.Lock()
		defer mu.Unlock()
		requests++
		if !up {
			return 503
		}
		var txn struct {
			EDUs []struct {
				Type    string `json:"edu_type"`
				Content struct {
					N string `json:"n"`
				} `json:"content"`
			} `json:"edus"`
		}
		_ = json.Unmarshal(body, &txn)
		for _, e := range txn.EDUs {
			got = append(got, e.Type+" "+e.Content.N)
		}
		return 200
	}
	count := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return requests, len(got)
	}

	db, err := storage.Open(t.TempDir()+"/db", storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(context.Background(), Schema); err != nil {
		t.Fatal(err)
	}
	p := &Peers{name: "a.test", key: a.key, http: n.client(ca.pool), log: zerolog.Nop(), joins: map[spec.RoomID]chan struct{}{}}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	s := New(Deps{DB: db, Peers: p, Stopping: stop, Commits: &rooms.CommitHooks{}})

	queue := func(from, to int) {
		for i := from; i < to; i++ {
			err := db.Write(context.Background(), func(tx *storage.Tx) error {
				return p.QueueEDU(tx, "b.test", "m.direct_to_device", map[string]string{"n": string(rune('a' + i))})
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	queue(0, 3)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r, _ := count(); r == 0; r, _ = count() {
		if time.Now().After(deadline) {
			t.Fatal("no attempt to send")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Down: twenty more EDUs, and the sender waits out its backoff.
	queue(3, 23)
	time.Sleep(500 * time.Millisecond)
	if r, _ := count(); r > 2 {
		t.Fatalf("%d requests to a destination that is down for 23 EDUs", r)
	}

	mu.Lock()
	up = true
	mu.Unlock()
	s.destinationIsBack("b.test")
	deadline = time.Now().Add(10 * time.Second)
	for _, g := count(); g < 23; _, g = count() {
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d of 23", g)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	for i, g := range got {
		if want := "m.direct_to_device " + string(rune('a'+i)); g != want {
			t.Fatalf("EDU %d is %q, want %q", i, g, want)
		}
	}
	mu.Unlock()

	// An ephemeral EDU (kept in memory only) rides in the next transaction.
	if err := p.SendEphemeralEDU("b.test", "m.typing", map[string]string{"n": "z"}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for _, g := count(); g < 24; _, g = count() {
		if time.Now().After(deadline) {
			t.Fatal("the ephemeral EDU was not sent")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	if got[23] != "m.typing z" {
		t.Fatalf("ephemeral EDU: %q", got[23])
	}
	mu.Unlock()
	var left int
	deadline = time.Now().Add(5 * time.Second)
	for {
		if err := db.QueryRow(context.Background(), `SELECT count(*) FROM federation_outbound_edus`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d EDUs left in the queue after delivery", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
