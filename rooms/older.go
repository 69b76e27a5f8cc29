package rooms

import (
	"container/list"
	"slices"
	"sync"
)

// A room keeps its latest recentSize events in memory. Events older than
// those, once read from the database for /messages or /context, are kept
// too, below the recent ones in the same slice: the next reader of that
// history (other members paging the same room) then neither queries nor
// parses them, and the events keep their rendered client form. The memory
// they take is bounded per room and over all rooms; the rooms that paged
// least recently give theirs back first.

const (
	// olderBudget bounds the memory all rooms give to older events.
	olderBudget = 4 << 20
	// roomOlderMax bounds one room's share, so that one deep history
	// does not push every other room out.
	roomOlderMax = olderBudget / 4
)

// eventCost estimates the memory an event takes: its JSON, its cached
// client form (about as long) and the parsed fields.
func eventCost(ev *Event) int64 { return int64(2*len(ev.PDU.JSON()) + 512) }

// olderCost is the cost of the events beyond the latest recentSize;
// histMu must be held.
func (r *liveRoom) olderCost() int64 {
	var n int64
	for _, ev := range r.recent[:max(len(r.recent)-recentSize, 0)] {
		n += eventCost(ev)
	}
	return n
}

// trimOlder drops the oldest events while those beyond the latest
// recentSize cost more than the room's allowance; histMu must be held.
// Readers may hold sub-slices of recent, so it is copied, never shifted.
func (r *liveRoom) trimOlder() {
	cost, drop := r.olderCost(), 0
	for ; cost > r.olderMax; drop++ {
		cost -= eventCost(r.recent[drop])
	}
	if drop > 0 {
		r.recentFloor = r.recent[drop-1].Position
		r.recent = append(r.recent[:0:0], r.recent[drop:]...)
	}
}

// keepOlder puts events read from the database below a room's memory into
// it. asc holds, oldest first, every event of the room in (lo, floor];
// floor and rewritten are what the room had before the read. If either
// changed since, the events may be out of date or no longer adjoin memory,
// and are not kept. Of asc, the newest that fit the room's share are kept.
func (s *Service) keepOlder(r *liveRoom, floor int64, rewritten uint64, lo int64, asc []*Event) {
	r.histMu.Lock()
	if r.recentFloor != floor || r.rewritten != rewritten {
		r.histMu.Unlock()
		return
	}
	room, j := roomOlderMax-r.olderCost(), len(asc)
	for ; j > 0 && eventCost(asc[j-1]) <= room; j-- {
		room -= eventCost(asc[j-1])
	}
	if j > 0 {
		lo = asc[j-1].Position
	}
	if j < len(asc) {
		r.recent = append(slices.Clip(asc[j:]), r.recent...)
	}
	r.recentFloor = lo
	allowance := r.olderCost()
	delta := allowance - r.olderMax
	r.olderMax = allowance
	r.histMu.Unlock()
	s.older.use(r, delta)
}

// olderRooms accounts the memory rooms give to older events: the sum of
// their allowances (liveRoom.olderMax), and the rooms in the order they
// last kept some.
type olderRooms struct {
	mu    sync.Mutex
	bytes int64
	lru   list.List // of *liveRoom, most recent first
}

// use records a change of a room's allowance, then takes older events
// from the rooms that kept some least recently until the sum fits.
func (o *olderRooms) use(r *liveRoom, delta int64) {
	o.mu.Lock()
	o.bytes += delta
	if r.lruElem == nil {
		r.lruElem = o.lru.PushFront(r)
	} else {
		o.lru.MoveToFront(r.lruElem)
	}
	o.mu.Unlock()
	for {
		o.mu.Lock()
		last := o.lru.Back()
		if o.bytes <= olderBudget || last.Value == r {
			o.mu.Unlock()
			return
		}
		o.mu.Unlock()
		o.forget(last.Value.(*liveRoom))
	}
}

// forget takes a room's older events and allowance back.
func (o *olderRooms) forget(r *liveRoom) {
	o.mu.Lock()
	if r.lruElem != nil {
		o.lru.Remove(r.lruElem)
		r.lruElem = nil
	}
	o.mu.Unlock()
	r.histMu.Lock()
	freed := r.olderMax
	r.olderMax = 0
	r.trimOlder()
	r.histMu.Unlock()
	o.mu.Lock()
	o.bytes -= freed
	o.mu.Unlock()
}
