// Package rooms owns every room: the DAG of signed events in the database,
// the hot state in memory, and the room endpoints of the client-server API.
//
// # The write path of a message
//
// A message, PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId},
// is read in two files of this package, send.go and then commit.go:
//
//  1. routes.go mounts the path behind the auth middleware (access token to
//     user and device) and the per-user send rate limit; handlers.go's send
//     checks the room ID and the event type, hands a send with MSC4140's
//     delay to the scheduler (Delayer), reads the content (size, canonical
//     JSON: events.ReadContent) and calls Service.Send.
//  2. send.go, Service.Send: refuses what /send never sends (a member
//     event given to /state goes to membership.go instead), queues the
//     request on the room, and whoever takes the room's write lock builds
//     every queued request as one group (sendBatch): the transaction ID
//     (groups in flight, then the in-memory index: no database read), the
//     sender's membership, the encryption policy (encryption.go), the
//     relation's parent (relations.go; a database read only for an event
//     with m.relates_to), then builder.add: prev and auth events from the
//     in-memory state (statetrie.go), events.Build (hashes, ed25519
//     signature, event ID), the pure auth rules (authrules package), and the
//     working state moved past the event.
//  3. commit.go, the per-room group commit: the group joins the room's
//     pipeline (the next group is built on it while it is written), push
//     evaluates its rules off the writer (CommitHook.PrepareCommit), and the
//     write is queued on storage's single writer (storage.DB.Submit), which
//     commits the writes of every room queued meanwhile in one transaction,
//     each in a savepoint (storage/writer.go). Inside it, in builder.write's
//     order: for each event its stream position, its row, the state delta
//     (room_state) and its transaction ID; then redactions, the relations
//     and search index rows (relations.go, searchindex.go), any rows the
//     caller adds (a new room's alias), and push's rows (notifications,
//     unread counts). After the commit, in commit order (builder.published): the
//     new state is published in memory (room.go, apply), the transaction
//     IDs are remembered, and the users concerned are notified. sync's
//     Notifier holds the wake until storage has published the position, so
//     that a woken /sync finds the event; push hands its notifications to
//     the gateways at the same moment.
//  4. The woken /sync reads the room from memory (syncview.go: recent
//     events, state, memberships); only a timeline that reaches past what
//     memory holds reads the database.
//
// Every other write of a room (membership changes, redactions, createRoom,
// upgrades) uses the same builder and builder.commit, after waiting for the
// sends in flight (lockWrites).
package rooms

import (
	"context"
	"errors"
	"maps"
	"slices"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// Sender identifies who sends an event: a user and, for idempotent sends,
// the device whose transaction IDs are tracked.
type Sender struct {
	User   spec.UserID
	Device string
}

// SendRequest is one event a client sends with /send or /state.
type SendRequest struct {
	Type     string
	StateKey *string // nil for a message event
	// TxnID is the client's transaction ID: a retry with the same one from
	// the same device gets the first event back. "" for none (/state).
	TxnID   string
	Content []byte // canonical JSON (events.ReadContent)
}

// Send sends a message event or a state event into a room, idempotently per
// device and transaction ID. It returns the event ID.
//
// Sends to one room are grouped: whoever holds the room's write lock builds
// every send queued meanwhile, one after another, and commits them in one
// transaction. A busy room then costs one commit per group instead of one
// per event, and the order stays the one the events were built in. The
// next group is built while this one is written (commit.go, the pipeline).
func (s *Service) Send(ctx context.Context, from Sender, id spec.RoomID, ev SendRequest) (spec.EventID, error) {
	if err := CheckSendable(ev.Type, ev.StateKey); err != nil {
		return "", err
	}
	if ev.Type == spec.MRoomMember && ev.StateKey != nil {
		return s.SetMemberState(ctx, from, id, *ev.StateKey, ev.Content)
	}
	r := s.room(id)
	if r == nil {
		return "", errNotInRoom(id)
	}
	if err := s.leases.hold(ctx, id); err != nil {
		return "", err
	}
	req := &sendReq{SendRequest: ev, ctx: ctx, from: from, done: make(chan sendResult, 1)}
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
	SendRequest
	ctx  context.Context
	from Sender
	done chan sendResult
}

// txnKey names the request's transaction: scoped to /send/{eventType} in
// the room.
func (req *sendReq) txnKey(room spec.RoomID) txnKey {
	return txnKey{req.from.User, req.from.Device, sendScope(room, req.Type), req.TxnID}
}

func (req *sendReq) checkedAgainstStore() bool {
	return req.StateKey != nil || gjson.GetBytes(req.Content, `m\.relates_to`).Exists()
}

type sendResult struct {
	id  spec.EventID
	err error
}

// sendBatch builds a group of sends on the room's state (after the groups
// still being written) and submits their write (commit.go); the room's
// write lock is held. Each request learns its outcome once the group is written, and the
// group is returned if there is one to write.
func (s *Service) sendBatch(r *liveRoom, batch []*sendReq) *sendGroup {
	base, after := r.tip()
	b := s.beginOn(r, base)
	var built []builtSend
	inBatch := map[txnKey]*Event{}
	for _, req := range batch {
		if req.TxnID != "" {
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
				built = append(built, builtSend{req, ev}) // the same transaction twice in one group
				continue
			}
		}
		ev, err := s.buildSend(b, req, inBatch)
		if err != nil {
			req.done <- sendResult{err: err}
			continue
		}
		built = append(built, builtSend{req, ev})
	}
	if len(b.evs) == 0 {
		for _, p := range built {
			p.answer(nil)
		}
		return nil
	}
	// The group is committed whatever happens to the request that leads
	// it: a client of the group that goes away must not fail the others.
	return b.commitGroup(context.WithoutCancel(batch[0].ctx), after, built, inBatch)
}

// builtSend is a request of a group and the event that answers it (its
// own, a retry's, or a state event already there).
type builtSend struct {
	req *sendReq
	ev  *Event
}

// answer tells the request the outcome of its group.
func (p builtSend) answer(err error) {
	if err != nil {
		p.req.done <- sendResult{err: err}
	} else {
		p.req.done <- sendResult{id: p.ev.PDU.EventID()}
	}
}

// buildSend checks one send against the group's state so far and adds its
// event to the builder.
func (s *Service) buildSend(b *builder, req *sendReq, inBatch map[txnKey]*Event) (*Event, error) {
	if b.snap.membership(req.from.User) != spec.Join {
		return nil, errNotInRoom(b.r.id)
	}
	if err := s.checkEncryptionPolicy(b.snap, req.Type, req.StateKey, req.Content); err != nil {
		return nil, err
	}
	if req.StateKey != nil {
		if req.Type == spec.MRoomMember {
			// Service.Send sends member events through SetMemberState.
			return nil, spec.Forbidden("change membership with the membership endpoints (join, invite, leave, kick, ban)")
		}
		if same := sameState(b.snap, req.from.User, req.Type, *req.StateKey, req.Content); same != nil {
			return &Event{PDU: same}, nil
		}
		if err := checkCreatorsUnlisted(b.snap, req.Type, req.Content); err != nil {
			return nil, err
		}
	}
	// Relations (threads, annotations) and m.room.canonical_alias are
	// checked against stored events and aliases (relations.go); a second
	// identical annotation in the same group is refused here.
	if err := s.checkSend(b.r, req); err != nil {
		return nil, err
	}
	key, isAnnotation := req.annotationKey()
	if isAnnotation && b.annotations[key] {
		return nil, spec.NewError(spec.ErrDuplicateAnnotation, "you already sent this annotation for this event")
	}
	ev, err := b.add(req.Type, req.StateKey, req.from.User, req.Content)
	if err != nil {
		return nil, err
	}
	if isAnnotation {
		if b.annotations == nil {
			b.annotations = map[string]bool{}
		}
		b.annotations[key] = true
	}
	if req.TxnID != "" {
		ev.DeviceID, ev.TxnID = req.from.Device, req.TxnID
		inBatch[req.txnKey(b.r.id)] = ev
	}
	return ev, nil
}

// annotationKey names an annotation (sender, type, target, key) for
// duplicate checks within a group of sends.
func (req *sendReq) annotationKey() (string, bool) {
	if req.StateKey != nil {
		return "", false
	}
	rel, ok := relationOfContent(gjson.ParseBytes(contentOrEmpty(req.Content)))
	if !ok || rel.relType != relAnnotation {
		return "", false
	}
	return string(req.from.User) + "\x00" + req.Type + "\x00" + string(rel.parent) + "\x00" + rel.key, true
}

// builder builds a run of new events on a room's current state, in memory,
// so that several events (a whole createRoom) commit in one transaction or
// not at all.
type builder struct {
	s    *Service
	r    *liveRoom
	base *snapshot // the state the events are built on
	snap *snapshot // the working state: a new snapshot at each event
	evs  []*Event
	// redactions are stored events to rewrite in their redacted form.
	redactions []*events.PDU
	// annotations are the annotations of a group of sends, so that a
	// duplicate within the group is refused like one already stored.
	annotations map[string]bool
}

func (s *Service) begin(r *liveRoom) *builder {
	return s.beginOn(r, r.cur.Load())
}

// beginOn starts a builder on a given state: a room's current one, or the
// state after a group of sends still being written (send.go).
func (s *Service) beginOn(r *liveRoom, base *snapshot) *builder {
	return &builder{s: s, r: r, base: base, snap: base}
}

// add builds, signs and authorises one event on the working state.
func (b *builder) add(typ string, stateKey *string, sender spec.UserID, content []byte) (*Event, error) {
	return b.addProto(events.ProtoEvent{Type: typ, StateKey: stateKey, Sender: sender, Content: content})
}

// addRedaction is add for the redaction of target.
func (b *builder) addRedaction(sender spec.UserID, content []byte, target spec.EventID) (*Event, error) {
	return b.addProto(events.ProtoEvent{Type: spec.MRoomRedaction, Sender: sender, Content: content, Redacts: target})
}

// addProto completes an event of which the caller gave type, state key,
// sender, content and redacts: its place in the DAG (prev events, depth)
// and its auth events, from the working state. Then it builds and signs the
// event, checks it against the auth rules and moves the working state past
// it.
func (b *builder) addProto(proto events.ProtoEvent) (*Event, error) {
	v := b.r.version
	isV12Create := proto.Type == spec.MRoomCreate && v.AtLeast12()
	proto.RoomID = b.r.id
	proto.Depth = b.snap.depth + 1
	proto.OriginServerTS = b.s.now().UnixMilli()
	for _, prev := range b.snap.extremity {
		proto.PrevEvents = append(proto.PrevEvents, prev.EventID())
	}
	if isV12Create {
		proto.RoomID = ""
		// The v12 room ID is the create event's hash: two identical
		// createRoom requests in one millisecond would get one room ID.
		// Create events get strictly increasing timestamps instead.
		proto.OriginServerTS = b.s.createTS(proto.OriginServerTS)
	}
	if proto.PrevEvents == nil {
		proto.PrevEvents = []spec.EventID{}
	}
	authState, err := b.linkAuthEvents(&proto)
	if err != nil {
		return nil, err
	}
	pdu, err := events.Build(proto, v, b.s.key)
	if err != nil {
		return nil, err
	}
	if len(pdu.JSON()) > maxPDUSize {
		return nil, spec.TooLarge("the event is %d bytes; the limit is %d", len(pdu.JSON()), maxPDUSize)
	}
	if err := authoriseBuilt(pdu, authState); err != nil {
		return nil, err
	}
	if isV12Create {
		// The room ID is derived from the create event (MSC4291).
		b.r.id = pdu.RoomID()
	}
	ev := &Event{PDU: pdu, replacedKnown: true}
	if sk, ok := pdu.StateKey(); ok {
		ev.replaced = b.snap.state.Get(pdu.Type(), sk)
	}
	b.applyLocal(pdu)
	if b.s.federation != nil { // only other servers' events ask for it (dag.go)
		ev.stateAfter = b.snap.state
	}
	b.evs = append(b.evs, ev)
	return ev, nil
}

// linkAuthEvents names the event's auth events, found in the working state,
// and returns the state the auth rules check it against.
func (b *builder) linkAuthEvents(proto *events.ProtoEvent) (authrules.StateMap, error) {
	v := b.r.version
	authState := authrules.StateMap{}
	for _, k := range authrules.AuthEventKeys(proto.Type, proto.StateKey, proto.Sender, gjson.ParseBytes(contentOrEmpty(proto.Content)), v) {
		if ev := b.snap.state.Get(k.Type, k.StateKey); ev != nil {
			proto.AuthEvents = append(proto.AuthEvents, ev.EventID())
			authState[k] = ev
		}
	}
	if v.EventIDInEvent() {
		// Room versions 1 and 2 name prev and auth events with their hashes.
		if err := addReferenceHashes(proto, b.snap.extremity, authState); err != nil {
			return nil, err
		}
	}
	if proto.AuthEvents == nil {
		proto.AuthEvents = []spec.EventID{}
	}
	// v12: the create event is not an auth event but the rules still read it.
	if create := b.snap.state.Get(spec.MRoomCreate, ""); create != nil {
		authState[authrules.StateKeyPair{Type: spec.MRoomCreate, StateKey: ""}] = create
	}
	return authState, nil
}

// authoriseBuilt runs the auth rules on an event the server built; a refusal is
// an authRuleError.
func authoriseBuilt(pdu *events.PDU, authState authrules.StateMap) error {
	if err := authrules.Allowed(pdu, authState); err != nil {
		var se *spec.Error
		if errors.As(err, &se) {
			return &authRuleError{se}
		}
		return err
	}
	return nil
}

// addReferenceHashes gives a room version 1 or 2 event the reference hashes
// of the events it names.
func addReferenceHashes(proto *events.ProtoEvent, prev []*events.PDU, auth authrules.StateMap) error {
	proto.ReferenceHashes = make(map[spec.EventID][32]byte, len(prev)+len(auth))
	for _, list := range [][]*events.PDU{prev, slices.Collect(maps.Values(auth))} {
		for _, ev := range list {
			sum, err := ev.ReferenceHash()
			if err != nil {
				return err
			}
			proto.ReferenceHashes[ev.EventID()] = sum
		}
	}
	return nil
}

// authRuleError is a refusal by the auth rules of an event the server built.
// It is sent as the M_FORBIDDEN it wraps, except where the spec wants
// another answer (createRoom: M_INVALID_ROOM_STATE).
type authRuleError struct{ err *spec.Error }

func (e *authRuleError) Error() string { return e.err.Error() }
func (e *authRuleError) Unwrap() error { return e.err }

// maxPDUSize is the spec's limit on a whole event in canonical JSON.
const maxPDUSize = 65536

func contentOrEmpty(c []byte) []byte {
	if len(c) == 0 {
		return []byte("{}")
	}
	return c
}

// applyLocal makes the working state the state after pdu. A state event
// changes one entry of the persistent state (statetrie.go) and, for a
// member event, the joined list by one user: what it changes, not what the
// room holds.
func (b *builder) applyLocal(pdu *events.PDU) {
	prev := b.snap
	next := &snapshot{state: prev.state, depth: pdu.Depth(), extremity: []*events.PDU{pdu}, position: prev.position}
	joined := prev.joinedCache.Load()
	if sk, ok := pdu.StateKey(); ok {
		k := authrules.StateKeyPair{Type: pdu.Type(), StateKey: sk}
		if k.Type == spec.MRoomMember && joined != nil {
			joined = changeJoined(*joined, spec.UserID(sk), prev.membership(spec.UserID(sk)), pdu.Content().Get("membership").String())
		}
		next.state = prev.state.With(k, pdu)
	}
	if joined != nil {
		next.joinedCache.Store(joined)
	}
	b.snap = next
}

// changeJoined returns the joined list after a user's membership changed
// from before to after; the list given is shared and left as it is.
func changeJoined(joined []spec.UserID, user spec.UserID, before, after string) *[]spec.UserID {
	switch {
	case before == after || (before != spec.Join && after != spec.Join):
		return &joined
	case after == spec.Join:
		out := make([]spec.UserID, len(joined), len(joined)+1)
		copy(out, joined)
		out = append(out, user)
		return &out
	default: // leaves
		out := make([]spec.UserID, 0, len(joined))
		for _, u := range joined {
			if u != user {
				out = append(out, u)
			}
		}
		return &out
	}
}
