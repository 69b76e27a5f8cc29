package tests

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// startFederated starts a server named localhost:PORT that serves
// federation over TLS on that port and trusts the test CA.
func startFederated(t *testing.T, pki harness.PKI) (*harness.Server, string) {
	port := harness.FreePort(t)
	name := fmt.Sprintf("localhost:%d", port)
	s := harness.Start(t, harness.WithArgs("--server-name", name, "--federation",
		"--federation-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--federation-tls-cert", pki.CertFile, "--federation-tls-key", pki.KeyFile,
		"--federation-ca-file", pki.CAFile))
	return s, name
}

// timelineBodies are the message bodies of a room's timeline in an
// initial /sync (the last 100 events).
func timelineBodies(t *testing.T, s *harness.Server, token, room string) []string {
	t.Helper()
	filter := url.QueryEscape(`{"room":{"timeline":{"limit":100}}}`)
	code, _, raw := doRequest(t, "GET", s.URL+"/_matrix/client/v3/sync?timeout=0&filter="+filter, token, nil)
	if code != 200 {
		t.Fatalf("sync: %d %s", code, raw)
	}
	var out struct {
		Rooms struct {
			Join map[string]struct {
				Timeline struct {
					Events []struct {
						Type    string `json:"type"`
						Content struct {
							Body string `json:"body"`
						} `json:"content"`
					} `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for _, ev := range out.Rooms.Join[room].Timeline.Events {
		if ev.Type == "m.room.message" {
			bodies = append(bodies, ev.Content.Body)
		}
	}
	return bodies
}

func waitForBody(t *testing.T, s *harness.Server, token, room, body string) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%q in the timeline on %s", body, s.URL), func() bool {
		for _, b := range timelineBodies(t, s, token, room) {
			if b == body {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
		return false
	})
}

func sendText(t *testing.T, s *harness.Server, token, room, body string) {
	t.Helper()
	code, _, raw := doRequest(t, "PUT", s.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/"+randomSuffix(),
		token, map[string]string{"msgtype": "m.text", "body": body})
	if code != 200 {
		t.Fatalf("send %q: %d %s", body, code, raw)
	}
}

// TestFederationTwoServers: two Chatalot servers on loopback, each with a
// certificate from a CA made by the test and trusting only it beside the
// system roots. bob@hs2 joins alice@hs1's room by room ID and server_name;
// messages go both ways; with hs2 down, alice's messages wait in hs1's
// persisted queue, hs1 is killed (SIGKILL) with them queued, and once both
// are back the messages reach bob.
func TestFederationTwoServers(t *testing.T) {
	pki := harness.NewPKI(t)
	hs1, name1 := startFederated(t, pki)
	hs2, name2 := startFederated(t, pki)
	alice := registerForTest(t, hs1.URL, "alice")
	bob := registerForTest(t, hs2.URL, "bob")

	code, _, raw := doRequest(t, "POST", hs1.URL+"/_matrix/client/v3/createRoom", alice, map[string]any{"preset": "public_chat", "name": "across"})
	if code != 200 {
		t.Fatalf("createRoom: %d %s", code, raw)
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	_ = json.Unmarshal(raw, &created)
	room := created.RoomID

	code, _, raw = doRequest(t, "POST", hs2.URL+"/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(name1), bob, map[string]any{})
	if code != 200 {
		t.Fatalf("bob joins over federation: %d %s\nhs1:\n%s\nhs2:\n%s", code, raw, hs1.Logs(), hs2.Logs())
	}
	// Both servers see bob joined.
	for _, s := range []struct {
		srv   *harness.Server
		token string
	}{{hs1, alice}, {hs2, bob}} {
		waitFor(t, 30*time.Second, "bob joined on "+s.srv.URL, func() bool {
			c, _, body := doRequest(t, "GET", s.srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", s.token, nil)
			return c == 200 && strings.Contains(string(body), "@bob:"+name2) && strings.Contains(string(body), "@alice:"+name1)
		})
	}

	sendText(t, hs1, alice, room, "hello bob")
	waitForBody(t, hs2, bob, room, "hello bob")
	sendText(t, hs2, bob, room, "hello alice")
	waitForBody(t, hs1, alice, room, "hello alice")

	// hs2 goes down mid-conversation: alice's messages are queued on hs1.
	hs2.Stop()
	sendText(t, hs1, alice, room, "while you were away 1")
	sendText(t, hs1, alice, room, "while you were away 2")
	// hs1 tries, fails and backs off: the messages are still queued.
	waitFor(t, 30*time.Second, "hs1 failing to reach hs2", func() bool {
		return strings.Contains(hs1.Logs(), "federation: cannot send, will retry")
	})
	// hs1 crashes with the messages still queued.
	hs1.Kill()
	hs2.Launch()
	hs1.Launch()
	waitForBody(t, hs2, bob, room, "while you were away 1")
	waitForBody(t, hs2, bob, room, "while you were away 2")
	// And the conversation goes on both ways.
	sendText(t, hs2, bob, room, "back again")
	waitForBody(t, hs1, alice, room, "back again")
	sendText(t, hs1, alice, room, "welcome back")
	waitForBody(t, hs2, bob, room, "welcome back")

	// The order on both servers is the same.
	got1, got2 := timelineBodies(t, hs1, alice, room), timelineBodies(t, hs2, bob, room)
	if strings.Join(got1, "|") != strings.Join(got2, "|") {
		t.Errorf("timelines differ:\nhs1: %q\nhs2: %q", got1, got2)
	}

	// A private room: bob cannot join uninvited; alice invites him and
	// the invite in hs1's state lets the join by ID in (the invite itself
	// over federation: federation_members_test.go).
	code, _, raw = doRequest(t, "POST", hs1.URL+"/_matrix/client/v3/createRoom", alice, map[string]any{"preset": "private_chat"})
	if code != 200 {
		t.Fatalf("createRoom: %d %s", code, raw)
	}
	_ = json.Unmarshal(raw, &created)
	private := created.RoomID
	join := func() (int, []byte) {
		c, _, b := doRequest(t, "POST", hs2.URL+"/_matrix/client/v3/join/"+url.PathEscape(private)+"?via="+url.QueryEscape(name1), bob, map[string]any{})
		return c, b
	}
	if c, b := join(); c == 200 {
		t.Fatalf("bob joined a private room uninvited: %s", b)
	}
	code, _, raw = doRequest(t, "POST", hs1.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(private)+"/invite", alice, map[string]string{"user_id": "@bob:" + name2})
	if code != 200 {
		t.Fatalf("invite: %d %s", code, raw)
	}
	if c, b := join(); c != 200 {
		t.Fatalf("bob joins the private room he is invited to: %d %s", c, b)
	}
	sendText(t, hs1, alice, private, "just us")
	waitForBody(t, hs2, bob, private, "just us")

	// bob leaves the first room: hs1 learns it.
	code, _, raw = doRequest(t, "POST", hs2.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", bob, map[string]any{})
	if code != 200 {
		t.Fatalf("leave: %d %s", code, raw)
	}
	waitFor(t, 30*time.Second, "bob's leave on hs1", func() bool {
		c, _, body := doRequest(t, "GET", hs1.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", alice, nil)
		return c == 200 && !strings.Contains(string(body), "@bob:"+name2)
	})
}

// TestFederationThreeServers: three servers in one room; the resident sends
// a join it accepted on to the room's other servers, and each server sends
// its users' events to every server in the room.
func TestFederationThreeServers(t *testing.T) {
	pki := harness.NewPKI(t)
	hs1, name1 := startFederated(t, pki)
	hs2, _ := startFederated(t, pki)
	hs3, name3 := startFederated(t, pki)
	alice := registerForTest(t, hs1.URL, "alice")
	bob := registerForTest(t, hs2.URL, "bob")
	charlie := registerForTest(t, hs3.URL, "charlie")
	code, _, raw := doRequest(t, "POST", hs1.URL+"/_matrix/client/v3/createRoom", alice, map[string]any{"preset": "public_chat"})
	if code != 200 {
		t.Fatalf("createRoom: %d %s", code, raw)
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	_ = json.Unmarshal(raw, &created)
	room := created.RoomID
	for _, j := range []struct {
		srv   *harness.Server
		token string
	}{{hs2, bob}, {hs3, charlie}} {
		c, _, b := doRequest(t, "POST", j.srv.URL+"/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(name1), j.token, map[string]any{})
		if c != 200 {
			t.Fatalf("join through hs1: %d %s", c, b)
		}
	}
	// hs2 learns of charlie's join: from hs3, and from hs1, the resident
	// that accepted it and sends it on.
	waitFor(t, 30*time.Second, "charlie's join on hs2", func() bool {
		c, _, body := doRequest(t, "GET", hs2.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", bob, nil)
		return c == 200 && strings.Contains(string(body), "@charlie:"+name3)
	})
	sendText(t, hs3, charlie, room, "hello from three")
	waitForBody(t, hs1, alice, room, "hello from three")
	waitForBody(t, hs2, bob, room, "hello from three")
	sendText(t, hs2, bob, room, "hello from two")
	waitForBody(t, hs1, alice, room, "hello from two")
	waitForBody(t, hs3, charlie, room, "hello from two")
}
