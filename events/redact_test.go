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
		v10, v11     string // expected content; v12 is as v11, v1-v9 as v10
		// older is the content expected in versions before olderUntil,
		// for the keys a version added (v6, v8, v9).
		older      string
		olderUntil int
	}{
		{
			"m.room.message", `{"body":"secret","msgtype":"m.text","m.relates_to":{"rel_type":"m.thread","event_id":"$x"}}`,
			`{}`, `{}`, "", 0,
		},
		{
			"m.room.member",
			`{"membership":"invite","displayname":"A","avatar_url":"mxc://a/b","join_authorised_via_users_server":"@x:y","reason":"r","third_party_invite":{"display_name":"d","signed":{"mxid":"@u:example.org","token":"t","signatures":{}}}}`,
			`{"join_authorised_via_users_server":"@x:y","membership":"invite"}`,
			`{"join_authorised_via_users_server":"@x:y","membership":"invite","third_party_invite":{"signed":{"mxid":"@u:example.org","signatures":{},"token":"t"}}}`,
			`{"membership":"invite"}`, 9, // v9 keeps join_authorised_via_users_server
		},
		{
			"m.room.member", `{"membership":"join","third_party_invite":{"display_name":"d"}}`,
			`{"membership":"join"}`,
			`{"membership":"join","third_party_invite":{}}`, "", 0,
		},
		{
			"m.room.member", `{"membership":"join","third_party_invite":"not an object"}`,
			`{"membership":"join"}`, `{"membership":"join"}`, "", 0,
		},
		{
			"m.room.create", `{"creator":"@u:example.org","room_version":"10","m.federate":false,"predecessor":{"room_id":"!old:x"},"additional_creators":["@b:x"]}`,
			`{"creator":"@u:example.org"}`,
			`{"additional_creators":["@b:x"],"creator":"@u:example.org","m.federate":false,"predecessor":{"room_id":"!old:x"},"room_version":"10"}`, "", 0,
		},
		{
			"m.room.join_rules", `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!s:x"}],"other":1}`,
			`{"allow":[{"room_id":"!s:x","type":"m.room_membership"}],"join_rule":"restricted"}`,
			`{"allow":[{"room_id":"!s:x","type":"m.room_membership"}],"join_rule":"restricted"}`,
			`{"join_rule":"restricted"}`, 8, // v8 keeps allow
		},
		{
			"m.room.power_levels",
			`{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,"notifications":{"room":50},"redact":50,"state_default":50,"users":{"@u:example.org":100},"users_default":0}`,
			`{"ban":50,"events":{"m.room.name":50},"events_default":0,"kick":50,"redact":50,"state_default":50,"users":{"@u:example.org":100},"users_default":0}`,
			`{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,"redact":50,"state_default":50,"users":{"@u:example.org":100},"users_default":0}`, "", 0,
		},
		{
			"m.room.history_visibility", `{"history_visibility":"shared","x":1}`,
			`{"history_visibility":"shared"}`, `{"history_visibility":"shared"}`, "", 0,
		},
		{
			"m.room.redaction", `{"redacts":"$t","reason":"spam"}`,
			`{}`, `{"redacts":"$t"}`, "", 0,
		},
		{
			"m.room.aliases", `{"aliases":["#a:x"],"x":1}`, // kept only before room version 6
			`{}`, `{}`,
			`{"aliases":["#a:x"]}`, 6,
		},
		{
			"m.room.encryption", `{"algorithm":"m.megolm.v1.aes-sha2"}`,
			`{}`, `{}`, "", 0,
		},
		{
			"m.room.name", `{}`,
			`{}`, `{}`, "", 0,
		},
	}
	for _, tt := range tests {
		in := fill(redactBase, tt.typ, tt.content)
		type versionCase struct {
			v           spec.RoomVersion
			top, expect string
		}
		var cases []versionCase
		for i, v := range spec.SupportedRoomVersions {
			c := versionCase{v, redactTopV10, tt.v10}
			if v.AtLeast11() {
				c = versionCase{v, redactTopV11, tt.v11}
			} else if i+1 < tt.olderUntil {
				c.expect = tt.older
			}
			cases = append(cases, c)
		}
		for _, c := range cases {
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
		{"unknown version", `{"type":"m.room.message","content":{}}`, "13"},
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
