package sync

import (
	"testing"
)

// FuzzParseToken: any string either parses to a token that prints back to
// an equivalent token, or is refused; never a panic.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"s0_0", "s12_34", "s1", "", "s", "s-1_0", "s1_", "x1_1", "s99999999999999999999_1", "s1_2_3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		again, err := ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("%q → %v → %q does not round-trip", s, tok, tok.String())
		}
	})
}

// FuzzParseFilter: any bytes either parse to a filter or are refused with
// a Matrix error; never a panic.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{`{}`, `{"room":{"timeline":{"limit":5,"types":["m.*"]}}}`, `{"event_fields":["content.body"]}`,
		`{"room":{"rooms":["!a:b"],"state":{"lazy_load_members":true}}}`, `[`, `{"room":{"timeline":{"limit":-1}}}`, `{"presence":{"not_types":["*"]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		fl, err := parseFilter(raw)
		if err != nil {
			return
		}
		_, limit := (&request{filter: fl}).timelineFilter()
		if limit < 0 || limit > 1000 {
			t.Fatalf("timeline limit %d out of bounds", limit)
		}
	})
}
