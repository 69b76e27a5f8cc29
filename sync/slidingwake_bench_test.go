package sync_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/servertest"
	chatsync "github.com/chatalot/chatalot/sync"
)

// BenchmarkSlidingWakes counts whom a message wakes: a user has N sliding
// sync connections (one per device: a device keeps at most 8), each
// subscribed to a different room of theirs, all long-polling, and messages
// arrive in one of the rooms. It reports the
// waiters woken per message and per connection, and the process CPU per
// message (server and the test's clients together: the send, the woken
// connections' builds, the one answer and its next long-poll).
//
//	go test -tags 'sqlite_fts5 goolm nomsgpack' -run '^$' -bench SlidingWakes ./sync/
//
// In the second case the other connections are Element X's encryption
// connections (to_device and e2ee only), which no room message concerns.
func BenchmarkSlidingWakes(b *testing.B) {
	subscription := func(i int, room string) map[string]any {
		return map[string]any{"conn_id": "room", "room_subscriptions": map[string]any{room: map[string]any{"timeline_limit": 1}}}
	}
	encryption := func(i int, room string) map[string]any {
		if i == 0 {
			return subscription(i, room)
		}
		return map[string]any{"conn_id": "encryption", "extensions": map[string]any{
			"to_device": map[string]any{"enabled": true}, "e2ee": map[string]any{"enabled": true}}}
	}
	for _, n := range []int{10, 50} {
		b.Run(fmt.Sprintf("%d-subscriptions", n), func(b *testing.B) { benchSlidingWakes(b, n, subscription) })
	}
	b.Run("1-subscription-9-encryption", func(b *testing.B) { benchSlidingWakes(b, 10, encryption) })
}

// benchSlidingWakes runs conns connections, one per device, connection i
// with the body of request(i, the user's i-th room); connection 0 watches
// the room the messages arrive in.
func benchSlidingWakes(b *testing.B, conns int, request func(i int, room string) map[string]any) {
	ts := servertest.New(b, "")
	bob, alice := ts.Token("@bob:test"), ts.Token("@alice:test")
	var rooms []string
	for i := 0; i < conns; i++ {
		_, r := ts.Do(bob, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
		rooms = append(rooms, r["room_id"].(string))
	}
	if code, r := ts.Do(alice, "POST", "/_matrix/client/v3/join/"+rooms[0], map[string]any{}); code != 200 {
		b.Fatalf("join: %d %v", code, r)
	}
	n := ts.Sync.Notifier()

	// Each connection long-polls in a loop; answers counts those of the
	// connection on the busy room.
	var answers atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{}, conns)
	for i, room := range rooms {
		code, login := ts.Do("", "POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
			"identifier": map[string]string{"type": "m.id.user", "user": "bob"}, "password": servertest.Password, "device_id": fmt.Sprintf("D%d", i)})
		if code != 200 {
			b.Fatalf("login: %d %v", code, login)
		}
		token := login["access_token"].(string)
		body, _ := json.Marshal(request(i, room))
		go func() {
			defer func() { done <- struct{}{} }()
			pos := ""
			for {
				url := ts.URL + chatsync.SlidingSyncPath + "?timeout=0"
				if pos != "" {
					url = ts.URL + chatsync.SlidingSyncPath + "?timeout=60000&pos=" + pos
				}
				var r struct {
					Pos   string                     `json:"pos"`
					Rooms map[string]json.RawMessage `json:"rooms"`
				}
				if err := postJSON(url, token, body, &r); err != nil {
					select {
					case <-stop:
					default:
						b.Errorf("sliding sync: %v", err)
					}
					return
				}
				if pos != "" && i == 0 && len(r.Rooms) > 0 {
					answers.Add(1)
				}
				pos = r.Pos
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	waitAll := func(what string, cond func() bool) {
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitAll("every connection to wait", func() bool { return n.Waiters() == conns })

	wakes, cpu := n.Wakes(), cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		code, raw := ts.DoRaw(alice, "PUT", "/_matrix/client/v3/rooms/"+rooms[0]+"/send/m.room.message/b"+itoa(i), map[string]any{"msgtype": "m.text", "body": "hi"})
		if code != 200 {
			b.Fatalf("send: %d %s", code, raw)
		}
		want := int64(i + 1)
		waitAll("the busy room's connection to answer and wait again", func() bool { return answers.Load() >= want && n.Waiters() == conns })
	}
	b.StopTimer()
	woken := float64(n.Wakes()-wakes) / float64(b.N)
	b.ReportMetric(woken, "wakes/msg")
	b.ReportMetric(woken/float64(conns), "wakes/conn/msg")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/msg")
	close(stop)
	ts.Close() // ends the long-polls
	for range rooms {
		<-done
	}
}

// postJSON posts body with the token and decodes the 200 answer into out.
func postJSON(url, token string, body []byte, out any) error {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("%d %s", resp.StatusCode, raw)
	}
	return json.Unmarshal(raw, out)
}

// cpuTime is the process's CPU time, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
