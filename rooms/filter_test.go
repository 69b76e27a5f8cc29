package rooms_test

import (
	"net/url"
	"testing"
)

// TestMessagesByRelationType: /messages with the MSC3874 filters keeps or
// leaves out events by the rel_type of their relation; an event without a
// relation is kept by not_rel_types and left out by rel_types.
func TestMessagesByRelationType(t *testing.T) {
	ts := newTestServer(t, "optional")
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	start := ts.must(userA, "GET", v3+room+"/messages?dir=b&limit=1", nil)["start"].(string)
	root := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "root"})
	thread := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "in a thread", "m.relates_to": relatesTo("m.thread", root)})
	ref := ts.send(userA, room, map[string]any{"msgtype": "m.text", "body": "a reference", "m.relates_to": relatesTo("m.reference", root)})

	for _, tc := range []struct {
		filter string
		want   []string
	}{
		{`{"org.matrix.msc3874.rel_types":["m.thread"]}`, []string{thread}},
		{`{"org.matrix.msc3874.rel_types":["m.thread","m.reference"]}`, []string{thread, ref}},
		{`{"org.matrix.msc3874.not_rel_types":["m.thread"]}`, []string{root, ref}},
		{`{"org.matrix.msc3874.not_rel_types":["m.thread","m.reference"]}`, []string{root}},
		{`{"org.matrix.msc3874.rel_types":["m.thread"],"org.matrix.msc3874.not_rel_types":["m.thread"]}`, nil},
		{`{"types":["m.room.message"],"org.matrix.msc3874.rel_types":[]}`, nil},
	} {
		q := url.Values{"dir": {"f"}, "from": {start}, "filter": {tc.filter}}
		chunk := ts.must(userA, "GET", v3+room+"/messages?"+q.Encode(), nil)["chunk"]
		sameList(t, tc.filter, ids(chunk), tc.want...)
	}
}
