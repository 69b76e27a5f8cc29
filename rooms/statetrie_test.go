package rooms

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
)

// TestStateTrieIsAPersistentMap checks the trie against a plain map through
// random sets of new and existing keys, and that every earlier version is
// left as it was.
func TestStateTrieIsAPersistentMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pdus := make([]*events.PDU, 8)
	for i := range pdus {
		pdus[i] = &events.PDU{}
	}
	var s roomState
	want := authrules.StateMap{}
	type version struct {
		s    roomState
		want authrules.StateMap
	}
	var versions []version
	for i := 0; i < 20000; i++ {
		k := authrules.StateKeyPair{Type: "m.room.member", StateKey: fmt.Sprint("@u", rng.IntN(5000), ":test")}
		if i%7 == 0 {
			k.Type = "org.example"
		}
		v := pdus[rng.IntN(len(pdus))]
		s = s.With(k, v)
		want[k] = v
		if i%2500 == 0 {
			versions = append(versions, version{s, cloneState(want)})
		}
	}
	versions = append(versions, version{s, want})
	for _, ver := range versions {
		if ver.s.Len() != len(ver.want) {
			t.Fatalf("Len %d, want %d", ver.s.Len(), len(ver.want))
		}
		seen := 0
		for k, v := range ver.s.All() {
			if ver.want[k] != v {
				t.Fatalf("All yields %v for %v", v, k)
			}
			seen++
		}
		if seen != len(ver.want) {
			t.Fatalf("All yields %d entries, want %d", seen, len(ver.want))
		}
		for k, v := range ver.want {
			if ver.s.Get(k.Type, k.StateKey) != v {
				t.Fatalf("Get %v: wrong value", k)
			}
		}
		if ver.s.Get("m.room.member", "@nobody:test") != nil {
			t.Fatal("Get of an absent key")
		}
	}
}

// TestStateTrieCollidingHashes: keys whose whole hashes collide are kept
// side by side.
func TestStateTrieCollidingHashes(t *testing.T) {
	a, b, c := authrules.StateKeyPair{Type: "t", StateKey: "a"}, authrules.StateKeyPair{Type: "t", StateKey: "b"}, authrules.StateKeyPair{Type: "t", StateKey: "c"}
	pa, pb, pc := &events.PDU{}, &events.PDU{}, &events.PDU{}
	root, _ := (&trieNode{}).with(0, &trieSlot{hash: 42, key: a, val: pa})
	root, added := root.with(0, &trieSlot{hash: 42, key: b, val: pb})
	if !added {
		t.Fatal("a second colliding key was not added")
	}
	root2, added := root.with(0, &trieSlot{hash: 42, key: a, val: pc})
	if added || root2.get(a, 42) != pc || root2.get(b, 42) != pb || root.get(a, 42) != pa {
		t.Fatal("replacing a colliding key")
	}
	if root2.get(c, 42) != nil {
		t.Fatal("an absent colliding key was found")
	}
}

func cloneState(m authrules.StateMap) authrules.StateMap {
	out := make(authrules.StateMap, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
