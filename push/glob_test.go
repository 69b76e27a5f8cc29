package push

import (
	"strings"
	"testing"
)

func TestGlobWhole(t *testing.T) {
	cases := []struct {
		pattern, value string
		want           bool
	}{
		{"m.notice", "m.notice", true},
		{"m.notice", "M.NOTICE", true}, // case-insensitive
		{"m.notice", "m.notices", false},
		{"lunc?*", "Lunch plans", true},
		{"lunc?*", "LUNCH", true},
		{"lunc?*", " lunch", false}, // the whole value must match
		{"lunc?*", "lunc", false},   // ? is exactly one character
		{"*", "", true},
		{"", "", true},
		{"", "x", false},
		{"?", "é", true}, // one character, not one byte
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"**a", "bba", true},
		{"@alice:test", "@alice:test", true},
		{"ÉTÉ", "été", true},
	}
	for _, c := range cases {
		if got := compileGlob(c.pattern, false).matchWhole(foldString(c.value)); got != c.want {
			t.Errorf("%q against %q: got %v, want %v", c.pattern, c.value, got, c.want)
		}
	}
}

func TestGlobWords(t *testing.T) {
	cases := []struct {
		pattern, value string
		want           bool
	}{
		{"ex*ple", "An example event.", true},
		{"ex*ple", "exple", true},
		{"ex*ple", "An exciting triple-whammy", true}, // spans words; '-' is a boundary
		{"cake", "I like cakes", false},               // "cake" ends inside a word
		{"cake", "cake!", true},
		{"cake", "Cheesecake", false}, // starts inside a word
		{"cake", "cheese cake", true},
		{"cake*lie", "the cake is a lie", true},
		{"cake*lie", "the cake is a lies", false},
		{"alice", "hi alice_", false}, // '_' is part of a word
		{"alice", "hi alice, ça va", true},
		{"alice", "été alice", true}, // non-ASCII letters are boundaries
		{"*", "", true},
		{"a?c", "x abc y", true},
	}
	for _, c := range cases {
		if got := compileGlob(c.pattern, false).matchWords(foldString(c.value)); got != c.want {
			t.Errorf("%q in %q: got %v, want %v", c.pattern, c.value, got, c.want)
		}
	}
	// A display name is literal: its * and ? are characters.
	if compileGlob("a*z", true).matchWords(foldString("abcz")) {
		t.Error("a literal pattern treated * as a wildcard")
	}
	if !compileGlob("a*z", true).matchWords(foldString("hi a*z!")) {
		t.Error("a literal pattern did not match itself")
	}
}

// TestGlobLinear proves the matcher's work is bounded by
// (len(value)+1)·(len(pattern)+1) state visits on patterns that make
// backtracking matchers exponential or cubic — by counting, not timing.
func TestGlobLinear(t *testing.T) {
	value := strings.Repeat("a", 20000)
	patterns := []string{
		strings.Repeat("*a", 30) + "*b",
		strings.Repeat("a*", 30) + "b",
		strings.Repeat("?", 40) + "*b",
		strings.Repeat("*?", 25) + "b",
	}
	for _, p := range patterns {
		g := compileGlob(p, false)
		g.hint = "" // skip the literal prefilter: exercise the automaton itself
		bound := (len(value) + 1) * (len(g.toks) + 1)
		for _, words := range []bool{false, true} {
			ok, steps := g.run(value, words)
			if ok {
				t.Errorf("%q (words %v) matched a value without b", p, words)
			}
			if steps > bound {
				t.Errorf("%q (words %v): %d steps, over the bound %d", p, words, steps, bound)
			}
		}
	}
	// Word mode with a boundary after every character: each position
	// starts a new candidate match, still within the bound.
	spaced := strings.Repeat("a ", 10000)
	g := compileGlob(strings.Repeat("*a", 30)+"*b", false)
	g.hint = ""
	if ok, steps := g.run(spaced, true); ok || steps > (len(spaced)+1)*(len(g.toks)+1) {
		t.Errorf("spaced value: ok %v, %d steps", ok, steps)
	}
}

func BenchmarkGlobPathological(b *testing.B) {
	value := foldString(strings.Repeat("a", 4096))
	g := compileGlob(strings.Repeat("*a", 30)+"*b", false)
	g.hint = ""
	for b.Loop() {
		g.matchWords(value)
	}
}
