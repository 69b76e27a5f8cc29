package tests

import (
	"net/url"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// TestDelayedEventsOnTheRealServer: /versions advertises MSC4140; a delayed
// state event scheduled before a restart is sent after it, and one
// cancelled by its delay ID alone (no token) is never sent.
func TestDelayedEventsOnTheRealServer(t *testing.T) {
	s := harness.Start(t)
	var versions struct {
		Unstable map[string]bool `json:"unstable_features"`
	}
	opsJSON(t, "GET", s.URL+"/_matrix/client/versions", "", nil, &versions)
	for _, f := range []string{"org.matrix.msc4140", "org.matrix.msc4306", "org.matrix.msc3391"} {
		if !versions.Unstable[f] {
			t.Errorf("/versions does not advertise %s: %v", f, versions.Unstable)
		}
	}
	alice := opsRegister(t, s.URL, "delayalice")
	room := opsCreateRoom(t, s.URL, alice.Token, "delays")
	state := func(base, key string) string {
		return base + "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/state/org.example.delayed/" + key
	}
	delay := "?org.matrix.msc4140.delay="
	var kept, dropped struct {
		DelayID string `json:"delay_id"`
	}
	opsJSON(t, "PUT", state(s.URL, "kept")+delay+"1500", alice.Token, map[string]any{"v": 1}, &kept)
	opsJSON(t, "PUT", state(s.URL, "dropped")+delay+"1000", alice.Token, map[string]any{"v": 2}, &dropped)
	opsJSON(t, "POST", s.URL+"/_matrix/client/unstable/org.matrix.msc4140/delayed_events/"+dropped.DelayID+"/cancel", "", map[string]any{}, nil)

	s.Restart()
	waitFor(t, 10*time.Second, "the delayed state after the restart", func() bool {
		code, _ := opsDo(t, "GET", state(s.URL, "kept"), alice.Token, nil)
		return code == 200
	})
	var list struct {
		Delayed []any `json:"delayed_events"`
	}
	opsJSON(t, "GET", s.URL+"/_matrix/client/unstable/org.matrix.msc4140/delayed_events", alice.Token, nil, &list)
	if len(list.Delayed) != 0 {
		t.Fatalf("still scheduled after sending: %v", list.Delayed)
	}
	if code, out := opsDo(t, "GET", state(s.URL, "dropped"), alice.Token, nil); code != 404 {
		t.Fatalf("the cancelled event was sent: %d %s", code, out)
	}
}
