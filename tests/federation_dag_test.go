package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
	"github.com/tidwall/gjson"
)

// The DAG over federation, end to end: a server that was down catches up
// on what it missed, and servers that changed the room's state while cut
// off from each other end with the same state.

// createAndJoin makes a public room of alice on hs1 and joins the others
// to it through hs1; it waits until every server sees every member.
func createAndJoin(t *testing.T, hs1 *harness.Server, name1, alice string, others ...member) string {
	t.Helper()
	code, _, raw := doRequest(t, "POST", hs1.URL+"/_matrix/client/v3/createRoom", alice, map[string]any{"preset": "public_chat"})
	if code != 200 {
		t.Fatalf("createRoom: %d %s", code, raw)
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	_ = json.Unmarshal(raw, &created)
	room := created.RoomID
	for _, m := range others {
		c, _, b := doRequest(t, "POST", m.srv.URL+"/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(name1), m.token, map[string]any{})
		if c != 200 {
			t.Fatalf("join through %s: %d %s", name1, c, b)
		}
	}
	all := append([]member{{hs1, alice}}, others...)
	for _, m := range all {
		waitFor(t, 30*time.Second, "every member joined on "+m.srv.URL, func() bool {
			c, _, body := doRequest(t, "GET", m.srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", m.token, nil)
			var jm struct {
				Joined map[string]any `json:"joined"`
			}
			_ = json.Unmarshal(body, &jm)
			return c == 200 && len(jm.Joined) == len(all)
		})
	}
	return room
}

// logsOnFailure prints the servers' federation log lines if the test fails.
func logsOnFailure(t *testing.T, servers ...*harness.Server) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for i, s := range servers {
			var lines []string
			for _, l := range strings.Split(s.Logs(), "\n") {
				if strings.Contains(l, "federation") || strings.Contains(l, "soft-failed") || strings.Contains(l, "error") {
					lines = append(lines, l)
				}
			}
			t.Logf("hs%d:\n%s", i+1, strings.Join(lines, "\n"))
		}
	})
}

type member struct {
	srv   *harness.Server
	token string
}

// messagesBodies are the message bodies of /messages from the present
// back, oldest first.
func messagesBodies(t *testing.T, s *harness.Server, token, room string) []string {
	t.Helper()
	code, _, raw := doRequest(t, "GET", s.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=200", token, nil)
	if code != 200 {
		t.Fatalf("/messages: %d %s", code, raw)
	}
	var page struct {
		Chunk []struct {
			Type    string `json:"type"`
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		} `json:"chunk"`
	}
	if err := json.Unmarshal(raw, &page); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range page.Chunk {
		if ev.Type == "m.room.message" {
			out = append(out, ev.Content.Body)
		}
	}
	slices.Reverse(out)
	return out
}

// TestFederationCatchUp: hs2 is stopped, alice sends 30 messages on hs1,
// hs2 comes back. hs1 sends only the newest (it catches the destination up
// rather than replaying the outage), and hs2 fills the gap with
// get_missing_events: bob's /messages has all 30, in order.
func TestFederationCatchUp(t *testing.T) {
	pki := harness.NewPKI(t)
	hs1, name1 := startFederated(t, pki)
	hs2, _ := startFederated(t, pki)
	logsOnFailure(t, hs1, hs2)
	alice := registerForTest(t, hs1.URL, "alice")
	bob := registerForTest(t, hs2.URL, "bob")
	room := createAndJoin(t, hs1, name1, alice, member{hs2, bob})
	sendText(t, hs1, alice, room, "before")
	waitForBody(t, hs2, bob, room, "before")

	hs2.Stop()
	var want []string
	for i := 1; i <= 30; i++ {
		want = append(want, fmt.Sprintf("missed %d", i))
		sendText(t, hs1, alice, room, want[i-1])
	}
	waitFor(t, 30*time.Second, "hs1 failing to reach hs2", func() bool {
		return strings.Contains(hs1.Logs(), "federation: cannot send, will retry")
	})
	hs2.Launch()
	waitForBody(t, hs2, bob, room, "missed 30")
	got := messagesBodies(t, hs2, bob, room)
	if strings.Join(got, "|") != strings.Join(append([]string{"before"}, want...), "|") {
		t.Fatalf("bob's /messages after the catch-up:\n%q\nhs2:\n%s", got, hs2.Logs())
	}
	if !strings.Contains(hs2.Logs(), "filled a gap with get_missing_events") {
		t.Error("hs2 did not use get_missing_events")
	}
	// The room goes on both ways.
	sendText(t, hs2, bob, room, "caught up")
	waitForBody(t, hs1, alice, room, "caught up")
	if got1, got2 := messagesBodies(t, hs1, alice, room), messagesBodies(t, hs2, bob, room); strings.Join(got1, "|") != strings.Join(got2, "|") {
		t.Errorf("timelines differ:\nhs1: %q\nhs2: %q", got1, got2)
	}
}

// stateOf is a room's current state on one server, as type/state_key →
// event ID lines, sorted.
func stateOf(t *testing.T, m member, room string) string {
	t.Helper()
	code, _, raw := doRequest(t, "GET", m.srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state", m.token, nil)
	if code != 200 {
		t.Fatalf("/state: %d %s", code, raw)
	}
	var evs []struct {
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
		EventID  string `json:"event_id"`
	}
	if err := json.Unmarshal(raw, &evs); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range evs {
		lines = append(lines, e.Type+" "+e.StateKey+" "+e.EventID)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func powerLevels(t *testing.T, m member, room string) map[string]any {
	t.Helper()
	code, _, raw := doRequest(t, "GET", m.srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", m.token, nil)
	if code != 200 {
		t.Fatalf("power levels: %d %s", code, raw)
	}
	var pl map[string]any
	_ = json.Unmarshal(raw, &pl)
	return pl
}

func setUserPower(t *testing.T, m member, room, user string, level int) {
	t.Helper()
	pl := powerLevels(t, m, room)
	users, _ := pl["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	users[user] = level
	pl["users"] = users
	code, _, raw := doRequest(t, "PUT", m.srv.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", m.token, pl)
	if code != 200 {
		t.Fatalf("set %s's power to %d: %d %s", user, level, code, raw)
	}
}

// roomSyncer is a client that keeps one room's state from /sync alone, as
// a client does: the initial sync's state, then each response's state and
// timeline (or, with use_state_after, its state_after) applied in order.
type roomSyncer struct {
	mu    sync.Mutex
	state map[string]string // "type state_key" → event ID
	since string
	err   error
	// initial is the state and token of the initial sync.
	initial *roomSyncer
}

// startRoomSyncer makes the initial sync at once, then long-polls until
// the test ends.
func startRoomSyncer(t *testing.T, m member, room string, stateAfter bool) *roomSyncer {
	t.Helper()
	rs := &roomSyncer{state: map[string]string{}}
	if err := rs.sync(context.Background(), m, room, stateAfter, 0); err != nil {
		t.Fatalf("initial sync: %v", err)
	}
	rs.initial = &roomSyncer{state: maps.Clone(rs.state), since: rs.since}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := rs.sync(ctx, m, room, stateAfter, 5000); err != nil && ctx.Err() == nil {
				rs.mu.Lock()
				rs.err = err
				rs.mu.Unlock()
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return rs
}

// initialSync is a client's initial sync, and no more.
func initialSync(t *testing.T, m member, room string) *roomSyncer {
	t.Helper()
	rs := &roomSyncer{state: map[string]string{}}
	if err := rs.sync(context.Background(), m, room, false, 0); err != nil {
		t.Fatalf("initial sync: %v", err)
	}
	return rs
}

func (rs *roomSyncer) sync(ctx context.Context, m member, room string, stateAfter bool, timeout int) error {
	q := url.Values{"timeout": {fmt.Sprint(timeout)}}
	if rs.since != "" {
		q.Set("since", rs.since)
	}
	if stateAfter {
		q.Set("use_state_after", "true")
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", m.srv.URL+"/_matrix/client/v3/sync?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+m.token)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				State      struct{ Events []syncedState } `json:"state"`
				StateAfter struct{ Events []syncedState } `json:"state_after"`
				Timeline   struct{ Events []syncedState } `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("sync: %d %v", resp.StatusCode, err)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	jr := body.Rooms.Join[room]
	apply := func(evs []syncedState) {
		for _, e := range evs {
			if e.StateKey != nil {
				rs.state[e.Type+" "+*e.StateKey] = e.EventID
			}
		}
	}
	if stateAfter {
		apply(jr.StateAfter.Events)
	} else {
		apply(jr.State.Events)
		apply(jr.Timeline.Events)
	}
	rs.since = body.NextBatch
	return nil
}

type syncedState struct {
	Type     string  `json:"type"`
	StateKey *string `json:"state_key"`
	EventID  string  `json:"event_id"`
}

// lines is the state as stateOf has it.
func (rs *roomSyncer) lines() (string, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var lines []string
	for k, id := range rs.state {
		lines = append(lines, k+" "+id)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n"), rs.err
}

// slidingMembers keeps a room's member events from sliding sync's
// required_state, as Element X does.
type slidingMembers struct {
	room, pos string
	members   map[string]string // user → member event ID
}

func (sm *slidingMembers) sync(t *testing.T, m member) {
	t.Helper()
	path := "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0"
	if sm.pos != "" {
		path += "&pos=" + url.QueryEscape(sm.pos)
	}
	raw := postOK(t, m.srv, m.token, path, map[string]any{"conn_id": "fork",
		"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 20}}, "timeline_limit": 5,
			"required_state": [][]string{{"m.room.member", "*"}}}}})
	sm.pos = gjson.GetBytes(raw, "pos").String()
	for _, ev := range gjson.GetBytes(raw, "rooms."+gjson.Escape(sm.room)+".required_state").Array() {
		if ev.Get("type").String() == "m.room.member" {
			sm.members[ev.Get("state_key").String()] = ev.Get("event_id").String()
		}
	}
}

// TestFederationFork: three servers; while hs1 and hs2 cannot reach each
// other, alice (hs1, the creator) takes bob's power away and bob (hs2)
// bans charlie (hs3) with the power he still has there. The DAG forks;
// state resolution decides (the creator's change first, and the ban then
// fails it), and all three servers end with the same current state. A
// client syncing on hs2 across the resolution ends with that state too.
func TestFederationFork(t *testing.T) {
	pki := harness.NewPKI(t)
	hs1, name1 := startFederated(t, pki)
	hs2, name2 := startFederated(t, pki)
	hs3, name3 := startFederated(t, pki)
	logsOnFailure(t, hs1, hs2, hs3)
	alice := member{hs1, registerForTest(t, hs1.URL, "alice")}
	bob := member{hs2, registerForTest(t, hs2.URL, "bob")}
	charlie := member{hs3, registerForTest(t, hs3.URL, "charlie")}
	bobID, charlieID := "@bob:"+name2, "@charlie:"+name3
	room := createAndJoin(t, hs1, name1, alice.token, bob, charlie)

	setUserPower(t, alice, room, bobID, 100)
	for _, m := range []member{bob, charlie} {
		waitFor(t, 30*time.Second, "bob's power on "+m.srv.URL, func() bool {
			users, _ := powerLevels(t, m, room)["users"].(map[string]any)
			return users[bobID] == float64(100)
		})
	}

	// Cut hs1 and hs2 apart: each changes state while the other is down.
	hs2.Stop()
	setUserPower(t, alice, room, bobID, 0)
	waitFor(t, 30*time.Second, "bob's demotion on hs3", func() bool {
		users, _ := powerLevels(t, charlie, room)["users"].(map[string]any)
		return users[bobID] == float64(0)
	})
	hs1.Stop()
	hs2.Launch()
	// A client of bob's that last synced before his ban.
	beforeBan := initialSync(t, bob, room)
	code, _, raw := doRequest(t, "POST", hs2.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/ban", bob.token, map[string]string{"user_id": charlieID, "reason": "fork"})
	if code != 200 {
		t.Fatalf("bob bans charlie on hs2: %d %s", code, raw)
	}
	// Bob's clients sync on hs2 from before alice's change reaches it.
	syncers := map[string]*roomSyncer{
		"/sync":                      startRoomSyncer(t, bob, room, false),
		"/sync with use_state_after": startRoomSyncer(t, bob, room, true),
	}
	// And sliding sync: required_state brings it to the room's state.
	slide := &slidingMembers{room: room, members: map[string]string{}}
	slide.sync(t, bob)
	hs1.Launch()

	// Once each has the other's change, the three states agree.
	var states [3]string
	waitFor(t, 90*time.Second, "the same state on the three servers", func() bool {
		for i, m := range []member{alice, bob, charlie} {
			states[i] = stateOf(t, m, room)
		}
		users, _ := powerLevels(t, bob, room)["users"].(map[string]any)
		if users[bobID] != float64(0) {
			return false // hs2 has not got alice's change yet
		}
		if states[0] == states[1] && states[1] == states[2] {
			return true
		}
		time.Sleep(200 * time.Millisecond)
		return false
	})
	// The creator's change wins; the ban, authorised by the power it took
	// away, does not stand.
	if !strings.Contains(states[0], "m.room.member "+charlieID) {
		t.Fatalf("charlie has no member event:\n%s", states[0])
	}
	code, _, raw = doRequest(t, "GET", hs3.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(charlieID), charlie.token, nil)
	if code != 200 || !strings.Contains(string(raw), `"join"`) {
		t.Errorf("charlie after the fork: %d %s", code, raw)
	}
	// The clients that kept syncing on hs2 learnt the resolved state,
	// though no event of their timelines set charlie's membership back.
	for name, rs := range syncers {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			got, err := rs.lines()
			if err != nil {
				t.Fatalf("bob's %s: %v", name, err)
			}
			if got == states[1] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("bob's %s did not reach hs2's /state:\n%s\nwant\n%s", name, got, states[1])
			}
		}
	}

	wantCharlie := ""
	for _, l := range strings.Split(states[1], "\n") {
		if rest, ok := strings.CutPrefix(l, "m.room.member "+charlieID+" "); ok {
			wantCharlie = rest
		}
	}
	waitFor(t, 30*time.Second, "charlie's resolved membership in bob's sliding sync", func() bool {
		if slide.sync(t, bob); slide.members[charlieID] == wantCharlie {
			return true
		}
		time.Sleep(100 * time.Millisecond)
		return false
	})

	// It was a fork: hs2 resolved it, and hs1 (where bob had no power
	// left) soft-fails the ban, which changes no state: it may come after
	// the states agree.
	if !strings.Contains(hs2.Logs(), "resolved the state of a fork") {
		t.Error("hs2 did not resolve a fork")
	}
	waitFor(t, 30*time.Second, "hs1 soft-failing the ban", func() bool {
		if strings.Contains(hs1.Logs(), "soft-failed a remote event") {
			return true
		}
		time.Sleep(100 * time.Millisecond)
		return false
	})
	if a := stateOf(t, alice, room); a != states[0] {
		t.Fatalf("hs1's state moved when the ban came:\n%s\nwas\n%s", a, states[0])
	}

	// The DAG joins again: messages from each server reach the others, and
	// the state stays the same everywhere.
	sendText(t, hs2, bob.token, room, "after the fork, from bob")
	sendText(t, hs1, alice.token, room, "after the fork, from alice")
	for _, m := range []member{alice, bob, charlie} {
		waitForBody(t, m.srv, m.token, room, "after the fork, from bob")
		waitForBody(t, m.srv, m.token, room, "after the fork, from alice")
	}
	waitFor(t, 30*time.Second, "the same state after the fork joined", func() bool {
		a, b, c := stateOf(t, alice, room), stateOf(t, bob, room), stateOf(t, charlie, room)
		if a == b && b == c {
			return true
		}
		time.Sleep(200 * time.Millisecond)
		return false
	})

	// After a restart, hs2 still knows what the resolution changed: a
	// client syncing from before it is brought to the state.
	hs2.Stop()
	hs2.Launch()
	want := stateOf(t, bob, room)
	// And an initial sync, whose timeline holds the ban.
	if got, _ := initialSync(t, bob, room).lines(); got != want {
		t.Errorf("after a restart, an initial /sync:\n%s\nwant\n%s", got, want)
	}
	// From before the ban too: in the legacy format its timeline cannot
	// hold the ban before the state that resolution set.
	for _, from := range []struct {
		name string
		rs   *roomSyncer
	}{{"the fork's resolution", syncers["/sync"].initial}, {"bob's ban", beforeBan}} {
		for _, stateAfter := range []bool{false, true} {
			rs := &roomSyncer{state: maps.Clone(from.rs.state), since: from.rs.since}
			if err := rs.sync(context.Background(), bob, room, stateAfter, 0); err != nil {
				t.Fatal(err)
			}
			if got, _ := rs.lines(); got != want {
				t.Errorf("after a restart, /sync (use_state_after %v) from before %s:\n%s\nwant\n%s", stateAfter, from.name, got, want)
			}
		}
	}
}

// TestFederationBackfill: bob joins over federation a room with history
// (visibility shared); his server holds the room only from his join, and
// when his /messages reaches that start it backfills from alice's server:
// he reads the earlier messages, in order, before his join.
func TestFederationBackfill(t *testing.T) {
	pki := harness.NewPKI(t)
	hs1, name1 := startFederated(t, pki)
	hs2, _ := startFederated(t, pki)
	logsOnFailure(t, hs1, hs2)
	alice := registerForTest(t, hs1.URL, "alice")
	bob := registerForTest(t, hs2.URL, "bob")
	room := createAndJoin(t, hs1, name1, alice)
	var want []string
	for i := 1; i <= 25; i++ {
		want = append(want, fmt.Sprintf("history %d", i))
		sendText(t, hs1, alice, room, want[i-1])
	}
	c, _, b := doRequest(t, "POST", hs2.URL+"/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(name1), bob, map[string]any{})
	if c != 200 {
		t.Fatalf("join: %d %s", c, b)
	}
	sendText(t, hs1, alice, room, "welcome")
	waitForBody(t, hs2, bob, room, "welcome")

	// Paged back five at a time: at the join the server backfills, and
	// the tokens cross into the backfilled history.
	var paged []string
	from := ""
	for pages := 0; pages < 40; pages++ {
		u := hs2.URL + "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/messages?dir=b&limit=5"
		if from != "" {
			u += "&from=" + url.QueryEscape(from)
		}
		code, _, raw := doRequest(t, "GET", u, bob, nil)
		if code != 200 {
			t.Fatalf("/messages from %q: %d %s", from, code, raw)
		}
		var page struct {
			Chunk []struct {
				Type    string `json:"type"`
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			} `json:"chunk"`
			End string `json:"end"`
		}
		_ = json.Unmarshal(raw, &page)
		for _, ev := range page.Chunk {
			if ev.Type == "m.room.message" {
				paged = append([]string{ev.Content.Body}, paged...)
			}
		}
		if page.End == "" {
			break
		}
		from = page.End
	}
	if strings.Join(paged, "|") != strings.Join(append(want, "welcome"), "|") {
		t.Fatalf("bob's /messages paged five at a time:\n%q", paged)
	}
	if !strings.Contains(hs2.Logs(), "federation: backfilled") {
		t.Error("hs2 did not backfill")
	}
	got := messagesBodies(t, hs2, bob, room)
	if strings.Join(got, "|") != strings.Join(append(want, "welcome"), "|") {
		t.Fatalf("bob's /messages in one page:\n%q", got)
	}
	// Read again: the history is held now, nothing is asked.
	if got2 := messagesBodies(t, hs2, bob, room); strings.Join(got2, "|") != strings.Join(got, "|") {
		t.Fatalf("bob's /messages the second time:\n%q", got2)
	}
	// An initial sync shows the room as before: the backfilled history is
	// not new.
	if bodies := timelineBodies(t, hs2, bob, room); len(bodies) == 0 || bodies[len(bodies)-1] != "welcome" {
		t.Fatalf("sync after the backfill: %q", bodies)
	}
}
