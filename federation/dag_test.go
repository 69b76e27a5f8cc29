package federation_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/federation"
	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// fakeRemote is another server as the test drives it over the local
// server's federation API: its requests are signed with its key, which the
// local server holds as if it had fetched it.
type fakeRemote struct {
	t    *testing.T
	s    *servertest.Server
	name string
	key  events.SigningKey
	keys keyMap
}

func newFakeRemote(t *testing.T, s *servertest.Server, name string) *fakeRemote {
	t.Helper()
	key := newKey(t, name)
	pub := key.Private.Public().(ed25519.PublicKey)
	err := s.DB.Write(context.Background(), func(tx *storage.Tx) error {
		_, err := tx.Exec(`INSERT INTO federation_server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts) VALUES ($1, $2, $3, $4, 0)`,
			name, key.KeyID, base64.RawStdEncoding.EncodeToString(pub), time.Now().Add(time.Hour).UnixMilli())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return &fakeRemote{t: t, s: s, name: name, key: key, keys: keyMap{name + " " + key.KeyID: pub}}
}

// do sends a signed request and returns the status and the body.
func (f *fakeRemote) do(method, path string, body any) (int, []byte) {
	f.t.Helper()
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			f.t.Fatal(err)
		}
	}
	auth, err := federation.Sign(federation.Request{Method: method, URI: path, Origin: f.name, Destination: string(servertest.ServerName), Content: raw}, f.key)
	if err != nil {
		f.t.Fatal(err)
	}
	req, _ := http.NewRequest(method, f.s.URL+path, bytes.NewReader(raw))
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// join joins user to room through make_join and send_join.
func (f *fakeRemote) join(room spec.RoomID, user spec.UserID) *events.PDU {
	f.t.Helper()
	code, raw := f.do("GET", "/_matrix/federation/v1/make_join/"+url.PathEscape(string(room))+"/"+url.PathEscape(string(user))+"?ver=12", nil)
	if code != 200 {
		f.t.Fatalf("make_join: %d %s", code, raw)
	}
	tmpl := gjson.GetBytes(raw, "event")
	ids := func(key string) []spec.EventID {
		var out []spec.EventID
		for _, id := range tmpl.Get(key).Array() {
			out = append(out, spec.EventID(id.String()))
		}
		return out
	}
	sk := string(user)
	join, err := events.Build(events.ProtoEvent{Type: spec.MRoomMember, StateKey: &sk, Sender: user, RoomID: room,
		Content: []byte(`{"membership":"join"}`), PrevEvents: ids("prev_events"), AuthEvents: ids("auth_events"),
		Depth: tmpl.Get("depth").Int(), OriginServerTS: time.Now().UnixMilli()}, spec.RoomVersion(gjson.GetBytes(raw, "room_version").String()), f.key)
	if err != nil {
		f.t.Fatal(err)
	}
	code, raw = f.do("PUT", "/_matrix/federation/v2/send_join/"+url.PathEscape(string(room))+"/"+url.PathEscape(string(join.EventID())), json.RawMessage(join.JSON()))
	if code != 200 {
		f.t.Fatalf("send_join: %d %s", code, raw)
	}
	return join
}

// send sends a transaction of PDUs and returns the status and the body.
func (f *fakeRemote) send(pdus ...*events.PDU) (int, []byte) {
	f.t.Helper()
	list := []json.RawMessage{}
	for _, p := range pdus {
		list = append(list, p.JSON())
	}
	return f.do("PUT", fmt.Sprintf("/_matrix/federation/v1/send/%d", time.Now().UnixNano()),
		map[string]any{"origin": f.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": list, "edus": []any{}})
}

func roomPath(room spec.RoomID) string { return url.PathEscape(string(room)) }

// stateIDs is the room's current state as alice reads it, for comparing.
func stateIDs(t *testing.T, s *servertest.Server, room spec.RoomID) string {
	t.Helper()
	state, err := s.Rooms.State(context.Background(), "@alice:test", room)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range state {
		out = append(out, string(p.EventID()))
	}
	return strings.Join(sorted(out), ",")
}

func sorted(list []string) []string {
	for i := 1; i < len(list); i++ {
		for j := i; j > 0 && list[j] < list[j-1]; j-- {
			list[j], list[j-1] = list[j-1], list[j]
		}
	}
	return list
}

// TestFederationDAGServed: what this server answers other servers about a
// room's DAG — get_missing_events, backfill, state, state_ids and
// event_auth — to a server with a member in the room, bounded, and to no
// other server.
func TestFederationDAGServed(t *testing.T) {
	s := servertest.New(t, "", federationOn)
	room := spec.RoomID(s.CreateRoom("@alice:test", map[string]any{"preset": "public_chat"}))
	r := newFakeRemote(t, s, remote)
	outsider := newFakeRemote(t, s, "outsider.test")
	join := r.join(room, "@mallory:"+remote)

	var sent []spec.EventID
	for i := 1; i <= 60; i++ {
		code, body := s.As("@alice:test", "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/m%d", roomPath(room), i), map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("m%d", i)})
		if code != 200 {
			t.Fatalf("send: %d %v", code, body)
		}
		sent = append(sent, spec.EventID(body["event_id"].(string)))
	}
	bodies := func(list []gjson.Result) string {
		var out []string
		for _, ev := range list {
			out = append(out, ev.Get("content.body").String())
		}
		return strings.Join(out, " ")
	}
	gme := func(f *fakeRemote, limit int, earliest, latest []spec.EventID) (int, []byte) {
		return f.do("POST", "/_matrix/federation/v1/get_missing_events/"+roomPath(room),
			map[string]any{"limit": limit, "min_depth": 0, "earliest_events": earliest, "latest_events": latest})
	}

	// The gap between m5 and m10: m6 to m9, oldest first.
	code, raw := gme(r, 10, []spec.EventID{sent[4]}, []spec.EventID{sent[9]})
	if got := bodies(gjson.GetBytes(raw, "events").Array()); code != 200 || got != "m6 m7 m8 m9" {
		t.Fatalf("get_missing_events: %d %s (%s)", code, got, raw)
	}
	// Bounded: however much is asked, at most 50 events.
	code, raw = gme(r, 100000, []spec.EventID{join.EventID()}, []spec.EventID{sent[59]})
	if n := len(gjson.GetBytes(raw, "events").Array()); code != 200 || n != 50 {
		t.Fatalf("get_missing_events with a huge limit: %d, %d events", code, n)
	}
	// Not to a server with no member in the room.
	if code, raw := gme(outsider, 10, []spec.EventID{sent[4]}, []spec.EventID{sent[9]}); code != 403 {
		t.Fatalf("get_missing_events for a server outside the room: %d %s", code, raw)
	}
	// Malformed: no latest_events.
	if code, raw := gme(r, 10, nil, nil); code != 400 {
		t.Fatalf("get_missing_events without latest_events: %d %s", code, raw)
	}

	// Backfill: from m10 back, newest first, the event itself included.
	code, raw = r.do("GET", "/_matrix/federation/v1/backfill/"+roomPath(room)+"?v="+url.QueryEscape(string(sent[9]))+"&limit=3", nil)
	if got := bodies(gjson.GetBytes(raw, "pdus").Array()); code != 200 || got != "m10 m9 m8" {
		t.Fatalf("backfill: %d %s (%s)", code, got, raw)
	}
	if code, _ := r.do("GET", "/_matrix/federation/v1/backfill/"+roomPath(room)+"?v="+url.QueryEscape(string(sent[9]))+"&limit=x", nil); code != 400 {
		t.Fatalf("backfill with a bad limit: %d", code)
	}
	if code, _ := outsider.do("GET", "/_matrix/federation/v1/backfill/"+roomPath(room)+"?v="+url.QueryEscape(string(sent[9]))+"&limit=3", nil); code != 403 {
		t.Fatalf("backfill for a server outside the room: %d", code)
	}

	// The state before m1 holds mallory's join; its auth chain the create.
	code, raw = r.do("GET", "/_matrix/federation/v1/state/"+roomPath(room)+"?event_id="+url.QueryEscape(string(sent[0])), nil)
	if code != 200 || !gjson.GetBytes(raw, `pdus.#(state_key=="@mallory:`+remote+`")`).Exists() || !gjson.GetBytes(raw, `pdus.#(type=="m.room.create")`).Exists() ||
		!gjson.GetBytes(raw, `auth_chain.#(type=="m.room.power_levels")`).Exists() {
		t.Fatalf("/state: %d %s", code, raw)
	}
	code, raw = r.do("GET", "/_matrix/federation/v1/state_ids/"+roomPath(room)+"?event_id="+url.QueryEscape(string(sent[0])), nil)
	if code != 200 || !strings.Contains(gjson.GetBytes(raw, "pdu_ids").Raw, string(join.EventID())) {
		t.Fatalf("/state_ids: %d %s", code, raw)
	}
	code, raw = r.do("GET", "/_matrix/federation/v1/event_auth/"+roomPath(room)+"/"+url.PathEscape(string(sent[0])), nil)
	if code != 200 || !gjson.GetBytes(raw, `auth_chain.#(type=="m.room.power_levels")`).Exists() {
		t.Fatalf("/event_auth: %d %s", code, raw)
	}
	for _, p := range []string{"/_matrix/federation/v1/state/", "/_matrix/federation/v1/state_ids/"} {
		if code, _ := outsider.do("GET", p+roomPath(room)+"?event_id="+url.QueryEscape(string(sent[0])), nil); code != 403 {
			t.Errorf("%s for a server outside the room: %d", p, code)
		}
		if code, _ := r.do("GET", p+roomPath(room)+"?event_id=%24nope", nil); code != 404 {
			t.Errorf("%s at an unknown event: %d", p, code)
		}
	}
}

// TestFederationAdversarial: a server that misbehaves is refused, event by
// event or request by request, with a clear answer: a forged signature, an
// event the auth rules refuse, a transaction of more than 50 PDUs and a
// flood of get_missing_events. None is a 500, and the room's state never
// moves.
func TestFederationAdversarial(t *testing.T) {
	s := servertest.New(t, "", federationOn)
	room := spec.RoomID(s.CreateRoom("@alice:test", map[string]any{"preset": "public_chat"}))
	r := newFakeRemote(t, s, remote)
	mallory := spec.UserID("@mallory:" + remote)
	join := r.join(room, mallory)
	before := stateIDs(t, s, room)

	result := func(raw []byte, id spec.EventID) string {
		return gjson.GetBytes(raw, "pdus."+gjson.Escape(string(id))+".error").String()
	}
	// A forged signature: refused, the transaction answered.
	forged := remoteEvent(t, s, newKey(t, remote), room, mallory, join, "m.room.message", nil, `{"msgtype":"m.text","body":"forged"}`)
	if code, raw := r.send(forged); code != 200 || !strings.Contains(result(raw, forged.EventID()), "signature") {
		t.Fatalf("a forged event: %d %s", code, raw)
	}
	// Events that fail the auth rules: mallory (power 0) takes power; a
	// user who never joined speaks; mallory changes another user's
	// membership.
	pl := s.Rooms.CurrentState(room, spec.MRoomPowerLevels, "")
	content := strings.Replace(pl.Content().Raw, `"users":{}`, `"users":{"`+string(mallory)+`":100}`, 1)
	empty := ""
	grab := remoteEvent(t, s, r.key, room, mallory, join, spec.MRoomPowerLevels, &empty, content)
	eve := remoteEvent(t, s, r.key, room, "@eve:"+remote, join, "m.room.message", nil, `{"msgtype":"m.text","body":"outside"}`)
	alice := "@alice:test"
	kick := remoteEvent(t, s, r.key, room, mallory, join, spec.MRoomMember, &alice, `{"membership":"leave"}`)
	code, raw := r.send(grab, eve, kick)
	if code != 200 {
		t.Fatalf("a transaction of refused events: %d %s", code, raw)
	}
	for _, p := range []*events.PDU{grab, eve, kick} {
		if result(raw, p.EventID()) == "" {
			t.Errorf("event %s (%s) was accepted: %s", p.EventID(), p.Type(), raw)
		}
	}
	// More than 50 PDUs: the transaction is refused whole.
	var many []*events.PDU
	for i := 0; i < 51; i++ {
		many = append(many, remoteEvent(t, s, r.key, room, mallory, join, "m.room.message", nil, fmt.Sprintf(`{"msgtype":"m.text","body":"flood %d"}`, i)))
	}
	if code, raw := r.send(many...); code != 400 || !strings.Contains(string(raw), "M_BAD_JSON") {
		t.Fatalf("a transaction of 51 PDUs: %d %s", code, raw)
	}
	if strings.Contains(timeline(t, s, room), "flood") {
		t.Fatal("an event of a refused transaction reached the timeline")
	}
	// A flood of get_missing_events: answered until the origin's budget is
	// spent, then 429 M_LIMIT_EXCEEDED, never a 500.
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 25; j++ {
				code, _ := r.do("POST", "/_matrix/federation/v1/get_missing_events/"+roomPath(room),
					map[string]any{"limit": 50, "earliest_events": []string{}, "latest_events": []spec.EventID{join.EventID()}})
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if codes[429] == 0 || codes[200] == 0 || codes[200]+codes[429] != 200 {
		t.Fatalf("a flood of 200 get_missing_events: %v", codes)
	}
	// The origin's budget refills; other origins were never limited.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := r.do("POST", "/_matrix/federation/v1/get_missing_events/"+roomPath(room),
			map[string]any{"earliest_events": []string{}, "latest_events": []spec.EventID{join.EventID()}})
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("get_missing_events still %d after the flood", code)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if after := stateIDs(t, s, room); after != before {
		t.Fatalf("the room's state moved:\nbefore %s\nafter  %s", before, after)
	}
	// And the room works: mallory's valid message is accepted.
	ok := remoteEvent(t, s, r.key, room, mallory, join, "m.room.message", nil, `{"msgtype":"m.text","body":"fine"}`)
	if code, raw := r.send(ok); code != 200 || result(raw, ok.EventID()) != "" {
		t.Fatalf("a valid event after all that: %d %s", code, raw)
	}
	if !strings.Contains(timeline(t, s, room), `"fine"`) {
		t.Fatal("the valid event is not in the timeline")
	}
}

// TestSoftFailedEventsAreHeld: an event that passes its auth events but not
// the current state (sent by a user banned meanwhile) stays out of the
// timeline and the state, but is held: a later event that names it as a
// prev event is accepted, and the fork it makes resolves to the ban.
func TestSoftFailedEventsAreHeld(t *testing.T) {
	s := servertest.New(t, "", federationOn)
	ctx := context.Background()
	room := spec.RoomID(s.CreateRoom("@alice:test", map[string]any{"preset": "public_chat"}))
	r := newFakeRemote(t, s, remote)
	mallory, trudy := spec.UserID("@mallory:"+remote), spec.UserID("@trudy:"+remote)
	r.join(room, mallory)
	tj := r.join(room, trudy)
	late := remoteEvent(t, s, r.key, room, mallory, tj, "m.room.message", nil, `{"msgtype":"m.text","body":"built before the ban"}`)
	if code, body := s.As("@alice:test", "POST", "/_matrix/client/v3/rooms/"+roomPath(room)+"/ban", map[string]string{"user_id": string(mallory)}); code != 200 {
		t.Fatalf("ban: %d %v", code, body)
	}
	banned := stateIDs(t, s, room)
	if _, err := s.Rooms.ReceivePDU(ctx, late.JSON(), room, r.keys, nil); err == nil || !strings.Contains(err.Error(), "soft-failed") {
		t.Fatalf("the banned user's event: %v, want soft-failed", err)
	}
	// trudy's event follows it: accepted, on a fork the ban wins.
	after := remoteEvent(t, s, r.key, room, trudy, late, "m.room.message", nil, `{"msgtype":"m.text","body":"after the soft-failed one"}`)
	if _, err := s.Rooms.ReceivePDU(ctx, after.JSON(), room, r.keys, nil); err != nil {
		t.Fatalf("an event after a soft-failed one: %v", err)
	}
	tl := timeline(t, s, room)
	if strings.Contains(tl, "built before the ban") || !strings.Contains(tl, "after the soft-failed one") {
		t.Fatalf("timeline: %s", tl)
	}
	if got := stateIDs(t, s, room); got != banned {
		t.Fatalf("the state moved:\nbefore %s\nafter  %s", banned, got)
	}
	if s.Rooms.Membership(mallory, room) != spec.Ban {
		t.Fatal("mallory is no longer banned")
	}
	// The soft-failed event is held for the DAG: its auth chain is served.
	if code, raw := r.do("GET", "/_matrix/federation/v1/event_auth/"+roomPath(room)+"/"+url.PathEscape(string(late.EventID())), nil); code != 200 {
		t.Fatalf("event_auth of the soft-failed event: %d %s", code, raw)
	}
	// alice's next event joins the fork.
	code, body := s.As("@alice:test", "PUT", "/_matrix/client/v3/rooms/"+roomPath(room)+"/send/m.room.message/j", map[string]string{"msgtype": "m.text", "body": "joined again"})
	if code != 200 {
		t.Fatalf("send: %d %v", code, body)
	}
	ev, err := s.Rooms.Event(ctx, "@alice:test", room, spec.EventID(body["event_id"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	if prevs := ev.PDU.PrevEvents(); len(prevs) != 2 {
		t.Fatalf("alice's event after the fork has prev events %v, want the two forward extremities", prevs)
	}
}

// TestWideGapTakesTheState: an event after more missing events than this
// server fetches one by one, from a server that answers no
// get_missing_events: the nearest ones are fetched, and the oldest fetched
// one's missing predecessor is held with the state at it (a backwards
// extremity) instead of walking further back. A state change in the part
// of the gap never fetched (mallory's new display name) comes with that
// state, and state resolution makes it current.
func TestWideGapTakesTheState(t *testing.T) {
	s := servertest.New(t, "", federationOn)
	ctx := context.Background()
	room := spec.RoomID(s.CreateRoom("@alice:test", map[string]any{"preset": "public_chat"}))
	r := newFakeRemote(t, s, remote)
	mallory := spec.UserID("@mallory:" + remote)
	join := r.join(room, mallory)
	prev := join
	state, err := s.Rooms.State(ctx, "@alice:test", room)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[spec.EventID]*events.PDU{}
	var chain []*events.PDU
	sk := string(mallory)
	for i := 1; i <= 30; i++ {
		if i == 5 {
			prev = remoteEvent(t, s, r.key, room, mallory, prev, spec.MRoomMember, &sk, `{"displayname":"gap name","membership":"join"}`)
		} else {
			prev = remoteEvent(t, s, r.key, room, mallory, prev, "m.room.message", nil, fmt.Sprintf(`{"msgtype":"m.text","body":"gap %d"}`, i))
		}
		byID[prev.EventID()] = prev
		chain = append(chain, prev)
	}
	rename := chain[4]
	asked := 0
	origin := fakeOrigin{
		event: func(_ context.Context, id spec.EventID) ([]byte, error) {
			if p := byID[id]; p != nil {
				return p.JSON(), nil
			}
			return nil, fmt.Errorf("no %s", id)
		},
		stateIDs: func(id spec.EventID) ([]spec.EventID, []spec.EventID, error) {
			asked++
			var ids []spec.EventID
			for _, p := range state {
				if sk, _ := p.StateKey(); p.Type() == spec.MRoomMember && sk == string(mallory) {
					p = rename
				}
				ids = append(ids, p.EventID())
			}
			return ids, []spec.EventID{join.EventID()}, nil
		},
	}
	if _, err := s.Rooms.ReceivePDU(ctx, chain[29].JSON(), room, r.keys, origin); err != nil {
		t.Fatalf("the event after the gap: %v", err)
	}
	tl := timeline(t, s, room)
	if asked != 1 {
		t.Errorf("/state_ids asked %d times, want 1", asked)
	}
	for i := 1; i <= 30; i++ {
		if i == 5 {
			continue
		}
		in := strings.Contains(tl, fmt.Sprintf(`"gap %d"`, i))
		if want := i > 10; in != want {
			t.Errorf("gap %d in the timeline: %v, want %v", i, in, want)
		}
	}
	if cur := s.Rooms.CurrentState(room, spec.MRoomMember, string(mallory)); cur == nil || cur.EventID() != rename.EventID() {
		t.Fatalf("mallory's member event: %v, want the rename from the gap", cur)
	}
	var stored string
	if err := s.DB.QueryRow(ctx, `SELECT event_id FROM room_state WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2`, string(room), string(mallory)).Scan(&stored); err != nil || stored != string(rename.EventID()) {
		t.Fatalf("stored state of mallory: %q %v", stored, err)
	}
	// The room goes on from the event.
	if code, body := s.As("@alice:test", "PUT", "/_matrix/client/v3/rooms/"+roomPath(room)+"/send/m.room.message/after", map[string]string{"msgtype": "m.text", "body": "after the gap"}); code != 200 {
		t.Fatalf("send: %d %v", code, body)
	}
}

// TestFederationDAGServedByVisibility: in a room whose history is visible
// to members only from their join, what a server asks of the DAG
// (backfill, get_missing_events) leaves out the events from before its
// users joined.
func TestFederationDAGServedByVisibility(t *testing.T) {
	s := servertest.New(t, "", federationOn)
	room := spec.RoomID(s.CreateRoom("@alice:test", map[string]any{"preset": "public_chat",
		"initial_state": []map[string]any{{"type": spec.MRoomHistoryVisibility, "state_key": "", "content": map[string]string{"history_visibility": "joined"}}}}))
	send := func(body string) spec.EventID {
		code, out := s.As("@alice:test", "PUT", "/_matrix/client/v3/rooms/"+roomPath(room)+"/send/m.room.message/"+body, map[string]string{"msgtype": "m.text", "body": body})
		if code != 200 {
			t.Fatalf("send: %d %v", code, out)
		}
		return spec.EventID(out["event_id"].(string))
	}
	secret := send("before-the-join")
	r := newFakeRemote(t, s, remote)
	join := r.join(room, "@mallory:"+remote)
	after := send("after-the-join")

	code, raw := r.do("GET", "/_matrix/federation/v1/backfill/"+roomPath(room)+"?v="+url.QueryEscape(string(after))+"&limit=20", nil)
	if code != 200 || !strings.Contains(string(raw), "after-the-join") || strings.Contains(string(raw), "before-the-join") {
		t.Fatalf("backfill: %d %s", code, raw)
	}
	code, raw = r.do("POST", "/_matrix/federation/v1/get_missing_events/"+roomPath(room),
		map[string]any{"limit": 20, "earliest_events": []string{}, "latest_events": []spec.EventID{join.EventID()}})
	if code != 200 || strings.Contains(string(raw), "before-the-join") {
		t.Fatalf("get_missing_events: %d %s", code, raw)
	}
	if code, raw := r.do("GET", "/_matrix/federation/v1/event/"+url.PathEscape(string(secret)), nil); code != 404 {
		t.Fatalf("/event of a message from before the join: %d %s", code, raw)
	}
}

// TestRejectedByTheStateBefore: an event whose auth events allow it but
// whose place in the DAG does not (mallory's message placed before her
// join) is rejected, not soft-failed: it is not held at all.
func TestRejectedByTheStateBefore(t *testing.T) {
	s := servertest.New(t, "", federationOn)
	ctx := context.Background()
	room := spec.RoomID(s.CreateRoom("@alice:test", map[string]any{"preset": "public_chat"}))
	state, err := s.Rooms.State(ctx, "@alice:test", room)
	if err != nil {
		t.Fatal(err)
	}
	var beforeJoin *events.PDU // the room's latest event before mallory joins
	for _, p := range state {
		if beforeJoin == nil || p.Depth() > beforeJoin.Depth() {
			beforeJoin = p
		}
	}
	r := newFakeRemote(t, s, remote)
	mallory := spec.UserID("@mallory:" + remote)
	r.join(room, mallory)
	// Auth events from now (mallory joined), prev event from before.
	early := remoteEvent(t, s, r.key, room, mallory, beforeJoin, "m.room.message", nil, `{"msgtype":"m.text","body":"placed before the join"}`)
	_, err = s.Rooms.ReceivePDU(ctx, early.JSON(), room, r.keys, nil)
	if err == nil || !strings.Contains(err.Error(), "state before it") {
		t.Fatalf("an event placed before its sender's join: %v, want rejected", err)
	}
	if code, _ := r.do("GET", "/_matrix/federation/v1/event_auth/"+roomPath(room)+"/"+url.PathEscape(string(early.EventID())), nil); code != 404 {
		t.Fatalf("the rejected event is held: event_auth %d", code)
	}
	if strings.Contains(timeline(t, s, room), "placed before the join") {
		t.Fatal("the rejected event reached the timeline")
	}
}
