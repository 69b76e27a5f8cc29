package keys

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
	"github.com/gin-gonic/gin"
)

// deviceLists is the in-memory record of device-list changes: for each user
// the latest position at which their devices or cross-signing keys changed,
// and a log of (position, user) in increasing position order so that a
// range query is a binary search.
//
// The log is compacted to one entry per user (the latest). A range (since,
// until] that ends before a user's latest change may therefore miss an older
// change of that user, but /sync asks for contiguous ranges up to the
// current position, so the user is reported in the range that holds the
// latest change: every change is reported, at the latest by the next sync.
type deviceLists struct {
	latest map[spec.UserID]int64
	log    []listChange
	pos    int64
}

type listChange struct {
	pos  int64
	user spec.UserID
}

func (l *deviceLists) add(u spec.UserID, pos int64) {
	if l.latest == nil {
		l.latest = map[spec.UserID]int64{}
	}
	l.latest[u] = pos
	l.log = append(l.log, listChange{pos, u})
	if pos > l.pos {
		l.pos = pos
	}
	if len(l.log) > 1024 && len(l.log) > 2*len(l.latest) {
		l.compact()
	}
}

func (l *deviceLists) compact() {
	log := make([]listChange, 0, len(l.latest))
	for u, p := range l.latest {
		log = append(log, listChange{p, u})
	}
	sort.Slice(log, func(i, j int) bool { return log[i].pos < log[j].pos })
	l.log = log
}

// changes returns the users with a change in (since, until].
func (l *deviceLists) changes(since, until int64) []spec.UserID {
	i := sort.Search(len(l.log), func(i int) bool { return l.log[i].pos > since })
	var out []spec.UserID
	seen := map[spec.UserID]bool{}
	for ; i < len(l.log) && l.log[i].pos <= until; i++ {
		u := l.log[i].user
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

// markChanged records, inside a write, that the device lists of users
// changed: one new stream position for all of them. After the commit the
// in-memory log is updated and the watchers (computed by the caller with
// s.watchers before the write) are woken.
func (s *Service) markChanged(tx *storage.Tx, watchers []spec.UserID, users ...spec.UserID) error {
	pos := tx.NextPosition()
	for _, u := range users {
		if _, err := tx.Exec(`INSERT INTO device_list_changes (user_id, position) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET position = excluded.position`, string(u), pos); err != nil {
			return err
		}
	}
	tx.AfterCommit(func() {
		s.mu.Lock()
		for _, u := range users {
			s.lists.add(u, pos)
		}
		s.mu.Unlock()
		if s.notify != nil {
			s.notify.Notify(pos, wake.Of(wake.DeviceLists), watchers...)
		}
	})
	return nil
}

// DeviceListChanges returns every user whose devices or cross-signing keys
// changed at a stream position in (since, until]. It reads memory only. The
// caller (sync) keeps those who share a room with the syncing user, and the
// syncing user themself: a client learns that its own identity is
// cross-signed only when it sees its own user ID in device_lists.changed.
func (s *Service) DeviceListChanges(_ context.Context, since, until int64) ([]spec.UserID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if until <= since || since >= s.lists.pos {
		return nil, nil
	}
	return s.lists.changes(since, until), nil
}

// DeviceListPosition is the stream position of the latest device-list
// change, so that an incremental sync with nothing new skips the lookup.
func (s *Service) DeviceListPosition() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lists.pos
}

// parsePosition is the default sync-token parser: a decimal stream position,
// optionally prefixed by "s" as many servers write tokens.
func parsePosition(tok string) (int64, error) {
	t := strings.TrimPrefix(tok, "s")
	if i := strings.IndexAny(t, "_~."); i >= 0 {
		t = t[:i]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, spec.InvalidParam("invalid stream token %q", tok)
	}
	return n, nil
}

// GET /_matrix/client/v3/keys/changes: users sharing a room with the caller
// (and the caller) whose device lists changed between two sync tokens.
func (s *Service) handleChanges(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	fromTok, toTok := c.Query("from"), c.Query("to")
	if fromTok == "" || toTok == "" {
		return spec.MissingParam("from and to are required")
	}
	from, err := s.parse(fromTok)
	if err != nil {
		return asSpecError(err, spec.InvalidParam("invalid from token"))
	}
	to, err := s.parse(toTok)
	if err != nil {
		return asSpecError(err, spec.InvalidParam("invalid to token"))
	}
	changed, left := s.Changes(c.Request.Context(), dev.UserID, from, to)
	c.JSON(http.StatusOK, gin.H{"changed": changed, "left": left})
	return nil
}

// Changes is /keys/changes for a user: the users among those who share a
// room with user (and user) whose device lists changed in (from, to], and
// the users who stopped sharing every room with user in that range.
func (s *Service) Changes(ctx context.Context, user spec.UserID, from, to int64) (changed, left []spec.UserID) {
	all, _ := s.DeviceListChanges(ctx, from, to)
	changed = []spec.UserID{}
	left = []spec.UserID{}
	visible := map[spec.UserID]bool{user: true}
	if s.rooms != nil {
		for _, u := range s.rooms.UsersSharingRoomsWith(user) {
			visible[u] = true
		}
	}
	for _, u := range all {
		if s.rooms == nil || visible[u] {
			changed = append(changed, u)
		}
	}
	if lt, ok := s.rooms.(LeftTracker); ok && lt != nil {
		left = append(left, lt.UsersLeftBetween(user, from, to)...)
	}
	return changed, left
}
