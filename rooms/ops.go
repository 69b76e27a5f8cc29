package rooms

import (
	"context"
	"fmt"
	"slices"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/tidwall/gjson"
)

// Sender identifies who sends an event: a user and, for idempotent sends,
// the device whose transaction IDs are tracked.
type Sender struct {
	User   spec.UserID
	Device string
}

func strPtr(s string) *string { return &s }

// errNotInRoom is the answer for rooms that do not exist and rooms the
// caller is not in alike: the error does not reveal whether a room exists.
func errNotInRoom(id spec.RoomID) *spec.Error {
	return spec.Forbidden("you are not joined to room %s", id)
}

// Send sends a message event (stateKey nil) or a state event, idempotently
// per device and transaction ID. It returns the event ID.
//
// Sends to one room are grouped: whoever holds the room's write lock builds
// every send queued meanwhile, one after another, and commits them in one
// transaction. A busy room then costs one commit per group instead of one
// per event, and the order stays the one the events were built in. The
// next group is built while this one is written (room.go, the pipeline).
func (s *Service) Send(ctx context.Context, from Sender, id spec.RoomID, typ string, stateKey *string, txnID string, content []byte) (spec.EventID, error) {
	if err := CheckSendable(typ, stateKey); err != nil {
		return "", err
	}
	if typ == spec.MRoomMember && stateKey != nil {
		return s.SetMemberState(ctx, from, id, *stateKey, content)
	}
	r := s.room(id)
	if r == nil {
		return "", errNotInRoom(id)
	}
	req := &sendReq{ctx: ctx, from: from, typ: typ, stateKey: stateKey, txnID: txnID, content: content, done: make(chan sendResult, 1)}
	r.queueMu.Lock()
	r.queue = append(r.queue, req)
	r.queueMu.Unlock()
	r.writeMu.Lock()
	r.queueMu.Lock()
	batch := r.queue
	r.queue = nil
	r.queueMu.Unlock()
	if len(batch) > 0 {
		// State events and relations are checked against stored state
		// and events (a second identical annotation, a canonical alias):
		// a group with one is built on committed state and written
		// before the next group is built.
		quiet := slices.ContainsFunc(batch, (*sendReq).checkedAgainstStore)
		if quiet {
			r.drainPipeline()
		}
		if g := s.sendBatch(r, batch); g != nil && quiet {
			<-g.done
		}
	}
	r.writeMu.Unlock()
	res := <-req.done // ours was in this group or an earlier one
	return res.id, res.err
}

// CheckSendable refuses the event types /send and /state never send: a
// second m.room.create, and redactions (they have their own endpoint).
func CheckSendable(typ string, stateKey *string) error {
	if typ == spec.MRoomCreate {
		// The request cannot be right whatever the sender's power.
		return spec.BadJSON("a room has exactly one m.room.create event")
	}
	if typ == spec.MRoomRedaction && stateKey == nil {
		return spec.Forbidden("use the /redact endpoint to redact events")
	}
	return nil
}

// sendReq is one queued send.
type sendReq struct {
	ctx      context.Context
	from     Sender
	typ      string
	stateKey *string
	txnID    string
	content  []byte
	done     chan sendResult
}

// txnKey names the request's transaction: scoped to /send/{eventType} in
// the room.
func (req *sendReq) txnKey(room spec.RoomID) txnKey {
	return txnKey{req.from.User, req.from.Device, sendScope(room, req.typ), req.txnID}
}

func (req *sendReq) checkedAgainstStore() bool {
	return req.stateKey != nil || gjson.GetBytes(req.content, `m\.relates_to`).Exists()
}

type sendResult struct {
	id  spec.EventID
	err error
}

// sendBatch builds a group of sends on the room's state (after the groups
// still being written) and submits their write; the room's write lock is
// held. Each request learns its outcome once the group is written, and the
// group is returned if there is one to write.
func (s *Service) sendBatch(r *liveRoom, batch []*sendReq) *sendGroup {
	base, after := r.tip()
	b := s.beginOn(r, base)
	type pending struct {
		req *sendReq
		ev  *Event
	}
	var built []pending
	inBatch := map[txnKey]*Event{}
	for _, req := range batch {
		if req.txnID != "" {
			k := req.txnKey(r.id)
			// The group in flight first, then the committed ones: a group
			// records its transactions as committed before it lets go of
			// them (below), so a retry always finds one or the other.
			if g, id := r.pendingTxn(k); g != nil {
				go func() { // a retry of a send still being written
					<-g.done
					req.done <- sendResult{id: id, err: g.err}
				}()
				continue
			}
			if prev := s.txnEvent(k); prev != "" {
				req.done <- sendResult{id: prev}
				continue
			}
			if ev := inBatch[k]; ev != nil {
				built = append(built, pending{req, ev}) // the same transaction twice in one group
				continue
			}
		}
		ev, err := s.buildSend(b, req, inBatch)
		if err != nil {
			req.done <- sendResult{err: err}
			continue
		}
		built = append(built, pending{req, ev})
	}
	if len(b.evs) == 0 {
		for _, p := range built {
			p.req.done <- sendResult{id: p.ev.PDU.EventID()}
		}
		return nil
	}
	// The group is committed whatever happens to the request that leads
	// it: a client of the group that goes away must not fail the others.
	g := &sendGroup{final: b.snap, done: make(chan struct{})}
	for k, ev := range inBatch {
		if g.events == nil {
			g.events = map[txnKey]spec.EventID{}
		}
		g.events[k] = ev.PDU.EventID()
	}
	g.write = b.submit(context.WithoutCancel(batch[0].ctx), after, false, "", "", "")
	r.pushGroup(g)
	go func() {
		err := g.write.Wait()
		if err != nil {
			b.failed()
		} else {
			// Before groupDone forgets them: the commit's own hook may run
			// later, when its position is published.
			s.rememberTxns(b.evs)
		}
		r.groupDone(g, err)
		for _, p := range built {
			if err != nil {
				p.req.done <- sendResult{err: err}
			} else {
				p.req.done <- sendResult{id: p.ev.PDU.EventID()}
			}
		}
	}()
	return g
}

// buildSend checks one send against the group's state so far and adds its
// event to the builder.
func (s *Service) buildSend(b *builder, req *sendReq, inBatch map[txnKey]*Event) (*Event, error) {
	if b.snap.membership(req.from.User) != spec.Join {
		return nil, errNotInRoom(b.r.id)
	}
	if err := s.checkEncryptionPolicy(b.snap, req.typ, req.stateKey, req.content); err != nil {
		return nil, err
	}
	if req.stateKey != nil {
		if req.typ == spec.MRoomMember {
			// Service.Send sends member events through SetMemberState.
			return nil, spec.Forbidden("change membership with the membership endpoints (join, invite, leave, kick, ban)")
		}
		if same := sameState(b.snap, req.from.User, req.typ, *req.stateKey, req.content); same != nil {
			return &Event{PDU: same}, nil
		}
		if err := checkCreatorsUnlisted(b.snap, req.typ, req.content); err != nil {
			return nil, err
		}
	}
	// Relations (threads, annotations) and m.room.canonical_alias are
	// checked against stored events and aliases (relations.go); a second
	// identical annotation in the same group is refused here.
	if err := s.checkSend(req.ctx, b.r, req.from.User, req.typ, req.stateKey, req.content); err != nil {
		return nil, err
	}
	key, isAnnotation := annotationKey(req.from.User, req.typ, req.stateKey, req.content)
	if isAnnotation && b.annotations[key] {
		return nil, spec.NewError(errDuplicateAnnotation, "you already sent this annotation for this event")
	}
	ev, err := b.add(req.typ, req.stateKey, req.from.User, req.content, "")
	if err != nil {
		return nil, err
	}
	if isAnnotation {
		if b.annotations == nil {
			b.annotations = map[string]bool{}
		}
		b.annotations[key] = true
	}
	if req.txnID != "" {
		ev.DeviceID, ev.TxnID = req.from.Device, req.txnID
		inBatch[req.txnKey(b.r.id)] = ev
	}
	return ev, nil
}

// annotationKey names an annotation (sender, type, target, key) for
// duplicate checks within a group of sends.
func annotationKey(sender spec.UserID, typ string, stateKey *string, content []byte) (string, bool) {
	if stateKey != nil {
		return "", false
	}
	rel, ok := relationOfContent(gjson.ParseBytes(contentOrEmpty(content)))
	if !ok || rel.relType != relAnnotation {
		return "", false
	}
	return string(sender) + "\x00" + typ + "\x00" + string(rel.parent) + "\x00" + rel.key, true
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

// Redact redacts an event, idempotently per device and transaction ID.
func (s *Service) Redact(ctx context.Context, from Sender, id spec.RoomID, target spec.EventID, txnID, reason string) (spec.EventID, error) {
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
	if reason != "" {
		c["reason"] = reason
	}
	if r.version.AtLeast11() {
		c["redacts"] = string(target)
	}
	content, err := events.MarshalCanonical(c)
	if err != nil {
		return "", err
	}
	b := s.begin(r)
	ev, err := b.add(spec.MRoomRedaction, nil, from.User, content, target)
	if err != nil {
		return "", err
	}
	redacted, err := orig.PDU.Redacted()
	if err != nil {
		return "", err
	}
	// The stored copy loses its content now; a redacted state event that is
	// current state changes the room's state as it is served.
	if sk, ok := redacted.StateKey(); ok {
		if cur := b.snap.state.Get(redacted.Type(), sk); cur != nil && cur.EventID() == target {
			// b.snap is the builder's own, made by add.
			b.snap.state = b.snap.state.With(authrules.StateKeyPair{Type: redacted.Type(), StateKey: sk}, redacted)
		}
	}
	b.redactions = append(b.redactions, redacted)
	if err := b.commit(ctx, false, "", from.Device, txnID); err != nil {
		return "", err
	}
	return ev.PDU.EventID(), nil
}

// applyRedactions rewrites stored events to their redacted form inside the
// commit's transaction.
func applyRedactions(tx *storage.Tx, redactions []*events.PDU, by []*Event) error {
	for _, p := range redactions {
		var redactor string
		for _, ev := range by {
			if ev.PDU.Type() == spec.MRoomRedaction && ev.PDU.Redacts() == p.EventID() {
				redactor = string(ev.PDU.EventID())
			}
		}
		if _, err := tx.Exec(`UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3`,
			string(p.JSON()), redactor, string(p.EventID())); err != nil {
			return fmt.Errorf("redact stored event: %w", err)
		}
	}
	return nil
}

// Forget hides a room the user has left from their room lists.
func (s *Service) Forget(ctx context.Context, user spec.UserID, id spec.RoomID) error {
	r := s.room(id)
	if r == nil {
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
			if _, err := s.ChangeMembership(ctx, Sender{User: user}, id, user, spec.Leave, "", false); err != nil {
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
		if _, err := s.ChangeMembership(ctx, Sender{User: user}, id, user, spec.Join, "", false); err != nil {
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
