package tests

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/chatalot/chatalot/tests/harness"
)

// TestAliasesAndDirectory: aliases created, resolved (without a token),
// listed, joined through and deleted with mautrix-go; the canonical alias
// checked against them; the published room directory searched and paged.
func TestAliasesAndDirectory(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	alice := newClient(t, s.URL, "alice")
	bob := newClient(t, s.URL, "bob")
	eve := newClient(t, s.URL, "eve")
	server := alice.UserID.Homeserver()
	alias := func(local string) id.RoomAlias { return id.NewRoomAlias(local, server) }

	pub, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Preset: "public_chat", Name: "Cheese lovers",
		Topic: "Tasty tasty cheese", RoomAliasName: "cheese"})
	if err != nil {
		t.Fatal(err)
	}
	priv, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret cheese"})
	if err != nil {
		t.Fatal(err)
	}

	// Resolving needs no access token.
	anon, _ := mautrix.NewClient(s.URL, "", "")
	res, err := anon.ResolveAlias(ctx, alias("cheese"))
	if err != nil || res.RoomID != pub.RoomID || len(res.Servers) != 1 {
		t.Fatalf("resolve: %+v %v", res, err)
	}
	// Bob joins by alias, adds one, which Alice (the room's admin) may
	// delete; Eve may not.
	if _, err := bob.JoinRoom(ctx, alias("cheese").String(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.CreateAlias(ctx, alias("fromage"), pub.RoomID); err != nil {
		t.Fatal(err)
	}
	_, err = bob.CreateAlias(ctx, alias("cheese"), pub.RoomID)
	wantHTTPError(t, err, 409, "M_UNKNOWN")
	_, err = eve.CreateAlias(ctx, alias("mine"), priv.RoomID)
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	_, err = bob.CreateAlias(ctx, id.RoomAlias("#no-server"), pub.RoomID)
	wantHTTPError(t, err, 400, "M_INVALID_PARAM")
	list, err := bob.GetAliases(ctx, pub.RoomID)
	if err != nil || len(list.Aliases) != 2 {
		t.Fatalf("aliases: %+v %v", list, err)
	}
	_, err = eve.GetAliases(ctx, priv.RoomID)
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	_, err = eve.DeleteAlias(ctx, alias("fromage"))
	wantHTTPError(t, err, 403, "M_FORBIDDEN")

	// The canonical alias may only name aliases of the room.
	_, err = alice.SendStateEvent(ctx, pub.RoomID, event.StateCanonicalAlias, "", &event.CanonicalAliasEventContent{
		Alias: alias("cheese"), AltAliases: []id.RoomAlias{alias("fromage")}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = alice.SendStateEvent(ctx, pub.RoomID, event.StateCanonicalAlias, "", &event.CanonicalAliasEventContent{Alias: alias("nowhere")})
	wantHTTPError(t, err, 400, "M_BAD_ALIAS")
	if _, err := alice.DeleteAlias(ctx, alias("fromage")); err != nil {
		t.Fatal(err)
	}
	_, err = anon.ResolveAlias(ctx, alias("fromage"))
	wantHTTPError(t, err, 404, "M_NOT_FOUND")

	// The directory: the public room, not the private one; Bob publishes
	// nothing (power 0), Alice publishes a space too.
	space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Preset: "public_chat", Name: "Cheese space",
		CreationContent: map[string]any{"type": "m.space"}})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
	if err != nil || len(dir.Chunk) != 2 || dir.Chunk[0].RoomID != pub.RoomID || dir.Chunk[0].NumJoinedMembers != 2 ||
		dir.Chunk[0].CanonicalAlias != alias("cheese") || dir.Chunk[0].Topic != "Tasty tasty cheese" {
		t.Fatalf("directory: %+v %v", dir, err)
	}
	page, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 1})
	if err != nil || len(page.Chunk) != 1 || page.NextBatch == "" {
		t.Fatalf("page 1: %+v %v", page, err)
	}
	page2, err := anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 1, Since: page.NextBatch})
	if err != nil || len(page2.Chunk) != 1 || page2.Chunk[0].RoomID != space.RoomID || page2.NextBatch != "" || page2.PrevBatch == "" {
		t.Fatalf("page 2: %+v %v", page2, err)
	}
	var filtered mautrix.RespPublicRooms
	if err := raw(t, eve, http.MethodPost, eve.BuildClientURL("v3", "publicRooms"),
		map[string]any{"filter": map[string]any{"generic_search_term": "cheese", "room_types": []string{"m.space"}}}, &filtered); err != nil ||
		len(filtered.Chunk) != 1 || filtered.Chunk[0].RoomID != space.RoomID {
		t.Fatalf("filtered: %+v %v", filtered, err)
	}
	visURL := bob.BuildClientURL("v3", "directory", "list", "room", pub.RoomID)
	err = raw(t, bob, http.MethodPut, visURL, map[string]any{"visibility": "private"}, nil)
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	if err := raw(t, alice, http.MethodPut, visURL, map[string]any{"visibility": "private"}, nil); err != nil {
		t.Fatal(err)
	}
	var vis struct {
		Visibility string `json:"visibility"`
	}
	if err := raw(t, anon, http.MethodGet, visURL, nil, &vis); err != nil || vis.Visibility != "private" {
		t.Fatalf("visibility: %+v %v", vis, err)
	}
}

// syncingClient runs a mautrix-go sync loop that follows room upgrades the
// way clients do: on a tombstone it joins the replacement room.
type syncingClient struct {
	*mautrix.Client
	mu       sync.Mutex
	messages map[id.RoomID][]string
}

func startSyncing(t *testing.T, cli *mautrix.Client) *syncingClient {
	sc := &syncingClient{Client: cli, messages: map[id.RoomID][]string{}}
	syncer := cli.Syncer.(*mautrix.DefaultSyncer)
	syncer.OnEventType(event.StateTombstone, func(ctx context.Context, ev *event.Event) {
		if ts := ev.Content.AsTombstone(); ts.ReplacementRoom != "" {
			_, _ = cli.JoinRoomByID(ctx, ts.ReplacementRoom)
		}
	})
	syncer.OnEventType(event.EventMessage, func(ctx context.Context, ev *event.Event) {
		sc.mu.Lock()
		sc.messages[ev.RoomID] = append(sc.messages[ev.RoomID], ev.Content.AsMessage().Body)
		sc.mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cli.SyncWithContext(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return sc
}

func (sc *syncingClient) got(room id.RoomID, body string) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for _, b := range sc.messages[room] {
		if b == body {
			return true
		}
	}
	return false
}

// TestUpgradeAndClientsMove: Alice upgrades a private room; Bob's and
// Carol's clients, syncing, see the tombstone and move to the new room
// (they were invited to it); the old room is closed to messages, its
// alias points to the new room, Dave's ban carries over and Eve (never in
// the room) can do nothing with either room.
func TestUpgradeAndClientsMove(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	alice := newClient(t, s.URL, "alice")
	bob := newClient(t, s.URL, "bob")
	carol := newClient(t, s.URL, "carol")
	dave := newClient(t, s.URL, "dave")
	eve := newClient(t, s.URL, "eve")
	old, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "11", Name: "Book club",
		RoomAliasName: "books", Invite: []id.UserID{bob.UserID, carol.UserID, dave.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*mautrix.Client{bob, carol, dave} {
		if _, err := c.JoinRoomByID(ctx, old.RoomID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.BanUser(ctx, old.RoomID, &mautrix.ReqBanUser{UserID: dave.UserID}); err != nil {
		t.Fatal(err)
	}
	bs, cs := startSyncing(t, bob), startSyncing(t, carol)

	upgradeURL := alice.BuildClientURL("v3", "rooms", old.RoomID, "upgrade")
	err = raw(t, bob, http.MethodPost, bob.BuildClientURL("v3", "rooms", old.RoomID, "upgrade"), map[string]any{"new_version": "12"}, nil)
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	err = raw(t, eve, http.MethodPost, eve.BuildClientURL("v3", "rooms", old.RoomID, "upgrade"), map[string]any{"new_version": "12"}, nil)
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	err = raw(t, alice, http.MethodPost, upgradeURL, map[string]any{"new_version": "13"}, nil)
	wantHTTPError(t, err, 400, "M_UNSUPPORTED_ROOM_VERSION")
	var up struct {
		ReplacementRoom id.RoomID `json:"replacement_room"`
	}
	if err := raw(t, alice, http.MethodPost, upgradeURL, map[string]any{"new_version": "12"}, &up); err != nil || up.ReplacementRoom == "" {
		t.Fatalf("upgrade: %+v %v", up, err)
	}
	neu := up.ReplacementRoom

	// Both clients follow the tombstone into the new room.
	waitFor(t, 20*time.Second, "bob and carol in the new room", func() bool {
		m, err := alice.JoinedMembers(ctx, neu)
		if err != nil {
			return false
		}
		_, b := m.Joined[bob.UserID]
		_, c := m.Joined[carol.UserID]
		return b && c
	})
	sendMsg(t, alice, neu, &event.MessageEventContent{Body: "welcome to the new room"})
	waitFor(t, 20*time.Second, "the message in the new room", func() bool {
		return bs.got(neu, "welcome to the new room") && cs.got(neu, "welcome to the new room")
	})
	sendMsg(t, bob, neu, &event.MessageEventContent{Body: "glad to be here"})

	var create event.CreateEventContent
	if err := bob.StateEvent(ctx, neu, event.StateCreate, "", &create); err != nil || create.Predecessor == nil || create.Predecessor.RoomID != old.RoomID {
		t.Fatalf("predecessor: %+v %v", create, err)
	}
	var name event.RoomNameEventContent
	if err := bob.StateEvent(ctx, neu, event.StateRoomName, "", &name); err != nil || name.Name != "Book club" {
		t.Fatalf("name: %+v %v", name, err)
	}
	// The old room: no more ordinary messages; the alias moved.
	_, err = bob.SendText(ctx, old.RoomID, "anyone here?")
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	anon, _ := mautrix.NewClient(s.URL, "", "")
	if res, err := anon.ResolveAlias(ctx, id.NewRoomAlias("books", alice.UserID.Homeserver())); err != nil || res.RoomID != neu {
		t.Fatalf("alias after the upgrade: %+v %v", res, err)
	}
	// Dave's ban came along.
	_, err = dave.JoinRoomByID(ctx, neu)
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	// Eve sees nothing of either room.
	for _, r := range []id.RoomID{old.RoomID, neu} {
		_, err = eve.JoinRoomByID(ctx, r)
		wantHTTPError(t, err, 403, "M_FORBIDDEN")
		_, err = eve.Messages(ctx, r, "", "", mautrix.DirectionBackward, nil, 10)
		wantHTTPError(t, err, 403, "M_FORBIDDEN")
		err = raw(t, eve, http.MethodGet, eve.BuildClientURL("v1", "room_summary", r), nil, nil)
		wantHTTPError(t, err, 404, "M_NOT_FOUND")
	}
}
