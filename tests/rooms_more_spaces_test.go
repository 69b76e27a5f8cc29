package tests

import (
	"context"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/chatalot/chatalot/tests/harness"
)

func hierarchyIDs(res *mautrix.RespHierarchy) []id.RoomID {
	out := make([]id.RoomID, len(res.Rooms))
	for i, r := range res.Rooms {
		out[i] = r.RoomID
	}
	return out
}

// TestSpaceWithNestedChildren: a space, a sub-space and rooms, walked with
// mautrix-go's Hierarchy; the walk shows each user only what they may see
// or preview, ends loops, pages, and the room summary previews rooms.
func TestSpaceWithNestedChildren(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	alice := newClient(t, s.URL, "alice")
	bob := newClient(t, s.URL, "bob")
	eve := newClient(t, s.URL, "eve")
	mk := func(req *mautrix.ReqCreateRoom) id.RoomID {
		r, err := alice.CreateRoom(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return r.RoomID
	}
	spaceType := map[string]any{"type": "m.space"}
	top := mk(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Company", CreationContent: spaceType, Invite: []id.UserID{bob.UserID}})
	eng := mk(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Engineering", CreationContent: spaceType})
	general := mk(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "General", RoomAliasName: "general"})
	backend := mk(&mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Backend", Topic: "servers"})
	hr := mk(&mautrix.ReqCreateRoom{Preset: "private_chat", Name: "HR only"})
	via := []string{alice.UserID.Homeserver()}
	child := func(parent, c id.RoomID, order string, suggested bool) {
		if _, err := alice.SendStateEvent(ctx, parent, event.StateSpaceChild, c.String(),
			&event.SpaceChildEventContent{Via: via, Order: order, Suggested: suggested}); err != nil {
			t.Fatal(err)
		}
	}
	child(top, eng, "1", true)
	child(top, general, "2", false)
	child(top, hr, "3", false)
	child(eng, backend, "", true)
	child(eng, top, "", false) // a loop back to the top
	if _, err := alice.SendStateEvent(ctx, backend, event.StateSpaceParent, eng.String(), &event.SpaceParentEventContent{Via: via, Canonical: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, top); err != nil {
		t.Fatal(err)
	}

	res, err := bob.Hierarchy(ctx, top, &mautrix.ReqHierarchy{})
	if err != nil {
		t.Fatal(err)
	}
	// Depth first; HR (invite-only) is hidden from Bob; the loop ends.
	sameList(t, "Bob", hierarchyIDs(res), top, eng, backend, general)
	if res.Rooms[0].Name != "Company" || res.Rooms[0].RoomType != event.RoomTypeSpace || len(res.Rooms[0].ChildrenState) != 3 ||
		res.Rooms[2].Topic != "servers" || res.Rooms[3].CanonicalAlias != id.NewRoomAlias("general", alice.UserID.Homeserver()) {
		t.Fatalf("summaries: %+v %+v", res.Rooms[0], res.Rooms[2])
	}
	all, err := alice.Hierarchy(ctx, top, &mautrix.ReqHierarchy{})
	if err != nil {
		t.Fatal(err)
	}
	sameList(t, "Alice", hierarchyIDs(all), top, eng, backend, general, hr)
	one := 1
	shallow, err := bob.Hierarchy(ctx, top, &mautrix.ReqHierarchy{MaxDepth: &one})
	if err != nil {
		t.Fatal(err)
	}
	sameList(t, "depth 1", hierarchyIDs(shallow), top, eng, general)
	suggested, err := bob.Hierarchy(ctx, top, &mautrix.ReqHierarchy{SuggestedOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	sameList(t, "suggested", hierarchyIDs(suggested), top, eng, backend)
	p1, err := bob.Hierarchy(ctx, top, &mautrix.ReqHierarchy{Limit: 3})
	if err != nil || p1.NextBatch == "" {
		t.Fatalf("page 1: %+v %v", p1, err)
	}
	p2, err := bob.Hierarchy(ctx, top, &mautrix.ReqHierarchy{Limit: 3, From: p1.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	sameList(t, "pages", append(hierarchyIDs(p1), hierarchyIDs(p2)...), top, eng, backend, general)
	_, err = bob.Hierarchy(ctx, top, &mautrix.ReqHierarchy{Limit: 3, From: p1.NextBatch, SuggestedOnly: true})
	wantHTTPError(t, err, 400, "M_INVALID_PARAM")

	// Eve may walk the public sub-space but not the private top space.
	_, err = eve.Hierarchy(ctx, top, &mautrix.ReqHierarchy{})
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	sub, err := eve.Hierarchy(ctx, eng, &mautrix.ReqHierarchy{})
	if err != nil {
		t.Fatal(err)
	}
	sameList(t, "Eve from the sub-space", hierarchyIDs(sub), eng, backend)

	// Room summaries: public rooms without a token, private ones only for
	// their members.
	anon, _ := mautrix.NewClient(s.URL, "", "")
	var sum mautrix.RespRoomSummary
	if err := raw(t, anon, http.MethodGet, anon.BuildClientURL("v1", "room_summary", "#general:"+alice.UserID.Homeserver()), nil, &sum); err != nil ||
		sum.RoomID != general || sum.Name != "General" || sum.Membership != "" {
		t.Fatalf("anonymous summary: %+v %v", sum, err)
	}
	if err := raw(t, bob, http.MethodGet, bob.BuildClientURL("v1", "room_summary", top), nil, &sum); err != nil || sum.Membership != event.MembershipJoin {
		t.Fatalf("Bob's summary of the top space: %+v %v", sum, err)
	}
	for _, c := range []*mautrix.Client{eve, anon} {
		err := raw(t, c, http.MethodGet, c.BuildClientURL("v1", "room_summary", hr), nil, nil)
		wantHTTPError(t, err, 404, "M_NOT_FOUND")
	}
}
