package federation_test

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/spec"
)

// TestRemoteRestrictedJoin: a remote user who is in a room a restricted
// room's join rule allows gets a make_join template vouched for by a local
// user who may invite, and the join is signed by this server at
// send_join; a remote user in no allowed room gets no template, and a join
// naming a local authoriser without being allowed is refused unsigned.
func TestRemoteRestrictedJoin(t *testing.T) {
	s := servertest.New(t, "", federationOn)
	ctx := context.Background()
	create := func(body map[string]any) spec.RoomID {
		t.Helper()
		code, out := s.As("@alice:test", "POST", "/_matrix/client/v3/createRoom", body)
		if code != 200 {
			t.Fatalf("createRoom: %d %v", code, out)
		}
		return spec.RoomID(out["room_id"].(string))
	}
	allowed := create(map[string]any{"preset": "public_chat", "room_version": "10"})
	restricted := create(map[string]any{"preset": "public_chat", "room_version": "10", "initial_state": []any{map[string]any{
		"type": "m.room.join_rules", "state_key": "",
		"content": map[string]any{"join_rule": "restricted", "allow": []any{map[string]string{"type": "m.room_membership", "room_id": string(allowed)}}},
	}}})
	rkey := newKey(t, remote)
	keys := keyMap{remote + " " + rkey.KeyID: rkey.Private.Public().(ed25519.PublicKey)}
	mallory, eve := spec.UserID("@mallory:"+remote), spec.UserID("@eve:"+remote)
	joinFromRemote(t, s, rkey, keys, allowed, mallory)

	tmpl, v, err := s.Rooms.MakeJoin(ctx, restricted, mallory, []spec.RoomVersion{"10"})
	if err != nil {
		t.Fatalf("make_join of a member of the allowed room: %v", err)
	}
	if via := gjson.GetBytes(tmpl, "content.join_authorised_via_users_server").String(); via != "@alice:test" {
		t.Fatalf("the template's authoriser is %q in %s", via, tmpl)
	}
	if _, _, err := s.Rooms.MakeJoin(ctx, restricted, eve, []spec.RoomVersion{"10"}); err == nil {
		t.Fatal("make_join for a user in no allowed room")
	}

	build := func(user spec.UserID) *events.PDU {
		t.Helper()
		tj := gjson.ParseBytes(tmpl)
		ids := func(key string) (out []spec.EventID) {
			for _, id := range tj.Get(key).Array() {
				out = append(out, spec.EventID(id.String()))
			}
			return out
		}
		sk := string(user)
		p, err := events.Build(events.ProtoEvent{Type: spec.MRoomMember, StateKey: &sk, Sender: user, RoomID: restricted,
			Content:    []byte(`{"join_authorised_via_users_server":"@alice:test","membership":"join"}`),
			PrevEvents: ids("prev_events"), AuthEvents: ids("auth_events"), Depth: tj.Get("depth").Int(),
			OriginServerTS: time.Now().UnixMilli()}, v, rkey)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// eve names alice without being allowed: refused, not signed.
	bad := build(eve)
	if _, _, err := s.Rooms.SendJoin(ctx, remote, restricted, bad.EventID(), bad.JSON(), keys); err == nil {
		t.Fatal("a restricted join of a user in no allowed room was accepted")
	}
	join := build(mallory)
	if _, _, err := s.Rooms.SendJoin(ctx, remote, restricted, join.EventID(), join.JSON(), keys); err != nil {
		t.Fatalf("send_join: %v", err)
	}
	if s.Rooms.Membership(mallory, restricted) != spec.Join {
		t.Fatal("mallory is not joined")
	}
	stored, err := s.Rooms.EventForServer(ctx, remote, join.EventID())
	if err != nil {
		t.Fatal(err)
	}
	if !gjson.GetBytes(stored, "signatures.test").IsObject() || !gjson.GetBytes(stored, "signatures."+gjson.Escape(remote)).IsObject() {
		t.Fatalf("the stored join is not signed by both servers: %s", stored)
	}
}
