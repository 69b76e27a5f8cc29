package main

import (
	"context"
	"fmt"
	"time"
)

// Issue 12: "join: a room with 200 members; 10 new users join and do their
// first sync (full state and lazy-loaded)". Ten joiners sync with the full
// member list, ten more with lazy-loaded members; some members have spoken,
// so the lazy-loaded state has senders to load. One joiner at a time, so
// each join+sync latency is that of a single user.
const (
	joinMembers = 200
	joinJoiners = 10 // per variant
	joinSenders = 20 // members who have sent a message before the joiners come
)

func runJoin(r *Run) error {
	members, err := r.register("member", joinMembers)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	joiners, err := r.register("joiner", 2*joinJoiners)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	roomID, err := members[0].CreateRoom(r.ctx)
	if err != nil {
		return err
	}
	r.logf("%d members join %s", len(members)-1, roomID)
	if err := r.joinAll(members[1:], roomID); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	sent := newSentLog()
	pool(r.ctx, joinSenders, 16, func(ctx context.Context, i int) error {
		sent.send(ctx, members[i*(joinMembers/joinSenders)], roomID, int64(i))
		return nil
	})
	if sent.errs > 0 {
		return fmt.Errorf("send: %w", sent.firstErr)
	}
	joined := map[string]bool{}
	for _, m := range members {
		joined[m.UserID] = true
	}
	r.res.add("members", float64(len(members)))
	if err := r.joinAndSync("full_", joiners[:joinJoiners], roomID, filterTimeline20, joined, false); err != nil {
		return err
	}
	return r.joinAndSync("lazy_", joiners[joinJoiners:], roomID, filterTimeline20Lazy, joined, true)
}

// joinAndSync has each joiner join and do its first sync, one after the
// other, and checks the members the sync shows: with full state every
// joined user; lazy-loaded, at least the sender of every timeline event.
func (r *Run) joinAndSync(prefix string, joiners []*Client, roomID, filter string, joined map[string]bool, lazy bool) error {
	r.logf("%d joiners, %sstate", len(joiners), prefix)
	var joinLat, syncLat, bothLat latencies
	memberEvents, missing := 0, 0
	w, err := begin(r.ctx, r.srv)
	if err != nil {
		return err
	}
	for _, c := range joiners {
		start := time.Now()
		if err := joinLat.timed(func() error { return c.Join(r.ctx, roomID) }); err != nil {
			return err
		}
		var resp *SyncResponse
		err := syncLat.timed(func() (err error) {
			resp, err = c.Sync(r.ctx, "", 0, filter)
			return err
		})
		if err != nil {
			return err
		}
		bothLat.add(time.Since(start))
		joined[c.UserID] = true

		room, ok := resp.Rooms.Join[roomID]
		if !ok {
			r.res.failf("%s: the room is not in the joiner's first sync", prefix)
			continue
		}
		shown := map[string]bool{}
		for _, evs := range [][]Event{room.State.Events, room.Timeline.Events} {
			for i := range evs {
				if m, ok := evs[i].JoinedMember(); ok {
					shown[m] = true
					memberEvents++
				}
			}
		}
		if lazy {
			for _, ev := range room.Timeline.Events {
				if !shown[ev.Sender] {
					missing++
				}
			}
		} else {
			for id := range joined {
				if !shown[id] {
					missing++
				}
			}
		}
	}
	u, err := w.end(r.ctx)
	if err != nil {
		return err
	}
	n := len(joiners)
	r.res.addLatency(prefix+"join_", joinLat.sorted())
	r.res.addLatency(prefix+"first_sync_", syncLat.sorted())
	r.res.addLatency(prefix+"join_and_sync_", bothLat.sorted())
	r.res.addUsage(prefix, u, n, "joiner")
	r.res.add(prefix+"member_events_per_sync", float64(memberEvents)/float64(n))
	r.res.addCount(prefix+"missing_members", missing)
	return nil
}
