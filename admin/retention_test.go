package admin

import (
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

// TestRetentionLifetime: a room's max_lifetime is kept within the server's
// bounds; without a valid one the server's default applies.
func TestRetentionLifetime(t *testing.T) {
	p := RetentionPolicy{Default: time.Hour, Min: time.Minute, Max: 24 * time.Hour}
	for _, c := range []struct {
		content string
		want    time.Duration
	}{
		{`{"max_lifetime":600000}`, 10 * time.Minute},
		{`{"max_lifetime":1000}`, time.Minute},            // raised to the minimum
		{`{"max_lifetime":999999999999}`, 24 * time.Hour}, // lowered to the maximum
		{`{}`, time.Hour},                                     // none: the default
		{`{"max_lifetime":"600000"}`, time.Hour},              // not a number
		{`{"max_lifetime":-5}`, time.Hour},                    // not positive
		{`{"min_lifetime":1000,"max_lifetime":0}`, time.Hour}, // zero: the default
	} {
		if got := p.lifetime(gjson.Get(c.content, "max_lifetime")); got != c.want {
			t.Errorf("%s: %v, want %v", c.content, got, c.want)
		}
	}
	if got := (RetentionPolicy{}).lifetime(gjson.Get(`{}`, "max_lifetime")); got != 0 {
		t.Errorf("no policy and no default: %v, want 0 (kept)", got)
	}
}

// TestRetentionMinLifetime: a room's min_lifetime raises a shorter
// lifetime (its own max_lifetime, the server's default) to it, within the
// server's maximum; without a lifetime nothing expires whatever it says.
func TestRetentionMinLifetime(t *testing.T) {
	p := RetentionPolicy{Default: time.Hour, Max: 48 * time.Hour}
	for _, c := range []struct {
		content string
		want    time.Duration
	}{
		{`{"max_lifetime":60000,"min_lifetime":600000}`, 10 * time.Minute},     // raised to min_lifetime
		{`{"max_lifetime":600000,"min_lifetime":60000}`, 10 * time.Minute},     // already longer
		{`{"min_lifetime":7200000}`, 2 * time.Hour},                            // the default, raised
		{`{"max_lifetime":60000,"min_lifetime":999999999999}`, 48 * time.Hour}, // the server's maximum wins
		{`{"max_lifetime":60000,"min_lifetime":"600000"}`, time.Minute},        // not a number: ignored
	} {
		if got := p.roomLifetime(gjson.Parse(c.content)); got != c.want {
			t.Errorf("%s: %v, want %v", c.content, got, c.want)
		}
	}
	if got := (RetentionPolicy{}).roomLifetime(gjson.Parse(`{"min_lifetime":60000}`)); got != 0 {
		t.Errorf("no lifetime: %v, want 0 (kept)", got)
	}
}
