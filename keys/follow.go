package keys

import (
	"context"
	"fmt"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
)

// Following the other nodes of a cluster (docs/scaling.md). What keys
// keeps in memory for /sync moves with the other nodes' writes:
//
//   - to-device messages and device-list changes have stream positions:
//     the follower reads the rows in the followed range and applies them as
//     a local commit does, with the same wakes;
//   - one-time and fallback key counts have none (a claim on any node
//     changes them): the writing node stores a key_changes row at a new
//     position, and the follower reloads that device's counts.
//
// A to-device acknowledgement (the deletion of delivered messages) is not
// followed: another node's memory may still say messages are pending, which
// costs that node one read that finds none.

// changesKept is how long a key_changes row is kept: followers read them
// within moments, and a node that was away longer reloads at start.
const changesKept = 24 * time.Hour

// countsChanged stores a change of a device's key counts for the other
// nodes of a cluster; outside one it does nothing.
func (s *Service) countsChanged(tx *storage.Tx, k devKey) error {
	if !s.cluster {
		return nil
	}
	now := time.Now()
	if _, err := tx.Exec(`DELETE FROM key_changes WHERE created_ts < $1`, now.Add(-changesKept).UnixMilli()); err != nil {
		return err
	}
	_, err := tx.Exec(`INSERT INTO key_changes (position, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)`,
		tx.NextPosition(), string(k.user), k.device, now.UnixMilli())
	return err
}

// loadFollowing loads memory inside a write and registers the follower
// there: the writer holds the stream position's lock (storage/cluster.go),
// so the follower starts exactly where the load ends.
func (s *Service) loadFollowing(ctx context.Context) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := s.load(tx.Query); err != nil {
			return err
		}
		s.db.OnFollow(s.follow)
		return nil
	})
}

// followedCounts is a device's reloaded key counts; gone: the device was
// deleted.
type followedCounts struct {
	k      devKey
	counts map[string]int
	unused []string
	gone   bool
}

// follow applies what other nodes committed at positions in (from, to]
// (a storage.Follower). It reads everything before changing memory, so a
// failed follow changes nothing.
func (s *Service) follow(tx *storage.Tx, from, to int64) error {
	changed, err := pairs(tx, `SELECT DISTINCT user_id, device_id, 0 FROM key_changes WHERE position > $1 AND position <= $2`, from, to)
	if err != nil {
		return fmt.Errorf("read followed key changes: %w", err)
	}
	var counts []followedCounts
	for _, c := range changed {
		f := followedCounts{k: c.k}
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM key_devices WHERE user_id = $1 AND device_id = $2`, string(c.k.user), c.k.device).Scan(&n); err != nil {
			return err
		}
		if f.gone = n == 0; !f.gone {
			if f.counts, f.unused, err = readCounts(tx, c.k); err != nil {
				return err
			}
		}
		counts = append(counts, f)
	}
	inbox, err := pairs(tx, `SELECT user_id, device_id, MAX(position) FROM to_device_messages
		WHERE position > $1 AND position <= $2 GROUP BY user_id, device_id`, from, to)
	if err != nil {
		return fmt.Errorf("read followed to-device messages: %w", err)
	}
	lists, err := pairs(tx, `SELECT user_id, '', position FROM device_list_changes
		WHERE position > $1 AND position <= $2 ORDER BY position`, from, to)
	if err != nil {
		return fmt.Errorf("read followed device-list changes: %w", err)
	}

	s.mu.Lock()
	for _, f := range counts {
		if f.gone {
			delete(s.devs, f.k)
			continue
		}
		st := s.stateLocked(f.k)
		st.otkCounts, st.unusedFallback = f.counts, f.unused
	}
	for _, m := range inbox {
		if st := s.stateLocked(m.k); m.pos > st.pending {
			st.pending = m.pos
		}
	}
	for _, l := range lists {
		s.lists.add(l.k.user, l.pos)
	}
	s.mu.Unlock()
	if s.notify == nil {
		return nil
	}
	for _, m := range inbox {
		s.notify.Notify(m.pos, wake.Change{Kind: wake.ToDevice, Device: m.k.device}, m.k.user)
	}
	if len(lists) > 0 {
		// Who shares a room with whom is the rooms package's, read off the
		// writer goroutine (as watchers always is); the wake is held until
		// the position is published if it comes first.
		go func() {
			for _, l := range lists {
				s.notify.Notify(l.pos, wake.Of(wake.DeviceLists), s.watchers(l.k.user)...)
			}
		}()
	}
	return nil
}

// followedRow is a device (or user, device "") and a position.
type followedRow struct {
	k   devKey
	pos int64
}

func pairs(tx *storage.Tx, q string, args ...any) ([]followedRow, error) {
	rows, err := tx.Query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []followedRow
	for rows.Next() {
		var r followedRow
		var u string
		if err := rows.Scan(&u, &r.k.device, &r.pos); err != nil {
			return nil, err
		}
		r.k.user = spec.UserID(u)
		out = append(out, r)
	}
	return out, rows.Err()
}
