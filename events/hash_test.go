package events

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

// The minimal event of appendices "Event Signing".
const minimalEvent = `{"room_id":"!x:domain","sender":"@a:domain","origin":"domain","origin_server_ts":1000000,"signatures":{},"hashes":{},"type":"X","content":{},"prev_events":[],"auth_events":[],"depth":3,"unsigned":{"age_ts":1000000}}`

func TestContentHashSpecVector(t *testing.T) {
	sum, err := ContentHash([]byte(minimalEvent))
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.RawStdEncoding.EncodeToString(sum[:]); got != "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos" {
		t.Fatalf("content hash %s", got)
	}
	// unsigned, signatures and existing hashes are not covered.
	other := strings.Replace(minimalEvent, `"unsigned":{"age_ts":1000000}`, `"unsigned":{"age_ts":1},"signatures":{"x":{}}`, 1)
	other = strings.Replace(other, `"signatures":{},"hashes":{}`, `"hashes":{"sha256":"zzz"}`, 1)
	sum2, err := ContentHash([]byte(other))
	if err != nil || sum2 != sum {
		t.Fatalf("hash changed with unsigned/signatures/hashes: %v", err)
	}
}

func TestAddAndCheckContentHash(t *testing.T) {
	hashed, err := AddContentHash([]byte(minimalEvent))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},"origin":"domain","origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","signatures":{},"type":"X","unsigned":{"age_ts":1000000}}`
	if string(hashed) != want {
		t.Fatalf("got\n%s\nwant\n%s", hashed, want)
	}
	// Other hash algorithms are kept beside sha256.
	multi, err := AddContentHash([]byte(strings.Replace(minimalEvent, `"hashes":{}`, `"hashes":{"sha512":"q","a":"b"}`, 1)))
	if err != nil || !strings.Contains(string(multi), `"hashes":{"a":"b","sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos","sha512":"q"}`) {
		t.Fatalf("multi: %s, %v", multi, err)
	}
	if _, err := AddContentHash([]byte(`{"hashes":[]}`)); errCode(err) != spec.ErrBadJSON {
		t.Fatalf("hashes array: %v", err)
	}

	tests := []struct {
		name string
		ev   string
		ok   bool
	}{
		{"valid", string(hashed), true},
		{"padded", strings.Replace(string(hashed), `ncos"`, `ncos="`, 1), true},
		{"unsigned changed", strings.Replace(string(hashed), `"age_ts":1000000}`, `"age_ts":7}`, 1), true},
		{"signatures changed", strings.Replace(string(hashed), `"signatures":{}`, `"signatures":{"a":{}}`, 1), true},
		{"content changed", strings.Replace(string(hashed), `"content":{}`, `"content":{"a":1}`, 1), false},
		{"field removed", strings.Replace(string(hashed), `"depth":3,`, ``, 1), false},
		{"no hashes", minimalEvent[:0] + `{"type":"X"}`, false},
		{"hashes not object", `{"hashes":"x"}`, false},
		{"sha256 not string", `{"hashes":{"sha256":1}}`, false},
		{"bad base64", `{"hashes":{"sha256":"@@@"}}`, false},
		{"wrong length", `{"hashes":{"sha256":"AAAA"}}`, false},
		{"not json", `{"hashes"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckContentHash([]byte(tt.ev))
			if tt.ok != (err == nil) {
				t.Fatalf("CheckContentHash = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && errCode(err) == "" {
				t.Fatalf("error %v is not a *spec.Error", err)
			}
		})
	}
}

func TestEventIDStable(t *testing.T) {
	ev := buildVectors[0].json
	id, err := EventID([]byte(ev), spec.RoomV10)
	if err != nil {
		t.Fatal(err)
	}
	if id != buildVectors[0].id {
		t.Fatalf("event ID %s, want %s", id, buildVectors[0].id)
	}
	// The reference hash ignores signatures, unsigned and whatever redaction
	// removes, so none of these change the ID.
	for _, edit := range []struct{ from, to string }{
		{`"signatures":{`, `"unsigned":{"age":5},"signatures":{"other.org":{"ed25519:z":"x"},`},
		{`"body":"hello",`, ``},
		{`"type":"m.room.message"`, `"type":"m.room.message","extra":true`},
	} {
		changed := strings.Replace(ev, edit.from, edit.to, 1)
		if changed == ev {
			t.Fatalf("edit %q did not apply", edit.from)
		}
		got, err := EventID([]byte(changed), spec.RoomV10)
		if err != nil || got != id {
			t.Errorf("after %q: %s, %v", edit.to, got, err)
		}
	}
	// What redaction keeps is covered.
	got, _ := EventID([]byte(strings.Replace(ev, `"depth":5`, `"depth":6`, 1)), spec.RoomV10)
	if got == id {
		t.Error("depth change kept the event ID")
	}
	// "origin" is covered in v10, not from v11 on.
	a, _ := EventID([]byte(ev), spec.RoomV11)
	b, _ := EventID([]byte(strings.Replace(ev, `"origin":"example.org"`, `"origin":"evil.org"`, 1)), spec.RoomV11)
	c, _ := EventID([]byte(strings.Replace(ev, `"origin":"example.org"`, `"origin":"evil.org"`, 1)), spec.RoomV10)
	if a != b || c == id {
		t.Errorf("origin coverage: v11 %s vs %s, v10 %s vs %s", a, b, c, id)
	}
	if _, err := EventID([]byte(ev), "13"); errCode(err) != spec.ErrUnsupportedRoomVersion {
		t.Errorf("unknown version: %v", err)
	}
}

func TestRoomIDFromCreateEventID(t *testing.T) {
	tests := []struct {
		id   spec.EventID
		want spec.RoomID
		ok   bool
	}{
		{"$37iwD-DyT01UTC3QaO2Ot9nDS1G-rmVcGz0DYMPzG6c", "!37iwD-DyT01UTC3QaO2Ot9nDS1G-rmVcGz0DYMPzG6c", true},
		{"$Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ", "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ", true},
		{"", "", false},
		{"$short", "", false},
		{"!37iwD-DyT01UTC3QaO2Ot9nDS1G-rmVcGz0DYMPzG6c", "", false},
		{"$37iwD+DyT01UTC3QaO2Ot9nDS1G-rmVcGz0DYMPzG6c", "", false}, // standard, not URL-safe, alphabet
		{"$0:domain", "", false},
	}
	for _, tt := range tests {
		got, err := RoomIDFromCreateEventID(tt.id)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("RoomIDFromCreateEventID(%q) = %q, %v", tt.id, got, err)
		}
	}
}
