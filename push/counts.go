package push

import (
	"context"
	stdsync "sync"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
)

// Unread counts live in memory so that /sync reads them without touching the
// database; push_notified and push_read make them survive a restart.
//
// Every change of a user's counts is published from the after-commit hook of
// a write with a stream position: the events' own for notifications and a
// sender's implicit read, one taken for the purpose for a receipt. That
// position is the change's place in the stream: a /sync whose token is
// before it includes the room (with its new counts), one after it already
// saw them. Because the hook runs before the database's committed position
// moves past the write, a sync that reads the committed position first and
// the counts second never misses a change.

// mainThread is the thread key of the main timeline.
const mainThread = "main"

// maxTracked bounds the unread notifications remembered one by one per
// thread; older ones are only counted.
const maxTracked = 32

// tally is a count of unread notifications.
type tally struct {
	n, h int64 // notifications, highlights
	upTo int64 // the position of the newest of them
}

// threadUnread is a user's unread notifications in one thread of a room:
// the newest ones one by one, so that a receipt for any of them is applied
// in memory, and a tally of older ones. A receipt at or past every older
// one clears the tally; a receipt between them needs a recount from the
// database (rare: clients send receipts for the newest event they show).
type threadUnread struct {
	tracked   []unread // oldest first
	untracked tally
}

type unread struct {
	pos       int64
	highlight bool
}

func (t *threadUnread) counts() [2]int64 {
	c := [2]int64{t.untracked.n, t.untracked.h}
	for _, u := range t.tracked {
		c[0]++
		if u.highlight {
			c[1]++
		}
	}
	return c
}

func (t *threadUnread) add(pos int64, highlight bool) {
	t.tracked = append(t.tracked, unread{pos, highlight})
	if len(t.tracked) > maxTracked {
		old := t.tracked[0]
		t.tracked = append(t.tracked[:0], t.tracked[1:]...)
		t.untracked.n++
		if old.highlight {
			t.untracked.h++
		}
		t.untracked.upTo = old.pos
	}
}

// read drops what a read position covers. It reports false, changing
// nothing, when the position falls among the untracked notifications.
func (t *threadUnread) read(upTo int64) bool {
	if t.untracked.n > 0 && upTo < t.untracked.upTo {
		return false
	}
	t.untracked = tally{}
	i := 0
	for i < len(t.tracked) && t.tracked[i].pos <= upTo {
		i++
	}
	t.tracked = append(t.tracked[:0], t.tracked[i:]...)
	return true
}

type roomCounts struct {
	pos     int64                    // stream position of the last change
	threads map[string]*threadUnread // "main" for the main timeline, else the root's event ID
	marks   map[string]int64         // read positions: "" unthreaded, "main", or a thread root
	// lastRow is the position of the newest counted notification per
	// thread, noted when it is written (service.go, store).
	lastRow map[string]int64
}

func (rc *roomCounts) thread(t string) *threadUnread {
	tu := rc.threads[t]
	if tu == nil {
		tu = &threadUnread{}
		rc.threads[t] = tu
	}
	return tu
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
		rc = &roomCounts{threads: map[string]*threadUnread{}, marks: map[string]int64{}, lastRow: map[string]int64{}}
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

// notified counts a stored notification unless a read position already
// covers it; mu must be held for writing.
func (cs *countStore) notified(n *notificationRow) {
	if !n.counted {
		return
	}
	rc := cs.room(n.user, n.room)
	if n.position() <= rc.readUpTo(n.thread) {
		return
	}
	rc.thread(n.thread).add(n.position(), n.highlight)
	cs.touch(n.user, rc, n.position())
}

// read applies a new read position at pos (thread "" for an unthreaded
// receipt) as of the stream position change; mu must be held for writing.
// recounted is the database's count per thread when the write took one;
// without it, a thread that needs one is returned for a later recount.
func (cs *countStore) read(user spec.UserID, room spec.RoomID, thread string, pos int64, change int64, recounted map[string][2]int64) (stale bool) {
	rc := cs.room(user, room)
	rc.marks[thread] = max(rc.marks[thread], pos)
	changed := false
	for t, tu := range rc.threads {
		if thread != "" && t != thread {
			continue
		}
		before := tu.counts()
		if !tu.read(rc.readUpTo(t)) {
			if recounted == nil {
				stale = true
				continue
			}
			// The recount saw every row this memory holds, and the tracked
			// ones are all newer than the read position: the rest of the
			// count is the untracked part.
			c, tracked := recounted[t], tu.counts()
			tracked[0] -= tu.untracked.n
			tracked[1] -= tu.untracked.h
			tu.untracked = tally{n: c[0] - tracked[0], h: c[1] - tracked[1], upTo: tu.untracked.upTo}
			if tu.untracked.n <= 0 {
				tu.untracked = tally{}
			}
		}
		if tu.counts() != before {
			changed = true
		}
		if tu.counts() == ([2]int64{}) {
			delete(rc.threads, t)
		}
	}
	if changed {
		cs.touch(user, rc, change)
	}
	return stale
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
	for t, tu := range rc.threads {
		c := tu.counts()
		if t == mainThread {
			notifications, highlights = c[0], c[1]
			continue
		}
		if c == ([2]int64{}) {
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
			for _, tu := range rc.threads {
				n += tu.counts()[0]
			}
		}
	}
	return n
}

// isRead reports whether a notification at pos in a thread is covered by a
// read position.
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

// needsRecount reports whether a read position at pos in thread ("" for
// every thread) falls among notifications counted but not tracked.
func (s *Service) needsRecount(user spec.UserID, room spec.RoomID, thread string, pos int64) bool {
	s.counts.mu.RLock()
	defer s.counts.mu.RUnlock()
	u := s.counts.users[user]
	if u == nil || u.rooms[room] == nil {
		return false
	}
	rc := u.rooms[room]
	for t, tu := range rc.threads {
		if (thread == "" || t == thread) && tu.untracked.n > 0 && max(pos, rc.readUpTo(t)) < tu.untracked.upTo {
			return true
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
	return s.writeRead(ctx, user, room, thread, pos, recountIfUntracked)
}

// recountMode says whether writeRead counts from the database.
type recountMode int

const (
	recountIfUntracked recountMode = iota // only where memory cannot tell
	recountAlways
)

// writeRead raises a read position (pos 0: none) and publishes the counts
// it leaves, recounted from the database when asked or when the position
// falls among untracked notifications.
func (s *Service) writeRead(ctx context.Context, user spec.UserID, room spec.RoomID, thread string, pos int64, mode recountMode) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if pos > 0 {
			if err := raiseRead(tx, user, room, thread, pos); err != nil {
				return err
			}
		}
		var counts map[string][2]int64
		if mode == recountAlways || s.needsRecount(user, room, thread, pos) {
			var err error
			if counts, err = s.recount(tx, user, room); err != nil {
				return err
			}
		}
		change := tx.NextPosition()
		if err := s.readChanged(tx, user, room, change); err != nil {
			return err
		}
		tx.AfterCommit(func() {
			s.counts.mu.Lock()
			stale := s.counts.read(user, room, thread, pos, change, counts)
			s.counts.mu.Unlock()
			s.notify.Notify(change, wake.InRoom(wake.UnreadCounts, room), user)
			if stale {
				// An earlier write of the same batch changed what was
				// tracked after the check above: count again, apart.
				go s.recountLater(user, room)
			}
		})
		return nil
	})
}

// recountLater replaces a user's counts in a room with the database's.
func (s *Service) recountLater(user spec.UserID, room spec.RoomID) {
	err := s.writeRead(context.Background(), user, room, "", 0, recountAlways)
	if err != nil && err != storage.ErrClosed {
		s.log.Warn().Err(err).Msg("push: could not recount unread notifications")
	}
}
