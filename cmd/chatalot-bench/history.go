package main

import "fmt"

// The growth runs of issue 12 need "a room history of 1,000, 10,000 and
// 100,000 events": one room with -history messages, seeded by several users
// with many sends in flight (the seeding is reported on its own), then
// initial syncs with a timeline limit of 20 and every user paging the whole
// history back with /messages, which must return each message exactly once.
const (
	historyUsers    = 8
	historyInFlight = 32
)

func runHistory(r *Run) error {
	users, err := r.register("user", historyUsers)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	roomIDs, err := r.createRooms(users, 1)
	if err != nil {
		return err
	}
	sent := newSentLog()
	if err := r.seed(users, roomIDs, r.p.History, historyInFlight, sent); err != nil {
		return err
	}
	if n := sent.count(); n > 0 {
		r.res.add("data_dir_bytes_per_event", float64(dirBytes(r.srv.DataDir))/float64(n))
	}
	tokens := make([]string, len(users))
	if err := r.initialSyncs(users, roomIDs, tokens); err != nil {
		return err
	}
	return r.pageAll("messages_", users, roomIDs, tokens, sent)
}
