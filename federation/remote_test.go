package federation_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/federation"
	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/server/app"
	"github.com/chatalot/chatalot/spec"
)

// A remote server as the test plays it: its key and the keys the local
// server may fetch (a map instead of HTTPS).
const remote = "remote.test"

type keyMap map[string]ed25519.PublicKey

func (k keyMap) VerifyKey(_ context.Context, server, keyID string, _ time.Time) (ed25519.PublicKey, error) {
	if pub, ok := k[server+" "+keyID]; ok {
		return pub, nil
	}
	return nil, fmt.Errorf("no key %s of %s", keyID, server)
}

func newKey(t *testing.T, server string) events.SigningKey {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return events.SigningKey{ServerName: server, KeyID: "ed25519:r1", Private: priv}
}

func federationOn(c *app.Config) { c.Federation = &federation.Config{} }

// remoteEvent builds an event of a remote user on the room's current state
// (its auth events chosen there), after prev.
func remoteEvent(t *testing.T, s *servertest.Server, key events.SigningKey, room spec.RoomID, sender spec.UserID, prev *events.PDU, typ string, stateKey *string, content string) *events.PDU {
	t.Helper()
	ctx := context.Background()
	state, err := s.Rooms.State(ctx, "@alice:test", room)
	if err != nil {
		t.Fatal(err)
	}
	m := authrules.NewStateMap(state...)
	v, _ := s.Rooms.RoomVersion(room)
	var auth []spec.EventID
	for _, k := range authrules.AuthEventKeys(typ, stateKey, sender, gjson.Parse(content), v) {
		if ev := m.Get(k.Type, k.StateKey); ev != nil {
			auth = append(auth, ev.EventID())
		}
	}
	p, err := events.Build(events.ProtoEvent{Type: typ, StateKey: stateKey, Sender: sender, RoomID: room, Content: []byte(content),
		PrevEvents: []spec.EventID{prev.EventID()}, AuthEvents: auth, Depth: prev.Depth() + 1, OriginServerTS: time.Now().UnixMilli()}, v, key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeOrigin plays the server a PDU came from, as rooms asks it for
// what it lacks; a nil func answers an error.
type fakeOrigin struct {
	event    func(context.Context, spec.EventID) ([]byte, error)
	missing  func(earliest, latest []spec.EventID, limit int) ([][]byte, error)
	stateIDs func(spec.EventID) (state, chain []spec.EventID, err error)
}

func (o fakeOrigin) Event(ctx context.Context, id spec.EventID) ([]byte, error) {
	if o.event == nil {
		return nil, errors.New("no /event")
	}
	return o.event(ctx, id)
}

func (o fakeOrigin) MissingEvents(_ context.Context, _ spec.RoomID, earliest, latest []spec.EventID, limit int, _ int64) ([][]byte, error) {
	if o.missing == nil {
		return nil, errors.New("no get_missing_events")
	}
	return o.missing(earliest, latest, limit)
}

func (o fakeOrigin) StateIDs(_ context.Context, _ spec.RoomID, id spec.EventID) ([]spec.EventID, []spec.EventID, error) {
	if o.stateIDs == nil {
		return nil, nil, errors.New("no /state_ids")
	}
	return o.stateIDs(id)
}

func timeline(t *testing.T, s *servertest.Server, room spec.RoomID) string {
	_, raw := s.DoRaw(s.Token("@alice:test"), "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/messages?dir=b&limit=50", nil)
	return string(raw)
}

func queued(t *testing.T, s *servertest.Server, dest string) int {
	var n int
	if err := s.DB.QueryRow(context.Background(), `SELECT count(*) FROM federation_outbound WHERE destination = $1`, dest).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRemoteEventsAreChecked: what another server sends enters a room only
// through rooms' checks — its signature, its content hash, the auth rules
// against its auth events and against the current state — and the
// outbound queue holds events for a server only once it has a member.
func TestRemoteEventsAreChecked(t *testing.T) {
	s := servertest.New(t, "", federationOn)
	ctx := context.Background()
	code, body := s.As("@alice:test", "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
	if code != 200 {
		t.Fatalf("createRoom: %d %v", code, body)
	}
	room := spec.RoomID(body["room_id"].(string))
	s.As("@alice:test", "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/send/m.room.message/1", map[string]string{"msgtype": "m.text", "body": "alone"})
	if n := queued(t, s, remote); n != 0 {
		t.Fatalf("a room without remote members queued %d events", n)
	}

	rkey := newKey(t, remote)
	keys := keyMap{remote + " " + rkey.KeyID: rkey.Private.Public().(ed25519.PublicKey)}
	mallory := spec.UserID("@mallory:" + remote)

	// The join: make_join's template, completed and signed by the remote.
	tmpl, v, err := s.Rooms.MakeJoin(ctx, room, mallory, []spec.RoomVersion{spec.DefaultRoomVersion})
	if err != nil {
		t.Fatal(err)
	}
	tj := gjson.ParseBytes(tmpl)
	var prevs, auths []spec.EventID
	for _, id := range tj.Get("prev_events").Array() {
		prevs = append(prevs, spec.EventID(id.String()))
	}
	for _, id := range tj.Get("auth_events").Array() {
		auths = append(auths, spec.EventID(id.String()))
	}
	sk := string(mallory)
	join, err := events.Build(events.ProtoEvent{Type: spec.MRoomMember, StateKey: &sk, Sender: mallory, RoomID: room,
		Content: []byte(`{"membership":"join"}`), PrevEvents: prevs, AuthEvents: auths, Depth: tj.Get("depth").Int(),
		OriginServerTS: time.Now().UnixMilli()}, v, rkey)
	if err != nil {
		t.Fatal(err)
	}
	// Signed by another server's key: refused.
	if _, _, err := s.Rooms.SendJoin(ctx, remote, room, join.EventID(), join.JSON(), keyMap{}); err == nil {
		t.Fatal("a join whose signature cannot be verified was accepted")
	}
	state, chain, err := s.Rooms.SendJoin(ctx, remote, room, join.EventID(), join.JSON(), keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(state) < 4 || len(chain) == 0 {
		t.Fatalf("send_join returned %d state events and an auth chain of %d", len(state), len(chain))
	}
	if s.Rooms.Membership(mallory, room) != spec.Join {
		t.Fatal("the remote user is not joined")
	}

	// Now the room has a remote member: alice's messages are queued for it.
	s.As("@alice:test", "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/send/m.room.message/2", map[string]string{"msgtype": "m.text", "body": "hi mallory"})
	if n := queued(t, s, remote); n != 1 {
		t.Fatalf("queued for %s: %d events, want 1", remote, n)
	}

	msg := remoteEvent(t, s, rkey, room, mallory, join, "m.room.message", nil, `{"msgtype":"m.text","body":"signed and fine"}`)
	if _, err := s.Rooms.ReceivePDU(ctx, msg.JSON(), room, keys, nil); err != nil {
		t.Fatalf("a valid remote message was refused: %v", err)
	}
	if !strings.Contains(timeline(t, s, room), "signed and fine") {
		t.Fatal("the accepted message is not in the timeline")
	}
	// /event: served to a server with a member who may see the event, to
	// no other.
	if _, err := s.Rooms.EventForServer(ctx, remote, msg.EventID()); err != nil {
		t.Errorf("/event for the room's remote server: %v", err)
	}
	if _, err := s.Rooms.EventForServer(ctx, "other.test", msg.EventID()); err == nil {
		t.Error("/event served to a server with no member in the room")
	}
	// Accepting it again changes nothing.
	if _, err := s.Rooms.ReceivePDU(ctx, msg.JSON(), room, keys, nil); err != nil {
		t.Fatalf("a repeated event: %v", err)
	}

	// An event after one this server lacks: refused without a way to
	// fetch it, accepted after it with one.
	first := remoteEvent(t, s, rkey, room, mallory, msg, "m.room.message", nil, `{"msgtype":"m.text","body":"missed"}`)
	second := remoteEvent(t, s, rkey, room, mallory, first, "m.room.message", nil, `{"msgtype":"m.text","body":"after the missed one"}`)
	if _, err := s.Rooms.ReceivePDU(ctx, second.JSON(), room, keys, nil); err == nil {
		t.Fatal("an event after an unknown one was accepted without it")
	}
	fetched := 0
	fetch := func(_ context.Context, id spec.EventID) ([]byte, error) {
		fetched++
		if id != first.EventID() {
			return nil, fmt.Errorf("no event %s", id)
		}
		return first.JSON(), nil
	}
	if _, err := s.Rooms.ReceivePDU(ctx, second.JSON(), room, keys, fakeOrigin{event: fetch}); err != nil {
		t.Fatalf("with the missing event fetched: %v", err)
	}
	if tl := timeline(t, s, room); fetched != 1 || !strings.Contains(tl, `"missed"`) || !strings.Contains(tl, "after the missed one") {
		t.Fatalf("fetched %d events; timeline %s", fetched, tl)
	}
	// A fetch that answers another event is refused.
	third := remoteEvent(t, s, rkey, room, mallory, remoteEvent(t, s, rkey, room, mallory, second, "m.room.message", nil, `{"body":"x"}`), "m.room.message", nil, `{"body":"y"}`)
	lie := func(context.Context, spec.EventID) ([]byte, error) { return msg.JSON(), nil }
	if _, err := s.Rooms.ReceivePDU(ctx, third.JSON(), room, keys, fakeOrigin{event: lie}); err == nil {
		t.Fatal("accepted after a fetch that answered another event")
	}

	// Forged: signed by a key that is not the server's.
	forged := remoteEvent(t, s, newKey(t, remote), room, mallory, join, "m.room.message", nil, `{"msgtype":"m.text","body":"forged"}`)
	if _, err := s.Rooms.ReceivePDU(ctx, forged.JSON(), room, keys, nil); err == nil {
		t.Fatal("a forged event was accepted")
	}
	// Tampered: content changed after signing (the content hash no longer
	// matches; the signature covers only the redacted form).
	good := remoteEvent(t, s, rkey, room, mallory, join, "m.room.message", nil, `{"msgtype":"m.text","body":"original"}`)
	tampered := strings.Replace(string(good.JSON()), `"original"`, `"tampered"`, 1)
	if _, err := s.Rooms.ReceivePDU(ctx, []byte(tampered), room, keys, nil); err == nil {
		t.Fatal("a tampered event was accepted")
	}
	// Not a member: the auth rules refuse.
	eve := remoteEvent(t, s, rkey, room, "@eve:"+remote, join, "m.room.message", nil, `{"msgtype":"m.text","body":"from outside"}`)
	if _, err := s.Rooms.ReceivePDU(ctx, eve.JSON(), room, keys, nil); err == nil {
		t.Fatal("an event of a non-member was accepted")
	}
	// Built before a ban, sent after it: its auth events allow it, the
	// current state does not (soft-fail).
	late := remoteEvent(t, s, rkey, room, mallory, join, "m.room.message", nil, `{"msgtype":"m.text","body":"after the ban"}`)
	if code, body := s.As("@alice:test", "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/ban", map[string]string{"user_id": string(mallory)}); code != 200 {
		t.Fatalf("ban: %d %v", code, body)
	}
	if _, err := s.Rooms.ReceivePDU(ctx, late.JSON(), room, keys, nil); !errors.Is(err, rooms.ErrSoftFailed) {
		t.Fatalf("an event of a banned user: %v, want soft-failed", err)
	}
	tl := timeline(t, s, room)
	for _, bad := range []string{"forged", "tampered", "from outside", "after the ban"} {
		if strings.Contains(tl, bad) {
			t.Errorf("%q reached the timeline", bad)
		}
	}
}

// TestFederationOff: with federation off (the default) no federation route
// but the key and version ones answers.
func TestFederationOff(t *testing.T) {
	s := servertest.New(t, "")
	for _, p := range []struct{ method, path string }{
		{"PUT", "/_matrix/federation/v1/send/1"},
		{"GET", "/_matrix/federation/v1/make_join/!r:test/@u:other"},
		{"PUT", "/_matrix/federation/v2/send_join/!r:test/$e"},
		{"GET", "/_matrix/federation/v1/state_ids/!r:test"},
		{"GET", "/_matrix/federation/v1/event/$e"},
	} {
		if code, _ := s.DoRaw("", p.method, p.path, nil); code != 404 {
			t.Errorf("%s %s: %d with federation off, want 404", p.method, p.path, code)
		}
	}
	for _, p := range []string{"/_matrix/key/v2/server", "/_matrix/federation/v1/version"} {
		if code, _ := s.DoRaw("", "GET", p, nil); code != 200 {
			t.Errorf("GET %s: %d, want 200", p, code)
		}
	}
	// With it on, the routes exist and want a signature.
	on := servertest.New(t, "", federationOn)
	if code, _ := on.DoRaw("", "PUT", "/_matrix/federation/v1/send/1", map[string]any{}); code != 401 {
		t.Errorf("an unsigned transaction: %d, want 401", code)
	}
}
