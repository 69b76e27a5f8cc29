package rooms

import (
	"hash/maphash"
	"iter"
	"math/bits"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
)

// roomState is a room's current state as a persistent hash trie (a hash
// array mapped trie of 32-way nodes). With returns a new state that shares
// everything with the old one but the path to the changed entry: about
// log32(n) small nodes, a few hundred bytes whatever the size of the room.
// A snapshot's state is therefore never modified once built, and a state
// change costs what it changes instead of a copy of the whole state (issue
// 19: a join in a room of 50,000 state events used to copy all 50,000).
type roomState struct {
	root *trieNode
	n    int
}

// trieNode holds the entries whose hashes agree on the bits above its
// level, one slot per set bit of bitmap, in bit order. Below the last
// level (shift 64 and more), slots is a list of entries whose whole hashes
// collide.
type trieNode struct {
	bitmap uint32
	slots  []*trieSlot
}

// trieSlot is a subtree (child set) or one entry. Slots are never modified
// once in a node that may be shared.
type trieSlot struct {
	child *trieNode
	hash  uint64
	key   authrules.StateKeyPair
	val   *events.PDU
}

const trieBits = 5 // 32 slots a node

var stateSeed = maphash.MakeSeed()

func hashKey(k authrules.StateKeyPair) uint64 { return maphash.Comparable(stateSeed, k) }

// Len is the number of state entries.
func (s roomState) Len() int { return s.n }

// Get implements authrules.AuthState.
func (s roomState) Get(typ, key string) *events.PDU {
	return s.get(authrules.StateKeyPair{Type: typ, StateKey: key})
}

func (s roomState) get(k authrules.StateKeyPair) *events.PDU { return s.root.get(k, hashKey(k)) }

// get finds k, whose hash is h, under n.
func (n *trieNode) get(k authrules.StateKeyPair, h uint64) *events.PDU {
	for shift := uint(0); n != nil; shift += trieBits {
		if shift >= 64 {
			for _, sl := range n.slots {
				if sl.key == k {
					return sl.val
				}
			}
			return nil
		}
		bit := uint32(1) << ((h >> shift) & 31)
		if n.bitmap&bit == 0 {
			return nil
		}
		sl := n.slots[bits.OnesCount32(n.bitmap&(bit-1))]
		if sl.child == nil {
			if sl.key == k {
				return sl.val
			}
			return nil
		}
		n = sl.child
	}
	return nil
}

// With returns the state with k set to v; s itself is unchanged.
func (s roomState) With(k authrules.StateKeyPair, v *events.PDU) roomState {
	root := s.root
	if root == nil {
		root = &trieNode{}
	}
	next, added := root.with(0, &trieSlot{hash: hashKey(k), key: k, val: v})
	if added {
		return roomState{root: next, n: s.n + 1}
	}
	return roomState{root: next, n: s.n}
}

// with returns a copy of n with leaf set, and whether it is a new key.
func (n *trieNode) with(shift uint, leaf *trieSlot) (*trieNode, bool) {
	if shift >= 64 { // every bit of the hash collides
		for i, sl := range n.slots {
			if sl.key == leaf.key {
				c := n.clone()
				c.slots[i] = leaf
				return c, false
			}
		}
		c := n.clone()
		c.slots = append(c.slots, leaf)
		return c, true
	}
	bit := uint32(1) << ((leaf.hash >> shift) & 31)
	i := bits.OnesCount32(n.bitmap & (bit - 1))
	if n.bitmap&bit == 0 {
		c := &trieNode{bitmap: n.bitmap | bit, slots: make([]*trieSlot, len(n.slots)+1)}
		copy(c.slots, n.slots[:i])
		c.slots[i] = leaf
		copy(c.slots[i+1:], n.slots[i:])
		return c, true
	}
	old := n.slots[i]
	var repl *trieSlot
	added := false
	switch {
	case old.child != nil:
		var child *trieNode
		child, added = old.child.with(shift+trieBits, leaf)
		repl = &trieSlot{child: child}
	case old.key == leaf.key:
		repl = leaf
	default: // two keys in one slot: both go one level down
		child, _ := (&trieNode{}).with(shift+trieBits, old)
		child, _ = child.with(shift+trieBits, leaf)
		repl, added = &trieSlot{child: child}, true
	}
	c := n.clone()
	c.slots[i] = repl
	return c, added
}

func (n *trieNode) clone() *trieNode {
	c := &trieNode{bitmap: n.bitmap, slots: make([]*trieSlot, len(n.slots), len(n.slots)+1)}
	copy(c.slots, n.slots)
	return c
}

// All yields every state entry, in no particular order.
func (s roomState) All() iter.Seq2[authrules.StateKeyPair, *events.PDU] {
	return func(yield func(authrules.StateKeyPair, *events.PDU) bool) {
		if s.root != nil {
			s.root.walk(yield)
		}
	}
}

func (n *trieNode) walk(yield func(authrules.StateKeyPair, *events.PDU) bool) bool {
	for _, sl := range n.slots {
		if sl.child != nil {
			if !sl.child.walk(yield) {
				return false
			}
		} else if !yield(sl.key, sl.val) {
			return false
		}
	}
	return true
}

// Map copies the state into a StateMap (for callers that change it).
func (s roomState) Map() authrules.StateMap {
	m := make(authrules.StateMap, s.n)
	for k, v := range s.All() {
		m[k] = v
	}
	return m
}
