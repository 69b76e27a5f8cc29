package tests

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/chatalot/chatalot/tests/harness"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func wantHTTPError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil || he.Response.StatusCode != status || he.RespError == nil || he.RespError.ErrCode != code {
		t.Fatalf("got %v, want %d %s", err, status, code)
	}
}

func TestRoomsWithMautrix(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	alice := newClient(t, s.URL, "alice")
	bob := newClient(t, s.URL, "bob")

	for _, v := range []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
		for _, preset := range []string{"private_chat", "public_chat", "trusted_private_chat"} {
			r, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: preset, RoomVersion: id.RoomVersion(v), Name: "room " + v + " " + preset, Invite: []id.UserID{bob.UserID}})
			if err != nil {
				t.Fatalf("create v%s %s: %v", v, preset, err)
			}
			var create event.CreateEventContent
			if err := alice.StateEvent(ctx, r.RoomID, event.StateCreate, "", &create); err != nil || string(create.RoomVersion) != v {
				t.Fatalf("v%s %s: create %v %v", v, preset, create, err)
			}
			if _, err := bob.JoinRoomByID(ctx, r.RoomID); err != nil {
				t.Fatalf("bob joins v%s %s: %v", v, preset, err)
			}
			// Event IDs differ per version ($x:server, "/" in v3): the
			// client sends and reads back by ID.
			sent, err := bob.SendText(ctx, r.RoomID, "hello")
			if err != nil {
				t.Fatalf("send in v%s: %v", v, err)
			}
			if got, err := alice.GetEvent(ctx, r.RoomID, sent.EventID); err != nil || got.ID != sent.EventID {
				t.Fatalf("read back %s in v%s: %v", sent.EventID, v, err)
			}
		}
	}
	_, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "13"})
	wantHTTPError(t, err, 400, "M_UNSUPPORTED_ROOM_VERSION")

	// Membership: forbidden transitions, then the allowed ones.
	r, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.JoinRoomByID(ctx, r.RoomID)
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	if _, err := alice.InviteUser(ctx, r.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, r.RoomID); err != nil {
		t.Fatal(err)
	}
	_, err = bob.KickUser(ctx, r.RoomID, &mautrix.ReqKickUser{UserID: alice.UserID})
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	if _, err := alice.BanUser(ctx, r.RoomID, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	_, err = bob.SendText(ctx, r.RoomID, "banned")
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	if _, err := alice.UnbanUser(ctx, r.RoomID, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.InviteUser(ctx, r.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, r.RoomID); err != nil {
		t.Fatal(err)
	}

	// Messages, state and pagination both ways.
	var sent []id.EventID
	for i := 0; i < 30; i++ {
		c := alice
		if i%2 == 1 {
			c = bob
		}
		resp, err := c.SendText(ctx, r.RoomID, fmt.Sprint("message ", i))
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, resp.EventID)
	}
	if _, err := alice.SendStateEvent(ctx, r.RoomID, event.StateTopic, "", &event.TopicEventContent{Topic: "a topic"}); err != nil {
		t.Fatal(err)
	}
	var topic event.TopicEventContent
	if err := bob.StateEvent(ctx, r.RoomID, event.StateTopic, "", &topic); err != nil || topic.Topic != "a topic" {
		t.Fatalf("topic %v %v", topic, err)
	}
	filter := &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}
	var back []id.EventID
	from := ""
	for {
		msgs, err := bob.Messages(ctx, r.RoomID, from, "", mautrix.DirectionBackward, filter, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msgs.Chunk {
			back = append(back, ev.ID)
		}
		if msgs.End == "" {
			break
		}
		from = msgs.End
	}
	if len(back) != len(sent) {
		t.Fatalf("paged back %d messages, want %d", len(back), len(sent))
	}
	for i := range back {
		if back[i] != sent[len(sent)-1-i] {
			t.Fatalf("backward page order differs at %d", i)
		}
	}
	var fwd []id.EventID
	from = "s0"
	for {
		msgs, err := bob.Messages(ctx, r.RoomID, from, "", mautrix.DirectionForward, filter, 6)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msgs.Chunk {
			fwd = append(fwd, ev.ID)
		}
		if msgs.End == "" {
			break
		}
		from = msgs.End
	}
	if fmt.Sprint(fwd) != fmt.Sprint(sent) {
		t.Fatalf("forward pagination repeated or skipped: got %d events", len(fwd))
	}
	cr, err := bob.Context(ctx, r.RoomID, sent[15], nil, 6)
	if err != nil {
		t.Fatal(err)
	}
	if cr.Event.ID != sent[15] || len(cr.EventsBefore) != 3 || len(cr.EventsAfter) != 3 || cr.EventsAfter[0].ID != sent[16] {
		t.Fatalf("context: %s, %d before, %d after", cr.Event.ID, len(cr.EventsBefore), len(cr.EventsAfter))
	}

	// Redaction: own events yes, others' not without power.
	_, err = bob.RedactEvent(ctx, r.RoomID, sent[0])
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	if _, err := bob.RedactEvent(ctx, r.RoomID, sent[1], mautrix.ReqRedact{Reason: "typo"}); err != nil {
		t.Fatal(err)
	}
	ev, err := alice.GetEvent(ctx, r.RoomID, sent[1])
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Content.Raw) != 0 {
		t.Fatalf("redacted event still has content: %v", ev.Content.Raw)
	}
	// Leaving stops sending.
	if _, err := bob.LeaveRoom(ctx, r.RoomID); err != nil {
		t.Fatal(err)
	}
	_, err = bob.SendText(ctx, r.RoomID, "after leaving")
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	joined, err := bob.JoinedRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range joined.JoinedRooms {
		if j == r.RoomID {
			t.Fatal("a left room is still in joined_rooms")
		}
	}
}

func TestEncryptionPolicyEndToEnd(t *testing.T) {
	ctx := context.Background()
	for _, policy := range []string{"required", "default", "optional"} {
		t.Run(policy, func(t *testing.T) {
			s := harness.Start(t, harness.WithArgs("--encryption", policy))
			c := newClient(t, s.URL, "u")
			r, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			var enc event.EncryptionEventContent
			encErr := c.StateEvent(ctx, r.RoomID, event.StateEncryption, "", &enc)
			_, sendErr := c.SendText(ctx, r.RoomID, "plaintext")
			switch policy {
			case "required":
				if encErr != nil || enc.Algorithm != id.AlgorithmMegolmV1 {
					t.Fatalf("room not encrypted: %v", encErr)
				}
				wantHTTPError(t, sendErr, 403, "M_FORBIDDEN")
			case "default":
				if encErr != nil {
					t.Fatalf("room not encrypted: %v", encErr)
				}
				if sendErr != nil {
					t.Fatalf("plaintext refused under default: %v", sendErr)
				}
			case "optional":
				wantHTTPError(t, encErr, 404, "M_NOT_FOUND")
				if sendErr != nil {
					t.Fatal(sendErr)
				}
			}
		})
	}
}

func TestProfileChangesAndDeactivationReachRooms(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	alice := newClient(t, s.URL, "alice")
	bob := newClient(t, s.URL, "bob")
	r, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.JoinRoomByID(ctx, r.RoomID); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
		t.Fatal(err)
	}
	var member event.MemberEventContent
	if err := bob.StateEvent(ctx, r.RoomID, event.StateMember, alice.UserID.String(), &member); err != nil {
		t.Fatal(err)
	}
	if member.Displayname != "Alice Liddell" || member.Membership != event.MembershipJoin {
		t.Fatalf("alice's member event after a rename: %+v", member)
	}
	code, _, body := getJSON(t, "POST", s.URL+"/_matrix/client/v3/account/deactivate",
		`{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"correct horse battery staple"}}`,
		"Authorization", "Bearer "+alice.AccessToken)
	if code != 200 {
		t.Fatalf("deactivate: %d %v", code, body)
	}
	if err := bob.StateEvent(ctx, r.RoomID, event.StateMember, alice.UserID.String(), &member); err != nil {
		t.Fatal(err)
	}
	if member.Membership != event.MembershipLeave {
		t.Fatalf("a deactivated user is still %s in the room", member.Membership)
	}
	members, err := bob.JoinedMembers(ctx, r.RoomID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := members.Joined[alice.UserID]; ok {
		t.Fatal("a deactivated user is still a joined member")
	}
}
