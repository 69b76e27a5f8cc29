package rooms

import (
	"context"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

func strPtr(s string) *string { return &s }

// errNotInRoom is the answer for rooms that do not exist and rooms the
// caller is not in alike: the error does not reveal whether a room exists.
func errNotInRoom(id spec.RoomID) *spec.Error {
	return spec.Forbidden("you are not joined to room %s", id)
}

// lockForSend takes the room's write lock for a send by a joined member.
// It returns the room (nil with an error, or with a retried transaction's
// event ID, and then the lock is not held) and its current state.
func (s *Service) lockForSend(from Sender, id spec.RoomID, scope, txnID string) (*liveRoom, *snapshot, spec.EventID, error) {
	r := s.room(id)
	if r == nil {
		return nil, nil, "", errNotInRoom(id)
	}
	r.lockWrites()
	if txnID != "" {
		if prev := s.txnEvent(txnKey{from.User, from.Device, scope, txnID}); prev != "" {
			r.writeMu.Unlock()
			return nil, nil, prev, nil
		}
	}
	snap := r.cur.Load()
	if snap.membership(from.User) != spec.Join {
		r.writeMu.Unlock()
		return nil, nil, "", errNotInRoom(id)
	}
	return r, snap, "", nil
}

// joinAuthoriser picks a local joined user who may invite, for joins to a
// restricted room (join_authorised_via_users_server), when the joiner is in
// one of the rooms the join rule allows.
func (s *Service) joinAuthoriser(snap *snapshot, joiner spec.UserID) spec.UserID {
	jr := snap.get(spec.MRoomJoinRules, "")
	if jr == nil {
		return ""
	}
	rule := jr.Content().Get("join_rule").String()
	v := jr.Version()
	if !(rule == "restricted" && v.RestrictedJoins()) && !(rule == "knock_restricted" && v.KnockRestricted()) {
		return "" // v8 and v10 introduced these join rules
	}
	allowed := false
	for _, a := range jr.Content().Get("allow").Array() {
		if a.Get("type").String() != "m.room_membership" {
			continue
		}
		if s.Membership(joiner, spec.RoomID(a.Get("room_id").String())) == spec.Join {
			allowed = true
			break
		}
	}
	if !allowed {
		return ""
	}
	pl, err := authrules.PowerLevelsOf(snap)
	if err != nil {
		return ""
	}
	for _, u := range snap.joined() {
		if pl.UserLevel(u) >= pl.Invite {
			return u
		}
	}
	return ""
}

// RedactRequest is the body and path of PUT /redact/{eventId}/{txnId}.
type RedactRequest struct {
	Target spec.EventID
	TxnID  string
	Reason string // "" for none
}

// Redact redacts an event, idempotently per device and transaction ID.
func (s *Service) Redact(ctx context.Context, from Sender, id spec.RoomID, req RedactRequest) (spec.EventID, error) {
	target, txnID := req.Target, req.TxnID
	if err := s.leases.hold(ctx, id); err != nil {
		return "", err
	}
	r, snap, prev, err := s.lockForSend(from, id, redactScope(id, target), txnID)
	if r == nil || prev != "" {
		return prev, err
	}
	defer r.writeMu.Unlock()
	orig, err := s.eventByID(ctx, target)
	if err != nil {
		return "", err
	}
	if orig == nil || orig.PDU.RoomID() != id || !r.canSee(from.User, orig) {
		return "", spec.NotFound("event %s not found in this room", target)
	}
	pl, err := authrules.PowerLevelsOf(snap)
	if err != nil {
		return "", err
	}
	// The client-server API lets a user redact their own events, and
	// others' only with the redact power level.
	if orig.PDU.Sender() != from.User && pl.UserLevel(from.User) < pl.Redact {
		return "", spec.Forbidden("you need power level %d to redact other users' events", pl.Redact)
	}
	c := map[string]any{}
	if req.Reason != "" {
		c["reason"] = req.Reason
	}
	if r.version.AtLeast11() {
		c["redacts"] = string(target)
	}
	content, err := events.MarshalCanonical(c)
	if err != nil {
		return "", err
	}
	b := s.begin(r)
	ev, err := b.addRedaction(from.User, content, target)
	if err != nil {
		return "", err
	}
	if err := b.redactTarget(orig.PDU); err != nil {
		return "", err
	}
	if err := b.commit(ctx, commitOpts{Device: from.Device, TxnID: txnID}); err != nil {
		return "", err
	}
	return ev.PDU.EventID(), nil
}

// redactTarget applies, in the commit, the redaction of orig that the
// builder's last event made: the stored copy loses its content, and a
// redacted state event that is current state changes the room's state as it
// is served. b.snap must be the builder's own (made by add or addRemote).
func (b *builder) redactTarget(orig *events.PDU) error {
	redacted, err := orig.Redacted()
	if err != nil {
		return err
	}
	if sk, ok := redacted.StateKey(); ok {
		if cur := b.snap.state.Get(redacted.Type(), sk); cur != nil && cur.EventID() == orig.EventID() {
			b.snap.state = b.snap.state.With(authrules.StateKeyPair{Type: redacted.Type(), StateKey: sk}, redacted)
		}
	}
	b.redactions = append(b.redactions, redacted)
	return nil
}

// Forget hides a room the user has left from their room lists.
func (s *Service) Forget(ctx context.Context, user spec.UserID, id spec.RoomID) error {
	r := s.room(id)
	if r == nil {
		if o := s.outlierOf(user, id); o != nil && o.membership == spec.Leave {
			return s.dropOutlier(ctx, id, user, true) // a rejected invite of a room not held
		}
		if o := s.outlierOf(user, id); o != nil {
			return spec.NewError(spec.ErrUnknown, "you must leave the room before forgetting it").WithStatus(400)
		}
		return spec.NotFound("unknown room %s", id)
	}
	switch r.cur.Load().membership(user) {
	case spec.Join, spec.Invite, spec.Knock:
		return spec.NewError(spec.ErrUnknown, "you must leave the room before forgetting it").WithStatus(400)
	case "":
		return spec.NotFound("you were never in room %s", id)
	}
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(`INSERT INTO forgotten (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, string(user), string(id)); err != nil {
			return err
		}
		tx.AfterCommit(func() {
			s.mu.Lock()
			s.forget(user, id)
			s.mu.Unlock()
		})
		return nil
	})
}

// forget moves a room from the user's rooms to their forgotten ones; s.mu
// is held (or start-up owns the service).
func (s *Service) forget(user spec.UserID, id spec.RoomID) {
	delete(s.userRooms[user], id)
	m := s.forgotten[user]
	if m == nil {
		m = map[spec.RoomID]bool{}
		s.forgotten[user] = m
	}
	m[id] = true
}

// unforget clears a forgotten room at a join; only a room that was
// forgotten costs a write.
func (s *Service) unforget(ctx context.Context, user spec.UserID, id spec.RoomID) {
	s.mu.Lock()
	was := s.forgotten[user][id]
	delete(s.forgotten[user], id)
	s.mu.Unlock()
	if !was {
		return
	}
	_ = s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`DELETE FROM forgotten WHERE user_id = $1 AND room_id = $2`, string(user), string(id))
		return err
	})
}

// LeaveAllRooms makes a deactivated user leave every room (and reject
// every invite).
func (s *Service) LeaveAllRooms(ctx context.Context, user spec.UserID) error {
	for id, m := range s.RoomsOf(user) {
		if m == spec.Join || m == spec.Invite || m == spec.Knock {
			if _, err := s.Change(ctx, Sender{User: user}, id, MembershipChange{Target: user, Membership: spec.Leave}); err != nil {
				return err
			}
		}
	}
	return nil
}

// ProfileChanged sends a new member event with the profile into every room
// the user is joined to.
func (s *Service) ProfileChanged(ctx context.Context, user spec.UserID, displayName, avatarURL string) error {
	for id, m := range s.RoomsOf(user) {
		if m != spec.Join {
			continue
		}
		if _, err := s.Change(ctx, Sender{User: user}, id, MembershipChange{Target: user, Membership: spec.Join}); err != nil {
			return err
		}
	}
	return nil
}

// JoinedRooms lists the rooms the user is joined to.
func (s *Service) JoinedRooms(user spec.UserID) []spec.RoomID {
	out := []spec.RoomID{}
	for id, m := range s.RoomsOf(user) {
		if m == spec.Join {
			out = append(out, id)
		}
	}
	return out
}
