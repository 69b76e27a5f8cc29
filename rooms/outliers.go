package rooms

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
	"github.com/tidwall/gjson"
)

// Outlier memberships: a local user's invite to, or knock on, a room this
// server does not hold (another server's room, over federation), and the
// leave that rejected or rescinded it. The room has no DAG here, so the
// member event and the stripped state the remote gave (invite_room_state,
// knock_room_state) are kept beside the rooms, in remote_memberships,
// until the user joins (the room is then held and its own state answers)
// or forgets the room. The user's room index (userRooms) lists them like
// any membership, so /sync shows them: an invite or knock with its
// stripped state, a rejection as a left room whose timeline is the leave.

// outlier is one such membership.
type outlier struct {
	membership string      // invite, knock, or the leave that ended one
	pdu        *events.PDU // the member event, as signed
	// state is the room's state the remote gave: PDUs, or in rooms
	// before v12 possibly already stripped events (outlierState).
	state  []json.RawMessage
	server spec.ServerName // where to leave through: the inviter's, or the server knocked through
	pos    int64
}

// remoteMembershipsTable is rooms migration 6.
const remoteMembershipsTable = `
CREATE TABLE remote_memberships (
	room_id    TEXT   NOT NULL,
	user_id    TEXT   NOT NULL,
	membership TEXT   NOT NULL CHECK (membership IN ('invite', 'knock', 'leave')),
	version    TEXT   NOT NULL,
	event_id   TEXT   NOT NULL,
	event_json TEXT   NOT NULL,
	room_state TEXT   NOT NULL, -- a JSON array of the state events the remote gave
	server     TEXT   NOT NULL,
	position   BIGINT NOT NULL,
	PRIMARY KEY (room_id, user_id)
);`

// outlierOf is the user's outlier membership of a room, or nil.
func (s *Service) outlierOf(user spec.UserID, id spec.RoomID) *outlier {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.outliers[id][user]
}

// loadOutliers reads remote_memberships at start, after the rooms: a room
// held since wins.
func (s *Service) loadOutliers(q querier) error {
	rows, err := q.Query(`SELECT room_id, user_id, membership, version, event_id, event_json, room_state, server, position FROM remote_memberships`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var room, user, m, v, id, raw, state, srv string
		var pos int64
		if err := rows.Scan(&room, &user, &m, &v, &id, &raw, &state, &srv, &pos); err != nil {
			return err
		}
		o, err := loadOutlier(m, spec.RoomVersion(v), spec.EventID(id), raw, state, srv, pos)
		if err != nil {
			return fmt.Errorf("remote membership of %s in %s: %w", user, room, err)
		}
		if s.rooms[spec.RoomID(room)] == nil {
			s.putOutlier(spec.RoomID(room), spec.UserID(user), o)
		}
	}
	return rows.Err()
}

func loadOutlier(m string, v spec.RoomVersion, id spec.EventID, raw, state, srv string, pos int64) (*outlier, error) {
	pdu, err := events.LoadPDU([]byte(raw), v, id)
	if err != nil {
		return nil, err
	}
	var list []json.RawMessage
	if err := json.Unmarshal([]byte(state), &list); err != nil {
		return nil, err
	}
	return &outlier{membership: m, pdu: pdu, state: list, server: spec.ServerName(srv), pos: pos}, nil
}

// putOutlier records an outlier in memory; s.mu is held.
func (s *Service) putOutlier(id spec.RoomID, user spec.UserID, o *outlier) {
	m := s.outliers[id]
	if m == nil {
		m = map[spec.UserID]*outlier{}
		s.outliers[id] = m
	}
	m[user] = o
	s.setUserRoom(user, id, o.membership)
}

// storeRemoteMembership keeps a local user's membership of a room this server does
// not hold and wakes the user's /sync.
func (s *Service) storeRemoteMembership(ctx context.Context, o *outlier) error {
	room, user := o.pdu.RoomID(), spec.UserID(stateKeyOf(o.pdu))
	if o.state == nil {
		o.state = []json.RawMessage{}
	}
	stateJSON, err := json.Marshal(o.state)
	if err != nil {
		return err
	}
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		o.pos = tx.NextPosition()
		if _, err := tx.Exec(`INSERT INTO remote_memberships (room_id, user_id, membership, version, event_id, event_json, room_state, server, position)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, version = excluded.version, event_id = excluded.event_id,
				event_json = excluded.event_json, room_state = excluded.room_state, server = excluded.server, position = excluded.position`,
			string(room), string(user), o.membership, string(o.pdu.Version()), string(o.pdu.EventID()), string(o.pdu.JSON()), string(stateJSON), string(o.server), o.pos); err != nil {
			return err
		}
		tx.AfterCommit(func() {
			s.mu.Lock()
			s.putOutlier(room, user, o)
			s.mu.Unlock()
			s.notify.Notify(o.pos, wake.Change{Kind: wake.Timeline, Room: room, Membership: true}, user)
		})
		return nil
	})
}

// forgetOutliersOf drops an erased user's invites to and knocks on rooms
// not held from memory (their rows went in the erasure's transaction).
func (s *Service) forgetOutliersOf(user spec.UserID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, byUser := range s.outliers {
		if _, ok := byUser[user]; !ok {
			continue
		}
		delete(byUser, user)
		if len(byUser) == 0 {
			delete(s.outliers, id)
		}
		if s.rooms[id] == nil {
			delete(s.userRooms[user], id)
		}
	}
}

// dropOutlier ends an outlier membership: the user joined the room (now
// held) or forgot it; gone also takes the room out of the user's index.
func (s *Service) dropOutlier(ctx context.Context, id spec.RoomID, user spec.UserID, gone bool) error {
	var pos int64
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		pos = tx.NextPosition()
		_, err := tx.Exec(`DELETE FROM remote_memberships WHERE room_id = $1 AND user_id = $2`, string(id), string(user))
		return err
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.outliers[id], user)
	if len(s.outliers[id]) == 0 {
		delete(s.outliers, id)
	}
	if gone && s.rooms[id] == nil {
		delete(s.userRooms[user], id)
	}
	s.mu.Unlock()
	s.notify.Notify(pos, wake.Change{Kind: wake.Timeline, Room: id, Membership: true}, user)
	return nil
}

// outlierStrippedState is what a user sees of a room not held: the state
// the remote gave, stripped, and their own member event.
func (o *outlier) strippedState() []json.RawMessage {
	var out []json.RawMessage
	for _, raw := range o.state {
		ev := gjson.ParseBytes(raw)
		if ev.Get("type").String() == spec.MRoomMember && ev.Get("state_key").String() == stateKeyOf(o.pdu) {
			continue // their own is added in full
		}
		if b, err := json.Marshal(map[string]json.RawMessage{"type": json.RawMessage(ev.Get("type").Raw),
			"state_key": json.RawMessage(ev.Get("state_key").Raw), "content": json.RawMessage(ev.Get("content").Raw),
			"sender": json.RawMessage(ev.Get("sender").Raw)}); err == nil {
			out = append(out, b)
		}
	}
	return append(out, events.OwnMemberState(o.pdu))
}

func stateKeyOf(p *events.PDU) string {
	sk, _ := p.StateKey()
	return sk
}

// receiveOutlierMember takes, in a room not held, the end of a local user's
// invite or knock that its server sends (a rescinded invite, a refused
// knock: a leave or ban of the user). Without the room's state the auth
// rules cannot be applied, so only the server the outlier came through is
// believed. Anything else of a room not held is refused as before.
func (s *Service) receiveOutlierMember(ctx context.Context, raw []byte, room spec.RoomID, keys KeySource) (spec.EventID, error) {
	unknown := spec.NotFound("no room %s is known to this server", room)
	user := spec.UserID(gjson.GetBytes(raw, "state_key").String())
	o := s.outlierOf(user, room)
	if o == nil || o.membership == spec.Leave {
		return "", unknown
	}
	pdu, err := VerifyRemotePDU(ctx, raw, o.pdu.Version(), keys)
	if err != nil {
		return "", err
	}
	m := pdu.Content().Get("membership").String()
	switch {
	case pdu.RoomID() != room || pdu.Type() != spec.MRoomMember || stateKeyOf(pdu) != string(user):
		return pdu.EventID(), unknown
	case m != spec.Leave && m != spec.Ban:
		return pdu.EventID(), nil // the invite again, or news of a room not held: nothing to do
	case pdu.Sender().Server() != o.server:
		return pdu.EventID(), spec.Forbidden("only %s can end this invite or knock", o.server)
	}
	return pdu.EventID(), s.storeRemoteMembership(ctx, &outlier{membership: spec.Leave, pdu: pdu, state: o.state, server: o.server})
}
