package rooms

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
)

// MembershipChange is what a membership endpoint, or a member state event
// sent with PUT /state, asks for.
type MembershipChange struct {
	Target     spec.UserID
	Membership string // join, invite, leave (leave of another user is a kick), ban, knock
	Reason     string
	Unban      bool // a leave that lifts a ban (/unban)
	// Content is more keys for the member event: a join's custom keys, or
	// a member state event's content (a per-room display name). The
	// server's own keys (membership, join_authorised_via_users_server)
	// are never taken from it.
	Content map[string]json.RawMessage

	// authorisedVia is the join_authorised_via_users_server of a join to
	// a restricted room; Change sets it.
	authorisedVia spec.UserID
}

// Change makes one membership change of the target: join (target =
// sender), invite, leave (a kick when target ≠ sender), ban, unban, knock.
// It makes the checks of the membership endpoints before the auth rules: a
// kick needs a target in the room, an unban a banned target, and a join
// that changes nothing sends nothing.
func (s *Service) Change(ctx context.Context, from Sender, id spec.RoomID, ch MembershipChange) (spec.EventID, error) {
	r := s.room(id)
	if r == nil {
		if o := s.outlierOf(ch.Target, id); o != nil && o.membership != spec.Leave && ch.Membership == spec.Leave && ch.Target == from.User {
			return s.leaveRemote(ctx, from.User, id, o, ch.Reason) // a rejected invite, a rescinded knock
		}
		if ch.Membership == spec.Join || ch.Membership == spec.Knock {
			return "", spec.NotFound("no room %s is known to this server", id)
		}
		return "", errNotInRoom(id)
	}
	if err := s.leases.hold(ctx, id); err != nil {
		return "", err
	}
	r.lockWrites()
	defer r.writeMu.Unlock()
	snap := r.cur.Load()
	current := snap.membership(ch.Target)
	if s.guard != nil { // blocked rooms, server-notices rooms (admin.go)
		if err := s.guard(ctx, id, from.User, ch.Target, ch.Membership, current); err != nil {
			return "", err
		}
	}
	if err := checkTransition(from.User, id, ch, current); err != nil {
		return "", err
	}
	if ch.Membership == spec.Join && current != spec.Invite && current != spec.Join {
		ch.authorisedVia = s.joinAuthoriser(snap, ch.Target)
	}
	content, err := s.memberContent(ctx, ch)
	if err != nil {
		return "", err
	}
	// Joining again with the same content is idempotent: the member
	// event already says it, and a client retrying /join must not add
	// events to the room.
	if ch.Membership == spec.Join {
		if same := sameState(snap, from.User, spec.MRoomMember, string(ch.Target), content); same != nil {
			return same.EventID(), nil
		}
	}
	if ch.Membership == spec.Invite && ch.Target.Server() != s.server && s.federation != nil {
		// The invitee's server signs the invite before it is committed.
		ev, err := s.inviteRemote(ctx, r, from.User, ch.Target, content)
		if err != nil {
			return "", err
		}
		return ev.PDU.EventID(), nil
	}
	b := s.begin(r)
	ev, err := b.add(spec.MRoomMember, strPtr(string(ch.Target)), from.User, content)
	if err != nil {
		return "", err
	}
	if err := b.commit(ctx, commitOpts{}); err != nil {
		return "", err
	}
	if ch.Membership == spec.Join {
		s.unforget(ctx, ch.Target, id)
	}
	return ev.PDU.EventID(), nil
}

// checkTransition refuses what the membership endpoints refuse although the
// auth rules would allow it (client-server API, POST /kick: "the kickee is
// not currently in the room" is a 403).
func checkTransition(sender spec.UserID, id spec.RoomID, ch MembershipChange, current string) error {
	kick := ch.Membership == spec.Leave && ch.Target != sender && !ch.Unban
	switch {
	case ch.Unban && current != spec.Ban:
		return spec.Forbidden("%s is not banned", ch.Target)
	case kick && current == spec.Ban:
		return spec.Forbidden("%s is banned; unban them instead", ch.Target)
	case kick && current != spec.Join && current != spec.Invite && current != spec.Knock:
		return spec.Forbidden("%s is not in the room", ch.Target)
	case ch.Membership == spec.Leave && ch.Target == sender && current == "":
		return errNotInRoom(id)
	}
	return nil
}

// sameState returns the current state event at (typ, key) if the sender sent
// it with exactly this content, so that setting it again is a no-op.
func sameState(snap *snapshot, sender spec.UserID, typ, key string, content []byte) *events.PDU {
	cur := snap.get(typ, key)
	if cur == nil || cur.Sender() != sender {
		return nil
	}
	if !bytes.Equal([]byte(cur.Content().Raw), contentOrEmpty(content)) {
		return nil
	}
	return cur
}

// SetMemberState sends a member event given as state (PUT
// /rooms/{roomId}/state/m.room.member/{userId}): it is the membership change
// the event describes, with the membership endpoints' checks and side
// effects, and the rest of the content kept (a per-room display name).
func (s *Service) SetMemberState(ctx context.Context, from Sender, id spec.RoomID, stateKey string, content []byte) (spec.EventID, error) {
	target, err := spec.ParseUserID(stateKey)
	if err != nil {
		return "", spec.InvalidParam("the state key of a member event must be a user ID: %v", err)
	}
	var c map[string]json.RawMessage
	if err := json.Unmarshal(contentOrEmpty(content), &c); err != nil {
		return "", spec.BadJSON("member event content: %v", err)
	}
	var membership, reason string
	if err := json.Unmarshal(c["membership"], &membership); err != nil {
		return "", spec.BadJSON("content.membership must be a string")
	}
	if raw, ok := c["reason"]; ok {
		if err := json.Unmarshal(raw, &reason); err != nil {
			return "", spec.BadJSON("content.reason must be a string")
		}
	}
	delete(c, "membership")
	delete(c, "reason")
	ch := MembershipChange{Target: target, Membership: membership, Reason: reason, Content: c}
	switch membership {
	case spec.Join, spec.Invite, spec.Knock, spec.Ban:
	case spec.Leave:
		// A leave of a banned user by another is an unban.
		ch.Unban = target != from.User && s.Membership(target, id) == spec.Ban
	default:
		return "", spec.BadJSON("content.membership must be join, invite, leave, ban or knock")
	}
	return s.Change(ctx, from, id, ch)
}

// memberContent builds the content of a change's member event: the
// caller's keys, then the membership and reason, then for joins, invites
// and knocks the target's profile where the caller gave none (as clients
// expect), then the server's own keys.
func (s *Service) memberContent(ctx context.Context, ch MembershipChange) ([]byte, error) {
	c := map[string]any{}
	for k, v := range ch.Content {
		switch k {
		case "membership", "join_authorised_via_users_server", "third_party_signed":
			// The server's to set; a join's third_party_signed is a
			// request parameter, not content.
		default:
			c[k] = v
		}
	}
	c["membership"] = ch.Membership
	if ch.Reason != "" {
		c["reason"] = ch.Reason
	}
	if (ch.Membership == spec.Join || ch.Membership == spec.Invite || ch.Membership == spec.Knock) && s.profiles != nil {
		name, avatar, err := s.profiles.Profile(ctx, ch.Target)
		if err == nil {
			if _, given := c["displayname"]; !given && name != "" {
				c["displayname"] = name
			}
			if _, given := c["avatar_url"]; !given && avatar != "" {
				c["avatar_url"] = avatar
			}
		}
	}
	if ch.authorisedVia != "" {
		via, err := json.Marshal(string(ch.authorisedVia))
		if err != nil {
			return nil, err
		}
		c["join_authorised_via_users_server"] = json.RawMessage(via)
	}
	return events.MarshalCanonical(c)
}
