package stateres

import (
	"fmt"
	"testing"

	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
)

// benchRoom is a room with about 1,000 state events (200 members, 800
// other keys) and two forks from its end that each change the same 25
// keys: 50 conflicted events, plus a power levels change on one fork that
// conflicts with the power levels the other keeps (52 in all).
func benchRoom(b *testing.B, v spec.RoomVersion) (*dag, []authrules.StateMap) {
	const members, keys, changed = 200, 800, 25
	alice, bob := "@alice:example.com", "@bob:example.com"
	c := scenario{}
	chain := []string{}
	add := func(n node) {
		c.Events = append(c.Events, n)
		chain = append(chain, n.ID)
	}
	add(node{ID: "PAB", Sender: alice, Type: spec.MRoomPowerLevels, StateKey: ptr(""),
		Content: []byte(`{"users":{"@alice:example.com":100,"@bob:example.com":50}}`)})
	for i := range members {
		u := fmt.Sprintf("@user%03d:server%d.org", i, i%10)
		add(node{ID: fmt.Sprintf("M%03d", i), Sender: u, Type: spec.MRoomMember, StateKey: ptr(u), Content: []byte(`{"membership":"join"}`)})
	}
	for i := range keys {
		add(node{ID: fmt.Sprintf("K%03d", i), Sender: alice, Type: "org.example.bench", StateKey: ptr(fmt.Sprint(i)),
			Content: fmt.Appendf(nil, `{"n":%d}`, i)})
	}
	base := chain[len(chain)-1]
	fork := func(prefix, sender string, withPL bool) []string {
		var ids []string
		if withPL {
			n := node{ID: prefix + "PL", Sender: sender, Type: spec.MRoomPowerLevels, StateKey: ptr(""),
				Content: []byte(`{"users":{"@alice:example.com":100,"@bob:example.com":50},"state_default":40}`)}
			c.Events = append(c.Events, n)
			ids = append(ids, n.ID)
		}
		for i := range changed {
			n := node{ID: fmt.Sprintf("%s%02d", prefix, i), Sender: sender, Type: "org.example.bench", StateKey: ptr(fmt.Sprint(i)),
				Content: fmt.Appendf(nil, `{"%s":%d}`, prefix, i)}
			c.Events = append(c.Events, n)
			ids = append(ids, n.ID)
		}
		return ids
	}
	a, bb := fork("A", alice, true), fork("B", bob, false)
	// Edges run from an event to its prev event.
	rev := func(ids []string) []string {
		out := make([]string, 0, len(ids)+1)
		for i := len(ids) - 1; i >= 0; i-- {
			out = append(out, ids[i])
		}
		return out
	}
	c.Edges = [][]string{
		append(rev(chain), "START"),
		append(rev(a), base),
		append(rev(bb), base),
	}
	d := buildDAG(b, v, loadScenarios(b, "published.json").Initial, c)
	return d, []authrules.StateMap{d.after[a[len(a)-1]], d.after[bb[len(bb)-1]]}
}

func BenchmarkResolveTwoForks(b *testing.B) {
	for _, v := range []spec.RoomVersion{spec.RoomV11, spec.RoomV12} {
		b.Run("v"+string(v), func(b *testing.B) {
			d, sets := benchRoom(b, v)
			if n := len(sets[0]); n < 1000 {
				b.Fatalf("only %d state events", n)
			}
			_, conflicted := split(sets)
			if len(conflicted) != 52 {
				b.Fatalf("%d conflicted events, want 52", len(conflicted))
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := Resolve(v, sets, d.fetch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
