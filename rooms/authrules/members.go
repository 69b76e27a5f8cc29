package authrules

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// The rules for m.room.member: one function per membership an event asks
// for, each checking the change from the sender's and the target's current
// memberships.

// memberRules are the rules for m.room.member (v10/v11 rule 4, v12 rule 5),
// one set per membership the event asks for.
func (c *checker) memberRules() decision {
	content := c.ev.Content()
	target, membership, d, ok := c.memberTarget()
	if !ok {
		return d
	}
	authoriser, d, ok := c.joinAuthoriser(content)
	if !ok {
		return d
	}
	senderMembership, d, ok := c.membership(c.sender)
	if !ok {
		return d
	}
	targetMembership, d, ok := c.membership(target)
	if !ok {
		return d
	}
	t := transition{target: target, senderMembership: senderMembership, targetMembership: targetMembership}
	switch membership {
	case spec.Join:
		return c.joinRules(t, authoriser)
	case spec.Invite:
		if tpi := field(content, "third_party_invite"); tpi.Exists() {
			return c.thirdPartyInviteRules(tpi, t)
		}
		return c.inviteRules(t)
	case spec.Leave:
		return c.leaveRules(t)
	case spec.Ban:
		return c.banRules(t)
	case spec.Knock:
		if c.v.Knocking() { // v7 added knocking: before, an unknown membership
			return c.knockRules(t)
		}
	}
	return deny("member.membership", "unknown membership %q", membership)
}

// memberTarget reads the user an m.room.member event is about (its
// state_key) and the membership it asks for.
func (c *checker) memberTarget() (spec.UserID, string, decision, bool) {
	sk, ok := c.ev.StateKey()
	if !ok {
		return "", "", deny("member.state_key", "m.room.member has no state_key"), false
	}
	m := field(c.ev.Content(), "membership")
	if !m.Exists() {
		return "", "", deny("member.membership", "m.room.member has no membership"), false
	}
	if m.Type != gjson.String {
		return "", "", deny("member.membership", "membership is not a string"), false
	}
	target, err := spec.ParseUserID(sk)
	if err != nil {
		return "", "", deny("member.state_key", "the state_key of m.room.member is not a user ID"), false
	}
	return target, m.Str, decision{}, true
}

// joinAuthoriser reads content.join_authorised_via_users_server, the user
// who authorised a restricted join (v8); "" when there is none. Before v8
// the key means nothing and is ignored.
func (c *checker) joinAuthoriser(content gjson.Result) (spec.UserID, decision, bool) {
	a := field(content, "join_authorised_via_users_server")
	if !a.Exists() || !c.v.RestrictedJoins() {
		return "", decision{}, true
	}
	authoriser, err := userIDOf(a)
	if err != nil {
		return "", deny("member.authorised_via", "join_authorised_via_users_server is not a valid user ID"), false
	}
	// The signature itself is verified with the other signatures on
	// receipt; here the event must at least carry one from that server.
	sigs := field(c.ev.Get("signatures"), string(authoriser.Server()))
	if !sigs.IsObject() || len(sigs.Map()) == 0 {
		return "", deny("member.authorised_via.signature",
			"the event is not signed by the server of join_authorised_via_users_server"), false
	}
	return authoriser, decision{}, true
}

// transition is a membership change: its target and the current
// memberships of the sender and the target ("" for none).
type transition struct {
	target           spec.UserID
	senderMembership string
	targetMembership string
}

// inviteRules are the rules for membership invite without
// third_party_invite.
func (c *checker) inviteRules(t transition) decision {
	if t.senderMembership != spec.Join {
		return deny("member.invite.sender_not_joined", "the sender is not joined to the room")
	}
	if t.targetMembership == spec.Join || t.targetMembership == spec.Ban {
		return deny("member.invite.target", "the target is already joined or is banned")
	}
	if c.pl.UserLevel(c.sender) >= c.pl.Invite {
		return allow("member.invite")
	}
	return deny("member.invite.level", "the sender's power level is below the invite level")
}

// leaveRules are the rules for membership leave: leaving, rejecting an
// invite or withdrawing a knock for oneself; kicking and unbanning others.
func (c *checker) leaveRules(t transition) decision {
	if c.sender == t.target {
		switch t.targetMembership {
		case spec.Invite, spec.Join, spec.Knock: // knock exists from v7 (see membership)
			return allow("member.leave.self")
		}
		return deny("member.leave.self", "only an invited, joined or knocking user can leave")
	}
	if t.senderMembership != spec.Join {
		return deny("member.leave.sender_not_joined", "the sender is not joined to the room")
	}
	senderLevel := c.pl.UserLevel(c.sender)
	if t.targetMembership == spec.Ban && senderLevel < c.pl.Ban {
		return deny("member.leave.unban", "the sender's power level is below the ban level")
	}
	if senderLevel >= c.pl.Kick && c.pl.UserLevel(t.target) < senderLevel {
		return allow("member.leave.kick")
	}
	return deny("member.leave.kick", "the sender's power level is below the kick level or not above the target's")
}

// banRules are the rules for membership ban.
func (c *checker) banRules(t transition) decision {
	if t.senderMembership != spec.Join {
		return deny("member.ban.sender_not_joined", "the sender is not joined to the room")
	}
	senderLevel := c.pl.UserLevel(c.sender)
	if senderLevel >= c.pl.Ban && c.pl.UserLevel(t.target) < senderLevel {
		return allow("member.ban")
	}
	return deny("member.ban.level", "the sender's power level is below the ban level or not above the target's")
}

// knockRules are the rules for membership knock (v7).
func (c *checker) knockRules(t transition) decision {
	rule, d, ok := c.joinRule()
	if !ok {
		return d
	}
	// v10: knock_restricted also allows knocking.
	if rule != "knock" && !(rule == "knock_restricted" && c.v.KnockRestricted()) {
		return deny("member.knock.join_rule", "the join rule does not allow knocking")
	}
	if c.sender != t.target {
		return deny("member.knock.sender", "a user can only knock for themselves")
	}
	switch t.senderMembership {
	case spec.Ban, spec.Invite, spec.Join:
		return deny("member.knock.membership", "a banned, invited or joined user cannot knock")
	}
	return allow("member.knock")
}

// joinRules are the rules for membership join.
func (c *checker) joinRules(t transition, authoriser spec.UserID) decision {
	// The creator's own first join right after the create event. Before
	// v11 the creator is content.creator; from v11 it is the create's sender.
	prev := c.ev.PrevEvents()
	if len(prev) == 1 && prev[0] == c.create.EventID() {
		creator := c.create.Sender()
		if !c.v.AtLeast11() {
			creator, _ = userIDOf(field(c.create.Content(), "creator"))
		}
		if creator != "" && t.target == creator {
			return allow("member.join.creator")
		}
	}
	if c.sender != t.target {
		return deny("member.join.sender", "a user can only join for themselves")
	}
	if t.senderMembership == spec.Ban {
		return deny("member.join.banned", "the user is banned from the room")
	}
	rule, d, ok := c.joinRule()
	if !ok {
		return d
	}
	// Each join rule exists from the version that introduced it; an unknown
	// one allows no join.
	switch {
	case rule == "invite", rule == "knock" && c.v.Knocking():
		if t.senderMembership == spec.Invite || t.senderMembership == spec.Join {
			return allow("member.join.invited")
		}
		return deny("member.join.not_invited", "the room is invite-only and the user is not invited")
	case rule == "restricted" && c.v.RestrictedJoins(), rule == "knock_restricted" && c.v.KnockRestricted():
		if t.senderMembership == spec.Invite || t.senderMembership == spec.Join {
			return allow("member.join.invited")
		}
		if authoriser == "" {
			return deny("member.join.restricted", "the join has no join_authorised_via_users_server")
		}
		am, d, ok := c.membership(authoriser)
		if !ok {
			return d
		}
		if am != spec.Join {
			return deny("member.join.restricted", "join_authorised_via_users_server is not joined to the room")
		}
		if c.pl.UserLevel(authoriser) < c.pl.Invite {
			return deny("member.join.restricted", "join_authorised_via_users_server cannot invite users")
		}
		return allow("member.join.restricted")
	case rule == "public":
		return allow("member.join.public")
	}
	return deny("member.join.rule", "the join rule does not allow joining")
}

// thirdPartyInviteRules checks an invite with content.third_party_invite as
// far as Chatalot can, and then refuses it: verifying the identity server's
// signature in "signed" is not supported, so such an invite is never allowed.
func (c *checker) thirdPartyInviteRules(tpi gjson.Result, t transition) decision {
	if t.targetMembership == spec.Ban {
		return deny("member.invite.third_party.banned", "the target is banned")
	}
	signed := field(tpi, "signed")
	if !signed.IsObject() {
		return deny("member.invite.third_party.signed", "third_party_invite has no signed object")
	}
	mxid, token := field(signed, "mxid"), field(signed, "token")
	if mxid.Type != gjson.String || token.Type != gjson.String {
		return deny("member.invite.third_party.signed", "signed has no mxid or token")
	}
	if mxid.Str != string(t.target) {
		return deny("member.invite.third_party.mxid", "signed.mxid is not the state_key")
	}
	invite, d, ok := c.get(spec.MRoomThirdPartyInvite, token.Str)
	if !ok {
		return d
	}
	if invite == nil {
		return deny("member.invite.third_party.token", "no m.room.third_party_invite matches the token")
	}
	if invite.Sender() != c.sender {
		return deny("member.invite.third_party.sender", "the sender did not send the m.room.third_party_invite")
	}
	return deny("member.invite.third_party.signature", "third-party invites are not supported by this server")
}

// joinRule returns the room's join rule, "" when there is no m.room.join_rules.
func (c *checker) joinRule() (string, decision, bool) {
	ev, d, ok := c.get(spec.MRoomJoinRules, "")
	if !ok {
		return "", d, false
	}
	if ev == nil {
		return "", decision{}, true
	}
	r := field(ev.Content(), "join_rule")
	if r.Type != gjson.String {
		return "", deny("join_rules.state", "the room's join_rule is not a string"), false
	}
	return r.Str, decision{}, true
}
