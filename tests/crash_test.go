package tests

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
	_ "github.com/mattn/go-sqlite3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// newClient registers a user with mautrix-go and returns the logged-in client.
func newClient(t *testing.T, baseURL, name string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(baseURL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: name, Password: "correct horse battery staple"})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	cli.DeviceID = resp.DeviceID
	return cli
}

// TestCrashLosesNoAcknowledgedEvent kills the server with SIGKILL while
// several clients send, restarts it, and checks that every event that was
// acknowledged with an event ID is there, the DAG is intact and nothing is
// half-written.
func TestCrashLosesNoAcknowledgedEvent(t *testing.T) {
	s := harness.Start(t)
	owner := newClient(t, s.URL, "owner")
	ctx := context.Background()
	room, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	const senders = 4
	var tokens []string
	for i := 0; i < senders; i++ {
		c := newClient(t, s.URL, fmt.Sprint("sender", i))
		if _, err := c.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, c.AccessToken)
	}
	acked := map[id.EventID]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < senders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _ := mautrix.NewClient(s.URL, "", tokens[i])
			c.Client.Timeout = 5 * time.Second
			for n := 0; ; n++ {
				resp, err := c.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": fmt.Sprint(i, "-", n)})
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				acked[resp.EventID] = true
				mu.Unlock()
			}
		}()
	}
	waitFor(t, 30*time.Second, "some acknowledged events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 50+rand.IntN(150)
	})
	s.Kill()
	wg.Wait()

	s.Launch()
	reader, _ := mautrix.NewClient(s.URL, owner.UserID, owner.AccessToken)
	seen := map[id.EventID]bool{}
	from := ""
	for {
		msgs, err := reader.Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, nil, 500)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msgs.Chunk {
			seen[ev.ID] = true
		}
		if msgs.End == "" || len(msgs.Chunk) == 0 {
			break
		}
		from = msgs.End
	}
	lost := 0
	for e := range acked {
		if !seen[e] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged events lost in the crash", lost, len(acked))
	}
	// The sends keep working after the restart.
	if _, err := reader.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "after"}); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	checkDAG(t, s.DataDir)
	t.Logf("%d acknowledged events, all present after SIGKILL", len(acked))
}

// openIntact opens a database read-only (dsn) and fails the test unless
// its integrity_check is ok.
func openIntact(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		t.Fatal(err)
	}
	var ok string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		db.Close()
		t.Fatalf("integrity_check: %q %v", ok, err)
	}
	return db
}

// checkDAG opens the stopped server's database (on data directory dir):
// integrity_check is ok (on SQLite),
// every prev_event and auth_event of every event is stored, current state
// points at stored events, and no event has a position beyond the saved
// stream position.
func checkDAG(t *testing.T, dir string) {
	t.Helper()
	db := openServerDB(t, dir, "")
	defer db.Close()
	rows, err := db.Query("SELECT event_id, json FROM events")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	var refs []string
	for rows.Next() {
		var eid, raw string
		if err := rows.Scan(&eid, &raw); err != nil {
			t.Fatal(err)
		}
		ids[eid] = true
		var ev struct {
			Prev []string `json:"prev_events"`
			Auth []string `json:"auth_events"`
		}
		if err := json.Unmarshal([]byte(raw), &ev); err != nil {
			t.Fatalf("stored event %s is not JSON", eid)
		}
		refs = append(refs, ev.Prev...)
		refs = append(refs, ev.Auth...)
	}
	rows.Close()
	for _, r := range refs {
		if !ids[r] {
			t.Fatalf("the DAG references %s, which is not stored", r)
		}
	}
	var dangling int
	db.QueryRow("SELECT count(*) FROM room_state s LEFT JOIN events e ON e.event_id = s.event_id WHERE e.event_id IS NULL").Scan(&dangling)
	if dangling != 0 {
		t.Fatalf("%d current-state rows point at missing events", dangling)
	}
	var maxPos, saved int64
	db.QueryRow("SELECT coalesce(max(position), 0) FROM events").Scan(&maxPos)
	db.QueryRow("SELECT position FROM stream_position").Scan(&saved)
	if maxPos > saved {
		t.Fatalf("an event has position %d beyond the saved stream position %d", maxPos, saved)
	}
}
