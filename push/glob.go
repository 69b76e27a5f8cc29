package push

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Push rule patterns are globs (appendices, "Glob-style matching"): '*' is
// any run of characters and '?' exactly one, compared case-insensitively.
// content.body is special: the pattern may match any part of the body that
// starts and ends at a word boundary.
//
// rooms.Glob, which /sync filters use, compares bytes and matches whole
// strings only; push needs '?' to be one character (not one byte) and an
// unanchored search bounded by word boundaries, which calling a whole-string
// matcher on every substring would make cubic. So push compiles its own
// matcher with the same guarantee: it simulates the pattern's automaton one
// character at a time, keeping the set of pattern positions reached, so the
// work is at most (len(value)+1)·(len(pattern)+1) state visits whatever the
// pattern — no backtracking, no exponential or cubic case. Patterns are
// user-controlled input evaluated on every event (issue 11).

type tokKind uint8

const (
	tokLit  tokKind = iota // one character, compared after folding
	tokOne                 // '?'
	tokStar                // '*'
)

type tok struct {
	kind tokKind
	r    rune
}

// glob is a compiled pattern.
type glob struct {
	toks []tok
	// hint is the longest run of literal characters (folded): a value that
	// does not contain it cannot match, which skips the automaton for most
	// events.
	hint string
}

// compileGlob compiles a pattern; literal compiles it with '*' and '?' as
// plain characters (a display name).
func compileGlob(pattern string, literal bool) *glob {
	g := &glob{toks: make([]tok, 0, len(pattern))}
	var run, best strings.Builder
	flush := func() {
		if run.Len() > best.Len() {
			best.Reset()
			best.WriteString(run.String())
		}
		run.Reset()
	}
	for _, r := range pattern {
		switch {
		case r == '*' && !literal:
			flush()
			// Consecutive stars are one star.
			if n := len(g.toks); n == 0 || g.toks[n-1].kind != tokStar {
				g.toks = append(g.toks, tok{kind: tokStar})
			}
		case r == '?' && !literal:
			flush()
			g.toks = append(g.toks, tok{kind: tokOne})
		default:
			f := fold(r)
			g.toks = append(g.toks, tok{kind: tokLit, r: f})
			run.WriteRune(f)
		}
	}
	flush()
	g.hint = best.String()
	return g
}

// fold is the case folding used on both sides of a comparison.
func fold(r rune) rune { return unicode.ToLower(r) }

// foldString folds a whole value once, so that many rules can match it.
func foldString(s string) string { return strings.ToLower(s) }

// isWordRune reports whether a character is part of a word: [A-Za-z0-9_].
// Every other character, non-ASCII letters included, is a word boundary.
func isWordRune(r rune) bool {
	return r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
}

// matchWhole reports whether the folded value matches the whole pattern.
func (g *glob) matchWhole(folded string) bool {
	ok, _ := g.run(folded, false)
	return ok
}

// matchWords reports whether some part of the folded value that starts and
// ends at a word boundary matches the pattern.
func (g *glob) matchWords(folded string) bool {
	ok, _ := g.run(folded, true)
	return ok
}

// run simulates the automaton over the value and returns the verdict and
// the number of state visits it made (tests bound it).
func (g *glob) run(s string, words bool) (bool, int) {
	if g.hint != "" && !strings.Contains(s, g.hint) {
		return false, 0
	}
	m := len(g.toks)
	cur := make([]bool, m+1)
	next := make([]bool, m+1)
	steps := 0
	// closure adds state i and, through stars matching nothing, the ones
	// after it.
	closure := func(set []bool, i int) {
		for ; i <= m; i++ {
			set[i] = true
			if i == m || g.toks[i].kind != tokStar {
				return
			}
		}
	}
	alive := false
	if !words {
		closure(cur, 0)
		alive = true
	}
	prevWord := false // the character before the current position is a word character
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		word := isWordRune(r)
		if words {
			if !prevWord {
				closure(cur, 0) // a match may start here
				alive = true
			}
			if cur[m] && !word {
				return true, steps // a match ends at a boundary here
			}
		}
		if !alive {
			if !words {
				return false, steps
			}
		} else {
			alive = false
			for j := 0; j < m; j++ {
				steps++
				if !cur[j] {
					continue
				}
				switch t := g.toks[j]; t.kind {
				case tokStar:
					closure(next, j) // the star takes the character
					alive = true
				case tokOne:
					closure(next, j+1)
					alive = true
				case tokLit:
					if t.r == r {
						closure(next, j+1)
						alive = true
					}
				}
			}
			steps++
		}
		cur, next = next, cur
		clear(next)
		prevWord = word
		i += size
	}
	if words && !prevWord {
		closure(cur, 0) // an empty match at the very end (pattern "*")
	}
	return cur[m], steps
}
