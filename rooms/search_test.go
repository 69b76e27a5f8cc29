package rooms_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/rooms"

	"github.com/chatalot/chatalot/storage"
)

const searchPath = "/_matrix/client/v3/search"

func searchBody(criteria map[string]any) map[string]any {
	return map[string]any{"search_categories": map[string]any{"room_events": criteria}}
}

// resultIDs lists the event IDs of room_events results.
func resultIDs(res map[string]any) []string {
	var out []string
	list, _ := path(res, "search_categories", "room_events", "results").([]any)
	for _, r := range list {
		out = append(out, path(r, "result", "event_id").(string))
	}
	return out
}

func TestSearch(t *testing.T) {
	ts := newTestServer(t, "optional")
	ts.tickingClock()
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat", "name": "Fox Den", "topic": "all about foxes"})
	ts.putState(userA, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
	before := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "a fox before Bob joined"})
	ts.join(userB, room)
	quick := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "the quick brown fox"})
	lazy := ts.send(userB, room, map[string]any{"msgtype": "m.text", "body": "the lazy dog"})
	foxes := ts.send(userB, room, map[string]any{"msgtype": "m.text", "body": "Foxes, foxes everywhere! fox fox"})
	cafe := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "Meet at the café"})
	gone := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "a fox to redact"})
	ts.must(userA, "PUT", v3+room+"/redact/"+gone+"/s1", map[string]any{})
	enc := ts.CreateRoom(userA, map[string]any{"preset": "public_chat",
		"initial_state": []map[string]any{{"type": "m.room.encryption", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}})
	ts.join(userB, enc)
	ts.send(userA, enc, map[string]any{"msgtype": "m.text", "body": "a plaintext fox in an encrypted room"})
	ts.sendType(userA, enc, "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "fox"})
	other := ts.CreateRoom(userC, map[string]any{"preset": "public_chat"})
	carols := ts.send(userC, other, map[string]any{"msgtype": "m.text", "body": "Carol's fox"})

	search := func(user string, criteria map[string]any) map[string]any {
		t.Helper()
		return ts.must(user, "POST", searchPath, searchBody(criteria))
	}
	recent := func(user, term string) []string {
		t.Helper()
		return resultIDs(search(user, map[string]any{"search_term": term, "order_by": "recent", "keys": []string{"content.body"}}))
	}
	// Bob sees neither the message from before he joined nor Carol's room,
	// the encrypted room, the redacted event or the ciphertext. "fox"
	// matches "foxes" (prefix); the room name and topic are searched too.
	res := search(userB, map[string]any{"search_term": "fox", "order_by": "recent", "keys": []string{"content.body"}})
	sameList(t, "Bob, recent", resultIDs(res), foxes, quick)
	if path(res, "search_categories", "room_events", "count") != float64(2) {
		t.Fatalf("count: %v", path(res, "search_categories", "room_events", "count"))
	}
	sameList(t, "Alice, recent", recent(userA, "fox"), foxes, quick, before)
	sameList(t, "Carol", recent(userC, "fox"), carols)
	if got := recent(userC, "quick"); len(got) != 0 {
		t.Fatalf("Carol found %v", got)
	}
	// The redacted event's words are out of the index itself.
	var n int
	if err := ts.db.QueryRow(t.Context(), `SELECT count(*) FROM search_words WHERE word = 'redact'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("redacted words still indexed: %d %v", n, err)
	}
	if ts.db.Dialect() == storage.Postgres {
		// And out of PostgreSQL's tsvector index (migration 10).
		if err := ts.db.QueryRow(t.Context(), `SELECT count(*) FROM search_tsv WHERE tsv @@ 'redact'::tsquery`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("redacted words still in search_tsv: %d %v", n, err)
		}
		var docs, tsv int
		if err := ts.db.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM search_docs), (SELECT count(*) FROM search_tsv)`).Scan(&docs, &tsv); err != nil || docs != tsv || docs == 0 {
			t.Fatalf("search_docs %d rows, search_tsv %d (%v)", docs, tsv, err)
		}
	}
	// Rank: the message that says fox most often first.
	ranked := search(userB, map[string]any{"search_term": "fox", "keys": []string{"content.body"}})
	sameList(t, "Bob, rank", resultIDs(ranked), foxes, quick)
	results := path(ranked, "search_categories", "room_events", "results").([]any)
	if r0, r1 := path(results[0], "rank").(float64), path(results[1], "rank").(float64); r0 <= r1 {
		t.Fatalf("ranks not decreasing: %v %v", r0, r1)
	}
	sameList(t, "highlights", toStrings(path(ranked, "search_categories", "room_events", "highlights")), "fox")
	// Names and topics.
	names := search(userB, map[string]any{"search_term": "den", "keys": []string{"content.name"}})
	if len(resultIDs(names)) != 1 || path(names, "search_categories", "room_events", "results").([]any)[0].(map[string]any)["result"].(map[string]any)["type"] != "m.room.name" {
		t.Fatalf("name search: %v", names)
	}
	if len(resultIDs(search(userB, map[string]any{"search_term": "about"}))) != 1 {
		t.Fatalf("topic search")
	}
	// Several words: all must match; diacritics and punctuation do not
	// matter; FTS5 syntax in the term is just text.
	sameList(t, "two words", recent(userB, "quick FOX"), quick)
	sameList(t, "diacritics", recent(userB, "cafe"), cafe)
	for _, term := range []string{`" OR * NEAR(`, `fox" OR "dog`, "*", "", "AND", `'); DROP TABLE events; --`} {
		if code, body := ts.do(userB, "POST", searchPath, searchBody(map[string]any{"search_term": term})); code != 200 {
			t.Fatalf("term %q: %d %v", term, code, body)
		}
	}

	// Filters.
	sameList(t, "senders", resultIDs(search(userB, map[string]any{"search_term": "the", "order_by": "recent",
		"filter": map[string]any{"senders": []string{userB}}})), lazy)
	sameList(t, "not_rooms", resultIDs(search(userA, map[string]any{"search_term": "fox", "filter": map[string]any{"not_rooms": []string{room}}})))

	// Pagination and groups.
	p1 := search(userA, map[string]any{"search_term": "fox", "order_by": "recent", "keys": []string{"content.body"},
		"filter": map[string]any{"limit": 2}, "groupings": map[string]any{"group_by": []map[string]any{{"key": "room_id"}, {"key": "sender"}}}})
	sameList(t, "page 1", resultIDs(p1), foxes, quick)
	re := path(p1, "search_categories", "room_events").(map[string]any)
	next, _ := re["next_batch"].(string)
	if next == "" || re["count"] != float64(3) {
		t.Fatalf("page 1: %v", re)
	}
	g := path(re, "groups", "room_id", room).(map[string]any)
	sameList(t, "room group", toStrings(g["results"]), foxes, quick)
	if g["order"] != float64(1) || g["next_batch"] == nil {
		t.Fatalf("room group: %v", g)
	}
	bobGroup := path(re, "groups", "sender", userB).(map[string]any)
	if _, more := bobGroup["next_batch"]; more {
		t.Fatalf("Bob's group has no more results: %v", bobGroup)
	}
	aliceGroup := path(re, "groups", "sender", userA).(map[string]any)
	p2 := ts.must(userA, "POST", searchPath+"?next_batch="+esc(next), searchBody(map[string]any{"search_term": "fox", "order_by": "recent",
		"keys": []string{"content.body"}, "filter": map[string]any{"limit": 2}}))
	sameList(t, "page 2", resultIDs(p2), before)
	if _, more := path(p2, "search_categories", "room_events").(map[string]any)["next_batch"]; more {
		t.Fatalf("next_batch on the last page")
	}
	pa := ts.must(userA, "POST", searchPath+"?next_batch="+esc(aliceGroup["next_batch"].(string)), searchBody(map[string]any{"search_term": "fox",
		"order_by": "recent", "keys": []string{"content.body"}, "filter": map[string]any{"limit": 2}}))
	sameList(t, "Alice's group, page 2", resultIDs(pa), before)

	// Context, profiles and state.
	withCtx := search(userB, map[string]any{"search_term": "lazy", "include_state": true,
		"event_context": map[string]any{"before_limit": 1, "after_limit": 1, "include_profile": true}})
	r0 := path(withCtx, "search_categories", "room_events", "results").([]any)[0]
	sameList(t, "before", ids(path(r0, "context", "events_before")), quick)
	sameList(t, "after", ids(path(r0, "context", "events_after")), foxes)
	if path(r0, "context", "start") == nil || path(r0, "context", "end") == nil || path(r0, "context", "profile_info", userA) == nil {
		t.Fatalf("context: %v", path(r0, "context"))
	}
	if st, _ := path(withCtx, "search_categories", "room_events", "state", room).([]any); len(st) == 0 {
		t.Fatalf("include_state: %v", path(withCtx, "search_categories", "room_events", "state"))
	}

	for _, c := range []struct {
		name  string
		query string
		body  any
		code  string
	}{
		{"no search_term", "", searchBody(map[string]any{}), "M_MISSING_PARAM"},
		{"no categories", "", map[string]any{}, "M_MISSING_PARAM"},
		{"bad key", "", searchBody(map[string]any{"search_term": "x", "keys": []string{"content.ciphertext"}}), "M_INVALID_PARAM"},
		{"bad order", "", searchBody(map[string]any{"search_term": "x", "order_by": "random"}), "M_INVALID_PARAM"},
		{"bad group", "", searchBody(map[string]any{"search_term": "x", "groupings": map[string]any{"group_by": []map[string]any{{"key": "type"}}}}), "M_INVALID_PARAM"},
		{"messages token", "?next_batch=s10", searchBody(map[string]any{"search_term": "x"}), "M_INVALID_PARAM"},
		{"garbage token", "?next_batch=%21%21", searchBody(map[string]any{"search_term": "x"}), "M_INVALID_PARAM"},
		{"thread token", "?next_batch=t5", searchBody(map[string]any{"search_term": "x"}), "M_INVALID_PARAM"},
		{"term not a string", "", searchBody(map[string]any{"search_term": 5}), "M_BAD_JSON"},
		{"bad filter", "", searchBody(map[string]any{"search_term": "x", "filter": map[string]any{"senders": []string{"bob"}}}), "M_BAD_JSON"},
	} {
		code, body := ts.do(userA, "POST", searchPath+c.query, c.body)
		if code != 400 || body["errcode"] != c.code {
			t.Fatalf("%s: %d %v, want 400 %s", c.name, code, body, c.code)
		}
	}
	if ts.db.Dialect() == storage.Postgres {
		// A purged room's events leave PostgreSQL's tsvector index too.
		if _, err := ts.s.PurgeRoom(t.Context(), roomID(room), rooms.PurgeOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := recent(userA, "fox"); len(got) != 0 {
			t.Fatalf("found in the purged room: %v", got)
		}
		var n int
		if err := ts.db.QueryRow(t.Context(), `SELECT count(*) FROM search_tsv WHERE position NOT IN (SELECT position FROM search_docs)`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d search_tsv rows without search_docs (%v)", n, err)
		}
	}
}

func TestSearchAndRelationsBackfill(t *testing.T) {
	// Migration 2 (relations) and the start-up reindex after migration 5
	// (search) index the events stored before them the way the commit hook
	// indexes new ones: empty the indexes, run the backfills, and the
	// answers are the same.
	ts := newTestServer(t, "optional")
	if ts.db.Dialect() == storage.Postgres {
		t.Skip("migration 2's backfill is SQLite's: a PostgreSQL database is made at the current schema, with no rows from before it")
	}
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat", "name": "Backfill", "topic": "old topic"})
	root := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "indexed twice"})
	child := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "reply", "m.relates_to": relatesTo("m.thread", root)})
	react := ts.sendType(userA, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "k"}})
	gone := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "indexed never", "m.relates_to": relatesTo("m.reference", root)})
	ts.must(userA, "PUT", v3+room+"/redact/"+gone+"/b1", map[string]any{})
	enc := ts.CreateRoom(userA, map[string]any{"initial_state": []map[string]any{{"type": "m.room.encryption", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}})
	ts.send(userA, enc, map[string]any{"msgtype": "m.text", "body": "indexed not"})

	answers := func() []any {
		return []any{
			resultIDs(ts.must(userA, "POST", searchPath, searchBody(map[string]any{"search_term": "indexed", "order_by": "recent"}))),
			len(resultIDs(ts.must(userA, "POST", searchPath, searchBody(map[string]any{"search_term": "old topic"})))),
			ids(ts.must(userA, "GET", v1+room+"/relations/"+root, nil)["chunk"]),
		}
	}
	want := answers()
	sameList(t, "search", want[0].([]string), root)
	sameList(t, "relations", want[2].([]string), react, child)
	migration := rooms.Schema.Migrations[1]
	backfill := migration[strings.Index(migration, "INSERT INTO event_relations"):]
	if err := ts.db.Write(t.Context(), func(tx *storage.Tx) error {
		// The search index is rebuilt at start-up when migration 5 left
		// its mark.
		if _, err := tx.Exec(`DELETE FROM event_relations; DELETE FROM search_words; DELETE FROM search_docs;
			INSERT INTO search_reindex (id) VALUES (1);`); err != nil {
			return err
		}
		_, err := tx.Exec(backfill)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := ts.s.ReindexSearchForTest(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := answers(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after backfill %v, before %v", got, want)
	}
}
