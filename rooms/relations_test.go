package rooms_test

import (
	"testing"
	"time"

	"github.com/chatalot/chatalot/rooms"
)

func relatesTo(rel, parent string) map[string]any {
	return map[string]any{"rel_type": rel, "event_id": parent}
}

func TestRelationsAndBundledAggregations(t *testing.T) {
	ts := newTestServer(t, "optional")
	ts.tickingClock()
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.join(userB, room)
	ts.join(userC, room)

	root := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "root"})
	reply := ts.send(userB, room, map[string]any{"msgtype": "m.text", "body": "a reply",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": root}}})
	edit1 := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "* root v2",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "root v2"}, "m.relates_to": relatesTo("m.replace", root)})
	edit2 := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "* root v3",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "root v3"}, "m.relates_to": relatesTo("m.replace", root)})
	// Bob's edit of Alice's message is not an edit.
	forged := ts.send(userB, room, map[string]any{"msgtype": "m.text", "body": "* hacked",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "hacked"}, "m.relates_to": relatesTo("m.replace", root)})
	reaction := ts.sendType(userB, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
	ref := ts.sendType(userB, room, "org.example.note", map[string]any{"m.relates_to": relatesTo("m.reference", root)})
	t1 := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "thread 1", "m.relates_to": relatesTo("m.thread", root)})
	t2 := ts.send(userB, room, map[string]any{"msgtype": "m.text", "body": "thread 2", "m.relates_to": relatesTo("m.thread", root)})
	// A reaction to a thread event: an indirect relation of the root.
	deep := ts.sendType(userA, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": t2, "key": "🎉"}})

	rel := v1 + room + "/relations/" + root
	all := ts.must(userC, "GET", rel, nil)
	sameList(t, "all children, newest first", ids(all["chunk"]), t2, t1, ref, reaction, forged, edit2, edit1)
	_ = reply
	if _, ok := all["recursion_depth"]; ok {
		t.Fatalf("recursion_depth without recurse: %v", all)
	}
	sameList(t, "threads", ids(ts.must(userC, "GET", rel+"/m.thread", nil)["chunk"]), t2, t1)
	sameList(t, "annotations of type", ids(ts.must(userC, "GET", rel+"/m.annotation/m.reaction", nil)["chunk"]), reaction)
	sameList(t, "other event type", ids(ts.must(userC, "GET", rel+"/m.annotation/m.room.message", nil)["chunk"]))

	// Recursion reaches the reaction to the thread event.
	rec := ts.must(userC, "GET", rel+"?recurse=true", nil)
	sameList(t, "recursive", ids(rec["chunk"]), deep, t2, t1, ref, reaction, forged, edit2, edit1)
	if rec["recursion_depth"] != float64(3) {
		t.Fatalf("recursion_depth %v", rec["recursion_depth"])
	}
	// A rel_type filter applies at every level: the reaction hangs off a
	// thread event, not an annotation.
	sameList(t, "recursive annotations", ids(ts.must(userC, "GET", rel+"/m.annotation?recurse=true", nil)["chunk"]), reaction)

	// Pagination both ways.
	p1 := ts.must(userC, "GET", rel+"?limit=3", nil)
	sameList(t, "page 1", ids(p1["chunk"]), t2, t1, ref)
	next, _ := p1["next_batch"].(string)
	if next == "" {
		t.Fatalf("no next_batch: %v", p1)
	}
	p2 := ts.must(userC, "GET", rel+"?limit=3&from="+next, nil)
	sameList(t, "page 2", ids(p2["chunk"]), reaction, forged, edit2)
	if p2["prev_batch"] != next {
		t.Fatalf("prev_batch %v", p2["prev_batch"])
	}
	p3 := ts.must(userC, "GET", rel+"?limit=3&from="+p2["next_batch"].(string), nil)
	sameList(t, "page 3", ids(p3["chunk"]), edit1)
	if _, more := p3["next_batch"]; more {
		t.Fatalf("next_batch on the last page: %v", p3)
	}
	f1 := ts.must(userC, "GET", rel+"?dir=f&limit=4", nil)
	sameList(t, "forward page 1", ids(f1["chunk"]), edit1, edit2, forged, reaction)
	f2 := ts.must(userC, "GET", rel+"?dir=f&limit=4&from="+f1["next_batch"].(string), nil)
	sameList(t, "forward page 2", ids(f2["chunk"]), ref, t1, t2)
	// from and to: a token from /messages works too.
	msgs := ts.must(userC, "GET", v3+room+"/messages?dir=b&limit=1", nil)
	sameList(t, "from a /messages token", ids(ts.must(userC, "GET", rel+"?limit=1&from="+msgs["start"].(string), nil)["chunk"]), t2)
	sameList(t, "from then to", ids(ts.must(userC, "GET", rel+"?from="+p1["next_batch"].(string)+"&to="+p2["next_batch"].(string), nil)["chunk"]), reaction, forged, edit2)

	// The root as served: thread summary, the latest edit by its sender,
	// the references; no annotations.
	ev := ts.must(userB, "GET", v3+room+"/event/"+root, nil)
	rels := path(ev, "unsigned", "m.relations")
	if path(rels, "m.thread", "count") != float64(2) || path(rels, "m.thread", "latest_event", "event_id") != t2 ||
		path(rels, "m.thread", "current_user_participated") != true {
		t.Fatalf("thread summary for Bob: %v", rels)
	}
	if path(rels, "m.replace", "event_id") != edit2 || path(rels, "m.replace", "content", "m.new_content", "body") != "root v3" {
		t.Fatalf("m.replace: %v", path(rels, "m.replace"))
	}
	if path(ev, "content", "body") != "root" {
		t.Fatalf("the server must not replace the content: %v", ev["content"])
	}
	chunk, _ := path(rels, "m.reference", "chunk").([]any)
	if len(chunk) != 1 || path(chunk[0], "event_id") != ref {
		t.Fatalf("m.reference: %v", path(rels, "m.reference"))
	}
	if path(rels, "m.annotation") != nil {
		t.Fatalf("annotations are not aggregated: %v", rels)
	}
	// Carol never wrote in the thread; Alice wrote its root.
	if path(ts.must(userC, "GET", v3+room+"/event/"+root, nil), "unsigned", "m.relations", "m.thread", "current_user_participated") != false {
		t.Fatalf("Carol did not participate")
	}
	// /messages and /context bundle too.
	page := ts.must(userA, "GET", v3+room+"/messages?dir=f&limit=100", nil)
	found := false
	for _, e := range page["chunk"].([]any) {
		if path(e, "event_id") == root {
			found = path(e, "unsigned", "m.relations", "m.thread", "count") == float64(2)
		}
	}
	if !found {
		t.Fatalf("/messages has no thread summary on the root")
	}
	cx := ts.must(userA, "GET", v3+room+"/context/"+root+"?limit=2", nil)
	if path(cx, "event", "unsigned", "m.relations", "m.replace", "event_id") != edit2 {
		t.Fatalf("/context: %v", cx["event"])
	}

	// Redacting the latest edit falls back to the previous one; redacting
	// the original drops the edits.
	ts.must(userA, "PUT", v3+room+"/redact/"+edit2+"/r1", map[string]any{})
	if got := path(ts.must(userB, "GET", v3+room+"/event/"+root, nil), "unsigned", "m.relations", "m.replace", "event_id"); got != edit1 {
		t.Fatalf("after redacting the latest edit: %v", got)
	}
	sameList(t, "redacted edit is no longer a child", ids(ts.must(userC, "GET", rel+"/m.replace", nil)["chunk"]), forged, edit1)
	ts.must(userA, "PUT", v3+room+"/redact/"+root+"/r2", map[string]any{})
	if got := path(ts.must(userB, "GET", v3+room+"/event/"+root, nil), "unsigned", "m.relations", "m.replace"); got != nil {
		t.Fatalf("edits bundled with a redacted event: %v", got)
	}
}

func TestRelationValidation(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	other := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.join(userB, room)
	root := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "root"})
	elsewhere := ts.send(userA, other, map[string]any{"msgtype": "m.text", "body": "other room"})
	child := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "in thread", "m.relates_to": relatesTo("m.thread", root)})

	sendCode := func(user, typ string, content map[string]any) (int, map[string]any) {
		txnCounter++
		return ts.do(user, "PUT", v3+room+"/send/"+typ+"/v"+itoa(txnCounter), content)
	}
	// A thread off a thread event: 400 M_UNKNOWN, as the spec says.
	code, body := sendCode(userB, "m.room.message", map[string]any{"body": "x", "m.relates_to": relatesTo("m.thread", child)})
	wantError(t, code, body, 400, "M_UNKNOWN")
	// A relation into another room, or to an unknown event.
	code, body = sendCode(userA, "m.room.message", map[string]any{"body": "x", "m.relates_to": relatesTo("m.thread", elsewhere)})
	wantError(t, code, body, 400, "M_INVALID_PARAM")
	code, body = sendCode(userA, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": "$nope", "key": "x"}})
	wantError(t, code, body, 400, "M_INVALID_PARAM")
	// The same annotation twice; another key is fine, and so is the same
	// key once the first is redacted.
	react := func() (int, map[string]any) {
		return sendCode(userB, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
	}
	code, body = react()
	if code != 200 {
		t.Fatalf("first reaction: %d %v", code, body)
	}
	first := body["event_id"].(string)
	code, body = react()
	wantError(t, code, body, 400, "M_DUPLICATE_ANNOTATION")
	ts.sendType(userB, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👎"}})
	ts.must(userB, "PUT", v3+room+"/redact/"+first+"/x", map[string]any{})
	if code, body = react(); code != 200 {
		t.Fatalf("reaction after redacting the first: %d %v", code, body)
	}
	// Malformed relations are not relations: accepted, not indexed.
	ts.send(userA, room, map[string]any{"body": "odd", "m.relates_to": map[string]any{"rel_type": 5, "event_id": root}})
	ts.send(userA, room, map[string]any{"body": "odd", "m.relates_to": "nope"})

	// GET /relations: bad input never a 500.
	rel := v1 + room + "/relations/"
	for _, c := range []struct {
		path   string
		status int
		code   string
	}{
		{rel + elsewhere, 404, "M_NOT_FOUND"},      // an event of another room
		{rel + "$unknown", 404, "M_NOT_FOUND"},     // unknown
		{rel + "nonsense", 400, "M_INVALID_PARAM"}, // not an event ID
		{rel + root + "?from=t12", 400, "M_INVALID_PARAM"},
		{rel + root + "?from=" + esc("eyJrIjoic2VhcmNoIiwibyI6MX0"), 400, "M_INVALID_PARAM"}, // a /search token
		{rel + root + "?to=s", 400, "M_INVALID_PARAM"},
		{rel + root + "?dir=x", 400, "M_INVALID_PARAM"},
		{rel + root + "?recurse=yes", 400, "M_INVALID_PARAM"},
		{rel + root + "?limit=-1", 400, "M_INVALID_PARAM"},
		{v1 + "notaroom/relations/" + root, 400, "M_INVALID_PARAM"},
	} {
		code, body := ts.do(userA, "GET", c.path, nil)
		if code != c.status || body["errcode"] != c.code {
			t.Fatalf("GET %s: %d %v, want %d %s", c.path, code, body, c.status, c.code)
		}
	}
	// Someone who is not in the room learns nothing, not even that the
	// event exists.
	code, body = ts.do(userC, "GET", rel+root, nil)
	wantError(t, code, body, 404, "M_NOT_FOUND")
}

func TestRelationsRespectHistoryVisibility(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.putState(userA, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
	root := ts.send(userA, room, map[string]any{"body": "root"})
	early := ts.send(userA, room, map[string]any{"body": "before Bob", "m.relates_to": relatesTo("m.thread", root)})
	_ = early
	ts.join(userB, room)
	late := ts.send(userA, room, map[string]any{"body": "after Bob", "m.relates_to": relatesTo("m.thread", root)})

	// Bob cannot see the root (sent before he joined): 404.
	code, body := ts.do(userB, "GET", v1+room+"/relations/"+root, nil)
	wantError(t, code, body, 404, "M_NOT_FOUND")
	// Alice sees both thread events.
	sameList(t, "Alice", ids(ts.must(userA, "GET", v1+room+"/relations/"+root, nil)["chunk"]), late, early)
	// A reaction by Bob to what he cannot see is refused.
	txnCounter++
	code, body = ts.do(userB, "PUT", v3+room+"/send/m.reaction/h"+itoa(txnCounter), map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "x"}})
	wantError(t, code, body, 400, "M_INVALID_PARAM")

	// Carol, who joined late and left, sees nothing of it.
	ts.join(userC, room)
	ts.must(userC, "POST", v3+room+"/leave", map[string]any{})
	after := ts.send(userA, room, map[string]any{"body": "after Carol left", "m.relates_to": relatesTo("m.thread", root)})
	if got := path(ts.must(userA, "GET", v3+room+"/event/"+root, nil), "unsigned", "m.relations", "m.thread", "latest_event", "event_id"); got != after {
		t.Fatalf("Alice's latest: %v", got)
	}
	code, body = ts.do(userC, "GET", v1+room+"/relations/"+root, nil)
	wantError(t, code, body, 404, "M_NOT_FOUND")
}

func TestThreadOf(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	root := ts.send(userA, room, map[string]any{"body": "root"})
	in := ts.send(userA, room, map[string]any{"body": "in", "m.relates_to": relatesTo("m.thread", root)})
	react := ts.sendType(userA, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": in, "key": "k"}})
	rootReact := ts.sendType(userA, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "k"}})
	for id, want := range map[string]string{root: "main", in: root, react: root, rootReact: "main", "$unknown": "main"} {
		got, err := ts.s.ThreadOf(t.Context(), roomID(room), eventID(id))
		if err != nil || got != want {
			t.Fatalf("ThreadOf(%s) = %q, %v; want %q", id, got, err, want)
		}
	}
}

func TestNewerEditTieBreak(t *testing.T) {
	ts := newTestServer(t, "optional")
	fixed := time.UnixMilli(1_700_000_000_000)
	rooms.SetClockForTest(ts.s, func() time.Time { return fixed })
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	root := ts.send(userA, room, map[string]any{"body": "root"})
	var latest string
	for i := 0; i < 4; i++ {
		id := ts.send(userA, room, map[string]any{"body": "* e", "m.new_content": map[string]any{"body": "e"}, "m.relates_to": relatesTo("m.replace", root)})
		if id > latest {
			latest = id
		}
	}
	// Same origin_server_ts: the lexicographically largest event ID wins.
	if got := path(ts.must(userA, "GET", v3+room+"/event/"+root, nil), "unsigned", "m.relations", "m.replace", "event_id"); got != latest {
		t.Fatalf("got %v, want %s", got, latest)
	}
}

// TestFirstEditIsBundledInARoomSeenWithoutChildren: a room once found to
// hold no children gets bundled aggregations as soon as its first edit
// arrives.
func TestFirstEditIsBundledInARoomSeenWithoutChildren(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.CreateRoom(userA, nil)
	root := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "root"})
	if u, _ := ts.pageBack(userA, room)[root]["unsigned"].(map[string]any); u["m.relations"] != nil {
		t.Fatalf("a bundle without children: %v", u)
	}
	ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "* root v2",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "root v2"}, "m.relates_to": relatesTo("m.replace", root)})
	u, _ := ts.pageBack(userA, room)[root]["unsigned"].(map[string]any)
	if rel, _ := u["m.relations"].(map[string]any); rel["m.replace"] == nil {
		t.Fatalf("no m.replace bundled after the first edit: %v", u)
	}
}
