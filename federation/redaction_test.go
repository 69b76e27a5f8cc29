package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
)

// TestRemoteRedactions: a redaction from another server is applied to the
// event it names when its sender is of that event's server, or has the
// redact power level; otherwise it is kept but the event keeps its content
// ("Handling redactions", room versions 3+). Dendrite's redactions of its
// users' messages showed that remote redactions were never applied.
func TestRemoteRedactions(t *testing.T) {
	s := servertest.New(t, "", federationOn)
	ctx := context.Background()
	code, body := s.As("@alice:test", "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
	if code != 200 {
		t.Fatalf("createRoom: %d %v", code, body)
	}
	room := spec.RoomID(body["room_id"].(string))
	rkey := newKey(t, remote)
	keys := keyMap{remote + " " + rkey.KeyID: rkey.Private.Public().(ed25519.PublicKey)}
	mallory := spec.UserID("@mallory:" + remote)
	last := joinFromRemote(t, s, rkey, keys, room, mallory)

	path := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room))
	code, body = s.As("@alice:test", "PUT", path+"/send/m.room.message/1", map[string]string{"msgtype": "m.text", "body": "alice's words"})
	if code != 200 {
		t.Fatalf("send: %d %v", code, body)
	}
	alices := spec.EventID(body["event_id"].(string))
	receive := func(p *events.PDU) {
		t.Helper()
		if _, err := s.Rooms.ReceivePDU(ctx, p.JSON(), room, keys, nil); err != nil {
			t.Fatalf("%s from %s: %v", p.Type(), remote, err)
		}
		last = p
	}
	ev, err := s.Rooms.Event(ctx, "@alice:test", room, alices)
	if err != nil || ev == nil {
		t.Fatalf("alice's event: %v", err)
	}
	last = ev.PDU // the room's latest: the remote builds on it

	// mallory has power level 0 and another server: the redaction of
	// alice's event is accepted, and not applied.
	receive(remoteRedaction(t, s, rkey, room, mallory, last, alices))
	if !strings.Contains(timeline(t, s, room), "alice's words") {
		t.Fatal("a remote user without the redact level redacted a local user's message")
	}

	// mallory's own message: redacted by mallory.
	msg := remoteEvent(t, s, rkey, room, mallory, last, "m.room.message", nil, `{"msgtype":"m.text","body":"mallory's words"}`)
	receive(msg)
	if !strings.Contains(timeline(t, s, room), "mallory's words") {
		t.Fatal("mallory's message is not in the timeline")
	}
	receive(remoteRedaction(t, s, rkey, room, mallory, last, msg.EventID()))
	if strings.Contains(timeline(t, s, room), "mallory's words") {
		t.Fatal("mallory's redaction of their own message was not applied")
	}

	// With the redact level, mallory may redact alice's message.
	code, body = s.As("@alice:test", "PUT", path+"/state/m.room.power_levels/", map[string]any{
		"users": map[string]int{string(mallory): 50}, "redact": 50,
	})
	if code != 200 {
		t.Fatalf("power levels: %d %v", code, body)
	}
	pl, err := s.Rooms.Event(ctx, "@alice:test", room, spec.EventID(body["event_id"].(string)))
	if err != nil || pl == nil {
		t.Fatalf("power levels event: %v", err)
	}
	receive(remoteRedaction(t, s, rkey, room, mallory, pl.PDU, alices))
	if strings.Contains(timeline(t, s, room), "alice's words") {
		t.Fatal("a redaction by a remote moderator was not applied")
	}
}

// joinFromRemote joins user of the remote server through make_join and
// send_join, and returns the join.
func joinFromRemote(t *testing.T, s *servertest.Server, rkey events.SigningKey, keys keyMap, room spec.RoomID, user spec.UserID) *events.PDU {
	t.Helper()
	ctx := context.Background()
	v, _ := s.Rooms.RoomVersion(room)
	tmpl, v, err := s.Rooms.MakeJoin(ctx, room, user, []spec.RoomVersion{v})
	if err != nil {
		t.Fatal(err)
	}
	tj := gjson.ParseBytes(tmpl)
	ids := func(key string) (out []spec.EventID) {
		for _, id := range tj.Get(key).Array() {
			out = append(out, spec.EventID(id.String()))
		}
		return out
	}
	sk := string(user)
	join, err := events.Build(events.ProtoEvent{Type: spec.MRoomMember, StateKey: &sk, Sender: user, RoomID: room,
		Content: []byte(`{"membership":"join"}`), PrevEvents: ids("prev_events"), AuthEvents: ids("auth_events"),
		Depth: tj.Get("depth").Int(), OriginServerTS: time.Now().UnixMilli()}, v, rkey)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Rooms.SendJoin(ctx, remote, room, join.EventID(), join.JSON(), keys); err != nil {
		t.Fatal(err)
	}
	return join
}

// remoteRedaction is a remote user's redaction of target, after prev.
func remoteRedaction(t *testing.T, s *servertest.Server, key events.SigningKey, room spec.RoomID, sender spec.UserID, prev *events.PDU, target spec.EventID) *events.PDU {
	t.Helper()
	ctx := context.Background()
	state, err := s.Rooms.State(ctx, "@alice:test", room)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.Rooms.RoomVersion(room)
	content := `{}`
	if v.AtLeast11() {
		content = `{"redacts":"` + string(target) + `"}` // v11+: "redacts" moved into content
	}
	m := authrules.NewStateMap(state...)
	var auth []spec.EventID
	for _, k := range authrules.AuthEventKeys(spec.MRoomRedaction, nil, sender, gjson.Parse(content), v) {
		if ev := m.Get(k.Type, k.StateKey); ev != nil {
			auth = append(auth, ev.EventID())
		}
	}
	p, err := events.Build(events.ProtoEvent{Type: spec.MRoomRedaction, Sender: sender, RoomID: room, Content: []byte(content),
		Redacts: target, PrevEvents: []spec.EventID{prev.EventID()}, AuthEvents: auth, Depth: prev.Depth() + 1,
		OriginServerTS: time.Now().UnixMilli()}, v, key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRemoteRedactionBeforeItsTarget: a redaction that arrives before the
// event it names is held back from clients, and applied (and shown) when
// that event arrives ("Handling redactions", room versions 3+).
func TestRemoteRedactionBeforeItsTarget(t *testing.T) {
	s := servertest.New(t, "", federationOn)
	ctx := context.Background()
	code, body := s.As("@alice:test", "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
	if code != 200 {
		t.Fatalf("createRoom: %d %v", code, body)
	}
	room := spec.RoomID(body["room_id"].(string))
	rkey := newKey(t, remote)
	keys := keyMap{remote + " " + rkey.KeyID: rkey.Private.Public().(ed25519.PublicKey)}
	mallory := spec.UserID("@mallory:" + remote)
	join := joinFromRemote(t, s, rkey, keys, room, mallory)

	// mallory's message and its redaction, which comes first (both after
	// the join: the redaction does not name the message as a prev event).
	msg := remoteEvent(t, s, rkey, room, mallory, join, "m.room.message", nil, `{"msgtype":"m.text","body":"mallory's late words"}`)
	red := remoteRedaction(t, s, rkey, room, mallory, join, msg.EventID())
	if _, err := s.Rooms.ReceivePDU(ctx, red.JSON(), room, keys, nil); err != nil {
		t.Fatalf("the redaction was refused: %v", err)
	}
	if tl := timeline(t, s, room); strings.Contains(tl, string(red.EventID())) {
		t.Fatalf("a redaction whose target has not arrived reached clients: %s", tl)
	}
	if sy := syncText(t, s); strings.Contains(sy, string(red.EventID())) {
		t.Fatalf("a redaction whose target has not arrived reached /sync: %s", sy)
	}
	// Sent again: still held, without error.
	if _, err := s.Rooms.ReceivePDU(ctx, red.JSON(), room, keys, nil); err != nil {
		t.Fatalf("the held redaction, sent again: %v", err)
	}

	if _, err := s.Rooms.ReceivePDU(ctx, msg.JSON(), room, keys, nil); err != nil {
		t.Fatalf("the target was refused: %v", err)
	}
	tl := timeline(t, s, room)
	if strings.Contains(tl, "mallory's late words") {
		t.Fatalf("the held redaction was not applied when its target arrived: %s", tl)
	}
	if !strings.Contains(tl, string(red.EventID())) || !strings.Contains(tl, string(msg.EventID())) {
		t.Fatalf("the redaction and its (redacted) target are not both in the timeline: %s", tl)
	}
	if sy := syncText(t, s); strings.Contains(sy, "mallory's late words") || !strings.Contains(sy, string(red.EventID())) {
		t.Fatalf("/sync after the target arrived: %s", sy)
	}
	ev, err := s.Rooms.Event(ctx, "@alice:test", room, msg.EventID())
	if err != nil || ev == nil || ev.RedactedBecause == nil || ev.RedactedBecause.EventID() != red.EventID() {
		t.Fatalf("the target, as stored: %+v %v", ev, err)
	}
	// A restart reads the same from the database.
	s.Close()
	s = servertest.New(t, s.Dir, federationOn)
	if tl := timeline(t, s, room); strings.Contains(tl, "mallory's late words") || !strings.Contains(tl, string(red.EventID())) {
		t.Fatalf("after a restart: %s", tl)
	}
}

// syncText is alice's initial /sync, as text.
func syncText(t *testing.T, s *servertest.Server) string {
	t.Helper()
	res, err := s.SyncQuery(s.Token("@alice:test"), "")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(res)
	return string(raw)
}
