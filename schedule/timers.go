package schedule

import "container/heap"

// timer is one scheduled event as the scheduler keeps it in memory: its
// delay ID, its delay and when it is due (unix ms). The content stays in
// the database until the event is sent.
type timer struct {
	id    string
	delay int64
	at    int64
	index int // in the heap
}

// timers is a min-heap of due times with an index by delay ID, so that the
// earliest is found in O(1) and a cancel or restart costs O(log n).
type timers struct {
	h    timerHeap
	byID map[string]*timer
}

func newTimers() *timers { return &timers{byID: map[string]*timer{}} }

func (t *timers) add(id string, delay, at int64) {
	if old := t.byID[id]; old != nil {
		t.remove(id)
	}
	tm := &timer{id: id, delay: delay, at: at}
	t.byID[id] = tm
	heap.Push(&t.h, tm)
}

// remove takes a timer out and reports whether it was there.
func (t *timers) remove(id string) (*timer, bool) {
	tm := t.byID[id]
	if tm == nil {
		return nil, false
	}
	delete(t.byID, id)
	heap.Remove(&t.h, tm.index)
	return tm, true
}

func (t *timers) get(id string) *timer { return t.byID[id] }

func (t *timers) reset(id string, at int64) {
	tm := t.byID[id]
	tm.at = at
	heap.Fix(&t.h, tm.index)
}

// next is the earliest due time; ok is false when nothing is scheduled.
func (t *timers) next() (at int64, ok bool) {
	if len(t.h) == 0 {
		return 0, false
	}
	return t.h[0].at, true
}

// popDue takes out every timer due at now or before, earliest first.
func (t *timers) popDue(now int64) []*timer {
	var out []*timer
	for len(t.h) > 0 && t.h[0].at <= now {
		tm := heap.Pop(&t.h).(*timer)
		delete(t.byID, tm.id)
		out = append(out, tm)
	}
	return out
}

type timerHeap []*timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].id < h[j].id
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	tm := x.(*timer)
	tm.index = len(*h)
	*h = append(*h, tm)
}
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old)
	tm := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return tm
}
