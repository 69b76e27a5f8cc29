package tests

import (
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// api is a tiny raw client for the crash suite: the requests must be
// exactly what was acknowledged, without a library's retries.
type api struct {
	base  func() string
	token string
	hc    *http.Client
}

func (a *api) do(method, path string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = strings.NewReader(string(raw))
	}
	req, err := http.NewRequest(method, a.base()+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	err = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, err
}

func (a *api) must(t *testing.T, method, path string, body any) map[string]any {
	t.Helper()
	code, out, err := a.do(method, path, body)
	if err != nil || code != 200 {
		t.Fatalf("%s %s: %d %v %v", method, path, code, out, err)
	}
	return out
}

func login(t *testing.T, s *harness.Server, name string) *api {
	t.Helper()
	tok := registerForTest(t, s.URL, name)
	return &api{base: func() string { return s.URL }, token: tok, hc: &http.Client{Timeout: 10 * time.Second}}
}

func crashCycles() int {
	if n, err := strconv.Atoi(os.Getenv("CHATALOT_CRASH_CYCLES")); err == nil && n > 0 {
		return n
	}
	return 20
}

// TestCrashCycles kills the server with SIGKILL at random moments while
// clients send events, receipts, to-device messages and key uploads, and
// restarts it: no acknowledged write may be lost, stream positions stay
// unique and increasing, the database stays sound, and a retried
// transaction yields exactly one event. `make soak` runs 200 cycles.
func TestCrashCycles(t *testing.T) {
	s := harness.Start(t)
	alice, bob := login(t, s, "alice"), login(t, s, "bob")
	// Bob's sync is delivered to-device messages; his first sync sets the
	// baseline.
	bob.must(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)
	room := alice.must(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})["room_id"].(string)
	bob.must(t, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})
	bobDevice := bob.must(t, "GET", "/_matrix/client/v3/account/whoami", nil)["device_id"].(string)

	acked := struct {
		sync.Mutex
		events   map[string]string // txnId → event ID
		toDevice map[string]bool   // message id
		keys     int               // one-time keys acknowledged
		receipt  string            // last acknowledged receipt's event
		tried    string            // the receipt in flight, which may have landed unacknowledged
	}{events: map[string]string{}, toDevice: map[string]bool{}}
	lastPos := int64(-1)
	cycles := crashCycles()
	keyN := 0
	for cycle := 0; cycle < cycles; cycle++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		work := func(f func(i int) bool) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if !f(i) {
						return
					}
				}
			}()
		}
		work(func(i int) bool { // events
			txn := fmt.Sprint("c", cycle, "-", i)
			code, out, err := alice.do("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/"+txn, map[string]any{"msgtype": "m.text", "body": txn})
			if err != nil || code != 200 {
				return err == nil
			}
			acked.Lock()
			acked.events[txn] = out["event_id"].(string)
			acked.Unlock()
			return true
		})
		work(func(i int) bool { // to-device
			id := fmt.Sprint("td", cycle, "-", i)
			code, _, err := alice.do("PUT", "/_matrix/client/v3/sendToDevice/m.test/"+id, map[string]any{
				"messages": map[string]any{"@bob:localhost": map[string]any{bobDevice: map[string]any{"id": id}}}})
			if err != nil || code != 200 {
				return err == nil
			}
			acked.Lock()
			acked.toDevice[id] = true
			acked.Unlock()
			return true
		})
		work(func(i int) bool { // key uploads and receipts
			acked.Lock()
			keyN++
			n := keyN
			var target string
			for _, e := range acked.events {
				target = e
				break
			}
			acked.Unlock()
			code, _, err := alice.do("POST", "/_matrix/client/v3/keys/upload", map[string]any{
				"one_time_keys": map[string]any{fmt.Sprint("curve25519:K", n): fakeCurveKey(n)}})
			if err != nil {
				return false
			}
			if code == 200 {
				acked.Lock()
				acked.keys++
				acked.Unlock()
			}
			if target != "" {
				acked.Lock()
				acked.tried = target
				acked.Unlock()
				if code, _, err := alice.do("POST", "/_matrix/client/v3/rooms/"+room+"/receipt/m.read/"+target, map[string]any{}); err == nil && code == 200 {
					acked.Lock()
					acked.receipt = target
					acked.Unlock()
				}
			}
			return true
		})
		acked.Lock()
		want := len(acked.events) + 3 + rand.IntN(30) // kill at a random moment
		acked.Unlock()
		waitFor(t, 30*time.Second, "writes to be acknowledged", func() bool {
			acked.Lock()
			defer acked.Unlock()
			return len(acked.events) >= want
		})
		s.Kill()
		close(stop)
		wg.Wait()
		s.Launch()

		// Every acknowledged event is there, and a retried transaction
		// gives the same event rather than a second one.
		acked.Lock()
		events := make(map[string]string, len(acked.events))
		for k, v := range acked.events {
			events[k] = v
		}
		keys, receipt, tried := acked.keys, acked.receipt, acked.tried
		acked.Unlock()
		for txn, id := range events {
			if code, _, _ := alice.do("GET", "/_matrix/client/v3/rooms/"+room+"/event/"+id, nil); code != 200 {
				t.Fatalf("cycle %d: acknowledged event %s (%s) lost: %d", cycle, id, txn, code)
			}
		}
		for txn, id := range events {
			out := alice.must(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/"+txn, map[string]any{"msgtype": "m.text", "body": txn})
			if out["event_id"] != id {
				t.Fatalf("cycle %d: retrying %s gave %v, want %s", cycle, txn, out["event_id"], id)
			}
			break
		}
		counts := alice.must(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{})
		if n, _ := counts["one_time_key_counts"].(map[string]any)["curve25519"].(float64); int(n) < keys {
			t.Fatalf("cycle %d: %d one-time keys acknowledged, %v stored", cycle, keys, counts["one_time_key_counts"])
		}
		// Stream positions increase across restarts.
		sync := bob.must(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)
		pos, _ := strconv.ParseInt(strings.TrimPrefix(strings.SplitN(sync["next_batch"].(string), "_", 2)[0], "s"), 10, 64)
		if pos <= lastPos {
			t.Fatalf("cycle %d: stream position %d after restart, was %d", cycle, pos, lastPos)
		}
		lastPos = pos
		// Only the latest receipt is kept: the acknowledged one, unless the
		// one in flight at the crash landed after it.
		if rooms := fmt.Sprint(sync["rooms"]); receipt != "" && !strings.Contains(rooms, receipt) && !strings.Contains(rooms, tried) {
			t.Fatalf("cycle %d: the acknowledged receipt on %s is missing", cycle, receipt)
		}
		// Every acknowledged to-device message is delivered to bob.
		td, _ := sync["to_device"].(map[string]any)
		tdEvents, _ := td["events"].([]any)
		for _, ev := range tdEvents {
			id := ev.(map[string]any)["content"].(map[string]any)["id"].(string)
			acked.Lock()
			delete(acked.toDevice, id)
			acked.Unlock()
		}
		// The next sync acknowledges them; the undelivered must be none.
		bob.must(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+sync["next_batch"].(string), nil)
		acked.Lock()
		if len(acked.toDevice) > 0 {
			t.Fatalf("cycle %d: %d acknowledged to-device messages lost", cycle, len(acked.toDevice))
		}
		acked.Unlock()
		checkIntegrity(t, s.DataDir)
	}
	s.Stop()
	checkDAG(t, s.DataDir)
	t.Logf("%d crash cycles: %d acknowledged events, %d one-time keys, none lost", cycles, len(acked.events), acked.keys)
}

// checkIntegrity runs integrity_check on a live server's database and
// checks that stream positions are unique across events and receipts.
func checkIntegrity(t *testing.T, dir string) {
	t.Helper()
	db := openServerDB(t, dir, "&_busy_timeout=5000")
	defer db.Close()
	var dups int
	if err := db.QueryRow(`SELECT count(*) FROM (SELECT position FROM events UNION ALL SELECT position FROM receipts) AS p GROUP BY position HAVING count(*) > 1`).Scan(&dups); err != nil && err != sql.ErrNoRows {
		t.Fatal(err)
	}
	if dups > 0 {
		t.Fatal("a stream position was handed out twice")
	}
}

// fakeCurveKey is a well-formed (unpadded base64, 32 bytes) curve25519 key.
func fakeCurveKey(n int) string {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, uint64(n))
	return base64.RawStdEncoding.EncodeToString(b)
}
