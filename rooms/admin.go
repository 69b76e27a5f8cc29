package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// What the server admin API (package admin) needs from rooms: a view of
// every room whatever the caller's membership, a guard on membership
// changes (blocked rooms, server-notices rooms), moving aliases, and
// purging a room or the older part of its history.

// MembershipGuard can refuse a membership change before it is built:
// sender changes target's membership of room from current to membership.
type MembershipGuard func(ctx context.Context, room spec.RoomID, sender, target spec.UserID, membership, current string) error

// AdminRoom is a room as the admin API describes it, from memory (Public
// from the directory table).
type AdminRoom struct {
	RoomInfo
	Creator            spec.UserID
	JoinedLocalMembers int
	Public             bool
	GuestAccess        string
	HistoryVisibility  string
	StateEvents        int
	Federatable        bool // m.federate of the create event (default true)
}

func (s *Service) describeForAdmin(r *liveRoom, published map[spec.RoomID]bool) AdminRoom {
	snap := r.cur.Load()
	a := AdminRoom{RoomInfo: describeRoom(r), Public: published[r.id], StateEvents: snap.state.Len()}
	a.Federatable = true
	if c := snap.get(spec.MRoomCreate, ""); c != nil {
		a.Creator = c.Sender()
		if f := c.Content().Get(`m\.federate`); f.Exists() && !f.Bool() {
			a.Federatable = false
		}
	}
	for _, u := range snap.joined() {
		if u.Server() == s.server {
			a.JoinedLocalMembers++
		}
	}
	if ev := snap.get(spec.MRoomGuestAccess, ""); ev != nil {
		a.GuestAccess = ev.Content().Get("guest_access").String()
	}
	if ev := snap.get(spec.MRoomHistoryVisibility, ""); ev != nil {
		a.HistoryVisibility = ev.Content().Get("history_visibility").String()
	}
	return a
}

func (s *Service) publishedSet(ctx context.Context) (map[spec.RoomID]bool, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id FROM published_rooms`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[spec.RoomID]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[spec.RoomID(id)] = true
	}
	return out, rows.Err()
}

// AdminRooms describes every room on the server, by room ID.
func (s *Service) AdminRooms(ctx context.Context) ([]AdminRoom, error) {
	published, err := s.publishedSet(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	list := make([]*liveRoom, 0, len(s.rooms))
	for _, r := range s.rooms {
		list = append(list, r)
	}
	s.mu.RUnlock()
	out := make([]AdminRoom, len(list))
	for i, r := range list {
		out[i] = s.describeForAdmin(r, published)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RoomID < out[j].RoomID })
	return out, nil
}

// AdminRoom describes one room; found is false for a room the server does
// not know.
func (s *Service) AdminRoom(ctx context.Context, id spec.RoomID) (AdminRoom, bool, error) {
	r := s.room(id)
	if r == nil {
		return AdminRoom{}, false, nil
	}
	published, err := s.publishedSet(ctx)
	if err != nil {
		return AdminRoom{}, false, err
	}
	return s.describeForAdmin(r, published), true, nil
}

// AdminState is a room's current state, whoever asks (server admins); nil
// for an unknown room.
func (s *Service) AdminState(id spec.RoomID) []*events.PDU {
	r := s.room(id)
	if r == nil {
		return nil
	}
	snap := r.cur.Load()
	out := make([]*events.PDU, 0, snap.state.Len())
	for _, ev := range snap.state.All() {
		out = append(out, ev)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type() != out[j].Type() {
			return out[i].Type() < out[j].Type()
		}
		a, _ := out[i].StateKey()
		b, _ := out[j].StateKey()
		return a < b
	})
	return out
}

// Exists reports whether the server knows the room.
func (s *Service) Exists(id spec.RoomID) bool { return s.room(id) != nil }

// MembersOf returns every user with a membership of the room (join,
// invite, knock, leave, ban) from memory.
func (s *Service) MembersOf(id spec.RoomID) map[spec.UserID]string {
	r := s.room(id)
	if r == nil {
		return nil
	}
	out := map[spec.UserID]string{}
	for k, ev := range r.cur.Load().state.All() {
		if k.Type == spec.MRoomMember {
			out[spec.UserID(k.StateKey)] = ev.Content().Get("membership").String()
		}
	}
	return out
}

// StoredEvent returns an event as stored, with no visibility check (for
// server admins and the admin policies); nil if unknown.
func (s *Service) StoredEvent(ctx context.Context, id spec.EventID) (*Event, error) {
	return s.eventByID(ctx, id)
}

// FirstPositionAt returns the stream position of the room's first event
// sent at or after ts (unix ms); found is false if there is none.
func (s *Service) FirstPositionAt(ctx context.Context, room spec.RoomID, ts int64) (int64, bool, error) {
	var pos sql.NullInt64
	err := s.db.QueryRow(ctx, `SELECT min(position) FROM events WHERE room_id = $1 AND origin_server_ts >= $2`, string(room), ts).Scan(&pos)
	return pos.Int64, pos.Valid, err
}

// MoveAliases points every local alias of room from at room to (or, with
// to empty, deletes them) and takes from out of the published directory;
// it returns the aliases.
func (s *Service) MoveAliases(ctx context.Context, from, to spec.RoomID) ([]spec.RoomAlias, error) {
	var out []spec.RoomAlias
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		out = out[:0]
		rows, err := tx.Query(`SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, string(from))
		if err != nil {
			return err
		}
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				rows.Close()
				return err
			}
			out = append(out, spec.RoomAlias(a))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if to == "" {
			_, err = tx.Exec(`DELETE FROM room_aliases WHERE room_id = $1`, string(from))
		} else {
			_, err = tx.Exec(`UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, string(to), string(from))
		}
		if err != nil {
			return err
		}
		return setPublished(tx, from, false)
	})
	return out, err
}

// RoomForgetter is a package that keeps rows about rooms (receipts, push
// counts, room account data, key backups, delayed events …): ForgetRoom
// deletes every row it has for the room inside tx and counts them in
// removed. It may register AfterCommit hooks to forget the room in memory.
type RoomForgetter interface {
	ForgetRoom(tx *storage.Tx, room spec.RoomID, removed storage.Removed) error
}

// PurgeOptions say how PurgeRoom runs.
type PurgeOptions struct {
	// DryRun counts what would be deleted and changes nothing: the deletes
	// run in the write and are rolled back, so the figures are exact.
	DryRun bool
	// Also are the other packages whose rows about the room go in the
	// same transaction (a room purge).
	Also []RoomForgetter
	// Events are the packages whose rows about single events go with the
	// events (a history purge).
	Events []EventForgetter
	// Record, when set, runs last in the same transaction with the final
	// counts (the admin package writes its audit row there, so the purge
	// and its record commit together). A dry run does not run it.
	Record func(tx *storage.Tx, removed storage.Removed) error
}

// errDryRun rolls a dry run's write back.
var errDryRun = errors.New("dry run")

// PurgeRoom deletes every trace of a room: this package's events, state,
// aliases, directory entry, relations, search index, transaction IDs and
// reports, and every row the packages in opts.Also keep about it, in ONE
// transaction (a crash or an error leaves the room whole), then forgets it
// in memory. It returns the rows removed per table. Members should have
// left first (their clients then saw the leave); the admin package makes
// them.
func (s *Service) PurgeRoom(ctx context.Context, id spec.RoomID, opts PurgeOptions) (storage.Removed, error) {
	r := s.room(id)
	if r == nil {
		return nil, spec.NotFound("unknown room %s", id)
	}
	r.lockWrites()
	defer r.writeMu.Unlock()
	var removed storage.Removed
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		removed = storage.Removed{}
		for _, f := range opts.Also {
			if err := f.ForgetRoom(tx, id, removed); err != nil {
				return err
			}
		}
		if err := s.forgetRoomRows(tx, id, removed); err != nil {
			return err
		}
		if opts.Record != nil && !opts.DryRun {
			if err := opts.Record(tx, removed); err != nil {
				return err
			}
		}
		if opts.DryRun {
			return errDryRun
		}
		tx.AfterCommit(func() {
			s.older.forget(r)
			s.mu.Lock()
			delete(s.rooms, id)
			for _, m := range s.userRooms {
				delete(m, id)
			}
			s.mu.Unlock()
		})
		return nil
	})
	if opts.DryRun && errors.Is(err, errDryRun) {
		return removed, nil
	}
	if err != nil {
		return nil, err
	}
	s.log.Info().Str("room_id", string(id)).Int64("rows", removed.Total()).Msg("room purged")
	return removed, nil
}

// forgetRoomRows deletes this package's rows about a room; rows that hang
// off its events (by position or event ID) go before the events.
func (s *Service) forgetRoomRows(tx *storage.Tx, id spec.RoomID, removed storage.Removed) error {
	for _, d := range []struct{ table, query string }{
		{"search_words", `DELETE FROM search_words WHERE position IN (SELECT position FROM events WHERE room_id = $1)`},
		{"search_docs", `DELETE FROM search_docs WHERE position IN (SELECT position FROM events WHERE room_id = $1)`},
		{"event_relations", `DELETE FROM event_relations WHERE room_id = $1`},
		{"txn_ids", `DELETE FROM txn_ids WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)`},
		{"room_state", `DELETE FROM room_state WHERE room_id = $1`},
		{"room_aliases", `DELETE FROM room_aliases WHERE room_id = $1`},
		{"published_rooms", `DELETE FROM published_rooms WHERE room_id = $1`},
		{"forgotten", `DELETE FROM forgotten WHERE room_id = $1`},
		{"content_reports", `DELETE FROM content_reports WHERE room_id = $1`},
		{"event_outliers", `DELETE FROM event_outliers WHERE room_id = $1`},
		{"room_state_resolved", `DELETE FROM room_state_resolved WHERE room_id = $1`},
		{"events", `DELETE FROM events WHERE room_id = $1`},
		{"rooms", `DELETE FROM rooms WHERE room_id = $1`},
	} {
		if err := tx.Delete(removed, d.table, d.query, string(id)); err != nil {
			return err
		}
	}
	return nil
}

// HasExpired says whether a history purge before the position would change
// anything: a message event older than it that is not the room's latest,
// or an older state event no longer in the state and not yet redacted.
// A read, so that a retention pass writes only where something expired.
func (s *Service) HasExpired(ctx context.Context, id spec.RoomID, before int64) (bool, error) {
	r := s.room(id)
	if r == nil {
		return false, nil
	}
	before = min(before, r.cur.Load().position)
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM events WHERE room_id = $1 AND position < $2
		AND (state_key IS NULL OR (`+supersededState+`)) LIMIT 1`,
		string(id), before).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// EventForgetter is a package that keeps rows about single events by
// stream position (push notifications): ForgetEvents deletes them for the
// positions of a history purge inside tx.
type EventForgetter interface {
	ForgetEvents(tx *storage.Tx, room spec.RoomID, positions []int64, removed storage.Removed) error
}

// PurgeHistory deletes a room's message events (not state events) stored
// before stream position before, never the room's latest event, and
// returns how many went. State events stay: the room's state and its
// membership history are built from them, and other servers' auth chains
// and state resolution name them. But those no longer in the room's
// current state are redacted, as the room version's algorithm says and
// as stored: what the DAG and the auth rules need (type, state_key,
// sender, membership, join rules, power levels…) stays, so hashes and
// signatures still verify, and the rest of their content (an old topic,
// an old display name) goes with the history. The current state is
// untouched: it is the room as it is now.
//
// Redacted state events count as "events_redacted" in the removed rows.
func (s *Service) PurgeHistory(ctx context.Context, id spec.RoomID, before int64) (int, error) {
	removed, err := s.PurgeHistoryWith(ctx, id, before, PurgeOptions{})
	return int(removed["events"]), err
}

// PurgeHistoryWith is PurgeHistory that also deletes the other packages'
// rows about the purged events (opts.Events), in the same transaction,
// counts every table, and can be a dry run.
func (s *Service) PurgeHistoryWith(ctx context.Context, id spec.RoomID, before int64, opts PurgeOptions) (storage.Removed, error) {
	r := s.room(id)
	if r == nil {
		return nil, spec.NotFound("unknown room %s", id)
	}
	r.lockWrites()
	defer r.writeMu.Unlock()
	latest := r.cur.Load().position
	if before > latest {
		before = latest
	}
	var removed storage.Removed
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		removed = storage.Removed{}
		const doomed = `SELECT position FROM events WHERE room_id = $1 AND state_key IS NULL AND position < $2`
		room := string(id)
		if len(opts.Events) > 0 {
			positions, err := doomedPositions(tx, doomed, room, before)
			if err != nil {
				return err
			}
			for _, f := range opts.Events {
				if err := f.ForgetEvents(tx, id, positions, removed); err != nil {
					return err
				}
			}
		}
		redacted, err := redactSupersededState(tx, r, before, removed)
		if err != nil {
			return err
		}
		for _, d := range []struct{ table, query string }{
			{"search_words", `DELETE FROM search_words WHERE position IN (` + doomed + `)`},
			{"search_docs", `DELETE FROM search_docs WHERE position IN (` + doomed + `)`},
			{"event_relations", `DELETE FROM event_relations WHERE position IN (` + doomed + `)`},
			{"txn_ids", `DELETE FROM txn_ids WHERE event_id IN (SELECT event_id FROM events WHERE position IN (` + doomed + `))`},
			{"events", `DELETE FROM events WHERE room_id = $1 AND state_key IS NULL AND position < $2`},
		} {
			if err := tx.Delete(removed, d.table, d.query, room, before); err != nil {
				return err
			}
		}
		if opts.Record != nil && !opts.DryRun {
			if err := opts.Record(tx, removed); err != nil {
				return err
			}
		}
		if opts.DryRun {
			return errDryRun
		}
		tx.AfterCommit(func() {
			r.replaceRedacted(redacted)
			r.histMu.Lock()
			kept := r.recent[:0:0]
			for _, ev := range r.recent {
				if _, state := ev.PDU.StateKey(); state || ev.Position >= before {
					kept = append(kept, ev)
				}
			}
			r.recent = kept
			r.rewritten++
			r.histMu.Unlock()
		})
		return nil
	})
	if opts.DryRun && errors.Is(err, errDryRun) {
		return removed, nil
	}
	if err != nil {
		return nil, err
	}
	return removed, nil
}

// supersededState selects, in a query on events of room $1, the state
// events no longer in the room's current state and not redacted yet.
const supersededState = `state_key IS NOT NULL AND redacted_by IS NULL
	AND event_id NOT IN (SELECT event_id FROM room_state WHERE room_id = $1)`

// redactSupersededState rewrites the room's state events stored before the
// position that are no longer current state to their redacted form (see
// PurgeHistory), with their search and relation rows, inside the purge's
// transaction; the room's write lock is held. It returns the redacted
// copies for the room's memory.
func redactSupersededState(tx *storage.Tx, r *liveRoom, before int64, removed storage.Removed) ([]*events.PDU, error) {
	rows, err := tx.Query(`SELECT event_id, json FROM events WHERE room_id = $1 AND position < $2 AND `+supersededState, string(r.id), before)
	if err != nil {
		return nil, err
	}
	var redacted []*events.PDU
	for rows.Next() {
		var eid, raw string
		if err := rows.Scan(&eid, &raw); err != nil {
			rows.Close()
			return nil, err
		}
		p, err := events.LoadPDU([]byte(raw), r.version, spec.EventID(eid))
		if err == nil {
			p, err = p.Redacted()
		}
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("redact superseded state %s: %w", eid, err)
		}
		redacted = append(redacted, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, p := range redacted {
		for _, d := range []struct{ table, query string }{
			{"search_words", `DELETE FROM search_words WHERE position = (SELECT position FROM events WHERE event_id = $1)`},
			{"search_docs", `DELETE FROM search_docs WHERE position = (SELECT position FROM events WHERE event_id = $1)`},
			{"event_relations", `DELETE FROM event_relations WHERE event_id = $1`},
		} {
			if err := tx.Delete(removed, d.table, d.query, string(p.EventID())); err != nil {
				return nil, err
			}
		}
		// As erasure does: redacted_by empty, not NULL, so that the event
		// counts as redacted everywhere with no redaction event to show.
		if _, err := tx.Exec(`UPDATE events SET json = $1, redacted_by = '', txn_id = NULL WHERE event_id = $2`,
			string(p.JSON()), string(p.EventID())); err != nil {
			return nil, err
		}
	}
	if len(redacted) > 0 {
		removed["events_redacted"] += int64(len(redacted))
	}
	return redacted, nil
}

func doomedPositions(tx *storage.Tx, query, room string, before int64) ([]int64, error) {
	rows, err := tx.Query(query, room, before)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ForgotBy says whether the user forgot the room (after leaving it).
func (s *Service) ForgotBy(user spec.UserID, id spec.RoomID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.forgotten[user][id]
}

// LastEventTS is the origin_server_ts of the room's latest event (ms; 0
// for a room the server does not know).
func (s *Service) LastEventTS(id spec.RoomID) int64 {
	r := s.room(id)
	if r == nil {
		return 0
	}
	var ts int64
	for _, p := range r.cur.Load().extremity {
		ts = max(ts, p.OriginServerTS())
	}
	return ts
}
