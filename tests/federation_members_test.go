package tests

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/tests/harness"
)

// Membership over federation beyond joins, and the ephemeral EDUs, between
// two servers on loopback TLS (the harness of federation_test.go).

func createRoomOn(t *testing.T, s *harness.Server, token string, body map[string]any) string {
	t.Helper()
	code, _, raw := doRequest(t, "POST", s.URL+"/_matrix/client/v3/createRoom", token, body)
	if code != 200 {
		t.Fatalf("createRoom: %d %s", code, raw)
	}
	return gjson.GetBytes(raw, "room_id").String()
}

// syncNow is an initial /sync's body.
func syncNow(t *testing.T, s *harness.Server, token string) gjson.Result {
	t.Helper()
	code, _, raw := doRequest(t, "GET", s.URL+"/_matrix/client/v3/sync?timeout=0", token, nil)
	if code != 200 {
		t.Fatalf("sync: %d %s", code, raw)
	}
	return gjson.ParseBytes(raw)
}

// rooms.<section>.<room> of a sync, escaped for gjson.
func roomPath(section, room string) string {
	return "rooms." + section + "." + gjson.Escape(room)
}

// memberOn is the user's membership of the room as the server's state has it.
func memberOn(t *testing.T, s *harness.Server, token, room, user string) string {
	t.Helper()
	code, _, raw := doRequest(t, "GET", s.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(user), token, nil)
	if code != 200 {
		return ""
	}
	return gjson.GetBytes(raw, "membership").String()
}

func postOK(t *testing.T, s *harness.Server, token, path string, body any) []byte {
	t.Helper()
	code, _, raw := doRequest(t, "POST", s.URL+path, token, body)
	if code != 200 {
		t.Fatalf("POST %s: %d %s", path, code, raw)
	}
	return raw
}

// TestFederationMembership: alice@hs1 invites bob@hs2, who sees the invite
// in /sync with the room's state and joins; rejects a second invite (hs1
// sees the leave); knocks on a knock room and is let in; joins a room by
// its hs1 alias; leaves, and hs1 sees it. Typing and read receipts cross
// both ways; presence does not, as federation_presence is off.
func TestFederationMembership(t *testing.T) {
	pki := harness.NewPKI(t)
	hs1, name1 := startFederated(t, pki)
	hs2, name2 := startFederated(t, pki)
	alice := registerForTest(t, hs1.URL, "alice")
	bob := registerForTest(t, hs2.URL, "bob")
	aliceID, bobID := "@alice:"+name1, "@bob:"+name2

	// An invite, seen in /sync, and accepted.
	room := createRoomOn(t, hs1, alice, map[string]any{"preset": "private_chat", "name": "invited"})
	postOK(t, hs1, alice, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]string{"user_id": bobID})
	var invite gjson.Result
	waitFor(t, 30*time.Second, "bob's invite in /sync on hs2", func() bool {
		invite = syncNow(t, hs2, bob).Get(roomPath("invite", room))
		return invite.Exists()
	})
	state := invite.Get("invite_state.events").String()
	for _, want := range []string{`"m.room.create"`, `"invited"`, `"invite"`, aliceID} {
		if !strings.Contains(state, want) {
			t.Errorf("invite_state lacks %s: %s", want, state)
		}
	}
	// Sliding sync (Element X) lists it too, with its invite_state.
	slide := postOK(t, hs2, bob, "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0", map[string]any{"conn_id": "fed",
		"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 20}}, "timeline_limit": 1}}})
	if is := gjson.GetBytes(slide, "rooms."+gjson.Escape(room)+".invite_state").Raw; !strings.Contains(is, `"invited"`) {
		t.Errorf("sliding sync has no invite_state for the invite: %s", slide)
	}
	postOK(t, hs2, bob, "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{})
	waitFor(t, 30*time.Second, "bob joined on hs1", func() bool { return memberOn(t, hs1, alice, room, bobID) == "join" })
	if syncNow(t, hs2, bob).Get(roomPath("invite", room)).Exists() {
		t.Error("the invite is still listed once joined")
	}
	sendText(t, hs1, alice, room, "welcome bob")
	waitForBody(t, hs2, bob, room, "welcome bob")

	// alice's profile, asked of hs2, comes from hs1 (query/profile).
	code, _, raw := doRequest(t, "PUT", hs1.URL+"/_matrix/client/v3/profile/"+url.PathEscape(aliceID)+"/displayname", alice, map[string]string{"displayname": "Alice of One"})
	if code != 200 {
		t.Fatalf("displayname: %d %s", code, raw)
	}
	code, _, raw = doRequest(t, "GET", hs2.URL+"/_matrix/client/v3/profile/"+url.PathEscape(aliceID), bob, nil)
	if code != 200 || gjson.GetBytes(raw, "displayname").String() != "Alice of One" {
		t.Errorf("a remote profile: %d %s", code, raw)
	}

	// Typing crosses: alice's on hs2, bob's on hs1.
	code, _, raw = doRequest(t, "PUT", hs1.URL+"/_matrix/client/v3/presence/"+url.PathEscape(aliceID)+"/status", alice,
		map[string]any{"presence": "online", "status_msg": "at my desk"})
	if code != 200 {
		t.Fatalf("presence: %d %s", code, raw)
	}
	typing := func(s *harness.Server, token, user string, on bool) {
		t.Helper()
		code, _, raw := doRequest(t, "PUT", s.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/typing/"+url.PathEscape(user), token,
			map[string]any{"typing": on, "timeout": 20000})
		if code != 200 {
			t.Fatalf("typing: %d %s", code, raw)
		}
	}
	typingOn := func(s *harness.Server, token string) string {
		for _, ev := range syncNow(t, s, token).Get(roomPath("join", room) + ".ephemeral.events").Array() {
			if ev.Get("type").String() == "m.typing" {
				return ev.Get("content.user_ids").Raw
			}
		}
		return ""
	}
	typing(hs1, alice, aliceID, true)
	waitFor(t, 30*time.Second, "alice typing on hs2", func() bool { return strings.Contains(typingOn(hs2, bob), aliceID) })
	typing(hs2, bob, bobID, true)
	waitFor(t, 30*time.Second, "bob typing on hs1", func() bool { return strings.Contains(typingOn(hs1, alice), bobID) })
	typing(hs1, alice, aliceID, false)
	waitFor(t, 30*time.Second, "alice's typing over on hs2", func() bool { return !strings.Contains(typingOn(hs2, bob), aliceID) })

	// Presence stays on hs1: the typing after it arrived, in the same
	// queue, and no presence of alice with it.
	code, _, raw = doRequest(t, "GET", hs2.URL+"/_matrix/client/v3/presence/"+url.PathEscape(aliceID)+"/status", bob, nil)
	if code != 200 || strings.Contains(string(raw), "at my desk") || gjson.GetBytes(raw, "presence").String() == "online" {
		t.Errorf("alice's presence reached hs2 with federation_presence off: %d %s", code, raw)
	}
	if p := syncNow(t, hs2, bob).Get("presence.events").String(); strings.Contains(p, aliceID) {
		t.Errorf("bob's sync has alice's presence: %s", p)
	}

	// A read receipt of bob's reaches alice.
	sendText(t, hs1, alice, room, "read me")
	waitForBody(t, hs2, bob, room, "read me")
	var lastID string
	for _, ev := range syncNow(t, hs2, bob).Get(roomPath("join", room) + ".timeline.events").Array() {
		if ev.Get("content.body").String() == "read me" {
			lastID = ev.Get("event_id").String()
		}
	}
	postOK(t, hs2, bob, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/receipt/m.read/"+url.PathEscape(lastID), map[string]any{})
	waitFor(t, 30*time.Second, "bob's receipt on hs1", func() bool {
		for _, ev := range syncNow(t, hs1, alice).Get(roomPath("join", room) + ".ephemeral.events").Array() {
			if ev.Get("type").String() == "m.receipt" && ev.Get("content."+gjson.Escape(lastID)+".m\\.read."+gjson.Escape(bobID)).Exists() {
				return true
			}
		}
		return false
	})

	// A second invite, rejected: hs1 sees the leave, hs2 lists it no more.
	other := createRoomOn(t, hs1, alice, map[string]any{"preset": "private_chat"})
	postOK(t, hs1, alice, "/_matrix/client/v3/rooms/"+url.PathEscape(other)+"/invite", map[string]string{"user_id": bobID})
	var since string
	waitFor(t, 30*time.Second, "the second invite on hs2", func() bool {
		s := syncNow(t, hs2, bob)
		since = s.Get("next_batch").String()
		return s.Get(roomPath("invite", other)).Exists()
	})
	// The invite is kept across a restart.
	hs2.Restart()
	if !syncNow(t, hs2, bob).Get(roomPath("invite", other)).Exists() {
		t.Fatal("the invite is gone after a restart")
	}
	postOK(t, hs2, bob, "/_matrix/client/v3/rooms/"+url.PathEscape(other)+"/leave", map[string]any{"reason": "no thanks"})
	waitFor(t, 30*time.Second, "the rejection on hs1", func() bool { return memberOn(t, hs1, alice, other, bobID) == "leave" })
	if syncNow(t, hs2, bob).Get(roomPath("invite", other)).Exists() {
		t.Error("the rejected invite is still listed")
	}
	// bob's other devices learn of the rejection: the room is left.
	code, _, raw = doRequest(t, "GET", hs2.URL+"/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(since), bob, nil)
	left := gjson.GetBytes(raw, roomPath("leave", other)+".timeline.events").String()
	if code != 200 || !strings.Contains(left, `"leave"`) || !strings.Contains(left, "no thanks") {
		t.Errorf("the rejection in an incremental sync: %d %s", code, raw)
	}
	postOK(t, hs2, bob, "/_matrix/client/v3/rooms/"+url.PathEscape(other)+"/forget", map[string]any{})

	// An invite rescinded by alice (a kick of the invitee): hs2 learns it.
	rescinded := createRoomOn(t, hs1, alice, map[string]any{"preset": "private_chat"})
	postOK(t, hs1, alice, "/_matrix/client/v3/rooms/"+url.PathEscape(rescinded)+"/invite", map[string]string{"user_id": bobID})
	waitFor(t, 30*time.Second, "the third invite on hs2", func() bool {
		s := syncNow(t, hs2, bob)
		since = s.Get("next_batch").String()
		return s.Get(roomPath("invite", rescinded)).Exists()
	})
	postOK(t, hs1, alice, "/_matrix/client/v3/rooms/"+url.PathEscape(rescinded)+"/kick", map[string]string{"user_id": bobID, "reason": "sorry, wrong bob"})
	waitFor(t, 30*time.Second, "the rescinded invite on hs2", func() bool {
		_, _, raw := doRequest(t, "GET", hs2.URL+"/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(since), bob, nil)
		return strings.Contains(gjson.GetBytes(raw, roomPath("leave", rescinded)).Raw, "wrong bob")
	})
	if syncNow(t, hs2, bob).Get(roomPath("invite", rescinded)).Exists() {
		t.Error("the rescinded invite is still listed")
	}

	// A knock, let in by an invite.
	knockRoom := createRoomOn(t, hs1, alice, map[string]any{"preset": "private_chat", "name": "knock knock",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]string{"join_rule": "knock"}}}})
	postOK(t, hs2, bob, "/_matrix/client/v3/knock/"+url.PathEscape(knockRoom)+"?via="+url.QueryEscape(name1), map[string]string{"reason": "let me in"})
	waitFor(t, 30*time.Second, "the knock on hs1", func() bool { return memberOn(t, hs1, alice, knockRoom, bobID) == "knock" })
	if ks := syncNow(t, hs2, bob).Get(roomPath("knock", knockRoom) + ".knock_state.events").String(); !strings.Contains(ks, "knock knock") {
		t.Errorf("bob's sync has no knock_state with the room's name: %s", ks)
	}
	postOK(t, hs1, alice, "/_matrix/client/v3/rooms/"+url.PathEscape(knockRoom)+"/invite", map[string]string{"user_id": bobID})
	waitFor(t, 30*time.Second, "the accepted knock as an invite on hs2", func() bool {
		return syncNow(t, hs2, bob).Get(roomPath("invite", knockRoom)).Exists()
	})
	postOK(t, hs2, bob, "/_matrix/client/v3/rooms/"+url.PathEscape(knockRoom)+"/join", map[string]any{})
	waitFor(t, 30*time.Second, "bob in the knock room on hs1", func() bool { return memberOn(t, hs1, alice, knockRoom, bobID) == "join" })

	// A room of hs1's directory, resolved and joined by its alias from hs2.
	public := createRoomOn(t, hs1, alice, map[string]any{"preset": "public_chat", "room_alias_name": "lobby"})
	alias := "#lobby:" + name1
	code, _, raw = doRequest(t, "GET", hs2.URL+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias), bob, nil)
	if code != 200 || gjson.GetBytes(raw, "room_id").String() != public || !strings.Contains(gjson.GetBytes(raw, "servers").Raw, name1) {
		t.Fatalf("hs2 resolving %s: %d %s", alias, code, raw)
	}
	code, _, raw = doRequest(t, "GET", hs2.URL+"/_matrix/client/v3/directory/room/"+url.PathEscape("#nowhere:"+name1), bob, nil)
	if code != 404 || gjson.GetBytes(raw, "errcode").String() != "M_NOT_FOUND" {
		t.Errorf("an unknown remote alias: %d %s", code, raw)
	}
	postOK(t, hs2, bob, "/_matrix/client/v3/join/"+url.PathEscape(alias), map[string]any{})
	waitFor(t, 30*time.Second, "bob joined by alias on hs1", func() bool { return memberOn(t, hs1, alice, public, bobID) == "join" })

	// bob leaves the first room: hs1 sees it.
	postOK(t, hs2, bob, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{})
	waitFor(t, 30*time.Second, "bob's leave on hs1", func() bool { return memberOn(t, hs1, alice, room, bobID) == "leave" })
}

// startFederatedWith is startFederated with more flags.
func startFederatedWith(t *testing.T, pki harness.PKI, args ...string) (*harness.Server, string) {
	port := harness.FreePort(t)
	name := fmt.Sprintf("localhost:%d", port)
	s := harness.Start(t, harness.WithArgs(append([]string{"--server-name", name, "--federation",
		"--federation-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--federation-tls-cert", pki.CertFile, "--federation-tls-key", pki.KeyFile,
		"--federation-ca-file", pki.CAFile}, args...)...))
	return s, name
}

// TestFederationEraseDropsRemoteInvite: a user who erases their account
// with an invite pending to a room of another server leaves no trace of it:
// the invite (kept here as the room is not held) goes from the database
// with the account.
func TestFederationEraseDropsRemoteInvite(t *testing.T) {
	pki := harness.NewPKI(t)
	hs1, _ := startFederated(t, pki)
	hs2, name2 := startFederated(t, pki)
	alice := registerForTest(t, hs1.URL, "alice")
	bob := registerForTest(t, hs2.URL, "bob")
	room := createRoomOn(t, hs1, alice, map[string]any{"preset": "private_chat"})
	postOK(t, hs1, alice, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]string{"user_id": "@bob:" + name2})
	waitFor(t, 30*time.Second, "bob's invite in /sync on hs2", func() bool { return syncNow(t, hs2, bob).Get(roomPath("invite", room)).Exists() })
	if !strings.Contains(dumpDatabase(t, hs2.DataDir), room) {
		t.Fatal("hs2 keeps no trace of the invite: the check below would prove nothing")
	}
	postOK(t, hs2, bob, "/_matrix/client/v3/account/deactivate", map[string]any{"erase": true, "auth": map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "bob"}, "password": "correct horse battery staple"}})
	if strings.Contains(dumpDatabase(t, hs2.DataDir), room) {
		t.Fatal("the erased user's invite to another server's room is still in the database")
	}
}
