package events

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

var fuzzSeeds = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `null`, `true`, `false`,
	`{"b":1,"a":[1,2,{"d":null,"c":"x"}]}`,
	`{"a":"\u65E5\ud83d\ude00\n\u0001\/"}`,
	`{"a":1,"a":2}`, `{"a":1.5}`, `1e10`, `9007199254740992`, `-9007199254740991`,
	"\"\xff\"", `"\ud800"`, `{"\u0000":1,"":2}`, `{"A":1,"\n":2,"\"":3}`,
	` { "x" : [ 1 , 2 ] } `, `{} x`, `[1,]`, `01`,
	strings.Repeat("[", 70) + strings.Repeat("]", 70),
}

// FuzzCanonical checks that Canonical never panics, that its output is a
// fixed point, and that whatever it accepts encoding/json also accepts, with
// the same meaning.
func FuzzCanonical(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	for _, v := range buildVectors {
		f.Add([]byte(v.json))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Canonical(in)
		if err != nil {
			if errCode(err) == "" {
				t.Fatalf("error %v is not a *spec.Error", err)
			}
			return
		}
		again, err := Canonical(out)
		if err != nil {
			t.Fatalf("canonical output refused: %q: %v", out, err)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("not a fixed point: %q -> %q", out, again)
		}
		if !json.Valid(in) || !json.Valid(out) {
			t.Fatalf("accepted invalid JSON %q -> %q", in, out)
		}
		var a, b any
		if json.Unmarshal(in, &a) != nil || json.Unmarshal(out, &b) != nil {
			t.Fatalf("encoding/json refuses %q or %q", in, out)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("meaning changed: %q -> %q", in, out)
		}
	})
}

// FuzzParsePDU checks that ParsePDU never panics and that what it accepts
// survives the other operations on a PDU.
func FuzzParsePDU(f *testing.F) {
	for _, v := range buildVectors {
		for _, i := range []uint8{0, 2, 4, 9, 10, 11, versionIndex(v.v)} {
			f.Add([]byte(v.json), i)
		}
	}
	f.Add([]byte(minimalEvent), uint8(9))
	f.Add([]byte(strings.Replace(buildVectors[0].json, `"body":"hello"`, `"body":"hello","n":1.5e3`, 1)), uint8(4))
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), uint8(2))
	}
	f.Fuzz(func(t *testing.T, in []byte, vi uint8) {
		v := spec.SupportedRoomVersions[int(vi)%len(spec.SupportedRoomVersions)]
		p, err := ParsePDU(in, v)
		if err != nil {
			if errCode(err) == "" {
				t.Fatalf("error %v is not a *spec.Error", err)
			}
			return
		}
		if id, err := EventID(p.JSON(), v); err != nil || id != p.EventID() {
			t.Fatalf("event ID %s vs %s, %v", id, p.EventID(), err)
		}
		r, err := p.Redacted()
		if err != nil {
			t.Fatalf("Redacted: %v", err)
		}
		if id, err := EventID(r.JSON(), v); err != nil || id != p.EventID() {
			t.Fatalf("redacted event ID %s vs %s, %v", id, p.EventID(), err)
		}
		ce := ClientEvent(p, nil)
		if c, err := canonical(ce, !v.StrictCanonicalJSON()); err != nil || !bytes.Equal(c, ce) {
			t.Fatalf("client event %q not canonical: %v", ce, err)
		}
		_ = StrippedState(p)
		_ = FilterFields(ce, []string{"content.body", "type"})
		_ = CheckContentHash(p.JSON())
	})
}

// FuzzRedact checks that Redact never panics, is idempotent and returns
// canonical JSON.
func FuzzRedact(f *testing.F) {
	for _, v := range buildVectors {
		f.Add([]byte(v.json), uint8(0))
	}
	f.Add([]byte(fill(redactBase, "m.room.member", `{"membership":"join","third_party_invite":{"signed":{"a":1},"x":2}}`)), uint8(1))
	f.Add([]byte(fill(redactBase, "m.room.power_levels", `{"ban":50,"invite":0,"x":1}`)), uint8(0))
	f.Add([]byte(fill(redactBase, "m.room.create", `{"creator":"@a:b","x":1}`)), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, vi uint8) {
		v := spec.SupportedRoomVersions[int(vi)%len(spec.SupportedRoomVersions)]
		out, err := Redact(in, v)
		if err != nil {
			if errCode(err) == "" {
				t.Fatalf("error %v is not a *spec.Error", err)
			}
			return
		}
		if c, err := canonical(out, !v.StrictCanonicalJSON()); err != nil || !bytes.Equal(c, out) {
			t.Fatalf("redacted %q is not canonical: %v", out, err)
		}
		again, err := Redact(out, v)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q, %v", out, again, err)
		}
	})
}

// versionIndex is the fuzz input that selects room version v.
func versionIndex(v spec.RoomVersion) uint8 {
	for i, w := range spec.SupportedRoomVersions {
		if w == v {
			return uint8(i)
		}
	}
	return 0
}
