package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// Membership over federation beyond joins: invites both ways, leaves and
// knocks both ways, and aliases of other servers. As for joins, the
// federation package speaks HTTP and this file decides what enters a room.

// RemoteMembers is what rooms asks of other servers beyond joins (part of
// RemoteServers, the federation package's Peers).
type RemoteMembers interface {
	// Invite asks the invitee's server to sign an invite (invite v2) with
	// the room's stripped state, and returns the event it signed.
	Invite(ctx context.Context, srv spec.ServerName, v spec.RoomVersion, invite *events.PDU, state []json.RawMessage) (json.RawMessage, error)
	// MakeMember asks srv for the template of user's leave or knock
	// (make_leave, make_knock).
	MakeMember(ctx context.Context, srv spec.ServerName, room spec.RoomID, user spec.UserID, membership string) (json.RawMessage, spec.RoomVersion, error)
	// SendLeave sends a signed leave (send_leave v2).
	SendLeave(ctx context.Context, srv spec.ServerName, room spec.RoomID, leave *events.PDU) error
	// SendKnock sends a signed knock (send_knock) and returns the room's
	// state the resident gave (knock_room_state).
	SendKnock(ctx context.Context, srv spec.ServerName, room spec.RoomID, knock *events.PDU) ([]json.RawMessage, error)
	// QueryDirectory resolves an alias of srv (query/directory).
	QueryDirectory(ctx context.Context, srv spec.ServerName, alias spec.RoomAlias) (spec.RoomID, []spec.ServerName, error)
}

// strippedStateTypes are the state events an invitee or knocker is shown
// (client-server API, "Stripped state": the recommended events).
var strippedStateTypes = []string{spec.MRoomCreate, spec.MRoomName, spec.MRoomAvatar, spec.MRoomTopic, spec.MRoomJoinRules,
	spec.MRoomCanonicalAlias, spec.MRoomEncryption}

// remoteRoomState is the state a remote invitee's or knocker's server is
// given: the stripped-state events in full (server-server API v1.16: PDUs
// in the room's format, m.room.create first), and the sender's member event.
func remoteRoomState(snap *snapshot, sender spec.UserID) []json.RawMessage {
	out := []json.RawMessage{}
	for _, t := range strippedStateTypes {
		if ev := snap.get(t, ""); ev != nil {
			out = append(out, ev.JSON())
		}
	}
	if ev := snap.get(spec.MRoomMember, string(sender)); ev != nil {
		out = append(out, ev.JSON())
	}
	return out
}

// ReceiveInvite answers invite v2 for a local user: the invite is checked
// (a member event of the origin's user inviting a user of this server,
// signed by the origin), signed by this server and returned. For a room
// this server does not hold, the invite and the room's state are kept so
// that the invitee sees the invite in /sync; in a room it holds, the
// invite arrives again in a transaction, through the room's checks.
func (s *Service) ReceiveInvite(ctx context.Context, origin spec.ServerName, room spec.RoomID, eventID spec.EventID, v spec.RoomVersion, raw []byte, state []json.RawMessage, keys KeySource) ([]byte, error) {
	if !v.Supported() || v.EventIDInEvent() {
		return nil, spec.NewError(spec.ErrIncompatibleRoomVer, "room version %q is not supported by this server", v).With("room_version", string(v))
	}
	pdu, err := VerifyRemotePDU(ctx, raw, v, keys)
	if err != nil {
		return nil, spec.InvalidParam("the invite: %v", err)
	}
	target, err := spec.ParseUserID(stateKeyOf(pdu))
	switch {
	case pdu.EventID() != eventID || pdu.RoomID() != room:
		return nil, spec.InvalidParam("the event is not %s in %s", eventID, room)
	case pdu.Type() != spec.MRoomMember || pdu.Content().Get("membership").String() != spec.Invite:
		return nil, spec.InvalidParam("the event is not an invite")
	case pdu.Sender().Server() != origin:
		return nil, spec.InvalidParam("the inviter is not a user of %s", origin)
	case err != nil || target.Server() != s.server:
		return nil, spec.InvalidParam("the invitee is not a user of this server")
	}
	if s.profiles != nil {
		var serr *spec.Error
		if _, _, err := s.profiles.Profile(ctx, target); errors.As(err, &serr) {
			return nil, spec.InvalidParam("the invitee %s has no account on this server", target)
		} else if err != nil {
			return nil, err
		}
	}
	if s.guard != nil { // blocked rooms
		if err := s.guard(ctx, room, pdu.Sender(), target, spec.Invite, s.Membership(target, room)); err != nil {
			return nil, err
		}
	}
	o := &outlier{membership: spec.Invite, server: origin}
	if s.room(room) == nil {
		if o.state, err = s.verifyRoomState(ctx, state, v, room, keys); err != nil {
			return nil, err
		}
	}
	signed, err := events.SignEvent(pdu.JSON(), v, s.key)
	if err != nil {
		return nil, err
	}
	if s.room(room) != nil {
		return signed, nil
	}
	if o.pdu, err = events.LoadPDU(signed, v, pdu.EventID()); err != nil {
		return nil, err
	}
	if err := s.storeRemoteMembership(ctx, o); err != nil {
		return nil, err
	}
	return signed, nil
}

// verifyRoomState checks the invite_room_state or knock_room_state of a
// room not held: events of the room, signed by their senders' servers,
// m.room.create among them (server-server API v1.16). Room versions before
// 12 may still be given stripped events by servers that have not moved:
// there a failure is logged and the events that look like state are kept,
// as the spec asks while servers migrate.
func (s *Service) verifyRoomState(ctx context.Context, state []json.RawMessage, v spec.RoomVersion, room spec.RoomID, keys KeySource) ([]json.RawMessage, error) {
	err := checkRoomState(ctx, state, v, room, keys)
	if err == nil {
		return state, nil
	}
	if v.AtLeast12() {
		return nil, err
	}
	s.log.Warn().Str("room_id", string(room)).Err(err).Msg("federation: room state of an invite or knock not as v1.16 asks; kept as given")
	out := []json.RawMessage{}
	for _, raw := range state {
		ev := gjson.ParseBytes(raw)
		if ev.Get("type").Type == gjson.String && ev.Get("state_key").Type == gjson.String && ev.Get("content").IsObject() {
			out = append(out, raw)
		}
	}
	return out, nil
}

func checkRoomState(ctx context.Context, state []json.RawMessage, v spec.RoomVersion, room spec.RoomID, keys KeySource) error {
	create := false
	for _, raw := range state {
		p, err := VerifyRemotePDU(ctx, raw, v, keys)
		if err != nil {
			return spec.InvalidParam("the room state: %v", err)
		}
		if p.RoomID() != room || !p.IsState() {
			return spec.InvalidParam("the room state holds event %s, not a state event of %s", p.EventID(), room)
		}
		create = create || p.Type() == spec.MRoomCreate
	}
	if !create {
		return spec.InvalidParam("the room state has no m.room.create")
	}
	return nil
}

// inviteTimeout bounds the invitee's server's answer to an invite.
const inviteTimeout = 30 * time.Second

// inviteRemote invites a user of another server to a room held here: the
// invite is built on the current state, signed by the invitee's server,
// then committed; the room's write lock is held.
func (s *Service) inviteRemote(ctx context.Context, r *liveRoom, sender, target spec.UserID, content []byte) (*Event, error) {
	fed := s.federation
	if !fed.Allowed(target.Server()) {
		return nil, spec.Forbidden("this server does not federate with %s", target.Server())
	}
	b := s.begin(r)
	ev, err := b.add(spec.MRoomMember, strPtr(string(target)), sender, content)
	if err != nil {
		return nil, err
	}
	// The room's writes wait meanwhile: the invitee's server gets a
	// bounded time to answer.
	ictx, cancel := context.WithTimeout(ctx, inviteTimeout)
	defer cancel()
	raw, err := fed.Invite(ictx, target.Server(), r.version, ev.PDU, remoteRoomState(r.cur.Load(), sender))
	if err != nil {
		return nil, err
	}
	signed, err := s.checkCountersigned(ctx, raw, r.version, ev.PDU, target.Server())
	if err != nil {
		return nil, err
	}
	b = s.begin(r)
	out := b.addRemote(signed)
	if err := b.commit(ctx, commitOpts{}); err != nil {
		return nil, err
	}
	return out, nil
}

// checkCountersigned checks that the invitee's server returned the invite
// this server built, with its own signature added.
func (s *Service) checkCountersigned(ctx context.Context, raw []byte, v spec.RoomVersion, built *events.PDU, srv spec.ServerName) (*events.PDU, error) {
	p, err := VerifyRemotePDU(ctx, raw, v, s.federation)
	if err != nil || p.EventID() != built.EventID() {
		return nil, spec.NewError(spec.ErrUnknown, "%s returned another event for the invite", srv).WithStatus(502)
	}
	sigs := gjson.GetBytes(p.JSON(), "signatures."+gjson.Escape(string(srv)))
	checked := 0
	var verr error
	sigs.ForEach(func(k, _ gjson.Result) bool {
		pub, err := s.federation.VerifyKey(ctx, string(srv), k.String(), s.now())
		if err == nil {
			err = events.VerifyEvent(p.JSON(), v, string(srv), k.String(), pub)
		}
		verr = err
		checked++
		return err == nil
	})
	if checked == 0 || verr != nil {
		return nil, spec.NewError(spec.ErrUnknown, "%s did not sign the invite: %v", srv, verr).WithStatus(502)
	}
	return p, nil
}

// leaveRemote rejects an invite to, or rescinds a knock on, a room not held
// here: make_leave and send_leave on the server the outlier came through.
func (s *Service) leaveRemote(ctx context.Context, user spec.UserID, room spec.RoomID, o *outlier, reason string) (spec.EventID, error) {
	fed := s.federation
	if fed == nil {
		return "", errNotInRoom(room)
	}
	tmpl, v, err := fed.MakeMember(ctx, o.server, room, user, spec.Leave)
	if err != nil {
		return "", err
	}
	extra := map[string]json.RawMessage{}
	if reason != "" {
		extra["reason"], _ = json.Marshal(reason)
	}
	leave, err := s.memberFromTemplate(tmpl, v, user, room, spec.Leave, extra)
	if err != nil {
		return "", remoteFailure(err, "cannot leave %s through %s", room, o.server)
	}
	if err := fed.SendLeave(ctx, o.server, room, leave); err != nil {
		return "", err
	}
	// Kept as a left room, so that every device of the user learns it.
	return leave.EventID(), s.storeRemoteMembership(ctx, &outlier{membership: spec.Leave, pdu: leave, state: o.state, server: o.server})
}

// KnockRemote knocks on a room this server does not hold, through the
// servers named (make_knock and send_knock on the first that accepts). It
// reports false when the room is held here or federation is off: the
// knock is then a local change.
func (s *Service) KnockRemote(ctx context.Context, user spec.UserID, room spec.RoomID, via []spec.ServerName, reason string) (bool, error) {
	fed := s.federation
	if fed == nil || s.room(room) != nil || len(via) == 0 {
		return false, nil
	}
	var last error = spec.NotFound("no server to knock on %s through", room)
	for _, srv := range via {
		if !s.federation.Allowed(srv) {
			continue
		}
		if last = s.knockVia(ctx, user, room, srv, reason); last == nil {
			return true, nil
		}
		s.log.Info().Str("room_id", string(room)).Str("via", string(srv)).Err(last).Msg("federation: knock failed")
	}
	return true, remoteFailure(last, "cannot knock on %s through %v", room, via)
}

// remoteFailure is err for the client: a Matrix error as it is, anything
// else (a remote's malformed answer) a 502 naming what failed.
func remoteFailure(err error, format string, args ...any) error {
	var serr *spec.Error
	if err == nil || errors.As(err, &serr) {
		return err
	}
	return spec.NewError(spec.ErrUnknown, format+": %v", append(args, err)...).WithStatus(502)
}

func (s *Service) knockVia(ctx context.Context, user spec.UserID, room spec.RoomID, srv spec.ServerName, reason string) error {
	fed := s.federation
	tmpl, v, err := fed.MakeMember(ctx, srv, room, user, spec.Knock)
	if err != nil {
		return err
	}
	extra := map[string]json.RawMessage{}
	if reason != "" {
		extra["reason"], _ = json.Marshal(reason)
	}
	knock, err := s.memberFromTemplate(tmpl, v, user, room, spec.Knock, extra)
	if err != nil {
		return err
	}
	raw, err := fed.SendKnock(ctx, srv, room, knock)
	if err != nil {
		return err
	}
	o := &outlier{membership: spec.Knock, pdu: knock, server: srv}
	if o.state, err = s.verifyRoomState(ctx, raw, v, room, s.federation); err != nil {
		return fmt.Errorf("send_knock answer: %w", err)
	}
	return s.storeRemoteMembership(ctx, o)
}

// The resident server's side of leaves and knocks.

// MakeMember answers make_leave and make_knock: the template of a remote
// user's member event, built on the room's current state.
func (s *Service) MakeMember(ctx context.Context, room spec.RoomID, user spec.UserID, membership string, supported []spec.RoomVersion) ([]byte, spec.RoomVersion, error) {
	r := s.room(room)
	if r == nil {
		return nil, "", spec.NotFound("no room %s is known to this server", room)
	}
	snap := r.cur.Load()
	current := snap.membership(user)
	switch membership {
	case spec.Leave:
		if current != spec.Invite && current != spec.Join && current != spec.Knock {
			return nil, "", spec.Forbidden("%s is not in the room", user)
		}
	case spec.Knock:
		if !slices.Contains(supported, r.version) {
			return nil, "", spec.NewError(spec.ErrIncompatibleRoomVer, "the room's version %s is not one the knocking server supports", r.version).
				With("room_version", string(r.version))
		}
		rule := ""
		if ev := snap.get(spec.MRoomJoinRules, ""); ev != nil {
			rule = ev.Content().Get("join_rule").String()
		}
		switch {
		case !r.version.Knocking() || (rule != "knock" && !(rule == "knock_restricted" && r.version.KnockRestricted())):
			return nil, "", spec.Forbidden("the room does not allow knocking")
		case current == spec.Ban:
			return nil, "", spec.Forbidden("%s is banned from the room", user)
		case current == spec.Join || current == spec.Invite:
			return nil, "", spec.Forbidden("%s is already %s", user, current)
		}
	default:
		return nil, "", spec.InvalidParam("no template for membership %q", membership)
	}
	return s.memberTemplate(r, snap, user, membership)
}

// memberTemplate is the unsigned member event of a remote user, for its
// server to complete and sign.
func (s *Service) memberTemplate(r *liveRoom, snap *snapshot, user spec.UserID, membership string) ([]byte, spec.RoomVersion, error) {
	if r.version.EventIDInEvent() {
		return nil, "", spec.NewError(spec.ErrUnsupportedRoomVersion, "membership over federation in room version %s is not supported yet", r.version)
	}
	content, err := events.MarshalCanonical(map[string]string{"membership": membership})
	if err != nil {
		return nil, "", err
	}
	return s.memberTemplateContent(r, snap, user, content)
}

// memberTemplateContent is memberTemplate with the content given (a
// restricted join names its authoriser).
func (s *Service) memberTemplateContent(r *liveRoom, snap *snapshot, user spec.UserID, content []byte) ([]byte, spec.RoomVersion, error) {
	if r.version.EventIDInEvent() {
		return nil, "", spec.NewError(spec.ErrUnsupportedRoomVersion, "membership over federation in room version %s is not supported yet", r.version)
	}
	sk := string(user)
	auth := []spec.EventID{}
	for _, k := range authrules.AuthEventKeys(spec.MRoomMember, &sk, user, gjson.ParseBytes(content), r.version) {
		if ev := snap.state.Get(k.Type, k.StateKey); ev != nil {
			auth = append(auth, ev.EventID())
		}
	}
	prev := []spec.EventID{}
	for _, e := range snap.extremity {
		prev = append(prev, e.EventID())
	}
	tmpl := map[string]any{
		"type": spec.MRoomMember, "state_key": sk, "sender": user, "room_id": r.id,
		"content": json.RawMessage(content), "prev_events": prev, "auth_events": auth,
		"depth": snap.depth + 1, "origin_server_ts": s.now().UnixMilli(),
	}
	if !r.version.AtLeast11() {
		tmpl["origin"] = user.Server()
	}
	b, err := json.Marshal(tmpl)
	return b, r.version, err
}

// SendMember accepts a remote user's leave or knock (send_leave v2,
// send_knock) and returns, for a knock, the room's stripped state in full
// (knock_room_state).
func (s *Service) SendMember(ctx context.Context, origin spec.ServerName, room spec.RoomID, eventID spec.EventID, raw []byte, membership string, keys KeySource) ([]json.RawMessage, error) {
	r := s.room(room)
	if r == nil {
		return nil, spec.NotFound("no room %s is known to this server", room)
	}
	pdu, err := VerifyRemotePDU(ctx, raw, r.version, keys)
	if err != nil {
		return nil, err
	}
	switch {
	case pdu.EventID() != eventID || pdu.RoomID() != room:
		return nil, spec.InvalidParam("the event is not %s in %s", eventID, room)
	case pdu.Type() != spec.MRoomMember || pdu.Content().Get("membership").String() != membership:
		return nil, spec.InvalidParam("the event is not a %s", membership)
	case stateKeyOf(pdu) != string(pdu.Sender()) || pdu.Sender().Server() != origin:
		return nil, spec.Forbidden("the %s must be of a user of %s, by that user", membership, origin)
	}
	if err := s.leases.hold(ctx, r.id); err != nil {
		return nil, err
	}
	r.lockWrites()
	_, err = s.acceptRemote(ctx, r, pdu, true, nil)
	r.writeMu.Unlock()
	if err != nil {
		return nil, err
	}
	if membership != spec.Knock {
		return nil, nil
	}
	return remoteRoomState(r.cur.Load(), ""), nil
}

// memberFromTemplate completes and signs a local user's member event from
// a make_join, make_leave or make_knock template.
func (s *Service) memberFromTemplate(tmpl []byte, v spec.RoomVersion, user spec.UserID, room spec.RoomID, membership string, extra map[string]json.RawMessage) (*events.PDU, error) {
	if !v.Supported() || v.EventIDInEvent() {
		return nil, spec.NewError(spec.ErrUnsupportedRoomVersion, "membership over federation in room version %q is not supported", v)
	}
	t := gjson.ParseBytes(tmpl)
	if t.Get("type").String() != spec.MRoomMember || t.Get("state_key").String() != string(user) ||
		t.Get("sender").String() != string(user) || t.Get("room_id").String() != string(room) {
		return nil, fmt.Errorf("make_%s returned a template for another event", membership)
	}
	content := map[string]json.RawMessage{}
	for k, v := range extra {
		content[k] = v
	}
	if c := t.Get("content"); c.IsObject() {
		c.ForEach(func(k, v gjson.Result) bool {
			if k.String() == "membership" || k.String() == "join_authorised_via_users_server" {
				content[k.String()] = json.RawMessage(v.Raw)
			}
			return true
		})
	}
	if want, _ := json.Marshal(membership); string(content["membership"]) != string(want) {
		return nil, fmt.Errorf("make_%s returned a template of another membership", membership)
	}
	cb, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	if cb, err = events.CanonicalObject(cb); err != nil {
		return nil, err
	}
	ids := func(key string) []spec.EventID {
		out := []spec.EventID{}
		for _, id := range t.Get(key).Array() {
			out = append(out, spec.EventID(id.String()))
		}
		return out
	}
	sk := string(user)
	return events.Build(events.ProtoEvent{
		Type: spec.MRoomMember, StateKey: &sk, Sender: user, RoomID: room, Content: cb,
		PrevEvents: ids("prev_events"), AuthEvents: ids("auth_events"), Depth: t.Get("depth").Int(),
		OriginServerTS: s.now().UnixMilli(),
	}, v, s.key)
}

// LookupAlias resolves an alias: this server's from its table, with the
// servers in the room (this one first); another server's by asking it
// (query/directory), with federation on. The room is "" when the alias is
// not known.
func (s *Service) LookupAlias(ctx context.Context, alias spec.RoomAlias) (spec.RoomID, []spec.ServerName, error) {
	if alias.Server() != s.server {
		fed := s.federation
		if fed == nil || !fed.Allowed(alias.Server()) {
			return "", nil, nil
		}
		return fed.QueryDirectory(ctx, alias.Server(), alias)
	}
	id, err := s.ResolveAlias(ctx, alias)
	if err != nil || id == "" {
		return "", nil, err
	}
	servers := []spec.ServerName{s.server}
	for _, srv := range s.ServersInRoom(id) {
		if srv != s.server {
			servers = append(servers, srv)
		}
	}
	return id, servers, nil
}
