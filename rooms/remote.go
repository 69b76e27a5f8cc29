package rooms

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/tidwall/gjson"
)

// Events from other servers (federation). The room core stays the one place
// that accepts events: a remote event is parsed in the room's version, its
// signatures and content hash are verified, it is checked against the auth
// rules with its own auth events and then with the room's current state
// (soft-fail), and it is committed through the same builder and write path
// as a local event (commit.go). The federation package speaks HTTP; this
// file decides what enters a room.
//
// Forks, soft-failed events and the state before an event are dag.go's;
// filling gaps from other servers is gap.go's. Not yet: the fetching of
// auth events not already held.

// KeySource finds the verify key of a server valid at a time (the
// federation package's key fetcher).
type KeySource interface {
	VerifyKey(ctx context.Context, server, keyID string, at time.Time) (ed25519.PublicKey, error)
}

// RemoteServers is how rooms reaches other servers to join their rooms:
// the federation package's client side, built before rooms; nil with
// federation off, when joins of unknown rooms fail as they always did.
type RemoteServers interface {
	KeySource
	RemoteMembers // invites, leaves, knocks, aliases (remote_members.go)
	// Allowed reports whether this server talks to server at all.
	Allowed(server spec.ServerName) bool
	// MakeJoin asks srv for the template of user's join (make_join).
	MakeJoin(ctx context.Context, srv spec.ServerName, room spec.RoomID, user spec.UserID) (json.RawMessage, spec.RoomVersion, error)
	// SendJoin sends the signed join (send_join) and returns the join as
	// the resident answered it (nil if it did not), the room's state and
	// auth chain.
	SendJoin(ctx context.Context, srv spec.ServerName, room spec.RoomID, join *events.PDU) (event json.RawMessage, state, authChain []json.RawMessage, err error)
	// Joining marks a join of room in progress until done is called, so
	// that the room's events the resident sends meanwhile wait for it.
	Joining(room spec.RoomID) (done func())
	Backfiller
}

// joinRemote joins through other servers when the room is unknown here and
// the client named some (server_name or via): make_join and send_join on
// the first server that accepts, then the room is made from the answer.
func (s *Service) joinRemote(ctx context.Context, user spec.UserID, id spec.RoomID, via []spec.ServerName, content map[string]json.RawMessage) (bool, error) {
	if s.federation == nil || s.room(id) != nil {
		return false, nil
	}
	if o := s.outlierOf(user, id); o != nil && o.membership == spec.Invite {
		via = append([]spec.ServerName{o.server}, via...) // the inviter's server is in the room
	}
	if len(via) == 0 {
		return false, nil
	}
	done := s.federation.Joining(id)
	defer done()
	// The user's display name and avatar go in the join, as in a join of a
	// room this server knows (memberContent), where the client gave none.
	withProfile, err := s.memberContent(ctx, MembershipChange{Target: user, Membership: spec.Join, Content: content})
	if err != nil {
		return true, err
	}
	content = nil
	if err := json.Unmarshal(withProfile, &content); err != nil {
		return true, err
	}
	var last error = spec.NotFound("no server to join %s through", id)
	for _, srv := range via {
		if !s.federation.Allowed(srv) {
			continue
		}
		err := s.joinVia(ctx, user, id, srv, content)
		if err == nil {
			if s.outlierOf(user, id) != nil {
				if err := s.dropOutlier(ctx, id, user, false); err != nil {
					s.log.Warn().Err(err).Msg("federation: could not drop the invite of a joined room")
				}
			}
			return true, nil
		}
		s.log.Info().Str("room_id", string(id)).Str("via", string(srv)).Err(err).Msg("federation: join failed")
		last = err
	}
	if _, ok := last.(*spec.Error); !ok {
		return true, spec.NotFound("cannot join %s through %v: %v", id, via, last)
	}
	return true, last
}

func (s *Service) joinVia(ctx context.Context, user spec.UserID, id spec.RoomID, srv spec.ServerName, content map[string]json.RawMessage) error {
	tmpl, v, err := s.federation.MakeJoin(ctx, srv, id, user)
	if err != nil {
		return err
	}
	join, err := s.JoinFromTemplate(tmpl, v, user, id, content)
	if err != nil {
		return err
	}
	signed, state, chain, err := s.federation.SendJoin(ctx, srv, id, join)
	if err != nil {
		return err
	}
	// In a restricted room the resident signs the join too, and the auth
	// rules want its signature: keep its copy if it is the same event.
	if len(signed) > 0 {
		p, err := VerifyRemotePDU(ctx, signed, v, s.federation)
		if err != nil || p.EventID() != join.EventID() {
			return fmt.Errorf("send_join answered another join than %s: %v", join.EventID(), err)
		}
		join = p
	}
	return s.CommitRemoteJoin(ctx, v, join, state, chain, s.federation)
}

// ServerName is this server's name.
func (s *Service) ServerName() spec.ServerName { return s.server }

// RoomVersion is the version of a room this server knows.
func (s *Service) RoomVersion(id spec.RoomID) (spec.RoomVersion, bool) {
	r := s.room(id)
	if r == nil {
		return "", false
	}
	return r.version, true
}

// ServersInRoom are the servers of the room's joined members, this one
// included if it has any.
func (s *Service) ServersInRoom(id spec.RoomID) []spec.ServerName {
	r := s.room(id)
	if r == nil {
		return nil
	}
	return serversOf(r.cur.Load().joined())
}

func serversOf(users []spec.UserID) []spec.ServerName {
	seen := map[spec.ServerName]bool{}
	var out []spec.ServerName
	for _, u := range users {
		srv := u.Server()
		if !seen[srv] {
			seen[srv] = true
			out = append(out, srv)
		}
	}
	return out
}

// VerifyRemotePDU parses an event received from another server in room
// version v and checks that it is what its sender's server signed: the
// signature of that server (every key it signed with must verify, at least
// one is required) and the content hash.
func VerifyRemotePDU(ctx context.Context, raw []byte, v spec.RoomVersion, keys KeySource) (*events.PDU, error) {
	pdu, err := events.ParsePDU(raw, v)
	if err != nil {
		return nil, err
	}
	server := pdu.Sender().Server()
	sigs := gjson.GetBytes(pdu.JSON(), "signatures."+gjson.Escape(string(server)))
	checked := 0
	var verr error
	sigs.ForEach(func(k, _ gjson.Result) bool {
		pub, err := keys.VerifyKey(ctx, string(server), k.String(), time.UnixMilli(pdu.OriginServerTS()))
		if err != nil {
			verr = err
			return false
		}
		if err := events.VerifyEvent(pdu.JSON(), v, string(server), k.String(), pub); err != nil {
			verr = err
			return false
		}
		checked++
		return true
	})
	if verr != nil {
		return nil, spec.Forbidden("event %s: signature of %s: %v", pdu.EventID(), server, verr)
	}
	if checked == 0 {
		return nil, spec.Forbidden("event %s is not signed by %s", pdu.EventID(), server)
	}
	if err := events.CheckContentHash(pdu.JSON()); err != nil {
		return nil, spec.Forbidden("event %s: content hash: %v", pdu.EventID(), err)
	}
	return pdu, nil
}

// ErrSoftFailed is returned for an event that passed the auth rules against
// its auth events but not against the room's current state: it is not
// applied (a banned user's server cannot slip messages in).
var ErrSoftFailed = spec.Forbidden("the event fails the auth rules against the room's current state (soft-failed)")

// ReceivePDU accepts an event another server sent into a room this server
// is in: verified, authorised against its auth events, the state before it
// (resolved when its prev events' states differ) and the current state,
// then committed. An event that passes the first two but fails the current
// state is soft-failed: held outside the timeline (ErrSoftFailed). An event
// already held is accepted again without effect.
//
// The events it follows that this server lacks are asked of origin (nil:
// not at all), within bounds: get_missing_events, then single events, then
// the state at the gap (gap.go).
func (s *Service) ReceivePDU(ctx context.Context, raw []byte, room spec.RoomID, keys KeySource, origin Origin) (spec.EventID, error) {
	r := s.room(room)
	if r == nil {
		return s.receiveOutlierMember(ctx, raw, room, keys) // a rescinded invite (outliers.go)
	}
	pdu, err := VerifyRemotePDU(ctx, raw, r.version, keys)
	if err != nil {
		// The sender is told which event was refused, when it has an ID.
		if p, perr := events.ParsePDU(raw, r.version); perr == nil {
			return p.EventID(), err
		}
		return "", err
	}
	if pdu.RoomID() != room {
		return "", spec.BadJSON("event %s is not in room %s", pdu.EventID(), room)
	}
	if err := s.leases.hold(ctx, room); err != nil {
		return "", err
	}
	r.lockWrites()
	defer r.writeMu.Unlock()
	var src *remoteSource
	if origin != nil {
		src = newRemoteSource(keys, origin)
	}
	_, err = s.acceptRemote(ctx, r, pdu, false, src)
	return pdu.EventID(), err
}

// acceptRemote checks and commits a verified remote event; the room's write
// lock is held. It returns the state before the event.
// relay marks it for the room's other servers (Event.Relay).
func (s *Service) acceptRemote(ctx context.Context, r *liveRoom, pdu *events.PDU, relay bool, src *remoteSource) (*snapshot, error) {
	if known, err := s.dagEvent(ctx, pdu.EventID()); err != nil {
		return nil, err
	} else if known != nil {
		return r.cur.Load(), nil
	}
	if err := s.fetchMissing(ctx, r, pdu, src); err != nil {
		return nil, err
	}
	snap := r.cur.Load() // after the missing events, if any
	auth, err := s.loadAuthEvents(ctx, pdu)
	if err != nil {
		return nil, err
	}
	if err := checkAgainstAuthEvents(pdu, auth, snap.get(spec.MRoomCreate, "")); err != nil {
		return nil, err
	}
	// Rejected unless the state before it allows it (rooms/v2: "Passes
	// authorization rules based on the state before the event").
	before, err := s.stateBeforeIDs(ctx, r, snap, pdu.PrevEvents(), 0)
	if err != nil {
		return nil, err
	}
	if err := authrules.Allowed(pdu, before); err != nil {
		return nil, spec.Forbidden("event %s fails the auth rules against the state before it: %v", pdu.EventID(), err)
	}
	// Soft-fail: the current state must allow it too. It is kept, outside
	// the timeline, for the events that name it.
	if err := authrules.Allowed(pdu, snap); err != nil {
		s.log.Warn().Str("event_id", string(pdu.EventID())).Str("room_id", string(r.id)).Err(err).Msg("soft-failed a remote event")
		if err := s.storeOutlier(ctx, pdu, outlierSoftFailed); err != nil {
			return nil, err
		}
		return nil, ErrSoftFailed
	}
	// A redaction is held back, outside the timeline, until it applies to
	// an event this server has (redactionApplies).
	var target *events.PDU
	if pdu.Type() == spec.MRoomRedaction {
		if target, err = s.redactionTarget(ctx, before, pdu); err != nil {
			return nil, err
		}
		if target == nil {
			if err := s.storeOutlier(ctx, pdu, outlierHeldRedaction); err != nil {
				return nil, err
			}
			return &snapshot{state: before}, nil
		}
	}
	held, err := s.heldRedactions(ctx, r, snap, pdu)
	if err != nil {
		return nil, err
	}
	b := s.begin(r)
	ev, err := b.addReceived(ctx, pdu, before)
	if err != nil {
		return nil, err
	}
	ev.Relay = relay
	if target != nil {
		if err := b.redactTarget(target); err != nil {
			return nil, err
		}
	}
	var opts commitOpts
	if len(held) > 0 {
		// The event arrives redacted (it is stored, and kept in memory, in
		// its redacted form), followed by the redaction that was waiting.
		redacted, err := pdu.Redacted()
		if err != nil {
			return nil, err
		}
		h := held[0]
		ev.PDU, ev.RedactedBecause = redacted, h.pdu
		if pdu.IsState() {
			ev.stateAfter = ev.stateAfter.With(keyOf(pdu), redacted)
		}
		if err := b.redactTarget(pdu); err != nil {
			return nil, err
		}
		if _, err := b.addReceived(ctx, h.pdu, h.before); err != nil {
			return nil, err
		}
		opts.Also = func(tx *storage.Tx) error {
			_, err := tx.Exec(`DELETE FROM event_outliers WHERE event_id = $1`, string(h.pdu.EventID()))
			return err
		}
	}
	if err := b.commit(ctx, opts); err != nil {
		return nil, err
	}
	return &snapshot{state: before}, nil
}

// redactionTarget is the event a remote redaction names if the redaction
// applies to it ("Handling redactions", room versions 3+): this server
// has it, in the same room, and the redaction's sender has the redact
// power level in the state before the redaction, or is of the server of
// the event's sender. Otherwise nil: the spec holds the redaction back
// from clients until a target it applies to arrives (heldRedactions).
func (s *Service) redactionTarget(ctx context.Context, before roomState, redaction *events.PDU) (*events.PDU, error) {
	target, err := s.eventByID(ctx, redaction.Redacts())
	if err != nil || target == nil || !redactionApplies(before, redaction, target.PDU) {
		return nil, err
	}
	return target.PDU, nil
}

func redactionApplies(before roomState, redaction, target *events.PDU) bool {
	if target.RoomID() != redaction.RoomID() {
		return false
	}
	if redaction.Sender().Server() == target.Sender().Server() {
		return true
	}
	pl, err := authrules.PowerLevelsOf(before)
	return err == nil && pl.UserLevel(redaction.Sender()) >= pl.Redact
}

// heldRedaction is a redaction held back for its target, with the state
// before it.
type heldRedaction struct {
	pdu    *events.PDU
	before roomState
}

// heldRedactions are the held redactions of r that apply to target, which
// is arriving; one is enough to redact it (the others stay held).
func (s *Service) heldRedactions(ctx context.Context, r *liveRoom, snap *snapshot, target *events.PDU) ([]heldRedaction, error) {
	rows, err := s.db.Query(ctx, `SELECT json FROM event_outliers WHERE room_id = $1 AND reason = $2`, string(r.id), outlierHeldRedaction)
	if err != nil {
		return nil, err
	}
	var raws []string
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			rows.Close()
			return nil, err
		}
		raws = append(raws, raw)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, raw := range raws {
		p, err := events.ParsePDU([]byte(raw), r.version)
		if err != nil || p.Redacts() != target.EventID() {
			continue
		}
		before, err := s.stateBeforeIDs(ctx, r, snap, p.PrevEvents(), 0)
		if err != nil {
			continue // its state is unknown: it stays held
		}
		if redactionApplies(before, p, target) {
			return []heldRedaction{{pdu: p, before: before}}, nil
		}
	}
	return nil, nil
}

// loadAuthEvents loads the events pdu names as auth events; every one must
// be held already.
func (s *Service) loadAuthEvents(ctx context.Context, pdu *events.PDU) ([]*events.PDU, error) {
	var out []*events.PDU
	for _, id := range pdu.AuthEvents() {
		ev, err := s.dagEvent(ctx, id)
		if err != nil {
			return nil, err
		}
		if ev == nil {
			return nil, spec.Forbidden("event %s names auth event %s, which this server does not have", pdu.EventID(), id)
		}
		out = append(out, ev)
	}
	return out, nil
}

// checkAgainstAuthEvents applies the auth rules to pdu with the state its
// auth events make (plus the create event, which v12 rules read without
// naming it).
func checkAgainstAuthEvents(pdu *events.PDU, auth []*events.PDU, create *events.PDU) error {
	if err := authrules.CheckAuthEvents(pdu, auth); err != nil {
		return err
	}
	state := authrules.NewStateMap(auth...)
	if create != nil {
		state[authrules.StateKeyPair{Type: spec.MRoomCreate}] = create
	}
	return authrules.Allowed(pdu, state)
}

// addRemote moves the working state past an event of another server,
// already checked: like addProto's end, except that the event keeps its own
// place in the DAG, and the room's forward extremities become those it
// does not follow plus itself.
func (b *builder) addRemote(pdu *events.PDU) *Event {
	ev := &Event{PDU: pdu, replacedKnown: true}
	if sk, ok := pdu.StateKey(); ok {
		ev.replaced = b.snap.state.Get(pdu.Type(), sk)
	}
	prev := b.snap
	b.applyLocal(pdu)
	b.snap.depth = max(prev.depth, pdu.Depth())
	var ext []*events.PDU
	for _, e := range prev.extremity {
		if !slices.Contains(pdu.PrevEvents(), e.EventID()) {
			ext = append(ext, e)
		}
	}
	b.snap.extremity = append(ext, pdu)
	b.evs = append(b.evs, ev)
	return ev
}

// The resident server's side of a join over federation.

// MakeJoin answers make_join: the join event's template for a remote user,
// built on the room's current state, and the room's version. Only the
// sender's server can complete and sign it.
func (s *Service) MakeJoin(ctx context.Context, room spec.RoomID, user spec.UserID, supported []spec.RoomVersion) ([]byte, spec.RoomVersion, error) {
	r := s.room(room)
	if r == nil {
		return nil, "", spec.NotFound("no room %s is known to this server", room)
	}
	if !slices.Contains(supported, r.version) {
		return nil, "", spec.NewError(spec.ErrIncompatibleRoomVer, "the room's version %s is not one the joining server supports", r.version).
			With("room_version", string(r.version))
	}
	snap := r.cur.Load()
	content := []byte(`{"membership":"join"}`)
	switch m := snap.membership(user); {
	case m == spec.Ban:
		return nil, "", spec.Forbidden("%s is banned from the room", user)
	case m == spec.Invite || m == spec.Join:
	default:
		if rule := snap.get(spec.MRoomJoinRules, ""); rule == nil || rule.Content().Get("join_rule").String() != "public" {
			// A restricted room: a local user who may invite vouches for
			// a member of an allowed room, and this server signs the join
			// at send_join.
			via := s.joinAuthoriser(snap, user)
			if via == "" {
				return nil, "", spec.Forbidden("the room is not public and %s is not invited", user)
			}
			c, err := json.Marshal(map[string]string{"membership": spec.Join, "join_authorised_via_users_server": string(via)})
			if err != nil {
				return nil, "", err
			}
			content = c
		}
	}
	return s.memberTemplateContent(r, snap, user, content)
}

// SendJoin accepts a remote user's join (send_join) and returns the room's
// state before it and the auth chain of that state and of the join.
func (s *Service) SendJoin(ctx context.Context, origin spec.ServerName, room spec.RoomID, eventID spec.EventID, raw []byte, keys KeySource) (state, authChain [][]byte, err error) {
	r := s.room(room)
	if r == nil {
		return nil, nil, spec.NotFound("no room %s is known to this server", room)
	}
	pdu, err := VerifyRemotePDU(ctx, raw, r.version, keys)
	if err != nil {
		return nil, nil, err
	}
	sk, _ := pdu.StateKey()
	switch {
	case pdu.EventID() != eventID || pdu.RoomID() != room:
		return nil, nil, spec.BadJSON("the event is not %s in %s", eventID, room)
	case pdu.Type() != spec.MRoomMember || pdu.Content().Get("membership").String() != spec.Join:
		return nil, nil, spec.BadJSON("send_join takes a join")
	case sk != string(pdu.Sender()) || pdu.Sender().Server() != origin:
		return nil, nil, spec.Forbidden("the join must be of a user of %s, by that user", origin)
	}
	if via := pdu.Content().Get("join_authorised_via_users_server"); via.Exists() && r.version.RestrictedJoins() {
		// A restricted join vouched for by a user of this server: this
		// server signs it (the auth rules then check that user's power).
		u, err := spec.ParseUserID(via.String())
		if err != nil || u.Server() != s.server {
			return nil, nil, spec.Forbidden("the join is not authorised by a user of this server")
		}
		// Sign only what make_join would have offered: the joiner is in a
		// room the join rule allows.
		if s.joinAuthoriser(r.cur.Load(), pdu.Sender()) == "" {
			return nil, nil, spec.Forbidden("%s is in none of the rooms the join rule allows", pdu.Sender())
		}
		signed, err := events.SignEvent(pdu.JSON(), r.version, s.key)
		if err != nil {
			return nil, nil, err
		}
		if pdu, err = events.ParsePDU(signed, r.version); err != nil {
			return nil, nil, err
		}
	}
	if err := s.leases.hold(ctx, r.id); err != nil {
		return nil, nil, err
	}
	r.lockWrites()
	before, err := s.acceptRemote(ctx, r, pdu, true, nil)
	r.writeMu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	var pdus []*events.PDU
	for _, ev := range before.state.All() {
		pdus = append(pdus, ev)
		state = append(state, ev.JSON())
	}
	chain, err := s.authChain(ctx, append(pdus, pdu))
	if err != nil {
		return nil, nil, err
	}
	for _, ev := range chain {
		authChain = append(authChain, ev.JSON())
	}
	return state, authChain, nil
}

// authChain is every event the given events' auth events lead to.
func (s *Service) authChain(ctx context.Context, from []*events.PDU) ([]*events.PDU, error) {
	seen := map[spec.EventID]bool{}
	var out []*events.PDU
	todo := slices.Clone(from)
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		for _, id := range p.AuthEvents() {
			if seen[id] {
				continue
			}
			seen[id] = true
			ev, err := s.dagEvent(ctx, id)
			if err != nil {
				return nil, err
			}
			if ev == nil {
				continue // not held: the asking server will find the chain short
			}
			out = append(out, ev)
			todo = append(todo, ev)
		}
	}
	return out, nil
}

// EventForServer returns an event's JSON for a remote server
// (/event/{eventId}) if one of its users joined to the room may see it, by
// the room's history visibility as a local user would.
func (s *Service) EventForServer(ctx context.Context, origin spec.ServerName, eventID spec.EventID) ([]byte, error) {
	ev, err := s.eventByID(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, spec.NotFound("event not found")
	}
	room := ev.PDU.RoomID()
	if r := s.room(room); r != nil {
		for _, u := range r.cur.Load().joined() {
			if u.Server() != origin {
				continue
			}
			if seen, err := s.Event(ctx, u, room, eventID); err == nil && seen != nil {
				return ev.PDU.JSON(), nil
			}
		}
	}
	return nil, spec.NotFound("event not found")
}

// EventJSONAt returns the JSON of the stored event at a stream position,
// for the outbound queue (which keeps positions, not copies).
func (s *Service) EventJSONAt(ctx context.Context, pos int64) ([]byte, spec.RoomID, error) {
	evs, err := s.queryEvents(ctx, `WHERE e.position = $1`, pos)
	if err != nil || len(evs) == 0 {
		return nil, "", err
	}
	return evs[0].PDU.JSON(), evs[0].PDU.RoomID(), nil
}

// The joining server's side.

// JoinFromTemplate completes and signs the join event of a make_join
// template for a local user.
func (s *Service) JoinFromTemplate(tmpl []byte, v spec.RoomVersion, user spec.UserID, room spec.RoomID, extra map[string]json.RawMessage) (*events.PDU, error) {
	return s.memberFromTemplate(tmpl, v, user, room, spec.Join, extra)
}

// CommitRemoteJoin makes a room this server did not know from what the
// resident server answered to send_join: every state event and the auth
// chain verified, each state event authorised by its auth events, the join
// by the state; then the state and the join are committed as the room's
// first events, through the same write as any room's.
func (s *Service) CommitRemoteJoin(ctx context.Context, v spec.RoomVersion, join *events.PDU, state, authChain []json.RawMessage, keys KeySource) error {
	room := join.RoomID()
	byID := map[spec.EventID]*events.PDU{}
	var statePDUs []*events.PDU
	for i, list := range [][]json.RawMessage{authChain, state} {
		for _, raw := range list {
			p, err := VerifyRemotePDU(ctx, raw, v, keys)
			if err != nil {
				return fmt.Errorf("send_join answer: %w", err)
			}
			if p.RoomID() != room {
				return fmt.Errorf("send_join answer: event %s is in another room", p.EventID())
			}
			byID[p.EventID()] = p
			if i == 1 {
				statePDUs = append(statePDUs, p)
			}
		}
	}
	stateMap := authrules.NewStateMap(statePDUs...)
	create := stateMap.Get(spec.MRoomCreate, "")
	if create == nil {
		return fmt.Errorf("send_join answer: the state has no m.room.create")
	}
	for _, p := range statePDUs {
		if p.Type() == spec.MRoomCreate {
			if err := authrules.Allowed(p, authrules.StateMap{}); err != nil {
				return fmt.Errorf("send_join answer: create event: %w", err)
			}
			continue
		}
		var auth []*events.PDU
		for _, id := range p.AuthEvents() {
			if a := byID[id]; a != nil {
				auth = append(auth, a)
			}
		}
		if err := checkAgainstAuthEvents(p, auth, create); err != nil {
			return fmt.Errorf("send_join answer: state event %s: %w", p.EventID(), err)
		}
	}
	if err := authrules.Allowed(join, stateMap); err != nil {
		return fmt.Errorf("the join is not allowed by the room's state: %w", err)
	}
	if s.room(room) != nil {
		return spec.NewError(spec.ErrUnknown, "this server already knows room %s: joining it again over federation is not supported yet", room)
	}
	// The create event first, then by depth: each event's auth events come
	// before it.
	sort.SliceStable(statePDUs, func(i, j int) bool {
		ci, cj := statePDUs[i].Type() == spec.MRoomCreate, statePDUs[j].Type() == spec.MRoomCreate
		if ci != cj {
			return ci
		}
		return statePDUs[i].Depth() < statePDUs[j].Depth()
	})
	r := newLiveRoom(room, v)
	b := s.begin(r)
	for _, p := range statePDUs {
		b.addRemote(p)
	}
	b.snap.extremity = nil // the state events are not the DAG's tips; the join is
	b.addRemote(join)
	if err := s.leases.hold(ctx, room); err != nil {
		return err
	}
	if err := b.commit(ctx, commitOpts{NewRoom: true, Creator: create.Sender()}); err != nil {
		return err
	}
	s.unforget(ctx, join.Sender(), room)
	return nil
}
