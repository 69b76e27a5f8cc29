package rooms

import (
	"context"
	"errors"
	"fmt"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Erasure of an account's events (deactivation with erase, the
// client-server API's account_deactivation): the spec asks that users who
// join later are served redacted copies. Chatalot goes further and stores
// only the redacted copy, for everyone: the server then holds no text of
// the erased user at all (clients that fetched the events earlier keep
// their own copies). The DAG keeps the events, redacted as the room
// version's algorithm says, so their hashes, signatures, sender and
// state_key stay and the room's history still verifies.
//
// Erased are the user's message events and their own membership events
// (whose display name and avatar go). Other state events they sent (a
// room name, power levels) are room state, not the user's own data, and
// stay as they are; so does any event that is current state, which the
// user's leave already replaced for their membership.

// erasableEvents selects the events of a sender that erasure rewrites
// ($1 the sender, $2 the room).
const erasableEvents = `FROM events WHERE sender = $1 AND room_id = $2 AND redacted_by IS NULL
	AND (state_key IS NULL OR (type = 'm.room.member' AND state_key = $1))
	AND event_id NOT IN (SELECT event_id FROM room_state WHERE room_id = $2)`

// EraseSender redacts, room by room, the stored events of an erased user
// (see above), with their search words and relations, and deletes this
// package's rows about the user (transaction IDs, forgotten rooms, the
// reports they filed). Each room is one transaction, so a crash leaves
// whole rooms erased or not and a second call finishes the job. With
// dryRun nothing changes and the counts say what would.
func (s *Service) EraseSender(ctx context.Context, user spec.UserID, dryRun bool) (storage.Removed, error) {
	removed := storage.Removed{}
	ids, err := storage.Strings[spec.RoomID](s.db.Query(ctx, `SELECT DISTINCT room_id FROM events WHERE sender = $1 AND redacted_by IS NULL`, string(user)))
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if err := s.eraseInRoom(ctx, id, user, dryRun, removed); err != nil {
			return nil, err
		}
	}
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		for _, d := range []struct{ table, query string }{
			{"txn_ids", `DELETE FROM txn_ids WHERE user_id = $1`},
			{"forgotten", `DELETE FROM forgotten WHERE user_id = $1`},
			{"content_reports", `DELETE FROM content_reports WHERE reporter = $1`},
			{"remote_memberships", `DELETE FROM remote_memberships WHERE user_id = $1`},
		} {
			if err := tx.Delete(removed, d.table, d.query, string(user)); err != nil {
				return err
			}
		}
		if dryRun {
			return errDryRun
		}
		tx.AfterCommit(func() { s.forgetOutliersOf(user) })
		return nil
	})
	if err != nil && !(dryRun && errors.Is(err, errDryRun)) {
		return nil, err
	}
	return removed, nil
}

// eraseInRoom redacts the user's erasable events of one room in one
// transaction, under the room's write lock, and replaces them in the
// room's memory as a redaction does.
func (s *Service) eraseInRoom(ctx context.Context, id spec.RoomID, user spec.UserID, dryRun bool, removed storage.Removed) error {
	r := s.room(id)
	if r == nil {
		return nil
	}
	if err := s.leases.hold(ctx, id); err != nil {
		return err
	}
	r.lockWrites()
	defer r.writeMu.Unlock()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := s.leases.fence(tx, id); err != nil {
			return err
		}
		rows, err := tx.Query(`SELECT event_id, json `+erasableEvents, string(user), string(id))
		if err != nil {
			return err
		}
		var redacted []*events.PDU
		for rows.Next() {
			var eid, raw string
			if err := rows.Scan(&eid, &raw); err != nil {
				rows.Close()
				return err
			}
			p, err := events.LoadPDU([]byte(raw), r.version, spec.EventID(eid))
			if err == nil {
				p, err = p.Redacted()
			}
			if err != nil {
				rows.Close()
				return fmt.Errorf("erase %s: %w", eid, err)
			}
			redacted = append(redacted, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, p := range redacted {
			for _, d := range []struct{ table, query string }{
				{"search_words", `DELETE FROM search_words WHERE position = (SELECT position FROM events WHERE event_id = $1)`},
				{"search_docs", `DELETE FROM search_docs WHERE position = (SELECT position FROM events WHERE event_id = $1)`},
				{"event_relations", `DELETE FROM event_relations WHERE event_id = $1`},
			} {
				if err := tx.Delete(removed, d.table, d.query, string(p.EventID())); err != nil {
					return err
				}
			}
			// redacted_by is empty, not NULL: the event counts as redacted
			// everywhere (search, relations), with no redaction event to
			// show as unsigned.redacted_because.
			if _, err := tx.Exec(`UPDATE events SET json = $1, redacted_by = '', sender_device = NULL, txn_id = NULL WHERE event_id = $2`,
				string(p.JSON()), string(p.EventID())); err != nil {
				return err
			}
		}
		removed["events_redacted"] += int64(len(redacted))
		if dryRun {
			return errDryRun
		}
		tx.AfterCommit(func() { r.replaceRedacted(redacted) })
		return nil
	})
	if dryRun && errors.Is(err, errDryRun) {
		return nil
	}
	return err
}

// replaceRedacted swaps events of the room's memory for their redacted
// copies, as apply does for redactions; the write lock is held.
func (r *liveRoom) replaceRedacted(redacted []*events.PDU) {
	if len(redacted) == 0 {
		return
	}
	byID := make(map[spec.EventID]*events.PDU, len(redacted))
	for _, p := range redacted {
		byID[p.EventID()] = p
	}
	r.histMu.Lock()
	defer r.histMu.Unlock()
	r.rewritten++
	r.recent = append(r.recent[:0:0], r.recent...)
	for i, ev := range r.recent {
		p, hit := byID[ev.PDU.EventID()]
		var q *events.PDU
		hitReplaced := false
		if ev.replaced != nil {
			q, hitReplaced = byID[ev.replaced.EventID()]
		}
		if !hit && !hitReplaced {
			continue
		}
		cp := *ev
		if hit {
			cp.PDU = p
			cp.DeviceID, cp.TxnID = "", ""
		}
		if hitReplaced {
			cp.replaced = q
		}
		r.recent[i] = &cp
	}
	for _, p := range redacted {
		r.redactResolved(p)
	}
}

// MediaNeeded reports whether a stored event other than the user's own
// messages and membership events (which erasure rewrites; the current
// membership is replaced by the leave of the deactivation) names the mxc:// URI as a JSON string (a message's
// url, an avatar, a thumbnail): the media is then still needed by a room.
// Text that merely mentions the URI does not count, and neither can an
// encrypted event, whose content the server cannot read.
func (s *Service) MediaNeeded(tx *storage.Tx, uri string, user spec.UserID) (bool, error) {
	var n int
	contains := `instr(e.json, $1) > 0`
	if tx.Dialect() == storage.Postgres {
		contains = `strpos(e.json, $1) > 0`
	}
	err := tx.QueryRow(`SELECT count(*) FROM (SELECT 1 FROM events e WHERE `+contains+`
		AND NOT (e.sender = $2 AND (e.state_key IS NULL OR (e.type = 'm.room.member' AND e.state_key = $2)))
		LIMIT 1) AS m`, `"`+uri+`"`, string(user)).Scan(&n)
	return n > 0, err
}
