package events

import "testing"

func buildVector(t *testing.T, i int) *PDU {
	t.Helper()
	p, err := ParsePDU([]byte(buildVectors[i].json), buildVectors[i].v)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestClientEvent(t *testing.T) {
	tests := []struct {
		name     string
		vector   int
		unsigned string
		want     string
	}{
		{
			"v10 message", 0, "",
			`{"content":{"body":"hello","msgtype":"m.text"},"event_id":"$rkoXW1mD-1YZu7j6_iXxNWEmkaa9D6qC8cgAr4OcZFM","origin_server_ts":1700000000000,"room_id":"!r:example.org","sender":"@alice:example.org","type":"m.room.message"}`,
		},
		{
			"with unsigned", 0, `{"age":5,"transaction_id":"t1"}`,
			`{"content":{"body":"hello","msgtype":"m.text"},"event_id":"$rkoXW1mD-1YZu7j6_iXxNWEmkaa9D6qC8cgAr4OcZFM","origin_server_ts":1700000000000,"room_id":"!r:example.org","sender":"@alice:example.org","type":"m.room.message","unsigned":{"age":5,"transaction_id":"t1"}}`,
		},
		{
			"empty unsigned omitted", 0, `{}`,
			`{"content":{"body":"hello","msgtype":"m.text"},"event_id":"$rkoXW1mD-1YZu7j6_iXxNWEmkaa9D6qC8cgAr4OcZFM","origin_server_ts":1700000000000,"room_id":"!r:example.org","sender":"@alice:example.org","type":"m.room.message"}`,
		},
		{
			// v10: redacts is top-level; newer clients also find it in content.
			"v10 redaction", 1, "",
			`{"content":{"reason":"spam","redacts":"$target"},"event_id":"$LSh7uy9vGUddpCgluywOxh-97uP8M1NaaWlQp7JfZl8","origin_server_ts":1700000000001,"redacts":"$target","room_id":"!r:example.org","sender":"@alice:example.org","type":"m.room.redaction"}`,
		},
		{
			// v11: redacts is in content; older clients also find it top-level.
			"v11 redaction", 2, "",
			`{"content":{"reason":"spam","redacts":"$target"},"event_id":"$t2xGc0aJBO7HsrbmLXi60wxmibSvJ1NIIz8SbI2oyA4","origin_server_ts":1700000000001,"redacts":"$target","room_id":"!r:example.org","sender":"@alice:example.org","type":"m.room.redaction"}`,
		},
		{
			"state event", 3, "",
			`{"content":{"displayname":"Alice ☃","membership":"join"},"event_id":"$MgAxfY093SssN5F2y9EjlGkQxbQRQyEsbbH52Bna1yc","origin_server_ts":1700000000002,"room_id":"!r:example.org","sender":"@alice:example.org","state_key":"@alice:example.org","type":"m.room.member"}`,
		},
		{
			// v12: the create event has no room_id of its own.
			"v12 create", 4, "",
			`{"content":{"room_version":"12"},"event_id":"$37iwD-DyT01UTC3QaO2Ot9nDS1G-rmVcGz0DYMPzG6c","origin_server_ts":1700000000000,"room_id":"!37iwD-DyT01UTC3QaO2Ot9nDS1G-rmVcGz0DYMPzG6c","sender":"@alice:example.org","state_key":"","type":"m.room.create"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var unsigned []byte
			if tt.unsigned != "" {
				unsigned = []byte(tt.unsigned)
			}
			got := ClientEvent(buildVector(t, tt.vector), unsigned)
			if string(got) != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
			if c, err := Canonical(got); err != nil || string(c) != string(got) {
				t.Fatalf("client event is not canonical: %v", err)
			}
		})
	}
}

func TestClientEventRedacted(t *testing.T) {
	p, err := buildVector(t, 1).Redacted() // v10 redaction loses "redacts"
	if err != nil {
		t.Fatal(err)
	}
	want := `{"content":{},"event_id":"$LSh7uy9vGUddpCgluywOxh-97uP8M1NaaWlQp7JfZl8","origin_server_ts":1700000000001,"room_id":"!r:example.org","sender":"@alice:example.org","type":"m.room.redaction","unsigned":{"redacted_because":{}}}`
	if got := ClientEvent(p, []byte(`{"redacted_because":{}}`)); string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestStrippedState(t *testing.T) {
	tests := []struct {
		vector int
		want   string
	}{
		{3, `{"content":{"displayname":"Alice ☃","membership":"join"},"sender":"@alice:example.org","state_key":"@alice:example.org","type":"m.room.member"}`},
		{4, `{"content":{"room_version":"12"},"sender":"@alice:example.org","state_key":"","type":"m.room.create"}`},
		{0, `{"content":{"body":"hello","msgtype":"m.text"},"sender":"@alice:example.org","type":"m.room.message"}`},
	}
	for _, tt := range tests {
		if got := StrippedState(buildVector(t, tt.vector)); string(got) != tt.want {
			t.Errorf("got\n%s\nwant\n%s", got, tt.want)
		}
	}
}

func TestFilterFields(t *testing.T) {
	ev := `{"content":{"body":"hi","m.relates_to":{"event_id":"$x","rel_type":"m.thread"},"m\\foo":1,"msgtype":"m.text"},"event_id":"$e","origin_server_ts":1,"room_id":"!r:x","sender":"@a:x","type":"m.room.message","unsigned":{"age":3}}`
	tests := []struct {
		name   string
		fields []string
		want   string
	}{
		{"none means all", nil, ev},
		{"top level", []string{"type", "sender"}, `{"sender":"@a:x","type":"m.room.message"}`},
		{"nested", []string{"content.body", "event_id"}, `{"content":{"body":"hi"},"event_id":"$e"}`},
		{"escaped dot", []string{`content.m\.relates_to.rel_type`}, `{"content":{"m.relates_to":{"rel_type":"m.thread"}}}`},
		{"escaped backslash", []string{`content.m\\foo`}, `{"content":{"m\\foo":1}}`},
		{"whole object wins", []string{"content.body", "content"}, `{"content":{"body":"hi","m.relates_to":{"event_id":"$x","rel_type":"m.thread"},"m\\foo":1,"msgtype":"m.text"}}`},
		{"whole object first", []string{"content", "content.body"}, `{"content":{"body":"hi","m.relates_to":{"event_id":"$x","rel_type":"m.thread"},"m\\foo":1,"msgtype":"m.text"}}`},
		{"missing leaf", []string{"content.nope", "type"}, `{"type":"m.room.message"}`},
		{"path through scalar", []string{"type.x"}, `{}`},
		{"nothing matches", []string{"zzz"}, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FilterFields([]byte(ev), tt.fields); string(got) != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestSplitField(t *testing.T) {
	tests := map[string][]string{
		`content.body`:          {"content", "body"},
		`content.m\.relates_to`: {"content", "m.relates_to"},
		`content.m\\foo`:        {"content", `m\foo`},
		`a\x`:                   {`a\x`},
		`a.`:                    {"a", ""},
		`a\\.b`:                 {`a\`, "b"},
	}
	for in, want := range tests {
		got := splitField(in)
		if len(got) != len(want) {
			t.Errorf("splitField(%q) = %q", in, got)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("splitField(%q) = %q", in, got)
			}
		}
	}
}

// TestClientEventWithUnsignedKeepsTheCachedForm: unsigned data is added to
// a copy of the cached client form, which other viewers go on getting.
func TestClientEventWithUnsignedKeepsTheCachedForm(t *testing.T) {
	p := buildVector(t, 0)
	plain := string(ClientEvent(p, nil))
	with := string(ClientEvent(p, []byte(`{"transaction_id":"t1"}`)))
	if want := plain[:len(plain)-1] + `,"unsigned":{"transaction_id":"t1"}}`; with != want {
		t.Fatalf("got\n%s\nwant\n%s", with, want)
	}
	if again := string(ClientEvent(p, nil)); again != plain {
		t.Fatalf("the cached form changed to\n%s", again)
	}
}
