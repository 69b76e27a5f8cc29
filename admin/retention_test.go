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
