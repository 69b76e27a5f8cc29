package push

import (
	"context"
	stdsync "sync"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Unread counts live in memory so that /sync reads them without touching the
// database; push_notifications and push_read make them survive a restart.
//
// Every change of a user's counts is published from the after-commit hook of
// a write that took a stream position for it. That position is the change's
// place in the stream: a /sync whose token is before it includes the room
// (with its new counts), one after it already saw them. Because the hook runs
// before the database's committed position moves past the write, a sync that
// reads the committed position first and the counts second never misses a
// change.

// mainThread is the thread key of the main timeline.
const mainThread = "main"

type roomCounts struct {
	pos     int64               // stream position of the last change
	threads map[string][2]int64 // thread → {notifications, highlights}; "main" for the main timeline
	marks   map[string]int64    // read positions: "" unthreaded, "main", or a thread root
}

type userCounts struct {
	pos   int64 // last change in any room
	rooms map[spec.RoomID]*roomCounts
}

type countStore struct {
	mu    stdsync.RWMutex
	users map[spec.UserID]*userCounts
}

func newCountStore() *countStore { return &countStore{users: map[spec.UserID]*userCounts{}} }

// room returns (creating) a user's counts in a room; mu must be held for
// writing, or the store not yet shared.
func (cs *countStore) room(user spec.UserID, room spec.RoomID) *roomCounts {
	u := cs.users[user]
	if u == nil {
		u = &userCounts{rooms: map[spec.RoomID]*roomCounts{}}
		cs.users[user] = u
	}
	rc := u.rooms[room]
	if rc == nil {
		rc = &roomCounts{threads: map[string][2]int64{}, marks: map[string]int64{}}
		u.rooms[room] = rc
	}
	return rc
}

// touch records a change at pos; mu must be held for writing.
func (cs *countStore) touch(user spec.UserID, rc *roomCounts, pos int64) {
	rc.pos = max(rc.pos, pos)
	if u := cs.users[user]; u != nil {
		u.pos = max(u.pos, pos)
	}
}

// readUpTo is the read position that applies to a thread: the further of
// the unthreaded receipt and the thread's own.
func (rc *roomCounts) readUpTo(thread string) int64 {
	return max(rc.marks[""], rc.marks[thread])
}

// Position is the stream position of the last change of any of the user's
// counts, from memory. Part of sync's Unread.
func (s *Service) Position(user spec.UserID) int64 {
	s.counts.mu.RLock()
	defer s.counts.mu.RUnlock()
	if u := s.counts.users[user]; u != nil {
		return u.pos
	}
	return 0
}

// Counts returns the user's unread counts in a room, from memory: the main
// timeline's {notifications, highlights}, each thread's (by root event ID,
// only threads with something unread), and the position of their last
// change. Part of sync's Unread.
func (s *Service) Counts(user spec.UserID, room spec.RoomID) (notifications, highlights int64, threads map[string][2]int64, pos int64) {
	s.counts.mu.RLock()
	defer s.counts.mu.RUnlock()
	u := s.counts.users[user]
	if u == nil {
		return 0, 0, nil, 0
	}
	rc := u.rooms[room]
	if rc == nil {
		return 0, 0, nil, 0
	}
	for t, c := range rc.threads {
		if t == mainThread {
			notifications, highlights = c[0], c[1]
			continue
		}
		if c[0] == 0 && c[1] == 0 {
			continue
		}
		if threads == nil {
			threads = map[string][2]int64{}
		}
		threads[t] = c
	}
	return notifications, highlights, threads, rc.pos
}

// totalUnread is the user's notification count over every room: the badge
// a push gateway shows.
func (s *Service) totalUnread(user spec.UserID) int64 {
	s.counts.mu.RLock()
	defer s.counts.mu.RUnlock()
	var n int64
	if u := s.counts.users[user]; u != nil {
		for _, rc := range u.rooms {
			for _, c := range rc.threads {
				n += c[0]
			}
		}
	}
	return n
}

// isRead reports whether a notification at pos in a thread is already
// covered by a read position (a receipt may overtake the evaluation).
func (s *Service) isRead(user spec.UserID, room spec.RoomID, thread string, pos int64) bool {
	s.counts.mu.RLock()
	defer s.counts.mu.RUnlock()
	if u := s.counts.users[user]; u != nil {
		if rc := u.rooms[room]; rc != nil {
			return pos <= rc.readUpTo(thread)
		}
	}
	return false
}

// hasUnread reports whether the user has unread notifications in a thread.
func (s *Service) hasUnread(user spec.UserID, room spec.RoomID, thread string) bool {
	s.counts.mu.RLock()
	defer s.counts.mu.RUnlock()
	if u := s.counts.users[user]; u != nil {
		if rc := u.rooms[room]; rc != nil {
			return rc.threads[thread] != [2]int64{}
		}
	}
	return false
}

// ReceiptRead marks the user's notifications in the room up to the event at
// position pos as read: in every thread for an unthreaded receipt (thread
// ""), else in the main timeline ("main") or one thread (its root's event
// ID). m.read and m.read.private both count; a receipt behind the current
// read position changes nothing. Part of sync's Unread: sync calls it after
// storing an m.read or m.read.private receipt.
func (s *Service) ReceiptRead(ctx context.Context, user spec.UserID, room spec.RoomID, eventID spec.EventID, pos int64, thread string) error {
	if pos <= 0 {
		return nil
	}
	s.counts.mu.RLock()
	behind := false
	if u := s.counts.users[user]; u != nil {
		if rc := u.rooms[room]; rc != nil {
			behind = pos <= rc.marks[thread]
		}
	}
	s.counts.mu.RUnlock()
	if behind {
		return nil
	}
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := raiseRead(tx, user, room, thread, pos); err != nil {
			return err
		}
		counts, err := recount(tx, user, room)
		if err != nil {
			return err
		}
		change := tx.NextPosition()
		tx.AfterCommit(func() {
			s.counts.mu.Lock()
			rc := s.counts.room(user, room)
			rc.marks[thread] = max(rc.marks[thread], pos)
			rc.threads = counts
			s.counts.touch(user, rc, change)
			s.counts.mu.Unlock()
			s.notify.Notify(change, user)
		})
		return nil
	})
}
