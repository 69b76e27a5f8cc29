package rooms_test

import (
	"testing"
)

const dir3 = "/_matrix/client/v3/directory/room/"

func TestAliases(t *testing.T) {
	ts := newTestServer(t, "optional")
	admin := ts.asAdmin()
	room := ts.CreateRoom(userA, map[string]any{"preset": "private_chat", "room_alias_name": "home", "invite": []string{userB}})
	ts.join(userB, room)
	other := ts.CreateRoom(userC, nil)

	// Resolving needs no access token.
	got := ts.must("", "GET", dir3+esc("#home:test"), nil)
	if got["room_id"] != room || len(got["servers"].([]any)) != 1 || got["servers"].([]any)[0] != "test" {
		t.Fatalf("resolve: %v", got)
	}
	// Bob (a member, power 0) adds an alias; join by alias works.
	ts.must(userB, "PUT", dir3+esc("#bobs:test"), map[string]any{"room_id": room})
	if ts.must(userA, "POST", "/_matrix/client/v3/join/"+esc("#bobs:test"), map[string]any{})["room_id"] != room {
		t.Fatalf("join by alias")
	}
	for _, c := range []struct {
		name, user, method, alias string
		body                      any
		status                    int
		code                      string
	}{
		{"taken", userB, "PUT", "#home:test", map[string]any{"room_id": room}, 409, "M_UNKNOWN"},
		{"not a member", userC, "PUT", "#carols:test", map[string]any{"room_id": room}, 403, "M_FORBIDDEN"},
		{"unknown room", userA, "PUT", "#x:test", map[string]any{"room_id": "!nope:test"}, 403, "M_FORBIDDEN"},
		{"other server", userA, "PUT", "#x:elsewhere.org", map[string]any{"room_id": room}, 400, "M_INVALID_PARAM"},
		{"malformed alias", userA, "PUT", "nohash:test", map[string]any{"room_id": room}, 400, "M_INVALID_PARAM"},
		{"no server", userA, "PUT", "#nohost", map[string]any{"room_id": room}, 400, "M_INVALID_PARAM"},
		{"no room_id", userA, "PUT", "#x:test", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"bad room_id", userA, "PUT", "#x:test", map[string]any{"room_id": "lobby"}, 400, "M_INVALID_PARAM"},
		{"room_id not a string", userA, "PUT", "#x:test", map[string]any{"room_id": 5}, 400, "M_BAD_JSON"},
		{"not JSON", userA, "PUT", "#x:test", "{", 400, "M_NOT_JSON"},
		{"unknown alias", "", "GET", "#nope:test", nil, 404, "M_NOT_FOUND"},
		{"remote alias", "", "GET", "#nope:elsewhere.org", nil, 404, "M_NOT_FOUND"},
		{"malformed get", "", "GET", "home", nil, 400, "M_INVALID_PARAM"},
		{"delete unknown", userA, "DELETE", "#nope:test", nil, 404, "M_NOT_FOUND"},
		{"delete by a stranger", userC, "DELETE", "#bobs:test", nil, 403, "M_FORBIDDEN"},
	} {
		code, body := ts.do(c.user, c.method, dir3+esc(c.alias), c.body)
		if code != c.status || body["errcode"] != c.code {
			t.Fatalf("%s: %d %v, want %d %s", c.name, code, body, c.status, c.code)
		}
	}

	// Local aliases: members, not strangers; admins always.
	al := ts.must(userB, "GET", v3+room+"/aliases", nil)
	sameList(t, "aliases", toStrings(al["aliases"]), "#bobs:test", "#home:test")
	code, body := ts.do(userC, "GET", v3+room+"/aliases", nil)
	wantError(t, code, body, 403, "M_FORBIDDEN")
	if code, body := admin(userC, "GET", v3+room+"/aliases", nil); code != 200 || len(body["aliases"].([]any)) != 2 {
		t.Fatalf("admin aliases: %d %v", code, body)
	}
	// A world-readable room's aliases are anyone's to list.
	ts.putState(userC, other, "m.room.history_visibility", "", map[string]any{"history_visibility": "world_readable"})
	if got := ts.must(userA, "GET", v3+other+"/aliases", nil)["aliases"]; len(got.([]any)) != 0 {
		t.Fatalf("aliases of other: %v", got)
	}

	// Deletion: Bob may delete the alias he made but not Alice's; Alice
	// (the room's admin) may delete any; a server admin too.
	ts.must(userB, "PUT", dir3+esc("#second:test"), map[string]any{"room_id": room})
	code, body = ts.do(userB, "DELETE", dir3+esc("#home:test"), nil)
	wantError(t, code, body, 403, "M_FORBIDDEN")
	ts.must(userB, "DELETE", dir3+esc("#bobs:test"), nil)
	ts.must(userA, "DELETE", dir3+esc("#second:test"), nil)
	ts.must(userA, "PUT", dir3+esc("#third:test"), map[string]any{"room_id": room})
	if code, body := admin(userC, "DELETE", dir3+esc("#third:test"), nil); code != 200 {
		t.Fatalf("admin delete: %d %v", code, body)
	}
	code, body = ts.do("", "GET", dir3+esc("#bobs:test"), nil)
	wantError(t, code, body, 404, "M_NOT_FOUND")

	// Deleting the canonical alias takes it out of m.room.canonical_alias.
	ts.must(userA, "DELETE", dir3+esc("#home:test"), nil)
	ca := ts.must(userA, "GET", v3+room+"/state/m.room.canonical_alias", nil)
	if _, has := ca["alias"]; has {
		t.Fatalf("canonical alias still names the deleted alias: %v", ca)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestCanonicalAliasValidation(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.CreateRoom(userA, map[string]any{"room_alias_name": "main"})
	other := ts.CreateRoom(userA, map[string]any{"room_alias_name": "other"})
	_ = other
	ts.must(userA, "PUT", dir3+esc("#alt:test"), map[string]any{"room_id": room})
	set := func(c map[string]any) (int, map[string]any) {
		return ts.do(userA, "PUT", v3+room+"/state/m.room.canonical_alias/", c)
	}
	if code, body := set(map[string]any{"alias": "#main:test", "alt_aliases": []string{"#alt:test"}}); code != 200 {
		t.Fatalf("valid: %d %v", code, body)
	}
	for _, c := range []struct {
		content map[string]any
		status  int
		code    string
	}{
		{map[string]any{"alias": "#other:test"}, 400, "M_BAD_ALIAS"},
		{map[string]any{"alias": "#unknown:test"}, 400, "M_BAD_ALIAS"},
		{map[string]any{"alias": "#main:elsewhere.org"}, 400, "M_BAD_ALIAS"},
		{map[string]any{"alt_aliases": []string{"#alt:test", "#other:test"}}, 400, "M_BAD_ALIAS"},
		{map[string]any{"alias": "main"}, 400, "M_INVALID_PARAM"},
		{map[string]any{"alt_aliases": []string{"##:"}}, 400, "M_INVALID_PARAM"},
		{map[string]any{"alias": 7}, 400, "M_BAD_JSON"},
		{map[string]any{"alt_aliases": "#alt:test"}, 400, "M_BAD_JSON"},
		{map[string]any{"alt_aliases": []any{1}}, 400, "M_BAD_JSON"},
	} {
		code, body := set(c.content)
		if code != c.status || body["errcode"] != c.code {
			t.Fatalf("%v: %d %v, want %d %s", c.content, code, body, c.status, c.code)
		}
	}
	// Unsetting is always fine; so is keeping an alias that was deleted
	// since (only added aliases are checked).
	ts.must(userA, "DELETE", dir3+esc("#alt:test"), nil)
	if code, body := set(map[string]any{"alias": "#main:test"}); code != 200 {
		t.Fatalf("after delete: %d %v", code, body)
	}
	if code, body := set(map[string]any{"alias": "", "alt_aliases": nil}); code != 200 {
		t.Fatalf("unset: %d %v", code, body)
	}
}

func TestDirectoryVisibilityAndPublicRooms(t *testing.T) {
	ts := newTestServer(t, "optional")
	admin := ts.asAdmin()
	big := ts.CreateRoom(userA, map[string]any{"visibility": "public", "name": "Big Lobby", "topic": "general chat", "room_alias_name": "lobby"})
	ts.join(userB, big)
	ts.join(userC, big)
	small := ts.CreateRoom(userB, map[string]any{"visibility": "public", "name": "Gardening"})
	space := ts.CreateRoom(userC, map[string]any{"visibility": "public", "name": "A space", "creation_content": map[string]any{"type": "m.space"}})
	private := ts.CreateRoom(userA, map[string]any{"name": "Secret"})

	vis := func(room string) string {
		return ts.must("", "GET", "/_matrix/client/v3/directory/list/room/"+room, nil)["visibility"].(string)
	}
	if vis(big) != "public" || vis(private) != "private" {
		t.Fatalf("visibility: %s %s", vis(big), vis(private))
	}
	code, body := ts.do("", "GET", "/_matrix/client/v3/directory/list/room/!unknown:test", nil)
	wantError(t, code, body, 404, "M_NOT_FOUND")

	pub := ts.must("", "GET", "/_matrix/client/v3/publicRooms", nil)
	chunk := pub["chunk"].([]any)
	if len(chunk) != 3 || path(chunk[0], "room_id") != big || pub["total_room_count_estimate"] != float64(3) {
		t.Fatalf("publicRooms: %v", pub)
	}
	first := chunk[0].(map[string]any)
	if first["name"] != "Big Lobby" || first["topic"] != "general chat" || first["canonical_alias"] != "#lobby:test" ||
		first["num_joined_members"] != float64(3) || first["join_rule"] != "public" || first["world_readable"] != false || first["guest_can_join"] != false {
		t.Fatalf("chunk: %v", first)
	}
	if _, has := first["room_version"]; has {
		t.Fatalf("room summary fields in the directory: %v", first)
	}

	// Pagination.
	p1 := ts.must("", "GET", "/_matrix/client/v3/publicRooms?limit=2", nil)
	if len(p1["chunk"].([]any)) != 2 || p1["next_batch"] == nil || p1["prev_batch"] != nil {
		t.Fatalf("page 1: %v", p1)
	}
	p2 := ts.must(userA, "POST", "/_matrix/client/v3/publicRooms", map[string]any{"limit": 2, "since": p1["next_batch"]})
	if len(p2["chunk"].([]any)) != 1 || p2["next_batch"] != nil || p2["prev_batch"] == nil {
		t.Fatalf("page 2: %v", p2)
	}
	// Filters.
	search := func(filter map[string]any) []string {
		res := ts.must(userA, "POST", "/_matrix/client/v3/publicRooms", map[string]any{"filter": filter})
		var out []string
		for _, c := range res["chunk"].([]any) {
			out = append(out, path(c, "room_id").(string))
		}
		return out
	}
	sameList(t, "term in the name", search(map[string]any{"generic_search_term": "garden"}), small)
	sameList(t, "term in the topic", search(map[string]any{"generic_search_term": "GENERAL"}), big)
	sameList(t, "term in the alias", search(map[string]any{"generic_search_term": "#lobby"}), big)
	sameList(t, "spaces", search(map[string]any{"room_types": []any{"m.space"}}), space)
	sameList(t, "rooms without a type", search(map[string]any{"room_types": []any{nil}}), big, small)

	// Publishing: Bob (power 0 in Alice's room) may not; Alice and admins may.
	code, body = ts.do(userB, "PUT", "/_matrix/client/v3/directory/list/room/"+big, map[string]any{"visibility": "private"})
	wantError(t, code, body, 403, "M_FORBIDDEN")
	ts.must(userA, "PUT", "/_matrix/client/v3/directory/list/room/"+big, map[string]any{"visibility": "private"})
	if vis(big) != "private" {
		t.Fatalf("unpublished room still public")
	}
	if code, body := admin(userC, "PUT", "/_matrix/client/v3/directory/list/room/"+private, map[string]any{}); code != 200 {
		t.Fatalf("admin publish (default public): %d %v", code, body)
	}
	if vis(private) != "public" {
		t.Fatalf("admin publish did not publish")
	}

	for _, c := range []struct {
		user, method, path string
		body               any
		status             int
		code               string
	}{
		{userA, "PUT", "/_matrix/client/v3/directory/list/room/" + big, map[string]any{"visibility": "hidden"}, 400, "M_INVALID_PARAM"},
		{userA, "PUT", "/_matrix/client/v3/directory/list/room/!nope:test", map[string]any{}, 404, "M_NOT_FOUND"},
		{"", "GET", "/_matrix/client/v3/publicRooms?since=s12", nil, 400, "M_INVALID_PARAM"},
		{"", "GET", "/_matrix/client/v3/publicRooms?since=p-1", nil, 400, "M_INVALID_PARAM"},
		{"", "GET", "/_matrix/client/v3/publicRooms?limit=many", nil, 400, "M_INVALID_PARAM"},
		{"", "GET", "/_matrix/client/v3/publicRooms?server=elsewhere.org", nil, 400, "M_INVALID_PARAM"},
		{userA, "POST", "/_matrix/client/v3/publicRooms", map[string]any{"since": "t3"}, 400, "M_INVALID_PARAM"},
		{userA, "POST", "/_matrix/client/v3/publicRooms", map[string]any{"filter": map[string]any{"room_types": "m.space"}}, 400, "M_BAD_JSON"},
		{"", "POST", "/_matrix/client/v3/publicRooms", map[string]any{}, 401, "M_MISSING_TOKEN"},
	} {
		code, body := ts.do(c.user, c.method, c.path, c.body)
		if code != c.status || body["errcode"] != c.code {
			t.Fatalf("%s %s: %d %v, want %d %s", c.method, c.path, code, body, c.status, c.code)
		}
	}
}
