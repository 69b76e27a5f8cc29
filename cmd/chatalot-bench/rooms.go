package main

import (
	"context"
	"fmt"
	"time"
)

// Issue 12: "rooms: 10 users in 30 rooms with 50 messages each; initial sync
// with a timeline limit of 20, an empty incremental sync, an incremental sync
// with one new event in each room, /messages pages of 50". Each phase is
// repeated enough times that the server's CPU per operation is well above
// the resolution of /proc/PID/stat (10 ms).
const (
	roomsUsers       = 10
	roomsMessages    = 50 // per room
	roomsInitialReps = 3  // initial syncs per user
	roomsEmptyReps   = 50 // empty incremental syncs per user
	roomsRounds      = 10 // rounds of one new event in each room, each followed by one sync per user
	pageSize         = 50
	timelineLimit    = 20
)

func runRooms(r *Run) error {
	users, err := r.register("user", roomsUsers)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	roomIDs, err := r.createRooms(users, r.p.Rooms)
	if err != nil {
		return err
	}
	sent := newSentLog()
	if err := r.seed(users, roomIDs, roomsMessages, 16, sent); err != nil {
		return err
	}

	tokens := make([]string, len(users))
	if err := r.initialSyncs(users, roomIDs, tokens); err != nil {
		return err
	}
	if err := r.emptySyncs(users, tokens); err != nil {
		return err
	}
	if err := r.oneEventSyncs(users, roomIDs, tokens, sent); err != nil {
		return err
	}
	return r.pageAll("messages_", users, roomIDs, tokens, sent)
}

// createRooms has the users create n public rooms in turn and every user
// join every room; this is set-up and is not measured.
//
// The rooms are created one at a time: from room version 12 the room ID is
// the hash of the create event, and two identical createRoom requests by one
// user in the same millisecond make the same create event (the server then
// answered 500 on a UNIQUE constraint when this benchmark was written).
func (r *Run) createRooms(users []*Client, n int) ([]string, error) {
	r.logf("creating %d rooms", n)
	roomIDs := make([]string, n)
	creator := func(i int) int { return i % len(users) }
	for i := range roomIDs {
		id, err := users[creator(i)].CreateRoom(r.ctx)
		if err != nil {
			return nil, fmt.Errorf("createRoom: %w", err)
		}
		roomIDs[i] = id
	}
	joins := n * (len(users) - 1)
	r.logf("%d joins", joins)
	err := pool(r.ctx, joins, 16, func(ctx context.Context, i int) error {
		room := i / (len(users) - 1)
		u := 1 + creator(room) + i%(len(users)-1) // every user but the creator
		return users[u%len(users)].Join(ctx, roomIDs[room])
	})
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	return roomIDs, nil
}

// seed sends perRoom messages into each room, conc at once, spreading them
// over rooms and senders, and reports the seeding separately from the
// measured phases.
func (r *Run) seed(users []*Client, roomIDs []string, perRoom, conc int, sent *sentLog) error {
	total := len(roomIDs) * perRoom
	r.logf("seeding %d events (%d in flight)", total, conc)
	w, err := begin(r.ctx, r.srv)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { // a long seeding says how far it got
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r.logf("seeded %d of %d", sent.count(), total)
			}
		}
	}()
	pool(r.ctx, total, conc, func(ctx context.Context, i int) error {
		room := roomIDs[i%len(roomIDs)]
		user := users[(i/len(roomIDs))%len(users)]
		sent.send(ctx, user, room, int64(i))
		return nil
	})
	close(done)
	u, err := w.end(r.ctx)
	if err != nil {
		return err
	}
	sent.report(r.res, "seed_")
	r.res.addUsage("seed_", u, sent.count(), "event")
	return r.ctx.Err()
}

// initialSyncs: each user does an initial sync with a timeline limit of 20,
// one at a time; each must see every room with a full timeline.
func (r *Run) initialSyncs(users []*Client, roomIDs []string, tokens []string) error {
	r.logf("initial syncs")
	var lat latencies
	var missingRooms, shortTimelines, dups int
	w, err := begin(r.ctx, r.srv)
	if err != nil {
		return err
	}
	for range roomsInitialReps {
		for i, c := range users {
			resp, err := r.timedSync(&lat, c, "")
			if err != nil {
				return fmt.Errorf("initial sync: %w", err)
			}
			tokens[i] = resp.NextBatch
			for _, id := range roomIDs {
				room, ok := resp.Rooms.Join[id]
				if !ok {
					missingRooms++
					continue
				}
				if n := len(room.Timeline.Events); n != timelineLimit {
					shortTimelines++
				}
				dups += duplicateIDs(room.Timeline.Events)
			}
		}
	}
	u, err := w.end(r.ctx)
	if err != nil {
		return err
	}
	r.res.add("rooms_per_user", float64(len(roomIDs)))
	r.res.add("initial_syncs", float64(len(lat.ds)))
	r.res.addLatency("initial_sync_", lat.sorted())
	r.res.addUsage("initial_sync_", u, len(lat.ds), "sync")
	r.res.addCount("initial_sync_missing_rooms", missingRooms)
	r.res.addCount("initial_sync_timelines_not_20", shortTimelines)
	r.res.addCount("initial_sync_duplicates", dups)
	return nil
}

// emptySyncs: incremental syncs with nothing new (timeout 0); none may
// carry a timeline event.
func (r *Run) emptySyncs(users []*Client, tokens []string) error {
	r.logf("empty incremental syncs")
	var lat latencies
	unexpected := 0
	w, err := begin(r.ctx, r.srv)
	if err != nil {
		return err
	}
	for range roomsEmptyReps {
		for i, c := range users {
			resp, err := r.timedSync(&lat, c, tokens[i])
			if err != nil {
				return fmt.Errorf("empty incremental sync: %w", err)
			}
			tokens[i] = resp.NextBatch
			for _, room := range resp.Rooms.Join {
				unexpected += len(room.Timeline.Events)
			}
		}
	}
	u, err := w.end(r.ctx)
	if err != nil {
		return err
	}
	r.res.add("empty_syncs", float64(len(lat.ds)))
	r.res.addLatency("empty_sync_", lat.sorted())
	r.res.addUsage("empty_sync_", u, len(lat.ds), "sync")
	r.res.addCount("empty_sync_unexpected_events", unexpected)
	return nil
}

// timedSync is one /sync of the rooms' timelines (filterTimeline20) since
// the token ("": an initial sync), its latency added to lat.
func (r *Run) timedSync(lat *latencies, c *Client, since string) (*SyncResponse, error) {
	var resp *SyncResponse
	err := lat.timed(func() (err error) {
		resp, err = c.Sync(r.ctx, since, 0, filterTimeline20)
		return err
	})
	return resp, err
}

// oneEventSyncs: in each round one message goes into each room (not
// measured), then every user syncs once and must see exactly those messages.
func (r *Run) oneEventSyncs(users []*Client, roomIDs []string, tokens []string, all *sentLog) error {
	r.logf("incremental syncs with one new event in each room")
	var lat latencies
	var total usage
	missing, dups, unexpected := 0, 0, 0
	for round := range roomsRounds {
		sent := newSentLog()
		pool(r.ctx, len(roomIDs), 16, func(ctx context.Context, i int) error {
			sent.send(ctx, users[(round+i)%len(users)], roomIDs[i], int64(1_000_000+round*len(roomIDs)+i))
			return nil
		})
		if sent.errs > 0 {
			return fmt.Errorf("send: %w", sent.firstErr)
		}
		for room, ids := range sent.byRoom {
			all.byRoom[room] = append(all.byRoom[room], ids...)
		}
		w, err := begin(r.ctx, r.srv)
		if err != nil {
			return err
		}
		for i, c := range users {
			resp, err := r.timedSync(&lat, c, tokens[i])
			if err != nil {
				return fmt.Errorf("incremental sync: %w", err)
			}
			tokens[i] = resp.NextBatch
			seen := map[string]int{}
			for _, room := range resp.Rooms.Join {
				for j := range room.Timeline.Events {
					if _, ok := room.Timeline.Events[j].Bench(); ok {
						seen[room.Timeline.Events[j].EventID]++
					}
				}
			}
			m, d, x := compare(seen, sent.ids)
			missing, dups, unexpected = missing+m, dups+d, unexpected+x
		}
		u, err := w.end(r.ctx)
		if err != nil {
			return err
		}
		total.add(u)
	}
	r.res.add("one_event_syncs", float64(len(lat.ds)))
	r.res.addLatency("one_event_sync_", lat.sorted())
	r.res.addUsage("one_event_sync_", total, len(lat.ds), "sync")
	r.res.addCount("one_event_sync_missing", missing)
	r.res.addCount("one_event_sync_duplicates", dups)
	r.res.addCount("one_event_sync_unexpected", unexpected)
	return nil
}

// pageAll: every user pages back through every room with /messages, 50 at
// a time, from its latest sync token to the start; each must see each
// message of the room exactly once.
func (r *Run) pageAll(prefix string, users []*Client, roomIDs []string, tokens []string, sent *sentLog) error {
	r.logf("/messages pages")
	var lat latencies
	missing, dups, unexpected := 0, 0, 0
	w, err := begin(r.ctx, r.srv)
	if err != nil {
		return err
	}
	for i, c := range users {
		for _, room := range roomIDs {
			want := map[string]bool{}
			for _, id := range sent.byRoom[room] {
				want[id] = true
			}
			seen, err := r.pageRoom(c, room, tokens[i], len(want), &lat)
			if err != nil {
				return err
			}
			m, d, x := compare(seen, want)
			missing, dups, unexpected = missing+m, dups+d, unexpected+x
		}
	}
	u, err := w.end(r.ctx)
	if err != nil {
		return err
	}
	r.res.add(prefix+"pages", float64(len(lat.ds)))
	r.res.addLatency(prefix+"page_", lat.sorted())
	r.res.addUsage(prefix, u, len(lat.ds), "page")
	r.res.addCount(prefix+"missing", missing)
	r.res.addCount(prefix+"duplicates", dups)
	r.res.addCount(prefix+"unexpected", unexpected)
	return nil
}

// pageRoom pages one room back to its start and counts the benchmark
// messages seen.
func (r *Run) pageRoom(c *Client, roomID, from string, expected int, lat *latencies) (map[string]int, error) {
	seen := map[string]int{}
	limit := expected/pageSize + 100 // a server that never ends the pagination must not hang the run
	for pages := 0; ; pages++ {
		if pages > limit {
			return nil, fmt.Errorf("/messages in %s did not reach the start after %d pages", roomID, pages)
		}
		var page *MessagesResponse
		err := lat.timed(func() (err error) {
			page, err = c.Messages(r.ctx, roomID, from, pageSize)
			return err
		})
		if err != nil {
			return nil, err
		}
		for j := range page.Chunk {
			if _, ok := page.Chunk[j].Bench(); ok {
				seen[page.Chunk[j].EventID]++
			}
		}
		if len(page.Chunk) == 0 || page.End == "" {
			return seen, nil
		}
		from = page.End
	}
}

// compare counts the wanted events never seen, the extra sightings, and the
// events seen that were not wanted.
func compare(seen map[string]int, want map[string]bool) (missing, dups, unexpected int) {
	for id := range want {
		switch n := seen[id]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	for id := range seen {
		if !want[id] {
			unexpected++
		}
	}
	return missing, dups, unexpected
}

func duplicateIDs(evs []Event) int {
	seen := make(map[string]bool, len(evs))
	n := 0
	for _, e := range evs {
		if seen[e.EventID] {
			n++
		}
		seen[e.EventID] = true
	}
	return n
}
