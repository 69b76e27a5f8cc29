package main

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// sentLog records the events the senders got an event ID for: those are the
// events every receiver must see exactly once.
type sentLog struct {
	mu       sync.Mutex
	byRoom   map[string][]string // room → event IDs, in the order the answers came
	ids      map[string]bool
	errs     int
	firstErr error
	lat      latencies // PUT round trips
	first    time.Time // when the first send began
	last     time.Time // when the last successful answer came
}

func newSentLog() *sentLog {
	return &sentLog{byRoom: map[string][]string{}, ids: map[string]bool{}}
}

// send sends one message and records the outcome; a failed send is counted,
// not fatal, so that one error does not hide the rest of the figures.
func (s *sentLog) send(ctx context.Context, c *Client, roomID string, seq int64) {
	start := time.Now()
	s.mu.Lock()
	if s.first.IsZero() || start.Before(s.first) {
		s.first = start
	}
	s.mu.Unlock()
	id, err := c.Send(ctx, roomID, seq)
	end := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			s.errs++
			if s.firstErr == nil {
				s.firstErr = err
			}
		}
		return
	}
	s.lat.add(end.Sub(start))
	s.ids[id] = true
	s.byRoom[roomID] = append(s.byRoom[roomID], id)
	if end.After(s.last) {
		s.last = end
	}
}

func (s *sentLog) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

// report adds the send figures: how many, how fast they were persisted, the
// PUT latency, and errors (which fail the run).
func (s *sentLog) report(r *Result, prefix string) {
	n := s.count()
	r.add(prefix+"sent", float64(n))
	if span := s.last.Sub(s.first); n > 0 && span > 0 {
		r.add(prefix+"events_persisted_per_s", float64(n)/span.Seconds())
	}
	r.addLatency(prefix+"send_", s.lat.sorted())
	r.addCount(prefix+"send_errors", s.errs)
	if s.firstErr != nil {
		r.failf("first send error: %v", s.firstErr)
	}
}

// receiver is one member in a /sync long-poll loop. It counts every
// benchmark message it sees, by event ID, and when it first saw it.
type receiver struct {
	c        *Client
	since    string
	filter   string
	unique   *atomic.Int64 // first-time deliveries, shared by all receivers
	inflight *atomic.Int64 // receivers with a /sync outstanding

	// Owned by the loop; read only after it has returned.
	seen     map[string]int
	order    []string        // event IDs in the order first seen
	lat      []time.Duration // send → delivery of each first sighting
	limited  int             // incremental syncs whose timeline said "limited"
	syncs    int             // answered syncs
	errs     int
	firstErr error
}

// loop long-polls until ctx ends.
func (rc *receiver) loop(ctx context.Context) {
	for ctx.Err() == nil {
		rc.inflight.Add(1)
		resp, err := rc.c.Sync(ctx, rc.since, 30*time.Second, rc.filter)
		rc.inflight.Add(-1)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			rc.errs++
			if rc.firstErr == nil {
				rc.firstErr = err
			}
			select { // back off a little; the server is in trouble
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		rc.syncs++
		rc.take(resp, time.Now())
		rc.since = resp.NextBatch
	}
}

func (rc *receiver) take(resp *SyncResponse, now time.Time) {
	for _, room := range resp.Rooms.Join {
		if room.Timeline.Limited {
			rc.limited++
		}
		for i := range room.Timeline.Events {
			ev := &room.Timeline.Events[i]
			mark, ok := ev.Bench()
			if !ok {
				continue
			}
			rc.seen[ev.EventID]++
			if rc.seen[ev.EventID] == 1 {
				rc.order = append(rc.order, ev.EventID)
				rc.lat = append(rc.lat, now.Sub(time.UnixMicro(mark.SentUs)))
				rc.unique.Add(1)
			}
		}
	}
}

// audience is a set of receivers running their loops.
type audience struct {
	rcv      []*receiver
	unique   atomic.Int64
	inflight atomic.Int64
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// listen does an initial sync for every client (16 at a time), starts their
// long-poll loops and returns once every loop has a request outstanding.
func listen(ctx context.Context, clients []*Client) (*audience, error) {
	a := &audience{rcv: make([]*receiver, len(clients))}
	err := pool(ctx, len(clients), 16, func(ctx context.Context, i int) error {
		resp, err := clients[i].Sync(ctx, "", 0, filterReceiverInitial)
		if err != nil {
			return err
		}
		a.rcv[i] = &receiver{c: clients[i], since: resp.NextBatch, filter: filterReceiver,
			unique: &a.unique, inflight: &a.inflight, seen: map[string]int{}}
		return nil
	})
	if err != nil {
		return nil, err
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	for _, rc := range a.rcv {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); rc.loop(loopCtx) }()
	}
	deadline := time.Now().Add(30 * time.Second)
	for a.inflight.Load() < int64(len(clients)) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return a, nil
}

// stop ends every loop and waits for them.
func (a *audience) stop() {
	if a.cancel != nil {
		a.cancel()
		a.wg.Wait()
		a.cancel = nil
	}
}

// await waits until the receivers have seen target distinct deliveries, or
// until timeout after the call, or ctx ends; it reports whether all came.
func (a *audience) await(ctx context.Context, target int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for a.unique.Load() < target {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// check compares what each receiver saw with what was sent and reports the
// delivery figures. Missing, duplicate and unexpected deliveries, receivers
// that saw the room in a different order, and sync errors fail the run.
func (a *audience) check(r *Result, sent *sentLog) {
	sent.mu.Lock()
	defer sent.mu.Unlock()
	var (
		all                                 []time.Duration
		worstP99                            time.Duration
		missing, dups, unexpected, misorder int
		limited, syncErrs, delivered, syncs int
		firstSyncErr                        error
		reference                           []string
	)
	for _, rc := range a.rcv {
		for id := range sent.ids {
			switch n := rc.seen[id]; {
			case n == 0:
				missing++
			case n > 1:
				dups += n - 1
			}
		}
		for id := range rc.seen {
			if !sent.ids[id] {
				unexpected++
			}
		}
		// Every member of a room must see its timeline in one order.
		if len(rc.order) == len(sent.ids) {
			if reference == nil {
				reference = rc.order
			} else if !slices.Equal(reference, rc.order) {
				misorder++
			}
		}
		delivered += len(rc.order)
		limited += rc.limited
		syncs += rc.syncs
		syncErrs += rc.errs
		if firstSyncErr == nil {
			firstSyncErr = rc.firstErr
		}
		lat := slices.Clone(rc.lat)
		slices.Sort(lat)
		worstP99 = max(worstP99, percentile(lat, 99))
		all = append(all, lat...)
	}
	slices.Sort(all)
	r.add("receivers", float64(len(a.rcv)))
	r.add("deliveries", float64(delivered))
	r.add("deliveries_expected", float64(len(a.rcv)*len(sent.ids)))
	if syncs > 0 {
		// How many events a long-poll brings back: fewer /sync requests
		// per delivery is the server batching what it wakes a client for.
		r.add("deliveries_per_sync", float64(delivered)/float64(syncs))
	}
	r.addLatency("delivery_", all)
	r.add("delivery_worst_receiver_p99_ms", ms(worstP99))
	r.addCount("missing", missing)
	r.addCount("duplicates", dups)
	r.addCount("unexpected", unexpected)
	r.addCount("receivers_out_of_order", misorder)
	r.add("limited_timelines", float64(limited))
	r.addCount("sync_errors", syncErrs)
	if firstSyncErr != nil {
		r.failf("first sync error: %v", firstSyncErr)
	}
}
