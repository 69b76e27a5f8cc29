package main

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The protocol test of sliding sync (MSC4186): it replays the request
// bodies matrix-rust-sdk sends (testdata/sliding_sync_rust_sdk.json, with
// the SDK version and files they come from) through HTTP against the real
// server, and decodes each answer into the types ruma gives them, so that a
// field of the wrong type fails here as it would make the SDK drop the
// whole response.

const slidingPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// ssResponse mirrors ruma's sync_events::v5::Response: unsigned integers
// where ruma has UInt, strings where it has String.
type ssResponse struct {
	TxnID string                            `json:"txn_id"`
	Pos   string                            `json:"pos"`
	Lists map[string]struct{ Count uint64 } `json:"lists"`
	Rooms map[string]ssRoom                 `json:"rooms"`
	Ext   struct {
		ToDevice *struct {
			NextBatch string            `json:"next_batch"`
			Events    []json.RawMessage `json:"events"`
		} `json:"to_device"`
		E2EE struct {
			DeviceLists struct {
				Changed []string `json:"changed"`
				Left    []string `json:"left"`
			} `json:"device_lists"`
			OTKCounts        map[string]uint64 `json:"device_one_time_keys_count"`
			FallbackKeyTypes *[]string         `json:"device_unused_fallback_key_types"`
		} `json:"e2ee"`
		AccountData struct {
			Global []ssEvent            `json:"global"`
			Rooms  map[string][]ssEvent `json:"rooms"`
		} `json:"account_data"`
		Receipts struct {
			Rooms map[string]ssEvent `json:"rooms"`
		} `json:"receipts"`
		Typing struct {
			Rooms map[string]ssEvent `json:"rooms"`
		} `json:"typing"`
	} `json:"extensions"`
}

type ssRoom struct {
	Name              *string         `json:"name"`
	Avatar            json.RawMessage `json:"avatar"`
	Initial           *bool           `json:"initial"`
	IsDM              *bool           `json:"is_dm"`
	InviteState       []ssEvent       `json:"invite_state"`
	NotificationCount *uint64         `json:"notification_count"`
	HighlightCount    *uint64         `json:"highlight_count"`
	Timeline          []ssEvent       `json:"timeline"`
	RequiredState     []ssEvent       `json:"required_state"`
	PrevBatch         *string         `json:"prev_batch"`
	Limited           bool            `json:"limited"`
	JoinedCount       *uint64         `json:"joined_count"`
	InvitedCount      *uint64         `json:"invited_count"`
	NumLive           *uint64         `json:"num_live"`
	BumpStamp         *uint64         `json:"bump_stamp"`
	Heroes            []ssHero        `json:"heroes"`
}

type ssHero struct {
	UserID      string  `json:"user_id"`
	DisplayName *string `json:"displayname"`
	AvatarURL   *string `json:"avatar_url"`
}

type ssEvent struct {
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key"`
	Sender   string          `json:"sender"`
	EventID  string          `json:"event_id"`
	Content  json.RawMessage `json:"content"`
}

func (r ssRoom) state(typ, key string) *ssEvent {
	for i, ev := range r.RequiredState {
		if ev.Type == typ && ev.StateKey != nil && *ev.StateKey == key {
			return &r.RequiredState[i]
		}
	}
	return nil
}

func membershipOf(ev *ssEvent) string {
	var c struct {
		Membership string `json:"membership"`
	}
	if ev != nil {
		_ = json.Unmarshal(ev.Content, &c)
	}
	return c.Membership
}

// ssFixture reads the SDK's request bodies.
func ssFixture(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile("testdata/sliding_sync_rust_sdk.json")
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]json.RawMessage
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// slide makes one sliding sync request and decodes a 200 strictly.
func slide(t *testing.T, base, token, pos string, timeoutMS int, body string) (int, ssResponse, string) {
	t.Helper()
	q := url.Values{}
	if pos != "" {
		q.Set("pos", pos)
	}
	q.Set("timeout", itoa(timeoutMS))
	code, raw := request(t, "POST", base+slidingPath+"?"+q.Encode(), token, body)
	var resp ssResponse
	if code == 200 {
		dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
		if err := dec.Decode(&resp); err != nil {
			t.Fatalf("the SDK could not decode this answer: %v\n%s", err, raw)
		}
		if resp.Pos == "" {
			t.Fatalf("no pos: %s", raw)
		}
	}
	return code, resp, raw
}

func itoa(n int) string { return strconv.Itoa(n) }

func jsonString(v any) string { b, _ := json.Marshal(v); return string(b) }

func mustOK(t *testing.T, what string, code int, raw string) {
	t.Helper()
	if code != 200 {
		t.Fatalf("%s: %d %s", what, code, raw)
	}
}

// whoamiIDs is the caller's user and device IDs.
func whoamiIDs(t *testing.T, base, token string) (user, device string) {
	t.Helper()
	_, raw := request(t, "GET", base+"/_matrix/client/v3/account/whoami", token, "")
	var w struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	_ = json.Unmarshal([]byte(raw), &w)
	return w.UserID, w.DeviceID
}

func createRoom(t *testing.T, base, token, body string) string {
	t.Helper()
	code, raw := request(t, "POST", base+"/_matrix/client/v3/createRoom", token, body)
	mustOK(t, "createRoom", code, raw)
	return between(raw, `"room_id":"`, `"`)
}

func sendText(t *testing.T, base, token, room, txn, text string) string {
	t.Helper()
	code, raw := request(t, "PUT", base+"/_matrix/client/v3/rooms/"+room+"/send/m.room.message/"+txn, token,
		`{"msgtype":"m.text","body":`+jsonString(text)+`}`)
	mustOK(t, "send", code, raw)
	return between(raw, `"event_id":"`, `"`)
}

func TestSlidingSyncReplaysRustSDK(t *testing.T) {
	_, srv := newTestApp(t)
	base := srv.URL
	f := ssFixture(t)
	alice := registerUser(t, base, "alice")
	bob := registerUser(t, base, "bob")
	aliceID, _ := whoamiIDs(t, base, alice)
	bobID, bobDevice := whoamiIDs(t, base, bob)

	// /versions advertises it: Element X refuses the server otherwise.
	_, raw := request(t, "GET", base+"/_matrix/client/versions", "", "")
	if !strings.Contains(raw, `"org.matrix.simplified_msc3575":true`) {
		t.Fatalf("versions does not advertise sliding sync: %s", raw)
	}

	lounge := createRoom(t, base, alice, `{"preset":"public_chat","name":"Lounge"}`)
	mustOK(t, "join", post(t, base+"/_matrix/client/v3/join/"+lounge, bob, `{}`), "")
	quiet := createRoom(t, base, alice, `{"preset":"public_chat","name":"Quiet"}`)
	mustOK(t, "join", post(t, base+"/_matrix/client/v3/join/"+quiet, bob, `{}`), "")
	kicked := createRoom(t, base, alice, `{"preset":"public_chat","name":"Kicked"}`)
	mustOK(t, "join", post(t, base+"/_matrix/client/v3/join/"+kicked, bob, `{}`), "")
	mustOK(t, "kick", post(t, base+"/_matrix/client/v3/rooms/"+kicked+"/kick", alice, `{"user_id":"`+bobID+`","reason":"test"}`), "")
	dm := createRoom(t, base, alice, `{"preset":"trusted_private_chat","is_direct":true,"invite":["`+bobID+`"]}`)
	for i := 0; i < 3; i++ {
		sendText(t, base, alice, lounge, "l"+itoa(i), "hello "+itoa(i))
	}

	// 1. The room-list connection's first request: answered at once
	// although it asks for a 30 s long-poll.
	start := time.Now()
	code, r1, raw := slide(t, base, bob, "", 30000, string(f["room_list_first"]))
	mustOK(t, "first room-list request", code, raw)
	if time.Since(start) > 10*time.Second {
		t.Fatalf("the first request of a connection waited %v", time.Since(start))
	}
	if got := r1.Lists["all_rooms"].Count; got != 4 {
		t.Fatalf("all_rooms count %d, want 4 (lounge, quiet, kicked, invite): %s", got, raw)
	}
	lr := r1.Rooms[lounge]
	if lr.Name == nil || *lr.Name != "Lounge" || lr.Initial == nil || !*lr.Initial {
		t.Fatalf("lounge: name and initial: %s", raw)
	}
	if len(lr.Timeline) != 1 || !strings.Contains(string(lr.Timeline[0].Content), "hello 2") || !lr.Limited {
		t.Fatalf("lounge: timeline_limit 1 gives the latest message, limited: %s", raw)
	}
	if lr.PrevBatch == nil || lr.BumpStamp == nil || lr.JoinedCount == nil || *lr.JoinedCount != 2 ||
		lr.InvitedCount == nil || lr.NotificationCount == nil || lr.HighlightCount == nil || lr.NumLive == nil {
		t.Fatalf("lounge: prev_batch, bump_stamp, counts: %s", raw)
	}
	for _, want := range [][2]string{{"m.room.create", ""}, {"m.room.name", ""}, {"m.room.power_levels", ""},
		{"m.room.join_rules", ""}, {"m.room.history_visibility", ""}, {"m.room.member", bobID}, {"m.room.member", aliceID}} {
		if lr.state(want[0], want[1]) == nil {
			t.Fatalf("lounge: required_state lacks %v: %s", want, raw)
		}
	}
	if lr.state("m.room.message", "") != nil || lr.state("m.room.topic", "x") != nil {
		t.Fatalf("lounge: required_state has more than asked")
	}
	if q := r1.Rooms[quiet]; q.BumpStamp == nil || *q.BumpStamp >= *lr.BumpStamp {
		t.Fatalf("bump_stamp: the room with the latest message is bumped highest: %s", raw)
	}
	inv := r1.Rooms[dm]
	if len(inv.InviteState) == 0 || len(inv.Timeline) != 0 {
		t.Fatalf("invite: invite_state and no timeline: %s", raw)
	}
	if membershipOf(findStripped(inv.InviteState, "m.room.member", bobID)) != "invite" {
		t.Fatalf("invite: the user's own invite is in invite_state: %s", raw)
	}
	k := r1.Rooms[kicked]
	if membershipOf(k.state("m.room.member", bobID)) != "leave" {
		t.Fatalf("kicked: the user's own leave is in required_state: %s", raw)
	}
	// prev_batch is a /messages token.
	code, raw = request(t, "GET", base+"/_matrix/client/v3/rooms/"+lounge+"/messages?dir=b&limit=5&from="+url.QueryEscape(*lr.PrevBatch), bob, "")
	if code != 200 || !strings.Contains(raw, "hello 1") || strings.Contains(raw, "hello 2") {
		t.Fatalf("/messages from prev_batch: %d %s", code, raw)
	}

	// 2. The growing range: nothing new, the same count.
	code, r2, raw := slide(t, base, bob, r1.Pos, 0, string(f["room_list_growing"]))
	mustOK(t, "growing", code, raw)
	if len(r2.Rooms) != 0 || r2.Lists["all_rooms"].Count != 4 {
		t.Fatalf("growing range with nothing new: %s", raw)
	}

	// 3. A long-poll answers with a message in a room in view, and only
	// it. (Whether the poll was already waiting when the message came does
	// not change the answer; sync's package tests watch the waiter.)
	type result struct {
		code int
		resp ssResponse
		raw  string
	}
	done := make(chan result, 1)
	go func() {
		c, r, raw := slide(t, base, bob, r2.Pos, 20000, string(f["room_list_growing"]))
		done <- result{c, r, raw}
	}()
	sendText(t, base, alice, lounge, "live", "live one")
	var r3 ssResponse
	select {
	case res := <-done:
		mustOK(t, "long-poll", res.code, res.raw)
		r3 = res.resp
		raw = res.raw
	case <-time.After(15 * time.Second):
		t.Fatal("the long-poll was not woken by a new message")
	}
	lr = r3.Rooms[lounge]
	if len(lr.Timeline) != 1 || !strings.Contains(string(lr.Timeline[0].Content), "live one") ||
		lr.NumLive == nil || *lr.NumLive != 1 || lr.Initial != nil && *lr.Initial {
		t.Fatalf("long-poll answer: the new message, num_live 1, not initial: %s", raw)
	}
	if len(r3.Rooms) != 1 {
		t.Fatalf("long-poll answer has rooms that did not change: %s", raw)
	}

	// 4. Opening a room adds a subscription with timeline_limit 20:
	// answered at once, with the history.
	sub := strings.ReplaceAll(string(f["room_list_subscribe"]), "$ROOM", lounge)
	start = time.Now()
	code, r4, raw := slide(t, base, bob, r3.Pos, 30000, sub)
	mustOK(t, "subscribe", code, raw)
	if time.Since(start) > 10*time.Second {
		t.Fatalf("a request that adds a subscription waited %v", time.Since(start))
	}
	lr = r4.Rooms[lounge]
	if len(lr.Timeline) < 5 || lr.Initial == nil || !*lr.Initial {
		t.Fatalf("subscription: the room's history with timeline_limit 20: %s", raw)
	}

	// 5. Typing, receipts and account data reach the room-list connection.
	mustOK(t, "typing", reqCode(t, "PUT", base+"/_matrix/client/v3/rooms/"+lounge+"/typing/"+url.PathEscape(aliceID), alice, `{"typing":true,"timeout":30000}`), "")
	last := sendText(t, base, alice, lounge, "r", "read me")
	mustOK(t, "receipt", post(t, base+"/_matrix/client/v3/rooms/"+lounge+"/receipt/m.read/"+url.PathEscape(last), alice, `{}`), "")
	mustOK(t, "account data", reqCode(t, "PUT", base+"/_matrix/client/v3/user/"+url.PathEscape(bobID)+"/account_data/org.example.test", bob, `{"x":1}`), "")
	code, r5, raw := slide(t, base, bob, r4.Pos, 0, sub)
	mustOK(t, "ephemeral", code, raw)
	if r5.Ext.Typing.Rooms[lounge].Type != "m.typing" || !strings.Contains(string(r5.Ext.Typing.Rooms[lounge].Content), aliceID) {
		t.Fatalf("typing extension: %s", raw)
	}
	if r5.Ext.Receipts.Rooms[lounge].Type != "m.receipt" || !strings.Contains(string(r5.Ext.Receipts.Rooms[lounge].Content), last) {
		t.Fatalf("receipts extension (rooms [\"*\"], no lists): %s", raw)
	}
	found := false
	for _, ev := range r5.Ext.AccountData.Global {
		found = found || ev.Type == "org.example.test"
	}
	if !found {
		t.Fatalf("account_data extension: %s", raw)
	}

	// 6. Joining the invited room: sent whole again, without invite_state.
	mustOK(t, "join dm", post(t, base+"/_matrix/client/v3/join/"+dm, bob, `{}`), "")
	code, r6, raw := slide(t, base, bob, r5.Pos, 0, sub)
	mustOK(t, "after join", code, raw)
	if d := r6.Rooms[dm]; len(d.InviteState) != 0 || membershipOf(d.state("m.room.member", bobID)) != "join" || d.Initial == nil || !*d.Initial {
		t.Fatalf("joined invite: no invite_state, own join in required_state: %s", raw)
	}
	// A room without a name is named by its heroes: the other members.
	if d := r6.Rooms[dm]; d.Name != nil || len(d.Heroes) != 1 || d.Heroes[0].UserID != aliceID || d.Heroes[0].DisplayName == nil {
		t.Fatalf("the DM's heroes: %s", raw)
	}

	// 6b. The avatar field: set, then removed (null).
	mustOK(t, "avatar", reqCode(t, "PUT", base+"/_matrix/client/v3/rooms/"+lounge+"/state/m.room.avatar", alice, `{"url":"mxc://localhost/abc"}`), "")
	code, r6, raw = slide(t, base, bob, r6.Pos, 0, sub)
	mustOK(t, "avatar set", code, raw)
	if string(r6.Rooms[lounge].Avatar) != `"mxc://localhost/abc"` {
		t.Fatalf("avatar after it was set: %s", raw)
	}
	mustOK(t, "avatar", reqCode(t, "PUT", base+"/_matrix/client/v3/rooms/"+lounge+"/state/m.room.avatar", alice, `{}`), "")
	code, r6, raw = slide(t, base, bob, r6.Pos, 0, sub)
	mustOK(t, "avatar removed", code, raw)
	if string(r6.Rooms[lounge].Avatar) != `null` {
		t.Fatalf("avatar after it was removed: %s", raw)
	}

	// 7. Leaving: the room comes with the user's own leave in required_state.
	mustOK(t, "leave", post(t, base+"/_matrix/client/v3/rooms/"+quiet+"/leave", bob, `{}`), "")
	code, r7, raw := slide(t, base, bob, r6.Pos, 0, sub)
	mustOK(t, "after leave", code, raw)
	if membershipOf(r7.Rooms[quiet].state("m.room.member", bobID)) != "leave" {
		t.Fatalf("left room: own leave in required_state: %s", raw)
	}

	// 8. The encryption connection: to-device with its since, key counts
	// with 0 explicit, fallback key types present, device list changes.
	code, e1, raw := slide(t, base, bob, "", 30000, string(f["encryption_first"]))
	mustOK(t, "encryption first", code, raw)
	if e1.Ext.ToDevice == nil || e1.Ext.ToDevice.NextBatch == "" {
		t.Fatalf("to_device.next_batch: %s", raw)
	}
	if n, ok := e1.Ext.E2EE.OTKCounts["signed_curve25519"]; !ok || n != 0 {
		t.Fatalf("device_one_time_keys_count must carry signed_curve25519: 0: %s", raw)
	}
	if e1.Ext.E2EE.FallbackKeyTypes == nil {
		t.Fatalf("device_unused_fallback_key_types must be present: %s", raw)
	}
	mustOK(t, "to-device", reqCode(t, "PUT", base+"/_matrix/client/v3/sendToDevice/org.example.ping/t1", alice,
		`{"messages":{"`+bobID+`":{"`+bobDevice+`":{"ping":1}}}}`), "")
	carol := registerUser(t, base, "carol")
	carolID, _ := whoamiIDs(t, base, carol)
	mustOK(t, "carol joins", post(t, base+"/_matrix/client/v3/join/"+lounge, carol, `{}`), "")
	next := strings.ReplaceAll(string(f["encryption_next"]), "$SINCE", e1.Ext.ToDevice.NextBatch)
	code, e2, raw := slide(t, base, bob, e1.Pos, 10000, next)
	mustOK(t, "encryption next", code, raw)
	if e2.Ext.ToDevice == nil || len(e2.Ext.ToDevice.Events) != 1 || !strings.Contains(string(e2.Ext.ToDevice.Events[0]), "org.example.ping") {
		t.Fatalf("to-device message: %s", raw)
	}
	if !contains(e2.Ext.E2EE.DeviceLists.Changed, carolID) {
		t.Fatalf("device_lists.changed has the user who newly shares a room: %s", raw)
	}
	// The to-device message is delivered once: the next since acks it.
	next = strings.ReplaceAll(string(f["encryption_next"]), "$SINCE", e2.Ext.ToDevice.NextBatch)
	code, e3, raw := slide(t, base, bob, e2.Pos, 0, next)
	mustOK(t, "encryption ack", code, raw)
	if len(e3.Ext.ToDevice.Events) != 0 {
		t.Fatalf("a to-device message came twice: %s", raw)
	}

	// 9. Connections are per device: another install of the same account
	// using "room-list" does not get this one's pos, and nor does another
	// user.
	code, raw = request(t, "POST", base+"/_matrix/client/v3/login", "",
		`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bob"},"password":"correct horse battery staple"}`)
	mustOK(t, "login", code, raw)
	bob2 := between(raw, `"access_token":"`, `"`)
	for who, token := range map[string]string{"another device": bob2, "another user": alice} {
		code, _, raw = slide(t, base, token, r7.Pos, 0, sub)
		if code != 400 || !strings.Contains(raw, "M_UNKNOWN_POS") {
			t.Fatalf("%s with bob's pos: %d %s", who, code, raw)
		}
	}
	// And the old device's connection is untouched.
	code, _, raw = slide(t, base, bob, r7.Pos, 0, sub)
	mustOK(t, "own pos", code, raw)
}

func findStripped(evs []ssEvent, typ, key string) *ssEvent {
	for i, ev := range evs {
		if ev.Type == typ && ev.StateKey != nil && *ev.StateKey == key {
			return &evs[i]
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func reqCode(t *testing.T, method, url, token, body string) int {
	code, _ := request(t, method, url, token, body)
	return code
}

func TestSlidingSyncBadInput(t *testing.T) {
	_, srv := newTestApp(t)
	base := srv.URL
	bob := registerUser(t, base, "bob")
	code, good, raw := slide(t, base, bob, "", 0, `{"conn_id":"c","lists":{"a":{"ranges":[[0,9]],"timeline_limit":1}}}`)
	mustOK(t, "good", code, raw)
	cases := map[string]struct{ pos, body, query string }{
		"not JSON":                   {body: `{"lists":`},
		"an array":                   {body: `[]`},
		"lists of the wrong type":    {body: `{"lists":5}`},
		"a list of the wrong type":   {body: `{"lists":{"a":"b"}}`},
		"a negative range":           {body: `{"lists":{"a":{"ranges":[[-1,5]]}}}`},
		"a range out of order":       {body: `{"lists":{"a":{"ranges":[[9,1]]}}}`},
		"a range of one number":      {body: `{"lists":{"a":{"ranges":[[1]]}}}`},
		"a range beyond int64":       {body: `{"lists":{"a":{"ranges":[[0,1e30]]}}}`},
		"a range of strings":         {body: `{"lists":{"a":{"ranges":[["0","9"]]}}}`},
		"a negative timeline_limit":  {body: `{"lists":{"a":{"ranges":[[0,1]],"timeline_limit":-1}}}`},
		"a bad required_state entry": {body: `{"lists":{"a":{"ranges":[[0,1]],"required_state":[["m.room.name"]]}}}`},
		"a subscription to a non-ID": {body: `{"room_subscriptions":{"not a room":{"timeline_limit":1}}}`},
		"an unknown list name":       {body: `{"lists":{"a":{"ranges":[[0,1]]}},"extensions":{"receipts":{"enabled":true,"lists":["nope"]}}}`},
		"a bad to_device since":      {body: `{"extensions":{"to_device":{"enabled":true,"since":"abc"}}}`},
		"a bad space":                {body: `{"lists":{"a":{"ranges":[[0,1]],"filters":{"spaces":["x"]}}}}`},
		"a negative timeout":         {body: `{}`, query: "timeout=-1"},
		"an unknown pos":             {pos: "nope_1", body: `{"conn_id":"c"}`},
		"a pos of another conn_id":   {pos: good.Pos, body: `{"conn_id":"other"}`},
		"a pos with garbage":         {pos: "\x00\xff", body: `{"conn_id":"c"}`},
	}
	for name, c := range cases {
		q := url.Values{}
		if c.pos != "" {
			q.Set("pos", c.pos)
		}
		u := base + slidingPath + "?" + q.Encode()
		if c.query != "" {
			u += "&" + c.query
		}
		code, raw := request(t, "POST", u, bob, c.body)
		var e struct {
			Errcode string `json:"errcode"`
		}
		if code != 400 || json.Unmarshal([]byte(raw), &e) != nil || !strings.HasPrefix(e.Errcode, "M_") {
			t.Errorf("%s: %d %s, want 400 with a Matrix error", name, code, raw)
		}
	}
	// A huge range is capped at the list's count, not an error.
	code, r, raw := slide(t, base, bob, "", 0, `{"lists":{"a":{"ranges":[[0,9223372036854775807]],"timeline_limit":1000000}}}`)
	if code != 200 || r.Lists["a"].Count != 0 {
		t.Fatalf("a huge range: %d %s", code, raw)
	}
	// A connection started over forgets its old positions.
	pos := good.Pos
	code, _, raw = slide(t, base, bob, pos, 0, `{"conn_id":"c","lists":{"a":{"ranges":[[0,9]]}}}`)
	mustOK(t, "the live pos still works", code, raw)
	if code, _, raw = slide(t, base, bob, "", 0, `{"conn_id":"c"}`); code != 200 {
		t.Fatalf("restart: %d %s", code, raw)
	}
	if code, _, raw = slide(t, base, bob, pos, 0, `{"conn_id":"c"}`); code != 400 || !strings.Contains(raw, "M_UNKNOWN_POS") {
		t.Fatalf("a pos of a connection started over: %d %s", code, raw)
	}
}
