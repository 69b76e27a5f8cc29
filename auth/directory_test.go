package auth

import (
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

// TestMatchRank: every word must be inside the user ID or the global
// name, case-insensitively; a word that starts a word ranks higher, the
// whole name or localpart highest.
func TestMatchRank(t *testing.T) {
	ix := newProfileIndex()
	ix.set("@zoe:test", "Zoë Ångström-Li", "")
	ix.set("@joanne:test", "", "")
	zoe, joanne := ix.byUser["@zoe:test"], ix.byUser["@joanne:test"]
	cases := []struct {
		p    *directoryProfile
		term string
		want int
	}{
		{zoe, "zoë ångström-li", rankExact},
		{zoe, "ZOE", rankExact}, // the localpart
		{zoe, "ångs", rankWordStart},
		{zoe, "li", rankWordStart}, // after '-'
		{zoe, "zo ÅNG", rankWordStart},
		{zoe, "ström", rankInside},
		{zoe, "zoë smith", 0}, // every word must match
		{zoe, ":test", rankWordStart},
		{joanne, "ann", rankInside},
		{joanne, "anne", rankInside},
		{joanne, "jo", rankWordStart},
		{joanne, "@joanne:test", rankExact},
		{joanne, "bob", 0},
	}
	for _, c := range cases {
		if got := matchRank(c.p, strings.Fields(fold(c.term))); got != c.want {
			t.Errorf("%q against %s: rank %d, want %d", c.term, c.p.foldedID, got, c.want)
		}
	}
	// An absent user has no profile to match.
	ix.absent("@gone:test")
	if p, known := ix.byUser[spec.UserID("@gone:test")]; !known || p != nil {
		t.Errorf("absent: %v %v", p, known)
	}
}
