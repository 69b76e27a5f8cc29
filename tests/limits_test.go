package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// rssKiB reads a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestEventSizeEdges: a PDU of exactly 65,536 bytes is accepted, one of
// 65,537 is refused with 413 M_TOO_LARGE and nothing is stored.
func TestEventSizeEdges(t *testing.T) {
	s := harness.Start(t)
	a := login(t, s, "sizer")
	room := a.must(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})["room_id"].(string)
	// The PDU around a body of n bytes is n plus a fixed overhead: find
	// the overhead by sending one event and reading its federation form.
	pdu := func(eventID string) []byte {
		filter := url.QueryEscape(`{"event_format":"federation","room":{"timeline":{"limit":1}}}`)
		resp := a.must(t, "GET", "/_matrix/client/v3/sync?filter="+filter, nil)
		evs := resp["rooms"].(map[string]any)["join"].(map[string]any)[room].(map[string]any)["timeline"].(map[string]any)["events"].([]any)
		raw, _ := json.Marshal(evs[len(evs)-1])
		return raw
	}
	send := func(txn string, n int) (int, map[string]any) {
		code, out, err := a.do("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.encrypted/"+txn, map[string]any{"ciphertext": strings.Repeat("x", n)})
		if err != nil {
			t.Fatal(err)
		}
		return code, out
	}
	code, _ := send("probe", 1000)
	if code != 200 {
		t.Fatal("probe send failed")
	}
	overhead := len(pdu("")) - 1000
	// Timestamps and depth change the length by a few bytes between
	// events, so search the largest accepted body near the limit.
	n := 65536 - overhead
	code, out := send("edge", n)
	for code == 413 && n > 65536-overhead-64 {
		n--
		code, out = send(fmt.Sprint("edge", n), n)
	}
	if code != 200 {
		t.Fatalf("no body near the limit was accepted: %d %v", code, out)
	}
	got := pdu("")
	if len(got) != 65536 {
		t.Fatalf("largest accepted PDU is %d bytes, want exactly 65536", len(got))
	}
	before := a.must(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)["next_batch"]
	code, out = send("over", n+1)
	if code != 413 || out["errcode"] != "M_TOO_LARGE" {
		t.Fatalf("a 65,537-byte PDU: %d %v, want 413 M_TOO_LARGE", code, out)
	}
	after := a.must(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)["next_batch"]
	if before != after {
		t.Fatal("the refused event moved the stream: something was stored")
	}
}

// TestHugeBodyIsCutOff streams 1 GiB at the server; it answers 413 after
// reading at most the limit plus a margin, and its memory barely grows.
func TestHugeBodyIsCutOff(t *testing.T) {
	s := harness.Start(t)
	a := login(t, s, "streamer")
	rss0 := rssKiB(t, s.PID())
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /_matrix/client/v3/rooms/!x:localhost/send/m.room.message/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"body\":\"", a.token, 1<<30)
	sent := 0
	chunk := []byte(strings.Repeat("x", 64<<10))
	done := make(chan struct{})
	var status string
	go func() {
		defer close(done)
		line, _ := bufio.NewReader(conn).ReadString('\n')
		status = line
	}()
	for sent < 1<<30 {
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Write(chunk)
		sent += n
		if err != nil {
			break // the server closed the connection
		}
		select {
		case <-done:
			sent = 1 << 30
		default:
		}
	}
	<-done
	if !strings.Contains(status, "413") {
		t.Fatalf("status line %q, want 413", status)
	}
	if grown := rssKiB(t, s.PID()) - rss0; grown > 16<<10 {
		t.Fatalf("RSS grew by %d KiB while refusing a 1 GiB body", grown)
	}
	t.Logf("server answered 413 after the client had written %d MiB", sent>>20)
}

// TestAbortedLongPollsLeaveNothingBehind: a thousand long-polls that the
// client abandons leave the server's file descriptors and goroutines at
// their baseline (the goroutine count comes from the metrics endpoint).
func TestAbortedLongPollsLeaveNothingBehind(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--metrics", "--metrics-listen", "", "--metrics-token", "scrape-token-for-tests"))
	a := login(t, s, "poller")
	since := a.must(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)["next_batch"].(string)
	goroutines := func() int {
		req, _ := http.NewRequest("GET", s.URL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer scrape-token-for-tests")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "go_goroutines ") {
				n, _ := strconv.Atoi(strings.Fields(line)[1])
				return n
			}
		}
		t.Fatalf("no go_goroutines in the metrics:\n%s", raw)
		return 0
	}
	baseFDs, baseGoroutines := openFDs(t, s.PID()), goroutines()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 100)
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			client := &http.Client{Timeout: 50 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
			req, _ := http.NewRequest("GET", s.URL+"/_matrix/client/v3/sync?timeout=30000&since="+since, nil)
			req.Header.Set("Authorization", "Bearer "+a.token)
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	waitFor(t, 20*time.Second, "file descriptors and goroutines back at the baseline", func() bool {
		return openFDs(t, s.PID()) <= baseFDs+2 && goroutines() <= baseGoroutines+5
	})
}

// TestSlowHeadersAreCutOff opens 500 connections that never finish their
// headers; a normal request still succeeds and the server closes the slow
// ones after its header timeout.
func TestSlowHeadersAreCutOff(t *testing.T) {
	// 500 connections from one address: the per-address cap (its own test)
	// is lifted to see the header timeout at work.
	s := harness.Start(t, harness.WithArgs("--read-header-timeout", "1s", "--max-connections-per-address", "0"))
	var conns []net.Conn
	for i := 0; i < 500; i++ {
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n")
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	resp, err := http.Get(s.URL + "/_matrix/client/versions")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a normal request failed while slow clients hold connections: %v", err)
	}
	resp.Body.Close()
	closed := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 1024)
		for {
			if _, err := c.Read(buf); err != nil {
				closed++
				break
			}
		}
	}
	if closed != len(conns) {
		t.Fatalf("%d of %d slow connections were closed", closed, len(conns))
	}
}

// TestStalledUploadIsCutOff: an upload that stops arriving is cut off
// after the body idle timeout, and its temporary file is removed.
func TestStalledUploadIsCutOff(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--body-idle-timeout", "1s"))
	a := login(t, s, "uploader")
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n", a.token)
	conn.Write([]byte(strings.Repeat("x", 4096)))
	tmp := filepath.Join(s.DataDir, "media", "tmp")
	waitFor(t, 10*time.Second, "the upload to be received into a temporary file", func() bool {
		ents, _ := os.ReadDir(tmp)
		return len(ents) > 0
	})
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	status, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.Contains(status, " 4") {
		t.Fatalf("a stalled upload got %q, want a 4xx\n%s", status, s.Logs())
	}
	waitFor(t, 10*time.Second, "the temporary file to be removed", func() bool {
		ents, _ := os.ReadDir(tmp)
		return len(ents) == 0
	})
}

// TestSendAndRegistrationRateLimits: past their limits, sending and
// registering answer 429 with retry_after_ms, and sending recovers once the
// bucket refills.
func TestSendAndRegistrationRateLimits(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--rate-limits", "on", "--rate-limit-send", "3/2s", "--rate-limit-register", "2/1h"))
	a := login(t, s, "limited")
	login(t, s, "second")
	code, out, _ := (&api{base: func() string { return s.URL }, hc: httpClient()}).do("POST", "/_matrix/client/v3/register",
		map[string]any{"username": "third", "password": "correct horse battery staple", "auth": map[string]any{"type": "m.login.dummy"}})
	if code != 429 || out["errcode"] != "M_LIMIT_EXCEEDED" || out["retry_after_ms"] == nil {
		t.Fatalf("a third registration from one address: %d %v, want 429 M_LIMIT_EXCEEDED with retry_after_ms", code, out)
	}
	room := a.must(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})["room_id"].(string)
	send := func(i int) (int, map[string]any) {
		code, out, err := a.do("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/rl%d", room, i), map[string]any{"msgtype": "m.text", "body": "x"})
		if err != nil {
			t.Fatal(err)
		}
		return code, out
	}
	limited := -1
	for i := 0; i < 10 && limited < 0; i++ {
		if code, out := send(i); code == 429 {
			if out["errcode"] != "M_LIMIT_EXCEEDED" || out["retry_after_ms"] == nil {
				t.Fatalf("429 without M_LIMIT_EXCEEDED and retry_after_ms: %v", out)
			}
			limited = i
		} else if code != 200 {
			t.Fatalf("send %d: %d %v", i, code, out)
		}
	}
	if limited < 0 {
		t.Fatal("ten sends in a row were never limited")
	}
	i := 100
	waitFor(t, 10*time.Second, "sending to recover after the limit", func() bool {
		i++
		code, _ := send(i)
		return code == 200
	})
}
