package push

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// referenceGlob is the obvious regular expression for a pattern. Go's
// regexp is itself linear-time, so it serves as the oracle.
func referenceGlob(pattern string, words bool) *regexp.Regexp {
	var b strings.Builder
	for _, r := range foldString(pattern) {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if words {
		return regexp.MustCompile(`(?s)(?:^|[^A-Za-z0-9_])(?:` + b.String() + `)(?:[^A-Za-z0-9_]|$)`)
	}
	return regexp.MustCompile(`(?s)^(?:` + b.String() + `)$`)
}

func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{
		{"ex*ple", "An exciting triple-whammy"}, {"lunc?*", "Lunch plans"}, {"*a*a*b", "aaaaaaaa"},
		{"?", "é"}, {"cake", "cheesecake"}, {"", ""}, {"a*", "a b"}, {"*", "_"}, {"ÉTÉ", "été!"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, value string) {
		if len(pattern) > 64 || len(value) > 256 {
			return
		}
		folded := foldString(value)
		// The oracle works on the folded value; skip values whose folding
		// is not valid UTF-8 for regexp's sake.
		if !utf8.ValidString(folded) {
			return
		}
		g := compileGlob(pattern, false)
		for _, words := range []bool{false, true} {
			got, steps := g.run(folded, words)
			want := referenceGlob(pattern, words).MatchString(folded)
			if got != want {
				t.Fatalf("pattern %q value %q words %v: got %v, want %v", pattern, value, words, got, want)
			}
			if bound := (len(folded) + 1) * (len(g.toks) + 1); steps > bound {
				t.Fatalf("pattern %q value %q: %d steps over %d", pattern, value, steps, bound)
			}
		}
	})
}

// FuzzStoredRules: any stored m.push_rules content loads without panicking,
// renders as JSON, and loading the rendering again gives the same rules.
func FuzzStoredRules(f *testing.F) {
	seed, _ := DefaultRules("@u:test").accountData()
	f.Add(string(seed))
	f.Add(`{"global":{"content":[{"rule_id":"x","pattern":"a*","actions":["notify"],"enabled":false}],"override":[{"rule_id":".m.rule.master","enabled":true}]}}`)
	f.Add(`{"global":{"override":[{"rule_id":"y","conditions":[{"kind":"event_match","key":"type"}],"actions":[]}]}}`)
	f.Add(`{"global":[]}`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, content string) {
		first := rulesFromAccountData(json.RawMessage(content), "@u:test")
		a, err := first.accountData()
		if err != nil || !json.Valid(a) {
			t.Fatalf("render: %v %s", err, a)
		}
		b, err := rulesFromAccountData(a, "@u:test").accountData()
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("not stable:\n%s\n%s", a, b)
		}
		compile(first) // never panics either
	})
}
