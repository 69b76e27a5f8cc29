package tests

import (
	"slices"
	"testing"

	"github.com/chatalot/chatalot/tests/harness"
)

// TestUserDirectory: POST /user_directory/search finds, by user ID or
// global display name, the users who share a room with the searcher or
// sit in a room with a public join rule or world_readable history, and no
// one else; room-specific names are never searched nor shown; deactivated
// users are gone; a profile change and an account the CLI created while
// the server runs are found at once; the results are ranked and limited.
func TestUserDirectory(t *testing.T) {
	e := admStart(t)
	tok := map[string]string{}
	for _, name := range []string{"alice", "bob", "eve", "carol", "dave", "ann", "annabel", "joanne"} {
		tok[name] = e.register(name)
	}
	setName := func(name, displayName string) {
		e.want("PUT", e.url("/_matrix/client/v3/profile/%s/displayname", "@"+name+":localhost"), tok[name],
			map[string]any{"displayname": displayName}, 200, "")
	}
	join := func(name, room string) {
		e.want("POST", e.url("/_matrix/client/v3/join/%s", room), tok[name], map[string]any{}, 200, "")
	}
	setName("alice", "Alice Cooper")
	e.want("PUT", e.url("/_matrix/client/v3/profile/%s/avatar_url", "@alice:localhost"), tok["alice"],
		map[string]any{"avatar_url": "mxc://localhost/alice"}, 200, "")

	// A public room: alice, ann, annabel and joanne are in it.
	lobby := e.createRoom(tok["alice"], map[string]any{"preset": "public_chat"})
	for _, name := range []string{"ann", "annabel", "joanne"} {
		join(name, lobby)
	}
	// Bob and alice share a private room, where alice goes by "Freddy".
	private := e.createRoom(tok["bob"], map[string]any{"preset": "private_chat", "invite": []string{"@alice:localhost"}})
	join("alice", private)
	e.want("PUT", e.url("/_matrix/client/v3/rooms/%s/state/m.room.member/%s", private, "@alice:localhost"), tok["alice"],
		map[string]any{"membership": "join", "displayname": "Freddy"}, 200, "")
	// Carol's invite-only room has world_readable history; dave's is closed.
	e.createRoom(tok["carol"], map[string]any{"preset": "private_chat", "initial_state": []any{map[string]any{
		"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})
	e.createRoom(tok["dave"], map[string]any{"preset": "private_chat"})

	search := func(name, term string, limit int) ([]map[string]any, bool) {
		t.Helper()
		body := map[string]any{"search_term": term}
		if limit > 0 {
			body["limit"] = limit
		}
		out := e.want("POST", e.s.URL+"/_matrix/client/v3/user_directory/search", tok[name], body, 200, "")
		var results []map[string]any
		for _, r := range out["results"].([]any) {
			results = append(results, r.(map[string]any))
		}
		return results, out["limited"].(bool)
	}
	found := func(name, term string) []string {
		t.Helper()
		results, _ := search(name, term, 0)
		var ids []string
		for _, r := range results {
			ids = append(ids, r["user_id"].(string))
		}
		return ids
	}
	want := func(name, term string, ids ...string) {
		t.Helper()
		if got := found(name, term); !slices.Equal(got, ids) {
			t.Errorf("%s searching %q found %v, want %v", name, term, got, ids)
		}
	}

	// Eve shares no room: she finds the public room's members and carol,
	// by user ID or global name, case-insensitively, word by word.
	results, limited := search("eve", "ALICE coop", 0)
	if len(results) != 1 || limited || results[0]["user_id"] != "@alice:localhost" ||
		results[0]["display_name"] != "Alice Cooper" || results[0]["avatar_url"] != "mxc://localhost/alice" {
		t.Fatalf("eve searching alice: %v (limited %v)", results, limited)
	}
	want("eve", "@alice:local", "@alice:localhost")
	want("eve", "carol", "@carol:localhost")
	want("eve", "dave")
	want("eve", "bob")
	want("eve", "Freddy") // a room-specific name is not searched
	want("eve", "eve")    // nor is the searcher listed
	want("eve", "   ")
	// Bob shares a room with alice: her global profile, not "Freddy".
	results, _ = search("bob", "Alice Cooper", 0)
	if len(results) != 1 || results[0]["display_name"] != "Alice Cooper" {
		t.Fatalf("bob searching alice: %v", results)
	}
	want("bob", "freddy")
	want("alice", "bob", "@bob:localhost")

	// Ranked: the exact name, then a word's start, then inside a word;
	// limit cuts the list and says so.
	want("eve", "ann", "@ann:localhost", "@annabel:localhost", "@joanne:localhost")
	results, limited = search("eve", "ann", 2)
	if len(results) != 2 || !limited {
		t.Fatalf("limit 2: %v (limited %v)", results, limited)
	}

	// A profile change is searchable at once.
	setName("alice", "Alice Smith")
	want("eve", "smith", "@alice:localhost")
	want("eve", "cooper")

	// A deactivated user is gone.
	e.admin("PUT", e.url("/_synapse/admin/v2/users/%s", "@carol:localhost"), map[string]any{"deactivated": true}, 200)
	want("eve", "carol")

	// An account the CLI creates while the server runs is found once it
	// joins a public room.
	if out, err := harness.Run(t, admPassword+"\n", "admin", "create-user", "frank", "--password-stdin", "--data-dir", e.s.DataDir); err != nil {
		t.Fatalf("create-user: %v\n%s", err, out)
	}
	tok["frank"] = e.login("frank", admPassword)
	join("frank", lobby)
	want("eve", "frank", "@frank:localhost")

	// The r0 path older clients call; bad input is a Matrix error.
	if out := e.want("POST", e.s.URL+"/_matrix/client/r0/user_directory/search", tok["eve"], map[string]any{"search_term": "frank"}, 200, ""); len(out["results"].([]any)) != 1 {
		t.Errorf("r0: %v", out)
	}
	path := e.s.URL + "/_matrix/client/v3/user_directory/search"
	e.want("POST", path, tok["eve"], map[string]any{}, 400, "M_MISSING_PARAM")
	e.want("POST", path, tok["eve"], map[string]any{"search_term": 42}, 400, "M_BAD_JSON")
	e.want("POST", path, tok["eve"], map[string]any{"search_term": "a", "limit": "ten"}, 400, "M_BAD_JSON")
	e.want("POST", path, tok["eve"], map[string]any{"search_term": "a", "limit": -1}, 400, "M_INVALID_PARAM")
	e.want("POST", path, tok["eve"], "not json", 400, "M_NOT_JSON")
	e.want("POST", path, "", map[string]any{"search_term": "a"}, 401, "M_MISSING_TOKEN")
}

// TestProfileLookupFollowsTheDirectory: with the default profile_lookup
// (shared_rooms), GET /profile answers for the users the user directory
// shows the caller — room-mates and members of public rooms — and gives
// the same 403 for everyone else, known or not.
func TestProfileLookupFollowsTheDirectory(t *testing.T) {
	e := admStart(t)
	alice, bob, eve, dave := e.register("alice"), e.register("bob"), e.register("eve"), e.register("dave")
	lobby := e.createRoom(alice, map[string]any{"preset": "public_chat"})
	e.want("POST", e.url("/_matrix/client/v3/join/%s", lobby), bob, map[string]any{}, 200, "")
	e.createRoom(dave, map[string]any{"preset": "private_chat"})
	profile := func(token, user string, status int) {
		t.Helper()
		e.want("GET", e.url("/_matrix/client/v3/profile/%s", user), token, nil, status, "")
	}
	profile(eve, "@alice:localhost", 200) // in a public room
	profile(eve, "@bob:localhost", 200)
	profile(alice, "@bob:localhost", 200)  // a room-mate
	profile(eve, "@dave:localhost", 403)   // only in a private room
	profile(eve, "@nobody:localhost", 403) // unknown: the same answer
	profile(dave, "@dave:localhost", 200)  // one's own
}
