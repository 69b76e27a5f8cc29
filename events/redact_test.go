package events

import (
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

// redactBase holds every top-level key any version keeps, plus some that no
// version keeps; %TYPE% and %CONTENT% are filled in per case.
const redactBase = `{
	"auth_events": ["$a"], "content": %CONTENT%, "depth": 7, "event_id": "$e",
	"hashes": {"sha256": "h"}, "membership": "join", "origin": "example.org",
	"origin_server_ts": 5, "prev_events": ["$p"], "prev_state": [],
	"room_id": "!r:example.org", "sender": "@u:example.org",
	"signatures": {"example.org": {"ed25519:1": "s"}}, "state_key": "",
	"type": "%TYPE%", "unsigned": {"age_ts": 5}, "redacts": "$t", "extra": {"x": 1}, "age_ts": 5
}`

// The top level each version keeps from redactBase, with content elided.
const (
	redactTopV10 = `{"auth_events":["$a"],"content":%CONTENT%,"depth":7,"event_id":"$e","hashes":{"sha256":"h"},"membership":"join","origin":"example.org","origin_server_ts":5,"prev_events":["$p"],"prev_state":[],"room_id":"!r:example.org","sender":"@u:example.org","signatures":{"example.org":{"ed25519:1":"s"}},"state_key":"","type":"%TYPE%"}`
	redactTopV11 = `{"auth_events":["$a"],"content":%CONTENT%,"depth":7,"event_id":"$e","hashes":{"sha256":"h"},"origin_server_ts":5,"prev_events":["$p"],"room_id":"!r:example.org","sender":"@u:example.org","signatures":{"example.org":{"ed25519:1":"s"}},"state_key":"","type":"%TYPE%"}`
)

func fill(tmpl, typ, content string) string {
	return strings.NewReplacer("%TYPE%", typ, "%CONTENT%", content).Replace(tmpl)
}

func TestRedact(t *testing.T) {
	tests := []struct {
		typ, content string
		v10, v11     string // expected content; v12 is as v11
	}{
		{
			"m.room.message", `{"body":"secret","msgtype":"m.text","m.relates_to":{"rel_type":"m.thread","event_id":"$x"}}`,
			`{}`, `{}`,
		},
		{
			"m.room.member",
			`{"membership":"invite","displayname":"A","avatar_url":"mxc://a/b","join_authorised_via_users_server":"@x:y","reason":"r","third_party_invite":{"display_name":"d","signed":{"mxid":"@u:example.org","token":"t","signatures":{}}}}`,
			`{"join_authorised_via_users_server":"@x:y","membership":"invite"}`,
			`{"join_authorised_via_users_server":"@x:y","membership":"invite","third_party_invite":{"signed":{"mxid":"@u:example.org","signatures":{},"token":"t"}}}`,
		},
		{
			"m.room.member", `{"membership":"join","third_party_invite":{"display_name":"d"}}`,
			`{"membership":"join"}`,
			`{"membership":"join","third_party_invite":{}}`,
		},
		{
			"m.room.member", `{"membership":"join","third_party_invite":"not an object"}`,
			`{"membership":"join"}`, `{"membership":"join"}`,
		},
		{
			"m.room.create", `{"creator":"@u:example.org","room_version":"10","m.federate":false,"predecessor":{"room_id":"!old:x"},"additional_creators":["@b:x"]}`,
			`{"creator":"@u:example.org"}`,
			`{"additional_creators":["@b:x"],"creator":"@u:example.org","m.federate":false,"predecessor":{"room_id":"!old:x"},"room_version":"10"}`,
		},
		{
			"m.room.join_rules", `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!s:x"}],"other":1}`,
			`{"allow":[{"room_id":"!s:x","type":"m.room_membership"}],"join_rule":"restricted"}`,
			`{"allow":[{"room_id":"!s:x","type":"m.room_membership"}],"join_rule":"restricted"}`,
		},
		{
			"m.room.power_levels",
			`{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,"notifications":{"room":50},"redact":50,"state_default":50,"users":{"@u:example.org":100},"users_default":0}`,
			`{"ban":50,"events":{"m.room.name":50},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@u:example.org":100},"users_default":0}`,
			`{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,"redact":50,"state_default":50,"users":{"@u:example.org":100},"users_default":0}`,
		},
		{
			"m.room.history_visibility", `{"history_visibility":"shared","x":1}`,
			`{"history_visibility":"shared"}`, `{"history_visibility":"shared"}`,
		},
		{
			"m.room.redaction", `{"redacts":"$t","reason":"spam"}`,
			`{}`, `{"redacts":"$t"}`,
		},
		{
			"m.room.aliases", `{"aliases":["#a:x"]}`, // kept only before room version 6
			`{}`, `{}`,
		},
		{
			"m.room.encryption", `{"algorithm":"m.megolm.v1.aes-sha2"}`,
			`{}`, `{}`,
		},
		{
			"m.room.name", `{}`,
			`{}`, `{}`,
		},
	}
	for _, tt := range tests {
		in := fill(redactBase, tt.typ, tt.content)
		for _, c := range []struct {
			v           spec.RoomVersion
			top, expect string
		}{
			{spec.RoomV10, redactTopV10, tt.v10},
			{spec.RoomV11, redactTopV11, tt.v11},
			{spec.RoomV12, redactTopV11, tt.v11},
		} {
			t.Run(tt.typ+"/v"+string(c.v), func(t *testing.T) {
				got, err := Redact([]byte(in), c.v)
				if err != nil {
					t.Fatal(err)
				}
				if want := fill(c.top, tt.typ, c.expect); string(got) != want {
					t.Fatalf("got\n%s\nwant\n%s", got, want)
				}
				again, err := Redact(got, c.v)
				if err != nil || string(again) != string(got) {
					t.Fatalf("redaction is not idempotent: %s, %v", again, err)
				}
			})
		}
	}
}

func TestRedactRefuses(t *testing.T) {
	tests := []struct {
		name, in string
		v        spec.RoomVersion
	}{
		{"not json", `{`, spec.RoomV11},
		{"array", `[]`, spec.RoomV11},
		{"no type", `{"content":{}}`, spec.RoomV11},
		{"type not string", `{"type":1,"content":{}}`, spec.RoomV11},
		{"no content", `{"type":"m.room.message"}`, spec.RoomV11},
		{"content not object", `{"type":"m.room.create","content":[]}`, spec.RoomV11},
		{"content string", `{"type":"m.room.message","content":"x"}`, spec.RoomV10},
		{"unknown version", `{"type":"m.room.message","content":{}}`, "9"},
		{"empty version", `{"type":"m.room.message","content":{}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Redact([]byte(tt.in), tt.v)
			if err == nil {
				t.Fatalf("redacted: %s", got)
			}
			if errCode(err) == "" {
				t.Fatalf("error %v is not a *spec.Error", err)
			}
		})
	}
}
