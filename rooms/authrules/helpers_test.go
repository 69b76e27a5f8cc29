package authrules

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// newRoom builds a room of version v in the given preset with extra state.
func newRoom(t *testing.T, v spec.RoomVersion, preset string, create map[string]any, extra ...map[string]any) *room {
	t.Helper()
	r := &room{t: t, v: v, names: map[string]spec.EventID{}}
	fx := map[string]any{"type": spec.MRoomCreate}
	for k, x := range create {
		fx[k] = x
	}
	c, err := r.build(fx)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	r.create, r.roomID = c, c.RoomID()
	r.names["$CREATE"] = c.EventID()
	r.add(c)
	for _, e := range append(presetState(preset, v), extra...) {
		p, err := r.build(e)
		if err != nil {
			t.Fatalf("state: %v", err)
		}
		r.add(p)
	}
	return r
}

func (r *room) mustBuild(fx map[string]any) *events.PDU {
	r.t.Helper()
	p, err := r.build(fx)
	if err != nil {
		r.t.Fatalf("build %v: %v", fx, err)
	}
	return p
}

// otherRoom is the create override of a second room, with another room ID.
func otherRoom(v spec.RoomVersion) map[string]any {
	c := map[string]any{"content": map[string]any{"m.federate": true}}
	if !v.AtLeast12() {
		c["room_id"] = "!other:example.org"
	}
	return c
}

func message(sender string) map[string]any {
	return map[string]any{"type": spec.MRoomMessage, "sender": sender, "content": map[string]any{"body": "hi"}}
}

func wantDenied(t *testing.T, err error, rule string) {
	t.Helper()
	var se *spec.Error
	if !errors.As(err, &se) || se.Code != spec.ErrForbidden {
		t.Fatalf("got %v, want M_FORBIDDEN", err)
	}
	if rule != "" && !strings.HasPrefix(se.Message, "auth rule "+rule+":") {
		t.Fatalf("got %q, want rule %s", se.Message, rule)
	}
}

// lyingState answers every question with the same event.
type lyingState struct{ ev *events.PDU }

func (s lyingState) Get(string, string) *events.PDU { return s.ev }

type panickyState struct{}

func (panickyState) Get(string, string) *events.PDU { panic("storage exploded") }

func TestAllowedFailsClosed(t *testing.T) {
	for _, v := range spec.SupportedRoomVersions {
		t.Run(string(v), func(t *testing.T) {
			r := newRoom(t, v, "base", nil)
			msg := r.mustBuild(message(alice))
			state := r.stateMap()
			if err := Allowed(msg, state); err != nil {
				t.Fatalf("control: %v", err)
			}
			wantDenied(t, Allowed(nil, state), "event")
			wantDenied(t, Allowed(&events.PDU{}, state), "room_version")
			wantDenied(t, Allowed(msg, nil), "auth_events.create")
			wantDenied(t, Allowed(msg, StateMap{}), "auth_events.create")
			wantDenied(t, Allowed(msg, panickyState{}), "internal")

			// A state that answers with the wrong event for a key.
			topic := r.mustBuild(map[string]any{"type": "m.room.topic", "state_key": "", "sender": mod, "content": map[string]any{"topic": "x"}})
			bad := r.stateMap()
			bad[StateKeyPair{spec.MRoomPowerLevels, ""}] = topic
			wantDenied(t, Allowed(msg, bad), "auth_events.key")
			if v.AtLeast12() {
				wantDenied(t, Allowed(msg, lyingState{topic}), "room_id.create")
			} else {
				wantDenied(t, Allowed(msg, lyingState{topic}), "auth_events.key")
			}

			// A state event of another room under the right key.
			other := newRoom(t, v, "base", otherRoom(v))
			foreign := other.stateMap().Get(spec.MRoomMember, alice)
			bad = r.stateMap()
			bad[StateKeyPair{spec.MRoomMember, alice}] = foreign
			wantDenied(t, Allowed(msg, bad), "auth_events.room_id")

			// The create event of another room.
			bad = r.stateMap()
			bad[StateKeyPair{spec.MRoomCreate, ""}] = other.create
			if v.AtLeast12() {
				wantDenied(t, Allowed(msg, bad), "room_id.create")
			} else {
				wantDenied(t, Allowed(msg, bad), "auth_events.room_id")
			}
		})
	}
}

func TestAllowedRefusesMixedRoomVersions(t *testing.T) {
	// Rooms 10 and 11 share the room ID format: the same room ID in another
	// version is another room.
	r10 := newRoom(t, spec.RoomV10, "base", nil)
	r11 := newRoom(t, spec.RoomV11, "base", nil)
	msg := r11.mustBuild(message(alice))
	if msg.RoomID() != r10.roomID {
		t.Fatal("test needs equal room IDs")
	}
	wantDenied(t, Allowed(msg, r10.stateMap()), "auth_events.room_id")
}

func TestAuthEventKeys(t *testing.T) {
	str := func(s string) *string { return &s }
	content := func(s string) gjson.Result { return gjson.Parse(s) }
	create := StateKeyPair{spec.MRoomCreate, ""}
	pl := StateKeyPair{spec.MRoomPowerLevels, ""}
	jr := StateKeyPair{spec.MRoomJoinRules, ""}
	member := func(u string) StateKeyPair { return StateKeyPair{spec.MRoomMember, u} }
	tests := []struct {
		name     string
		typ      string
		sk       *string
		sender   string
		content  string
		v        spec.RoomVersion
		want     []StateKeyPair
		wantNone bool
	}{
		{"create v10", spec.MRoomCreate, str(""), creator, `{}`, spec.RoomV10, nil, true},
		{"create v12", spec.MRoomCreate, str(""), creator, `{}`, spec.RoomV12, nil, true},
		{"message v10", spec.MRoomMessage, nil, alice, `{}`, spec.RoomV10, []StateKeyPair{create, pl, member(alice)}, false},
		{"message v11", spec.MRoomMessage, nil, alice, `{}`, spec.RoomV11, []StateKeyPair{create, pl, member(alice)}, false},
		{"message v12", spec.MRoomMessage, nil, alice, `{}`, spec.RoomV12, []StateKeyPair{pl, member(alice)}, false},
		{"state v12", "m.room.name", str(""), alice, `{}`, spec.RoomV12, []StateKeyPair{pl, member(alice)}, false},
		{"own join", spec.MRoomMember, str(alice), alice, `{"membership":"join"}`, spec.RoomV11, []StateKeyPair{create, pl, member(alice), jr}, false},
		{"restricted join", spec.MRoomMember, str("@bob:x.org"), "@bob:x.org", `{"membership":"join","join_authorised_via_users_server":"@mod:example.org"}`, spec.RoomV12,
			[]StateKeyPair{pl, member("@bob:x.org"), jr, member(mod)}, false},
		{"restricted join v8", spec.MRoomMember, str("@bob:x.org"), "@bob:x.org", `{"membership":"join","join_authorised_via_users_server":"@mod:example.org"}`, spec.RoomV8,
			[]StateKeyPair{create, pl, member("@bob:x.org"), jr, member(mod)}, false},
		{"authoriser before v8 is not selected", spec.MRoomMember, str("@bob:x.org"), "@bob:x.org", `{"membership":"join","join_authorised_via_users_server":"@mod:example.org"}`, spec.RoomV7,
			[]StateKeyPair{create, pl, member("@bob:x.org"), jr}, false},
		{"message v1", spec.MRoomMessage, nil, alice, `{}`, spec.RoomV1, []StateKeyPair{create, pl, member(alice)}, false},
		{"authoriser on a leave is not selected", spec.MRoomMember, str(alice), alice, `{"membership":"leave","join_authorised_via_users_server":"@mod:example.org"}`, spec.RoomV12,
			[]StateKeyPair{pl, member(alice)}, false},
		{"invite", spec.MRoomMember, str("@bob:x.org"), alice, `{"membership":"invite"}`, spec.RoomV10, []StateKeyPair{create, pl, member(alice), member("@bob:x.org"), jr}, false},
		{"third-party invite", spec.MRoomMember, str("@bob:x.org"), alice, `{"membership":"invite","third_party_invite":{"signed":{"token":"tok","mxid":"@bob:x.org"}}}`, spec.RoomV12,
			[]StateKeyPair{pl, member(alice), member("@bob:x.org"), jr, {spec.MRoomThirdPartyInvite, "tok"}}, false},
		{"third-party invite without token", spec.MRoomMember, str("@bob:x.org"), alice, `{"membership":"invite","third_party_invite":{"signed":{}}}`, spec.RoomV12,
			[]StateKeyPair{pl, member(alice), member("@bob:x.org"), jr}, false},
		{"knock", spec.MRoomMember, str("@bob:x.org"), "@bob:x.org", `{"membership":"knock"}`, spec.RoomV12, []StateKeyPair{pl, member("@bob:x.org"), jr}, false},
		{"kick", spec.MRoomMember, str(alice), mod, `{"membership":"leave"}`, spec.RoomV12, []StateKeyPair{pl, member(mod), member(alice)}, false},
		{"ban", spec.MRoomMember, str(alice), mod, `{"membership":"ban"}`, spec.RoomV11, []StateKeyPair{create, pl, member(mod), member(alice)}, false},
		{"member without membership", spec.MRoomMember, str(alice), alice, `{}`, spec.RoomV12, []StateKeyPair{pl, member(alice)}, false},
		{"member without state_key", spec.MRoomMember, nil, alice, `{"membership":"join"}`, spec.RoomV12, []StateKeyPair{pl, member(alice)}, false},
	}
	for _, tt := range tests {
		got := AuthEventKeys(tt.typ, tt.sk, spec.UserID(tt.sender), content(tt.content), tt.v)
		if tt.wantNone {
			if len(got) != 0 {
				t.Errorf("%s: got %v, want none", tt.name, got)
			}
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
				break
			}
		}
	}
}

func TestCheckAuthEvents(t *testing.T) {
	for _, v := range spec.SupportedRoomVersions {
		t.Run(string(v), func(t *testing.T) {
			r := newRoom(t, v, "base", nil)
			state := r.stateMap()
			get := func(typ, sk string) *events.PDU { return state.Get(typ, sk) }
			ids := func(evs ...*events.PDU) []any {
				out := []any{}
				for _, e := range evs {
					out = append(out, string(e.EventID()))
				}
				return out
			}
			createEv, plEv, aliceEv, jrEv := get(spec.MRoomCreate, ""), get(spec.MRoomPowerLevels, ""), get(spec.MRoomMember, alice), get(spec.MRoomJoinRules, "")
			proper := []*events.PDU{plEv, aliceEv}
			if !v.AtLeast12() {
				proper = append([]*events.PDU{createEv}, proper...)
			}
			build := func(auth []*events.PDU) *events.PDU {
				m := message(alice)
				m["auth_events"] = ids(auth...)
				return r.mustBuild(m)
			}
			if err := CheckAuthEvents(build(proper), proper); err != nil {
				t.Fatalf("proper auth events: %v", err)
			}
			// The event names more than it is given, or others.
			ev := build(proper)
			if err := CheckAuthEvents(ev, proper[1:]); err == nil {
				t.Error("missing auth event accepted")
			}
			if err := CheckAuthEvents(ev, append(proper[1:], jrEv)); err == nil {
				t.Error("substituted auth event accepted")
			}
			// A key the selection does not choose.
			withJR := append(append([]*events.PDU{}, proper...), jrEv)
			wantDenied(t, CheckAuthEvents(build(withJR), withJR), "auth_events.selection")
			// Two events for one key.
			oldPL := r.mustBuild(map[string]any{"type": spec.MRoomPowerLevels, "state_key": "", "sender": creator, "content": map[string]any{}})
			dup := append(append([]*events.PDU{}, proper...), oldPL)
			wantDenied(t, CheckAuthEvents(build(dup), dup), "auth_events.duplicate")
			// The same ID twice.
			m := message(alice)
			m["auth_events"] = append(ids(proper...), string(plEv.EventID()))
			wantDenied(t, CheckAuthEvents(r.mustBuild(m), proper), "auth_events.duplicate")
			// The create event: required before v12, refused in v12.
			if v.AtLeast12() {
				withCreate := append([]*events.PDU{createEv}, proper...)
				wantDenied(t, CheckAuthEvents(build(withCreate), withCreate), "auth_events.selection")
			} else {
				wantDenied(t, CheckAuthEvents(build(proper[1:]), proper[1:]), "auth_events.create")
			}
			// An auth event of another room.
			other := newRoom(t, v, "base", otherRoom(v))
			foreign := other.stateMap().Get(spec.MRoomMember, alice)
			mixed := append(append([]*events.PDU{}, proper[:len(proper)-1]...), foreign)
			wantDenied(t, CheckAuthEvents(build(mixed), mixed), "auth_events.room_id")
			// The create event has none.
			if err := CheckAuthEvents(createEv, nil); err != nil {
				t.Errorf("create: %v", err)
			}
			wantDenied(t, CheckAuthEvents(createEv, []*events.PDU{plEv}), "auth_events.selection")
			wantDenied(t, CheckAuthEvents(nil, nil), "auth_events")
		})
	}
}

func TestPowerLevels(t *testing.T) {
	for _, v := range spec.SupportedRoomVersions {
		t.Run(string(v), func(t *testing.T) {
			r := newRoom(t, v, "creator_only", map[string]any{"content": map[string]any{"additional_creators": []any{"@co:example.org"}}})
			// No power levels event: the defaults.
			pl, err := PowerLevelsOf(r.stateMap())
			if err != nil {
				t.Fatal(err)
			}
			wantCreator := int64(100)
			wantCo := int64(0)
			if v.AtLeast12() {
				wantCreator, wantCo = CreatorPowerLevel, CreatorPowerLevel
			}
			if pl.UserLevel(creator) != wantCreator || pl.UserLevel("@co:example.org") != wantCo || pl.UserLevel(alice) != 0 {
				t.Errorf("levels without power levels: creator %d co %d alice %d", pl.UserLevel(creator), pl.UserLevel("@co:example.org"), pl.UserLevel(alice))
			}
			if pl.Ban != 50 || pl.Kick != 50 || pl.Redact != 50 || pl.Invite != 0 || pl.StateDefault != 50 || pl.EventsDefault != 0 || pl.UsersDefault != 0 {
				t.Errorf("defaults: %+v", pl)
			}
			if pl.NotificationLevel("room") != 50 || pl.NotificationLevel("other") != 50 {
				t.Error("notification defaults")
			}
			if pl.CanSend(alice, "m.room.name", true) || !pl.CanSend(alice, spec.MRoomMessage, false) || !pl.CanSend(creator, "m.room.name", true) {
				t.Error("CanSend with defaults")
			}
			if pl.CanRedactOthers(alice) || !pl.CanRedactOthers(creator) {
				t.Error("CanRedactOthers with defaults")
			}

			// A full power levels event.
			r.add(r.mustBuild(map[string]any{"type": spec.MRoomPowerLevels, "state_key": "", "sender": creator, "content": map[string]any{
				"users": map[string]any{admin: 100, alice: 5}, "users_default": 1, "events": map[string]any{"m.room.name": 5, spec.MRoomMessage: 2},
				"events_default": 3, "state_default": 60, "ban": 70, "kick": 65, "redact": 4, "invite": 6, "notifications": map[string]any{"room": 7, "other": 8},
			}}))
			pl, err = PowerLevelsOf(r.stateMap())
			if err != nil {
				t.Fatal(err)
			}
			creatorLevel := int64(1) // listed nowhere: users_default
			if v.AtLeast12() {
				creatorLevel = CreatorPowerLevel
			}
			if pl.UserLevel(creator) != creatorLevel || pl.UserLevel(admin) != 100 || pl.UserLevel(alice) != 5 || pl.UserLevel("@bob:x.org") != 1 {
				t.Errorf("user levels: %+v", pl)
			}
			if pl.IsCreator(creator) != v.AtLeast12() || pl.IsCreator(admin) {
				t.Error("IsCreator")
			}
			if pl.EventLevel("m.room.name", true) != 5 || pl.EventLevel(spec.MRoomMessage, false) != 2 ||
				pl.EventLevel("m.room.topic", true) != 60 || pl.EventLevel("m.reaction", false) != 3 {
				t.Error("event levels")
			}
			if pl.Ban != 70 || pl.Kick != 65 || pl.Redact != 4 || pl.Invite != 6 || pl.NotificationLevel("room") != 7 || pl.NotificationLevel("other") != 8 {
				t.Errorf("levels: %+v", pl)
			}
			if !pl.CanSend(alice, "m.room.name", true) || pl.CanSend("@bob:x.org", spec.MRoomMessage, false) || !pl.CanRedactOthers(alice) {
				t.Error("CanSend / CanRedactOthers")
			}

			// Malformed power levels are an error, never defaults. Strings
			// holding integers are levels before v10, floats before v6.
			malformed := []map[string]any{
				{"users": map[string]any{"nobody": 1}}, {"notifications": []any{}}, {"users_default": true},
				{"ban": "5a"}, {"ban": "+-5"}, {"ban": "1 2"}, {"ban": ""}, {"ban": "99999999999999999999"},
				{"users": map[string]any{alice: "0x10"}},
			}
			if v.IntegerPowerLevels() {
				malformed = append(malformed, map[string]any{"ban": "50"}, map[string]any{"events": map[string]any{"x": "1"}})
			} else {
				older := r.mustBuild(map[string]any{"type": spec.MRoomPowerLevels, "state_key": "", "sender": creator, "content": map[string]any{
					"ban": " +050 ", "kick": "-7", "users": map[string]any{alice: "0012"}, "events": map[string]any{"x": "  3"},
					"notifications": map[string]any{"room": "9"}, "redact": "000",
				}})
				pl, err := ParsePowerLevels(older, r.create)
				if err != nil || pl.Ban != 50 || pl.Kick != -7 || pl.UserLevel(alice) != 12 || pl.EventLevel("x", false) != 3 ||
					pl.NotificationLevel("room") != 9 || pl.Redact != 0 {
					t.Errorf("string levels: %+v, %v", pl, err)
				}
			}
			if !v.StrictCanonicalJSON() {
				floaty := r.mustBuild(map[string]any{"type": spec.MRoomPowerLevels, "state_key": "", "sender": creator, "content": map[string]any{
					"ban": 50.57, "kick": -3.9, "users": map[string]any{alice: 5.114698e4}}})
				pl, err := ParsePowerLevels(floaty, r.create)
				if err != nil || pl.Ban != 50 || pl.Kick != -3 || pl.UserLevel(alice) != 51146 {
					t.Errorf("float levels: %+v, %v", pl, err)
				}
			}
			for _, content := range malformed {
				bad := r.mustBuild(map[string]any{"type": spec.MRoomPowerLevels, "state_key": "", "sender": creator, "content": content})
				if _, err := ParsePowerLevels(bad, r.create); err == nil {
					t.Errorf("ParsePowerLevels accepted %v", content)
				}
			}
			if _, err := ParsePowerLevels(nil, nil); err == nil {
				t.Error("ParsePowerLevels without create")
			}
			topic := r.mustBuild(map[string]any{"type": "m.room.topic", "state_key": "", "sender": creator, "content": map[string]any{}})
			if _, err := ParsePowerLevels(topic, r.create); err == nil {
				t.Error("ParsePowerLevels of a topic event")
			}
			if _, err := PowerLevelsOf(StateMap{}); err == nil {
				t.Error("PowerLevelsOf without create")
			}
		})
	}
}

func TestCreators(t *testing.T) {
	for _, tt := range []struct {
		v    spec.RoomVersion
		want []spec.UserID
	}{
		{spec.RoomV1, []spec.UserID{"@other:example.org"}},
		{spec.RoomV9, []spec.UserID{"@other:example.org"}},
		{spec.RoomV10, []spec.UserID{"@other:example.org"}},
		{spec.RoomV11, []spec.UserID{creator}},
		{spec.RoomV12, []spec.UserID{creator, "@co:example.org", "@far:other.org"}},
	} {
		r := newRoom(t, tt.v, "none", map[string]any{"content": map[string]any{
			"creator": "@other:example.org", "additional_creators": []any{"@co:example.org", "@far:other.org"}}})
		got, err := Creators(r.create)
		if err != nil || len(got) != len(tt.want) {
			t.Fatalf("v%s: %v %v", tt.v, got, err)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("v%s: %v, want %v", tt.v, got, tt.want)
			}
		}
	}
	if _, err := Creators(nil); err == nil {
		t.Error("Creators(nil)")
	}
}

func TestListedCreators(t *testing.T) {
	content := gjson.Parse(`{"users":{"@co:example.org":100,"@alice:example.org":50,"` + creator + `":100}}`)
	for _, tt := range []struct {
		v    spec.RoomVersion
		want []spec.UserID
	}{
		{spec.RoomV11, nil}, // creators may be listed before v12
		{spec.RoomV12, []spec.UserID{creator, "@co:example.org"}},
	} {
		r := newRoom(t, tt.v, "none", map[string]any{"content": map[string]any{
			"additional_creators": []any{"@co:example.org"}}})
		got := ListedCreators(r.create, content)
		if strings.Join(userStrings(got), ",") != strings.Join(userStrings(tt.want), ",") {
			t.Errorf("v%s: %v, want %v", tt.v, got, tt.want)
		}
	}
	if got := ListedCreators(nil, content); got != nil {
		t.Errorf("no create event: %v", got)
	}
}

func userStrings(us []spec.UserID) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = string(u)
	}
	return out
}

func TestReadPowerLevelsContent(t *testing.T) {
	c, err := ReadPowerLevelsContent(gjson.Parse(`{"ban":"75","events":{"m.room.name":50.9},"users":{"@a:b":" 7 "}}`), spec.RoomV5)
	if err != nil {
		t.Fatal(err)
	}
	if c.Scalars["ban"] != 75 || len(c.Scalars) != 1 || c.Events["m.room.name"] != 50 || c.Users["@a:b"] != 7 || len(c.Notifications) != 0 {
		t.Errorf("v5 levels read as %+v", c)
	}
	if _, err := ReadPowerLevelsContent(gjson.Parse(`{"ban":"75"}`), spec.RoomV10); err == nil || !strings.Contains(err.Error(), "ban") {
		t.Errorf("v10 string level: %v", err)
	}
}

func TestRedactionApplies(t *testing.T) {
	for _, v := range spec.SupportedRoomVersions {
		t.Run(string(v), func(t *testing.T) {
			r := newRoom(t, v, "base", nil,
				map[string]any{"type": spec.MRoomMember, "state_key": "@eve:other.org", "sender": "@eve:other.org", "content": map[string]any{"membership": "join"}})
			target := r.mustBuild(message(alice))
			remote := r.mustBuild(message("@eve:other.org"))
			redaction := func(sender string, of *events.PDU) *events.PDU {
				fx := map[string]any{"type": spec.MRoomRedaction, "sender": sender, "content": map[string]any{}}
				if v.AtLeast11() {
					fx["content"] = map[string]any{"redacts": string(of.EventID())}
				} else {
					fx["redacts"] = string(of.EventID())
				}
				return r.mustBuild(fx)
			}
			state := r.stateMap()
			if err := RedactionApplies(redaction(alice, target), target, state); err != nil {
				t.Errorf("own redaction: %v", err)
			}
			if err := RedactionApplies(redaction(mod, target), target, state); err != nil {
				t.Errorf("same server: %v", err)
			}
			if err := RedactionApplies(redaction("@eve:other.org", target), target, state); err == nil {
				t.Error("remote user below the redact level redacted a local event")
			}
			if err := RedactionApplies(redaction(mod, remote), remote, state); err != nil {
				t.Errorf("mod at the redact level: %v", err)
			}
			if err := RedactionApplies(redaction(alice, remote), remote, state); err == nil {
				t.Error("user below the redact level redacted a remote event")
			}
			if err := RedactionApplies(redaction(mod, remote), target, state); err == nil {
				t.Error("redaction applied to an event it does not target")
			}
			if err := RedactionApplies(target, target, state); err == nil {
				t.Error("a message applied as a redaction")
			}
			if err := RedactionApplies(redaction(mod, remote), remote, StateMap{}); err == nil {
				t.Error("redaction applied without room state")
			}
			if err := RedactionApplies(nil, nil, state); err == nil {
				t.Error("nil redaction")
			}
		})
	}
}

func TestNewStateMap(t *testing.T) {
	r := newRoom(t, spec.RoomV12, "base", nil)
	msg := r.mustBuild(message(alice))
	m := NewStateMap(append(r.state, msg, nil)...)
	if len(m) != len(r.state) {
		t.Errorf("NewStateMap kept %d of %d state events", len(m), len(r.state))
	}
	if m.Get(spec.MRoomCreate, "") != r.create || m.Get(spec.MRoomMessage, "") != nil {
		t.Error("NewStateMap lookups")
	}
}

// FuzzAuthorise feeds arbitrary event types, state keys and contents, and
// arbitrary current power levels and join rules, to the rules without
// Allowed's recover: nothing may panic, and whatever is allowed must come
// with a rule name.
func FuzzAuthorise(f *testing.F) {
	f.Add("12", spec.MRoomMember, "@bob:example.org", "@bob:example.org", `{"membership":"join"}`, `{"users":{"@admin:example.org":100}}`, `{"join_rule":"public"}`)
	f.Add("10", spec.MRoomMember, "@bob:example.org", "@bob:example.org", `{"membership":"join","join_authorised_via_users_server":"@mod:example.org"}`, `{}`, `{"join_rule":"restricted"}`)
	f.Add("11", spec.MRoomMember, "@bob:example.org", "@alice:example.org", `{"membership":"invite","third_party_invite":{"signed":{"mxid":"@bob:example.org","token":"t"}}}`, `{"invite":"0"}`, `{"join_rule":5}`)
	f.Add("12", spec.MRoomPowerLevels, "", "@admin:example.org", `{"users":{"@creator:example.org":1,"@x:y":-9007199254740991},"events":{"a.b*":1},"notifications":{"room":[]}}`, `{"users":{"@admin:example.org":100},"ban":9007199254740991}`, `{}`)
	f.Add("10", spec.MRoomCreate, "", "@creator:example.org", `{"creator":"@creator:example.org","room_version":"10"}`, `{}`, `{}`)
	f.Add("12", spec.MRoomCreate, "", "@creator:example.org", `{"room_version":"12","additional_creators":[null,{}]}`, `{}`, `{}`)
	f.Add("11", "m.room.message", "", "@alice:example.org", `{"body":"x"}`, `{"users":"nope"}`, `[]`)
	f.Add("12", spec.MRoomMember, "@\u0000:x", "@alice:example.org", `{"membership":"knock"}`, `{"users_default":1e3}`, `{"join_rule":"knock_restricted"}`)
	f.Fuzz(func(t *testing.T, version, typ, stateKey, sender, content, plContent, jrContent string) {
		v := spec.RoomVersion(version)
		if !v.Supported() || !json.Valid([]byte(content)) || !json.Valid([]byte(plContent)) || !json.Valid([]byte(jrContent)) {
			return
		}
		r := &room{t: t, v: v, names: map[string]spec.EventID{}}
		c, err := r.build(map[string]any{"type": spec.MRoomCreate})
		if err != nil {
			t.Fatal(err)
		}
		r.create, r.roomID = c, c.RoomID()
		r.add(c)
		for _, fx := range presetState("base", v) {
			switch fx["type"] {
			case spec.MRoomPowerLevels:
				fx["content"] = json.RawMessage(plContent)
			case spec.MRoomJoinRules:
				fx["content"] = json.RawMessage(jrContent)
			}
			if p, err := r.build(fx); err == nil {
				r.add(p)
			}
		}
		ev, err := r.build(map[string]any{"type": typ, "state_key": stateKey, "sender": sender, "content": json.RawMessage(content)})
		if err != nil {
			return // refused by the event format
		}
		state, _ := r.authStateFor(ev, false)
		d := authorise(ev, state)
		if d.rule == "" {
			t.Fatalf("decision without a rule: %+v", d)
		}
		if d.allowed != (Allowed(ev, state) == nil) {
			t.Fatalf("authorise and Allowed disagree")
		}
	})
}
