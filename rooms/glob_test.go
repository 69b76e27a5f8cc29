package rooms

import (
	"regexp"
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.*", "m.room.message", true},
		{"m.room.*", "m.room", false},
		{"*", "", true},
		{"m.?oom.*", "m.room.x", true},
		{"*.message", "m.room.message", true},
		{"a*b*c", "abxbc", true},
		{"a*b*c", "abxbd", false},
		{"", "", true},
		{"", "x", false},
		{"*", "*0", true}, // found by make soak: a "*" in the string is not a wildcard
	}
	for _, c := range cases {
		if got := Glob(c.pattern, c.s); got != c.want {
			t.Errorf("Glob(%q, %q) = %v", c.pattern, c.s, got)
		}
	}
}

// BenchmarkGlobPathological: a pattern that makes backtracking matchers
// exponential stays linear-time here (the figure is reported, not asserted
// in time; FuzzGlob checks the answers).
func BenchmarkGlobPathological(b *testing.B) {
	pattern := strings.Repeat("*a", 50) + "b"
	s := strings.Repeat("a", 10000)
	for i := 0; i < b.N; i++ {
		if Glob(pattern, s) {
			b.Fatal("matched")
		}
	}
}

// FuzzGlob compares Glob with a regular expression built from the pattern.
func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{{"m.*", "m.room"}, {"*a*a*a*b", "aaaaaaaaaaaa"}, {"?", ""}, {"a?c", "abc"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 64 || len(s) > 256 {
			return
		}
		var re strings.Builder
		re.WriteString(`(?s)^`)
		for _, r := range pattern {
			switch r {
			case '*':
				re.WriteString(`.*`)
			case '?':
				re.WriteString(`.`)
			default:
				re.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
		re.WriteString(`$`)
		want := regexp.MustCompile(re.String()).MatchString(s)
		// Glob works on bytes: '?' is one byte, so compare only on ASCII.
		for i := 0; i < len(pattern); i++ {
			if pattern[i] >= 0x80 {
				return
			}
		}
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return
			}
		}
		if got := Glob(pattern, s); got != want {
			t.Fatalf("Glob(%q, %q) = %v, want %v", pattern, s, got, want)
		}
	})
}
