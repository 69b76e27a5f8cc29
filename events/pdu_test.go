package events

import (
	"crypto/sha256"
	"encoding/base64"
	"reflect"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

func ptr(s string) *string { return &s }

// buildVectors are events built from a ProtoEvent with the appendix's test
// key (server example.org). The expected bytes and event IDs were computed
// independently of this package, with Python's json (sort_keys,
// ensure_ascii=False, compact separators), hashlib and the cryptography
// library's ed25519, following the spec's algorithms.
var buildVectors = []struct {
	name  string
	v     spec.RoomVersion
	proto ProtoEvent
	json  string
	id    spec.EventID
}{
	{
		"v10 message", spec.RoomV10,
		ProtoEvent{Type: "m.room.message", Sender: "@alice:example.org", RoomID: "!r:example.org",
			Content: []byte(`{"msgtype":"m.text","body":"hello"}`), PrevEvents: []spec.EventID{"$prev1"},
			AuthEvents: []spec.EventID{"$auth1", "$auth2"}, Depth: 5, OriginServerTS: 1700000000000},
		`{"auth_events":["$auth1","$auth2"],"content":{"body":"hello","msgtype":"m.text"},"depth":5,"hashes":{"sha256":"NNsOLNVlhLVuhTD5rE4P5Aa1mfkxHb2gB9K4jbLZlxk"},"origin":"example.org","origin_server_ts":1700000000000,"prev_events":["$prev1"],"room_id":"!r:example.org","sender":"@alice:example.org","signatures":{"example.org":{"ed25519:1":"7cf8TaEzOOZmjR7pYdFExKexkxfqNhyC7DN6sc7FgfuIZ9X1nn0mn+EPaKhZba0d5LKnpQICORfRKB56K3J8DA"}},"type":"m.room.message"}`,
		"$rkoXW1mD-1YZu7j6_iXxNWEmkaa9D6qC8cgAr4OcZFM",
	},
	{
		"v10 redaction", spec.RoomV10,
		ProtoEvent{Type: "m.room.redaction", Sender: "@alice:example.org", RoomID: "!r:example.org",
			Content: []byte(`{"reason":"spam"}`), PrevEvents: []spec.EventID{"$prev1"},
			AuthEvents: []spec.EventID{"$auth1"}, Depth: 6, OriginServerTS: 1700000000001, Redacts: "$target"},
		`{"auth_events":["$auth1"],"content":{"reason":"spam"},"depth":6,"hashes":{"sha256":"jXHV7nDLVBH2TvV4kdV7h/wj+C2ofC8X4Yj7TPWTTrs"},"origin":"example.org","origin_server_ts":1700000000001,"prev_events":["$prev1"],"redacts":"$target","room_id":"!r:example.org","sender":"@alice:example.org","signatures":{"example.org":{"ed25519:1":"UvmxQwqg0xN7Gcm/eM6SsOCsbWpITB5yonp/SEGTZwew8AZg/6F0jlC7AoC7RIwKo7NEOdDnpqMrD3lvN1vcAA"}},"type":"m.room.redaction"}`,
		"$LSh7uy9vGUddpCgluywOxh-97uP8M1NaaWlQp7JfZl8",
	},
	{
		"v11 redaction", spec.RoomV11,
		ProtoEvent{Type: "m.room.redaction", Sender: "@alice:example.org", RoomID: "!r:example.org",
			Content: []byte(`{"reason":"spam"}`), PrevEvents: []spec.EventID{"$prev1"},
			AuthEvents: []spec.EventID{"$auth1"}, Depth: 6, OriginServerTS: 1700000000001, Redacts: "$target"},
		`{"auth_events":["$auth1"],"content":{"reason":"spam","redacts":"$target"},"depth":6,"hashes":{"sha256":"H67vwE51gU/uvItezccVdd6UKISe9fFmgdiLzDBGpp0"},"origin_server_ts":1700000000001,"prev_events":["$prev1"],"room_id":"!r:example.org","sender":"@alice:example.org","signatures":{"example.org":{"ed25519:1":"mHNwL6r5ysIUTIhZSw+vmUrqoNIxVD86sXrvRlljFhoSLBo81msXPls6ZSze65FG0NgnkBWGNDZ2cDcnDe3ODQ"}},"type":"m.room.redaction"}`,
		"$t2xGc0aJBO7HsrbmLXi60wxmibSvJ1NIIz8SbI2oyA4",
	},
	{
		"v11 member", spec.RoomV11,
		ProtoEvent{Type: "m.room.member", StateKey: ptr("@alice:example.org"), Sender: "@alice:example.org",
			RoomID: "!r:example.org", Content: []byte(`{"membership":"join","displayname":"Alice \u2603"}`),
			PrevEvents: []spec.EventID{"$p"}, AuthEvents: []spec.EventID{"$a"}, Depth: 2, OriginServerTS: 1700000000002},
		`{"auth_events":["$a"],"content":{"displayname":"Alice ☃","membership":"join"},"depth":2,"hashes":{"sha256":"kkBctCK8LxJvMq1lUEH5UoLG3PRu/60mfgy+Tzu1px8"},"origin_server_ts":1700000000002,"prev_events":["$p"],"room_id":"!r:example.org","sender":"@alice:example.org","signatures":{"example.org":{"ed25519:1":"IYm05zQrcUIcbRV8BpBo3oJJFpW0rshhDcR9j8x6yKi/u87UxtfZnkWEmb+vdgIP2IdC480Ytzt6MSS7kU9HAg"}},"state_key":"@alice:example.org","type":"m.room.member"}`,
		"$MgAxfY093SssN5F2y9EjlGkQxbQRQyEsbbH52Bna1yc",
	},
	{
		"v12 create", spec.RoomV12,
		ProtoEvent{Type: "m.room.create", StateKey: ptr(""), Sender: "@alice:example.org",
			Content: []byte(`{"room_version":"12"}`), Depth: 1, OriginServerTS: 1700000000000},
		`{"auth_events":[],"content":{"room_version":"12"},"depth":1,"hashes":{"sha256":"ksIHpUTLAqMJ08CadfgV5Ok2rT07vMUFBo7XdGP8STE"},"origin_server_ts":1700000000000,"prev_events":[],"sender":"@alice:example.org","signatures":{"example.org":{"ed25519:1":"ucXR6XrPQQ/j5bH2Ox3XegCywHb7bWWIk0TunBKeoM12JVj3f65PH4MjCvzZE1ZYvJhsv3+nd+S2a+aCjcwTCA"}},"state_key":"","type":"m.room.create"}`,
		"$37iwD-DyT01UTC3QaO2Ot9nDS1G-rmVcGz0DYMPzG6c",
	},
	{
		"v12 message", spec.RoomV12,
		ProtoEvent{Type: "m.room.message", Sender: "@alice:example.org", RoomID: "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ",
			Content: []byte(`{"body":"hi","msgtype":"m.text"}`), PrevEvents: []spec.EventID{"$p"},
			AuthEvents: []spec.EventID{"$c"}, Depth: 4, OriginServerTS: 1700000000003},
		`{"auth_events":["$c"],"content":{"body":"hi","msgtype":"m.text"},"depth":4,"hashes":{"sha256":"mIQFyhasv5ZfqpoIpVJ9ayoZZ/po7OP/7K70yB1qvZc"},"origin_server_ts":1700000000003,"prev_events":["$p"],"room_id":"!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ","sender":"@alice:example.org","signatures":{"example.org":{"ed25519:1":"qf1G98WvJhKo3F24rK7ZJ6Vk7eqco7f/XifwD1zyBbC+noa8TPGjFaeX07FBGG4VoTHylggxeRYJKuntHvf2AA"}},"type":"m.room.message"}`,
		"$cKdaLqWLJe1nIIqXnOmcuCBrEn1TVdABr_Tcp0Mgg3M",
	},
	{
		// Room version 1: the event carries its event_id ($opaque:server,
		// the opaque part a hash of the event before it) and lists
		// prev_events and auth_events with their reference hashes.
		"v1 message", spec.RoomV1,
		ProtoEvent{Type: "m.room.message", Sender: "@alice:example.org", RoomID: "!r:example.org",
			Content: []byte(`{"msgtype":"m.text","body":"hello"}`), PrevEvents: []spec.EventID{"$prev1:example.org"},
			AuthEvents: []spec.EventID{"$auth1:example.org"}, Depth: 5, OriginServerTS: 1700000000000,
			ReferenceHashes: map[spec.EventID][32]byte{
				"$prev1:example.org": sha256.Sum256([]byte("prev1")),
				"$auth1:example.org": sha256.Sum256([]byte("auth1")),
			}},
		`{"auth_events":[["$auth1:example.org",{"sha256":"MaQzq64kCS34Y251LQPw3B0IteKSVJto619kdV84kDw"}]],"content":{"body":"hello","msgtype":"m.text"},"depth":5,"event_id":"$7aZRZCm38O_jfY1Yc7jTWWuH:example.org","hashes":{"sha256":"zHzhGBeg/pu2vOKzh4pqtFAWRxDgR/W+28QGGmfWykQ"},"origin":"example.org","origin_server_ts":1700000000000,"prev_events":[["$prev1:example.org",{"sha256":"nCGwKYHNwZwNrPd95ubWyNb2s9k1b1kTmt52pvahAc4"}]],"room_id":"!r:example.org","sender":"@alice:example.org","signatures":{"example.org":{"ed25519:1":"RBPvV8AU3oDJ+cSnV0XVgTGL9urofiiKaLz/m4Boh0wxwp92djdtuS7bYghn2Ejq6pshWQQ+T95WFsjp44uhBQ"}},"type":"m.room.message"}`,
		"$7aZRZCm38O_jfY1Yc7jTWWuH:example.org",
	},
	{
		// Room version 3: the reference hash in standard base64 ("/").
		"v3 member", spec.RoomV3,
		ProtoEvent{Type: "m.room.member", StateKey: ptr("@alice:example.org"), Sender: "@alice:example.org",
			RoomID: "!r:example.org", Content: []byte(`{"membership":"join","displayname":"Alice"}`),
			PrevEvents: []spec.EventID{"$p"}, AuthEvents: []spec.EventID{"$a"}, Depth: 2, OriginServerTS: 1700000000002},
		`{"auth_events":["$a"],"content":{"displayname":"Alice","membership":"join"},"depth":2,"hashes":{"sha256":"GZdEzj2qCmNGiXf/QmO8jr4c6yrJ+S0KPR/dwwPe6EM"},"origin":"example.org","origin_server_ts":1700000000002,"prev_events":["$p"],"room_id":"!r:example.org","sender":"@alice:example.org","signatures":{"example.org":{"ed25519:1":"/eZbCmEJEx2qxqFqoV5OhO9qfiRvsgxKMUjpxsVpmiV0YujYMCNh8a23KXjehAq+jArfK8k15EY1eGyWO7WMDw"}},"state_key":"@alice:example.org","type":"m.room.member"}`,
		"$EL/ZU7AZhUNw2MgPov/zkLQIZUIyXOgguaVYbjmrf/g",
	},
	{
		// Room version 4: the same event, URL-safe.
		"v4 member", spec.RoomV4,
		ProtoEvent{Type: "m.room.member", StateKey: ptr("@alice:example.org"), Sender: "@alice:example.org",
			RoomID: "!r:example.org", Content: []byte(`{"membership":"join","displayname":"Alice"}`),
			PrevEvents: []spec.EventID{"$p"}, AuthEvents: []spec.EventID{"$a"}, Depth: 2, OriginServerTS: 1700000000002},
		`{"auth_events":["$a"],"content":{"displayname":"Alice","membership":"join"},"depth":2,"hashes":{"sha256":"GZdEzj2qCmNGiXf/QmO8jr4c6yrJ+S0KPR/dwwPe6EM"},"origin":"example.org","origin_server_ts":1700000000002,"prev_events":["$p"],"room_id":"!r:example.org","sender":"@alice:example.org","signatures":{"example.org":{"ed25519:1":"/eZbCmEJEx2qxqFqoV5OhO9qfiRvsgxKMUjpxsVpmiV0YujYMCNh8a23KXjehAq+jArfK8k15EY1eGyWO7WMDw"}},"state_key":"@alice:example.org","type":"m.room.member"}`,
		"$EL_ZU7AZhUNw2MgPov_zkLQIZUIyXOgguaVYbjmrf_g",
	},
}

func TestBuildVectors(t *testing.T) {
	key := testKey(t, "example.org")
	for _, tt := range buildVectors {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Build(tt.proto, tt.v, key)
			if err != nil {
				t.Fatal(err)
			}
			if string(p.JSON()) != tt.json {
				t.Fatalf("JSON\n%s\nwant\n%s", p.JSON(), tt.json)
			}
			if p.EventID() != tt.id {
				t.Fatalf("event ID %s, want %s", p.EventID(), tt.id)
			}
			checkAccessors(t, p, tt.proto, tt.v)
			if err := VerifyEvent(p.JSON(), tt.v, "example.org", "ed25519:1", testPub(t)); err != nil {
				t.Fatalf("VerifyEvent: %v", err)
			}
			if err := CheckContentHash(p.JSON()); err != nil {
				t.Fatalf("CheckContentHash: %v", err)
			}

			// Parsing the bytes gives the same PDU.
			q, err := ParsePDU([]byte(tt.json), tt.v)
			if err != nil {
				t.Fatalf("ParsePDU: %v", err)
			}
			if !reflect.DeepEqual(p, q) {
				t.Fatalf("ParsePDU differs from Build:\n%+v\n%+v", q, p)
			}
			// So does loading the stored bytes.
			l, err := LoadPDU(p.JSON(), tt.v, p.EventID())
			if err != nil || !reflect.DeepEqual(p, l) {
				t.Fatalf("LoadPDU: %+v, %v", l, err)
			}

			// The redacted form keeps the event ID and still verifies.
			r, err := p.Redacted()
			if err != nil {
				t.Fatal(err)
			}
			if r.EventID() != p.EventID() || r.RoomID() != p.RoomID() {
				t.Fatalf("redacted IDs %s %s", r.EventID(), r.RoomID())
			}
			if id, err := EventID(r.JSON(), tt.v); err != nil || id != p.EventID() {
				t.Fatalf("event ID of redacted form %s, %v", id, err)
			}
			if err := VerifyEvent(r.JSON(), tt.v, "example.org", "ed25519:1", testPub(t)); err != nil {
				t.Fatalf("VerifyEvent redacted: %v", err)
			}
			// The reference hash: the ID itself from v3, computed in v1/v2.
			sum, err := p.ReferenceHash()
			want, _ := ReferenceHash(p.JSON(), tt.v)
			if err != nil || sum != want {
				t.Fatalf("ReferenceHash %x, %v, want %x", sum, err, want)
			}
			if !tt.v.EventIDInEvent() && string(p.EventID())[1:] != encodeFor(tt.v, sum[:]) {
				t.Fatalf("event ID %s is not the reference hash", p.EventID())
			}
		})
	}
}

func encodeFor(v spec.RoomVersion, b []byte) string {
	if v.URLSafeEventIDs() {
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return base64.RawStdEncoding.EncodeToString(b)
}

func checkAccessors(t *testing.T, p *PDU, proto ProtoEvent, v spec.RoomVersion) {
	t.Helper()
	wantRoom := proto.RoomID
	if wantRoom == "" {
		wantRoom = spec.RoomID("!" + string(p.EventID())[1:])
	}
	sk, isState := p.StateKey()
	got := []any{p.Version(), p.RoomID(), p.Type(), p.Sender(), p.Depth(), p.OriginServerTS(),
		len(p.PrevEvents()), len(p.AuthEvents()), p.Redacts(), isState, p.IsState()}
	want := []any{v, wantRoom, proto.Type, proto.Sender, proto.Depth, proto.OriginServerTS,
		len(proto.PrevEvents), len(proto.AuthEvents), proto.Redacts, proto.StateKey != nil, proto.StateKey != nil}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("accessors %v, want %v", got, want)
	}
	for i, id := range proto.PrevEvents {
		if p.PrevEvents()[i] != id {
			t.Fatalf("prev_events %v", p.PrevEvents())
		}
	}
	for i, id := range proto.AuthEvents {
		if p.AuthEvents()[i] != id {
			t.Fatalf("auth_events %v", p.AuthEvents())
		}
	}
	if isState && sk != *proto.StateKey {
		t.Fatalf("state key %q", sk)
	}
	if p.Get("signatures.example\\.org.ed25519:1").String() == "" {
		t.Fatal("gjson cannot read the signature")
	}
	if _, ok := member(p.JSON(), "unsigned"); ok {
		t.Fatal("stored PDU has unsigned data")
	}
	if p.Content().Type.String() != "JSON" || !p.Content().IsObject() {
		t.Fatal("content is not an object")
	}
}

func TestBuildRedactedRedaction(t *testing.T) {
	key := testKey(t, "example.org")
	// v10: redaction strips the top-level "redacts"; v11 keeps content.redacts.
	for _, tt := range []struct {
		v    spec.RoomVersion
		want spec.EventID
	}{{spec.RoomV10, ""}, {spec.RoomV11, "$target"}, {spec.RoomV12, "$target"}} {
		p, err := Build(ProtoEvent{Type: "m.room.redaction", Sender: "@a:example.org", RoomID: "!r:example.org",
			Content: []byte(`{"reason":"x"}`), Redacts: "$target", Depth: 3, OriginServerTS: 1}, tt.v, key)
		if err != nil {
			t.Fatal(err)
		}
		if p.Redacts() != "$target" {
			t.Fatalf("v%s Redacts %q", tt.v, p.Redacts())
		}
		r, err := p.Redacted()
		if err != nil {
			t.Fatal(err)
		}
		if r.Redacts() != tt.want {
			t.Errorf("v%s redacted Redacts %q, want %q", tt.v, r.Redacts(), tt.want)
		}
		if r.Content().Get("reason").Exists() {
			t.Errorf("v%s reason survived redaction", tt.v)
		}
	}
}

func TestBuildOrigin(t *testing.T) {
	key := testKey(t, "example.org")
	proto := ProtoEvent{Type: "m.room.message", Sender: "@a:example.org", RoomID: "!r:example.org", Depth: 1}
	for _, v := range spec.SupportedRoomVersions {
		p, err := Build(proto, v, key)
		if err != nil {
			t.Fatal(err)
		}
		if has := p.Get("origin").Exists(); has != !v.AtLeast11() {
			t.Errorf("v%s origin present = %v", v, has)
		}
		if p.Content().Raw != "{}" {
			t.Errorf("v%s nil content became %s", v, p.Content().Raw)
		}
	}
}

func TestBuildRefuses(t *testing.T) {
	key := testKey(t, "example.org")
	ok := ProtoEvent{Type: "m.room.message", Sender: "@a:example.org", RoomID: "!r:example.org",
		Content: []byte(`{}`), Depth: 1, OriginServerTS: 1}
	tests := []struct {
		name  string
		edit  func(*ProtoEvent)
		v     spec.RoomVersion
		key   SigningKey
		wantC spec.ErrCode
	}{
		{"unknown version", func(*ProtoEvent) {}, "13", key, spec.ErrUnsupportedRoomVersion},
		{"foreign sender", func(p *ProtoEvent) { p.Sender = "@a:other.org" }, spec.RoomV11, key, spec.ErrUnknown},
		{"sender without server", func(p *ProtoEvent) { p.Sender = "@a" }, spec.RoomV11, key, spec.ErrUnknown},
		{"bad key", func(*ProtoEvent) {}, spec.RoomV11, SigningKey{ServerName: "example.org", KeyID: "ed25519:1"}, spec.ErrUnknown},
		{"content not object", func(p *ProtoEvent) { p.Content = []byte(`[]`) }, spec.RoomV11, key, spec.ErrBadJSON},
		{"content float", func(p *ProtoEvent) { p.Content = []byte(`{"a":1.5}`) }, spec.RoomV11, key, spec.ErrBadJSON},
		{"no room", func(p *ProtoEvent) { p.RoomID = "" }, spec.RoomV11, key, spec.ErrBadJSON},
		{"v12 create with room", func(p *ProtoEvent) { p.Type = "m.room.create"; p.StateKey = ptr("") }, spec.RoomV12, key, spec.ErrBadJSON},
		{"redacts on message", func(p *ProtoEvent) { p.Redacts = "$x" }, spec.RoomV11, key, spec.ErrBadJSON},
		{"conflicting redacts", func(p *ProtoEvent) {
			p.Type, p.Redacts, p.Content = "m.room.redaction", "$x", []byte(`{"redacts":"$y"}`)
		}, spec.RoomV11, key, spec.ErrBadJSON},
		{"negative depth", func(p *ProtoEvent) { p.Depth = -1 }, spec.RoomV11, key, spec.ErrBadJSON},
		{"depth out of range", func(p *ProtoEvent) { p.Depth = 1 << 53 }, spec.RoomV11, key, spec.ErrBadJSON},
		{"ts out of range", func(p *ProtoEvent) { p.OriginServerTS = 1 << 60 }, spec.RoomV11, key, spec.ErrBadJSON},
		{"invalid utf8 type", func(p *ProtoEvent) { p.Type = "\xff" }, spec.RoomV11, key, spec.ErrBadJSON},
		{"long type", func(p *ProtoEvent) { p.Type = strings.Repeat("t", 256) }, spec.RoomV11, key, spec.ErrBadJSON},
		{"long state key", func(p *ProtoEvent) { p.StateKey = ptr(strings.Repeat("s", 256)) }, spec.RoomV11, key, spec.ErrBadJSON},
		{"bad prev event", func(p *ProtoEvent) { p.PrevEvents = []spec.EventID{"x"} }, spec.RoomV11, key, spec.ErrBadJSON},
		{"too many prev events", func(p *ProtoEvent) { p.PrevEvents = make([]spec.EventID, 21); fillIDs(p.PrevEvents) }, spec.RoomV11, key, spec.ErrBadJSON},
		{"too many auth events", func(p *ProtoEvent) { p.AuthEvents = make([]spec.EventID, 11); fillIDs(p.AuthEvents) }, spec.RoomV11, key, spec.ErrBadJSON},
		{"too large", func(p *ProtoEvent) { p.Content = []byte(`{"a":"` + strings.Repeat("x", MaxEventSize) + `"}`) }, spec.RoomV11, key, spec.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			tt.edit(&p)
			got, err := Build(p, tt.v, tt.key)
			if err == nil {
				t.Fatalf("built %s", got.JSON())
			}
			if c := errCode(err); c != tt.wantC {
				t.Fatalf("error %v, want %s", err, tt.wantC)
			}
		})
	}
}

func fillIDs(ids []spec.EventID) {
	for i := range ids {
		ids[i] = "$e"
	}
}

func TestParsePDURefuses(t *testing.T) {
	base := buildVectors[5].json // v12 message
	create := buildVectors[4].json
	v10 := buildVectors[1].json // v10 redaction
	rep := func(s, from, to string) string {
		out := strings.Replace(s, from, to, 1)
		if out == s {
			t.Fatalf("edit %q does not apply", from)
		}
		return out
	}
	tests := []struct {
		name string
		ev   string
		v    spec.RoomVersion
		code spec.ErrCode
	}{
		{"not json", `{"type":`, spec.RoomV12, spec.ErrNotJSON},
		{"array", `[]`, spec.RoomV12, spec.ErrBadJSON},
		{"float", rep(base, `"depth":4`, `"depth":4.0`), spec.RoomV12, spec.ErrBadJSON},
		{"unknown version", base, "13", spec.ErrUnsupportedRoomVersion},
		{"no type", rep(base, `,"type":"m.room.message"`, ``), spec.RoomV12, spec.ErrBadJSON},
		{"type not string", rep(base, `"type":"m.room.message"`, `"type":1`), spec.RoomV12, spec.ErrBadJSON},
		{"no sender", rep(base, `"sender":"@alice:example.org",`, ``), spec.RoomV12, spec.ErrBadJSON},
		{"sender not user", rep(base, `"sender":"@alice:example.org"`, `"sender":"alice"`), spec.RoomV12, spec.ErrBadJSON},
		{"sender no server", rep(base, `"sender":"@alice:example.org"`, `"sender":"@alice"`), spec.RoomV12, spec.ErrBadJSON},
		{"no content", rep(base, `"content":{"body":"hi","msgtype":"m.text"},`, ``), spec.RoomV12, spec.ErrBadJSON},
		{"content not object", rep(base, `"content":{"body":"hi","msgtype":"m.text"}`, `"content":"hi"`), spec.RoomV12, spec.ErrBadJSON},
		{"no depth", rep(base, `"depth":4,`, ``), spec.RoomV12, spec.ErrBadJSON},
		{"depth string", rep(base, `"depth":4`, `"depth":"4"`), spec.RoomV12, spec.ErrBadJSON},
		{"negative depth", rep(base, `"depth":4`, `"depth":-4`), spec.RoomV12, spec.ErrBadJSON},
		{"no ts", rep(base, `"origin_server_ts":1700000000003,`, ``), spec.RoomV12, spec.ErrBadJSON},
		{"ts null", rep(base, `"origin_server_ts":1700000000003`, `"origin_server_ts":null`), spec.RoomV12, spec.ErrBadJSON},
		{"no prev_events", rep(base, `"prev_events":["$p"],`, ``), spec.RoomV12, spec.ErrBadJSON},
		{"prev_events not array", rep(base, `"prev_events":["$p"]`, `"prev_events":"$p"`), spec.RoomV12, spec.ErrBadJSON},
		{"prev_events number", rep(base, `"prev_events":["$p"]`, `"prev_events":[1]`), spec.RoomV12, spec.ErrBadJSON},
		{"prev_events v1 pairs", rep(base, `"prev_events":["$p"]`, `"prev_events":[["$p",{}]]`), spec.RoomV12, spec.ErrBadJSON},
		{"prev_events no sigil", rep(base, `"prev_events":["$p"]`, `"prev_events":["p"]`), spec.RoomV12, spec.ErrBadJSON},
		{"no auth_events", rep(base, `"auth_events":["$c"],`, ``), spec.RoomV12, spec.ErrBadJSON},
		{"auth_events object", rep(base, `"auth_events":["$c"]`, `"auth_events":{}`), spec.RoomV12, spec.ErrBadJSON},
		{"no hashes", rep(base, `"hashes":{"sha256":"mIQFyhasv5ZfqpoIpVJ9ayoZZ/po7OP/7K70yB1qvZc"},`, ``), spec.RoomV12, spec.ErrBadJSON},
		{"hashes without sha256", rep(base, `"hashes":{"sha256"`, `"hashes":{"sha512"`), spec.RoomV12, spec.ErrBadJSON},
		{"no signatures", rep(base, `"signatures":{"example.org":{"ed25519:1":"qf1G98WvJhKo3F24rK7ZJ6Vk7eqco7f/XifwD1zyBbC+noa8TPGjFaeX07FBGG4VoTHylggxeRYJKuntHvf2AA"}},`, ``), spec.RoomV12, spec.ErrBadJSON},
		{"signatures nested wrong", rep(base, `"signatures":{"example.org":{`, `"signatures":{"x":[],"example.org":{`), spec.RoomV12, spec.ErrBadJSON},
		{"signature not string", rep(base, `"signatures":{"example.org":{`, `"signatures":{"example.org":{"ed25519:0":1,`), spec.RoomV12, spec.ErrBadJSON},
		{"no room_id", rep(base, `"room_id":"!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ",`, ``), spec.RoomV12, spec.ErrBadJSON},
		{"room_id no sigil", rep(base, `"room_id":"!`, `"room_id":"`), spec.RoomV12, spec.ErrBadJSON},
		{"v12 create with room_id", rep(create, `"prev_events":[],`, `"prev_events":[],"room_id":"!r:example.org",`), spec.RoomV12, spec.ErrBadJSON},
		{"v11 create without room_id", create, spec.RoomV11, spec.ErrBadJSON},
		{"state_key not string", rep(create, `"state_key":""`, `"state_key":null`), spec.RoomV12, spec.ErrBadJSON},
		{"event_id present", rep(base, `"depth":4`, `"depth":4,"event_id":"$x"`), spec.RoomV12, spec.ErrBadJSON},
		{"v10 redacts not string", rep(v10, `"redacts":"$target"`, `"redacts":5`), spec.RoomV10, spec.ErrBadJSON},
		{"v11 content.redacts not string", rep(buildVectors[2].json, `"redacts":"$target"`, `"redacts":["$target"]`), spec.RoomV11, spec.ErrBadJSON},
		{"too large", rep(base, `"body":"hi"`, `"body":"`+strings.Repeat("x", MaxEventSize)+`"`), spec.RoomV12, spec.ErrTooLarge},
		{"long type", rep(base, `"type":"m.room.message"`, `"type":"`+strings.Repeat("t", 256)+`"`), spec.RoomV12, spec.ErrBadJSON},
		{"long sender", rep(base, `"sender":"@alice:example.org"`, `"sender":"@`+strings.Repeat("a", 250)+`:example.org"`), spec.RoomV12, spec.ErrBadJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePDU([]byte(tt.ev), tt.v)
			if err == nil {
				t.Fatalf("parsed %s", p.JSON())
			}
			if c := errCode(err); c != tt.code {
				t.Fatalf("error %v, want %s", err, tt.code)
			}
		})
	}
}

func TestParsePDUNormalises(t *testing.T) {
	// Whitespace, key order and unsigned data do not change the stored
	// bytes or the event ID.
	want := buildVectors[3]
	messy := strings.Replace(want.json, `{"auth_events"`, "{ \"unsigned\": {\"age\": 12},\n  \"auth_events\"", 1)
	messy = strings.Replace(messy, `"membership":"join"`, `"membership" : "\u006aoin"`, 1)
	p, err := ParsePDU([]byte(messy), want.v)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.JSON()) != want.json || p.EventID() != want.id {
		t.Fatalf("got %s %s", p.JSON(), p.EventID())
	}
	// Unknown top-level keys are kept (they are covered by the content hash).
	extra := strings.Replace(want.json, `"depth":2`, `"depth":2,"origin":"example.org","zz_extra":[1]`, 1)
	p, err = ParsePDU([]byte(extra), want.v)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Get("zz_extra").Exists() || p.EventID() != want.id {
		t.Fatalf("extra keys: %s %s", p.JSON(), p.EventID())
	}
}

func TestLoadPDURefuses(t *testing.T) {
	if _, err := LoadPDU([]byte(buildVectors[0].json), spec.RoomV10, "nope"); err == nil {
		t.Error("accepted a bad event ID")
	}
	if _, err := LoadPDU([]byte(buildVectors[0].json), "13", buildVectors[0].id); err == nil {
		t.Error("accepted an unknown version")
	}
	if _, err := LoadPDU([]byte(`{"type":"x"`), spec.RoomV10, buildVectors[0].id); err == nil {
		t.Error("accepted truncated bytes")
	}
}

// TestEventFormatsPerVersion covers what differs between the event formats
// of rooms/v1 (event_id in the event, [ID, hashes] pairs) and v3+ (IDs
// derived), and the relaxed number rules before v6.
func TestEventFormatsPerVersion(t *testing.T) {
	v1 := buildVectors[6].json
	rep := strings.Replace
	tests := []struct {
		name string
		ev   string
		v    spec.RoomVersion
		ok   bool
	}{
		{"v1 as built", v1, spec.RoomV1, true},
		{"v2 same format", v1, spec.RoomV2, true},
		{"v1 event in a v3 room", v1, spec.RoomV3, false},
		{"v1 without event_id", rep(v1, `"event_id":"$7aZRZCm38O_jfY1Yc7jTWWuH:example.org",`, ``, 1), spec.RoomV1, false},
		{"v1 event_id without server", rep(v1, `$7aZRZCm38O_jfY1Yc7jTWWuH:example.org`, `$7aZRZCm38O`, 1), spec.RoomV1, false},
		{"v1 event_id with a bad server", rep(v1, `$7aZRZCm38O_jfY1Yc7jTWWuH:example.org`, `$7a:exa mple`, 1), spec.RoomV1, false},
		{"v1 plain prev_events", rep(v1, `[["$prev1:example.org",{"sha256":"nCGwKYHNwZwNrPd95ubWyNb2s9k1b1kTmt52pvahAc4"}]]`, `["$prev1:example.org"]`, 1), spec.RoomV1, false},
		{"v1 pair of three", rep(v1, `{"sha256":"nCGwKYHNwZwNrPd95ubWyNb2s9k1b1kTmt52pvahAc4"}]`, `{},1]`, 1), spec.RoomV1, false},
		{"v1 pair without hash object", rep(v1, `{"sha256":"nCGwKYHNwZwNrPd95ubWyNb2s9k1b1kTmt52pvahAc4"}]`, `"x"]`, 1), spec.RoomV1, false},
		{"v1 hash not a string", rep(v1, `{"sha256":"nCGwKYHNwZwNrPd95ubWyNb2s9k1b1kTmt52pvahAc4"}]`, `{"sha256":1}]`, 1), spec.RoomV1, false},
		// Servers in the wild send {} as the hash: nothing verifies it.
		{"v1 empty hash object", rep(v1, `{"sha256":"nCGwKYHNwZwNrPd95ubWyNb2s9k1b1kTmt52pvahAc4"}]`, `{}]`, 1), spec.RoomV1, true},
		{"v5 float kept", rep(buildVectors[0].json, `"body":"hello"`, `"body":"hello","f":5.114698E4,"big":123456789012345678901`, 1), spec.RoomV5, true},
		{"v6 float refused", rep(buildVectors[0].json, `"body":"hello"`, `"body":"hello","f":50.5`, 1), spec.RoomV6, false},
		{"v6 big integer refused", rep(buildVectors[0].json, `"body":"hello"`, `"body":"hello","big":9007199254740992`, 1), spec.RoomV6, false},
		{"v5 depth must still be an integer", rep(buildVectors[0].json, `"depth":5`, `"depth":5.5`, 1), spec.RoomV5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePDU([]byte(tt.ev), tt.v)
			if tt.ok != (err == nil) {
				t.Fatalf("ParsePDU: %v, want ok %v", err, tt.ok)
			}
			if err != nil && errCode(err) != spec.ErrBadJSON {
				t.Fatalf("error %v, want M_BAD_JSON", err)
			}
			if err == nil && tt.v == spec.RoomV5 && !strings.Contains(string(p.JSON()), `"f":5.114698E4`) {
				t.Fatalf("number rewritten: %s", p.JSON())
			}
		})
	}

	// The ID of a version 1 event is its own, and loading checks it.
	p, err := ParsePDU([]byte(v1), spec.RoomV1)
	if err != nil || p.EventID() != buildVectors[6].id {
		t.Fatalf("v1 ID %v, %v", p, err)
	}
	if _, err := LoadPDU([]byte(v1), spec.RoomV1, "$other:example.org"); err == nil {
		t.Error("LoadPDU accepted an ID that is not the event's event_id")
	}
	if id, err := EventID([]byte(v1), spec.RoomV1); err != nil || id != p.EventID() {
		t.Errorf("EventID %s, %v", id, err)
	}
	if got := EventIDServer(p.EventID()); got != "example.org" {
		t.Errorf("EventIDServer %q", got)
	}
	if got := EventIDServer("$abc"); got != "" {
		t.Errorf("EventIDServer of a hash ID %q", got)
	}
	// Building needs the reference hash of every event named.
	proto := buildVectors[6].proto
	proto.ReferenceHashes = nil
	if _, err := Build(proto, spec.RoomV1, testKey(t, "example.org")); errCode(err) != spec.ErrBadJSON {
		t.Errorf("Build without reference hashes: %v", err)
	}
}
