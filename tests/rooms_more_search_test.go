package tests

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/chatalot/chatalot/tests/harness"
)

func searchIDs(res *mautrix.RespSearch) []id.EventID {
	out := make([]id.EventID, len(res.Results))
	for i, r := range res.Results {
		out[i] = r.Event.ID
	}
	return out
}

// TestSearchAndReports: server-side search with mautrix-go finds plaintext
// messages, names and topics the user may see, never ciphertext, never what
// another user may not see; reports of events, rooms and users are taken
// without telling the reporter anything.
func TestSearchAndReports(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	alice := newClient(t, s.URL, "alice")
	bob := newClient(t, s.URL, "bob")
	eve := newClient(t, s.URL, "eve")
	r, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Trip planning", Topic: "Lisbon in May",
		Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	room := r.RoomID
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	flights := sendMsg(t, alice, room, &event.MessageEventContent{Body: "Flights to Lisbon are cheap on Tuesdays"})
	hotel := sendMsg(t, bob, room, &event.MessageEventContent{Body: "I found a hotel near the river in Lisbon"})
	sendMsg(t, bob, room, &event.MessageEventContent{Body: "unrelated chatter"})
	// An encrypted room: its ciphertext is never searched.
	enc, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendMessageEvent(ctx, enc.RoomID, event.EventEncrypted, map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "Lisbon"}); err != nil {
		t.Fatal(err)
	}
	// Eve's own room about Lisbon.
	er, err := eve.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	evesOwn := sendMsg(t, eve, er.RoomID, &event.MessageEventContent{Body: "Lisbon is lovely"})

	res, err := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "lisbon", Keys: []string{"content.body"}, OrderBy: "recent"})
	if err != nil {
		t.Fatal(err)
	}
	sameList(t, "Bob, recent", searchIDs(res), hotel, flights)
	if res.Count != 2 || len(res.Highlights) == 0 {
		t.Fatalf("count %d, highlights %v", res.Count, res.Highlights)
	}
	// All keys: the name and topic are found too; grouped by room with
	// the current state.
	all, err := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "Lisbon", IncludeState: true,
		Groupings:    mautrix.SearchGroupings{GroupBy: []mautrix.SearchGroup{{Key: "room_id"}}},
		EventContext: mautrix.SearchEventContext{BeforeLimit: 1, AfterLimit: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if all.Count != 3 || len(all.Groups["room_id"][string(room)].Results) != 3 || len(all.State[room]) == 0 {
		t.Fatalf("all keys: %+v", all)
	}
	// Pages.
	p1, err := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "lisbon", Keys: []string{"content.body"}, OrderBy: "recent",
		Filter: &mautrix.FilterPart{Limit: 1}})
	if err != nil || p1.NextBatch == "" {
		t.Fatalf("page 1: %+v %v", p1, err)
	}
	p2, err := bob.Search(ctx, &mautrix.ReqSearch{NextBatch: p1.NextBatch, SearchTerm: "lisbon", Keys: []string{"content.body"}, OrderBy: "recent",
		Filter: &mautrix.FilterPart{Limit: 1}})
	if err != nil {
		t.Fatal(err)
	}
	sameList(t, "pages", append(searchIDs(p1), searchIDs(p2)...), hotel, flights)
	_, err = bob.Search(ctx, &mautrix.ReqSearch{NextBatch: "s42", SearchTerm: "lisbon"})
	wantHTTPError(t, err, 400, "M_INVALID_PARAM")

	// Eve finds only her own message.
	er2, err := eve.Search(ctx, &mautrix.ReqSearch{SearchTerm: "lisbon"})
	if err != nil {
		t.Fatal(err)
	}
	sameList(t, "Eve", searchIDs(er2), evesOwn)

	// Reports.
	if err := bob.ReportEvent(ctx, room, flights, "spam"); err != nil {
		t.Fatal(err)
	}
	if err := eve.ReportRoom(ctx, room, "I was sent an invite I did not want"); err != nil {
		t.Fatal(err)
	}
	if err := eve.ReportUser(ctx, alice.UserID, "rude"); err != nil {
		t.Fatal(err)
	}
	// Whether the user exists or not, the answer is the same.
	if err := eve.ReportUser(ctx, id.NewUserID("nobody", alice.UserID.Homeserver()), "rude"); err != nil {
		t.Fatal(err)
	}
	// Eve, not in the room, cannot report its events: the same 404 as for
	// an event that does not exist.
	err = eve.ReportEvent(ctx, room, flights, "spam")
	wantHTTPError(t, err, 404, "M_NOT_FOUND")
	err = bob.ReportEvent(ctx, room, "$does-not-exist", "spam")
	wantHTTPError(t, err, 404, "M_NOT_FOUND")
}
