package rooms

import (
	"container/list"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
)

// Event is a PDU with where it sits in the stream, and for the sender's own
// device the transaction ID it was sent with.
type Event struct {
	PDU      *events.PDU
	Position int64
	DeviceID string
	TxnID    string
	// RedactedBecause is the redaction event that redacted this one, if
	// any: clients get it as unsigned.redacted_because.
	RedactedBecause *events.PDU
	// Relay marks a remote server's event that this server, as the
	// resident of a federated join (send_join), sends on to the room's
	// other servers; every other remote event reached them from its own
	// server.
	Relay bool

	// replaced is the state event this one replaced (nil for new state);
	// replacedKnown is false for events loaded from the database, whose
	// predecessor was not looked up. With it, the state at a recent
	// position is derived from memory.
	replaced      *events.PDU
	replacedKnown bool
	// stateAfter is the room's state after the event (dag.go), when it
	// was built or received here.
	stateAfter roomState
	// resolved and unset are what state resolution changed in the current
	// state besides the event's own entry (a received event that joins
	// forks, dag.go): entries set to another event, and entries removed.
	resolved []*events.PDU
	unset    []authrules.StateKeyPair
}

// changes yields the event and the state resolution made with it.
func (ev *Event) changes(yield func(*events.PDU) bool) {
	if !yield(ev.PDU) {
		return
	}
	for _, p := range ev.resolved {
		if !yield(p) {
			return
		}
	}
}

// snapshot is a room's current state at one position. It is never modified
// after it is published: a write builds a new one and swaps the pointer, so
// readers (sync above all) take a consistent view without a lock.
type snapshot struct {
	position  int64 // stream position of the room's latest event
	state     roomState
	extremity []*events.PDU // forward extremities: on one server, the latest event
	// forks is the state after each forward extremity when there are
	// several (the room forked: dag.go); state is their resolution.
	forks map[spec.EventID]roomState
	depth int64
	// joinedCache is joined()'s answer, computed on first use or derived
	// from the previous snapshot's; summaryCache is members()'.
	joinedCache  atomic.Pointer[[]spec.UserID]
	summaryCache atomic.Pointer[memberSummary]
}

func (s *snapshot) get(typ, key string) *events.PDU {
	return s.state.get(authrules.StateKeyPair{Type: typ, StateKey: key})
}

// Get implements authrules.AuthState.
func (s *snapshot) Get(typ, key string) *events.PDU { return s.get(typ, key) }

// membership returns a user's current membership ("" if none).
func (s *snapshot) membership(user spec.UserID) string {
	ev := s.get(spec.MRoomMember, string(user))
	if ev == nil {
		return ""
	}
	return ev.Content().Get("membership").String()
}

// posValue is a value that took effect at a stream position.
type posValue struct {
	pos   int64
	value string
}

// recentSize is how many of a room's latest events stay in memory, so that
// incremental syncs never read the database.
const recentSize = 64

// liveRoom is the in-memory half of a room: its current state, the history of
// memberships and visibility (to decide who may see which event without
// reading the database), and its latest events.
type liveRoom struct {
	id      spec.RoomID
	version spec.RoomVersion

	// writeMu serialises writes to the room: one event is built on the
	// previous one. It is the "one lock per room" that gives every room a
	// consistent order. Sends are built on the previous group of sends
	// while that is still being written (the pipeline, commit.go); every other
	// write waits until the pipeline is empty (lockWrites) and commits
	// before it lets go.
	writeMu sync.Mutex
	// queue holds sends waiting for the write lock; its holder builds and
	// commits them as one group (send.go, Send).
	queueMu sync.Mutex
	queue   []*sendReq

	// The pipeline: the newest group of sends not yet committed (nil when
	// every write is), and the transaction IDs of the groups in flight.
	// A failed group ends its pipeline: every group built on it fails too
	// (storage.ErrDependency), and the next is built on committed state.
	pipeMu    sync.Mutex
	pipeTail  *sendGroup
	pipeEpoch int // counts pipelines ended by a failure
	pipeSeq   int
	pipeTxns  map[txnKey]*sendGroup

	cur atomic.Pointer[snapshot]

	histMu      sync.RWMutex
	members     map[spec.UserID][]posValue // every membership change per user
	changes     []memberChange             // the same changes in stream order
	visibility  []posValue                 // every history_visibility change
	recent      []*Event                   // the latest events, oldest first, and older ones kept (older.go)
	recentFloor int64                      // every event after this position is in recent
	olderMax    int64                      // what the events before the latest recentSize may cost
	// rewritten counts redactions and purges, which change stored events:
	// events read from the database before one are not kept in recent.
	rewritten uint64
	lruElem   *list.Element // in Service.older; guarded by its lock

	// stateAfter is the state after each of the room's latest events,
	// stateAfterOrder their IDs oldest first (dag.go); under histMu.
	stateAfter      map[spec.EventID]roomState
	stateAfterOrder []spec.EventID
	// resolutions are every change state resolution made to the room's
	// state beyond a resolving event's own entry, in position order
	// (dag.go); under histMu.
	resolutions []resolution

	// backfillMu serialises backfills (backfill.go); historyComplete
	// says there is nothing before what the server holds, backfillAfter
	// when to try again after a backfill that got nothing.
	backfillMu      sync.Mutex
	historyComplete bool
	backfillAfter   time.Time

	// children says whether the room holds a child that bundled
	// aggregations count (relations.go): most rooms hold none, and then
	// bundling needs no query.
	children atomic.Int32
}

// Values of liveRoom.children.
const (
	childrenUnknown int32 = iota // not looked up since start-up
	childrenNone
	childrenSome
)

func newLiveRoom(id spec.RoomID, v spec.RoomVersion) *liveRoom {
	r := &liveRoom{id: id, version: v, members: map[spec.UserID][]posValue{}}
	r.cur.Store(&snapshot{})
	return r
}

// apply records committed events in the room's history; called in commit
// order on the writer goroutine, with the room's write lock held or, for
// the events another node wrote, by the follower (follow.go).
func (r *liveRoom) apply(evs []*Event, final *snapshot, redacted []*events.PDU) {
	r.histMu.Lock()
	if len(redacted) > 0 {
		r.rewritten++
	}
	if len(redacted) > 0 {
		// Readers use events (and slices of recent) without the lock:
		// redacted events are replaced by copies in a new slice, never
		// changed in place.
		r.recent = slices.Clone(r.recent)
	}
	for _, p := range redacted {
		for i, ev := range r.recent {
			hit := ev.PDU.EventID() == p.EventID()
			// State derived in memory must not bring back what was
			// redacted either.
			hitReplaced := ev.replaced != nil && ev.replaced.EventID() == p.EventID()
			if !hit && !hitReplaced {
				continue
			}
			cp := *ev
			if hit {
				cp.PDU = p
				cp.RedactedBecause = redactionOf(evs, p.EventID())
			}
			if hitReplaced {
				cp.replaced = p
			}
			r.recent[i] = &cp
		}
		r.redactResolved(p)
	}
	r.rememberStates(evs)
	for _, ev := range evs {
		r.record(ev)
		if r.children.Load() != childrenSome {
			if rel, ok := relationOf(ev.PDU); ok && bundledRelation(rel.relType) {
				r.children.Store(childrenSome)
			}
		}
	}
	r.histMu.Unlock()
	r.cur.Store(final)
}

// redactResolved puts the redacted p in place of its copy in the room's
// resolutions, in new slices: readers hold the old ones without the lock.
// histMu must be held.
func (r *liveRoom) redactResolved(p *events.PDU) {
	cloned := false
	for i, rs := range r.resolutions {
		j := slices.IndexFunc(rs.set, func(q *events.PDU) bool { return q.EventID() == p.EventID() })
		if j < 0 {
			continue
		}
		if !cloned {
			r.resolutions, cloned = slices.Clone(r.resolutions), true
		}
		set := slices.Clone(rs.set)
		set[j] = p
		r.resolutions[i].set = set
	}
}

// redactionOf is the redaction among evs that redacts id.
func redactionOf(evs []*Event, id spec.EventID) *events.PDU {
	for _, ev := range evs {
		if ev.PDU.Type() == spec.MRoomRedaction && ev.PDU.Redacts() == id {
			return ev.PDU
		}
	}
	return nil
}

// record adds one event to the histories; histMu must be held.
func (r *liveRoom) record(ev *Event) {
	r.recordState(ev.Position, ev.PDU)
	// State resolution's changes take effect with the event (dag.go).
	for _, p := range ev.resolved {
		r.recordState(ev.Position, p)
	}
	if len(ev.resolved) > 0 || len(ev.unset) > 0 {
		r.resolutions = append(r.resolutions, resolution{pos: ev.Position, set: ev.resolved, unset: ev.unset})
	}
	r.recent = append(r.recent, ev)
	r.trimOlder()
}

// recordResolution adds a resolution read from the database to the
// histories; histMu must be held.
func (r *liveRoom) recordResolution(rs resolution) {
	for _, p := range rs.set {
		r.recordState(rs.pos, p)
	}
	r.resolutions = append(r.resolutions, rs)
}

// recordState adds a state change at pos to the histories; histMu held.
func (r *liveRoom) recordState(pos int64, p *events.PDU) {
	sk, ok := p.StateKey()
	if !ok {
		return
	}
	switch p.Type() {
	case spec.MRoomMember:
		u := spec.UserID(sk)
		m := p.Content().Get("membership").String()
		r.members[u] = append(r.members[u], posValue{pos, m})
		r.changes = append(r.changes, memberChange{pos, u, m})
	case spec.MRoomHistoryVisibility:
		r.visibility = append(r.visibility, posValue{pos, p.Content().Get("history_visibility").String()})
	}
}

// memberChange is one membership change of a room.
type memberChange struct {
	pos        int64
	user       spec.UserID
	membership string
}

// valueBefore returns the value in effect just before position pos.
func valueBefore(h []posValue, pos int64) string {
	i := sort.Search(len(h), func(i int) bool { return h[i].pos >= pos })
	if i == 0 {
		return ""
	}
	return h[i-1].value
}

// valueAt returns the value in effect at position pos (including a change
// made by the event at pos itself).
func valueAt(h []posValue, pos int64) string {
	i := sort.Search(len(h), func(i int) bool { return h[i].pos > pos })
	if i == 0 {
		return ""
	}
	return h[i-1].value
}

// stateAtFromMemory returns the state just after pos by undoing the recent
// state changes after it, or false when memory cannot tell.
func (r *liveRoom) stateAtFromMemory(pos int64) ([]*events.PDU, bool) {
	snap := r.cur.Load()
	r.histMu.RLock()
	defer r.histMu.RUnlock()
	if pos < r.recentFloor {
		return nil, false
	}
	// Memory cannot undo a state resolution (dag.go).
	if i := sort.Search(len(r.resolutions), func(i int) bool { return r.resolutions[i].pos > pos }); i < len(r.resolutions) {
		return nil, false
	}
	var undo []*Event
	for i := len(r.recent) - 1; i >= 0 && r.recent[i].Position > pos; i-- {
		ev := r.recent[i]
		if ev.Position > snap.position || !ev.PDU.IsState() {
			continue
		}
		if !ev.replacedKnown {
			return nil, false
		}
		undo = append(undo, ev)
	}
	state := snap.state.Map()
	for _, ev := range undo { // newest first
		sk, _ := ev.PDU.StateKey()
		k := authrules.StateKeyPair{Type: ev.PDU.Type(), StateKey: sk}
		if ev.replaced == nil {
			delete(state, k)
		} else {
			state[k] = ev.replaced
		}
	}
	out := make([]*events.PDU, 0, len(state))
	for _, p := range state {
		out = append(out, p)
	}
	return out, true
}

// recentSince returns the in-memory events after position since, and false
// if some of them are no longer in memory.
func (r *liveRoom) recentSince(since int64) ([]*Event, bool) {
	r.histMu.RLock()
	defer r.histMu.RUnlock()
	if since < r.recentFloor {
		return nil, false
	}
	i := sort.Search(len(r.recent), func(i int) bool { return r.recent[i].Position > since })
	return r.recent[i:], true
}
