package federation

import (
	"context"
	"encoding/json"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/spec"
)

// The ephemeral EDUs: typing (m.typing), read receipts (m.receipt) and
// presence (m.presence), both ways. None is persisted: typing and presence
// live in sync's memory, a receipt is stored by sync as a local one is. What
// this server sends is best effort: kept in memory per destination beside
// the PDU queue, sent with its next transaction, lost on a restart.

// Ephemeral is where the typing, receipts and presence of other servers'
// users go (sync).
type Ephemeral interface {
	RemoteTyping(room spec.RoomID, user spec.UserID, typing bool, timeout time.Duration)
	RemoteReceipt(ctx context.Context, room spec.RoomID, user spec.UserID, eventID spec.EventID, thread string, ts int64) error
	RemotePresence(user spec.UserID, state string, statusMsg *string, lastActiveAgo int64)
}

// remoteTypingTimeout is how long a remote user's typing lasts without a
// renewal (the sending server sends typing: false when it ends sooner).
const remoteTypingTimeout = 30 * time.Second

// typingEDU: m.typing, a remote user started or stopped typing.
func (s *Service) typingEDU(_ context.Context, origin spec.ServerName, content json.RawMessage) error {
	c := gjson.ParseBytes(content)
	room, user := spec.RoomID(c.Get("room_id").String()), spec.UserID(c.Get("user_id").String())
	if s.ephemeral == nil || !s.joinedFrom(origin, room, user) {
		return nil
	}
	s.ephemeral.RemoteTyping(room, user, c.Get("typing").Bool(), remoteTypingTimeout)
	return nil
}

// receiptEDU: m.receipt, remote users' public read receipts by room.
func (s *Service) receiptEDU(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	if s.ephemeral == nil {
		return nil
	}
	gjson.ParseBytes(content).ForEach(func(room, byType gjson.Result) bool {
		byType.Get("m\\.read").ForEach(func(user, r gjson.Result) bool {
			ids := r.Get("event_ids").Array()
			id := spec.RoomID(room.String())
			if len(ids) == 0 || !s.joinedFrom(origin, id, spec.UserID(user.String())) {
				return true
			}
			err := s.ephemeral.RemoteReceipt(ctx, id, spec.UserID(user.String()), spec.EventID(ids[len(ids)-1].String()),
				r.Get("data.thread_id").String(), r.Get("data.ts").Int())
			if err != nil {
				s.log.Info().Str("origin", string(origin)).Err(err).Msg("federation: dropped a receipt")
			}
			return true
		})
		return true
	})
	return nil
}

// presenceEDU: m.presence, dropped unless presence over federation is on.
func (s *Service) presenceEDU(_ context.Context, origin spec.ServerName, content json.RawMessage) error {
	if s.ephemeral == nil || !s.cfg.Presence {
		return nil
	}
	for _, p := range gjson.GetBytes(content, "push").Array() {
		user, err := spec.ParseUserID(p.Get("user_id").String())
		if err != nil || user.Server() != origin || len(s.rooms.UsersSharingRoomsWith(user)) < 2 {
			continue // only users who share a room with one of ours
		}
		var msg *string
		if m := p.Get("status_msg"); m.Type == gjson.String {
			v := m.String()
			msg = &v
		}
		state := p.Get("presence").String()
		if state == "online" || state == "offline" || state == "unavailable" {
			s.ephemeral.RemotePresence(user, state, msg, p.Get("last_active_ago").Int())
		}
	}
	return nil
}

// joinedFrom reports whether user is of origin and joined to room.
func (s *Service) joinedFrom(origin spec.ServerName, room spec.RoomID, user spec.UserID) bool {
	u, err := spec.ParseUserID(string(user))
	return err == nil && u.Server() == origin && s.rooms.Membership(u, room) == spec.Join
}

// Typing sends a local user's typing to the room's other servers.
func (p *Peers) Typing(room spec.RoomID, user spec.UserID, typing bool) {
	p.sendEDU(room, user, "m.typing", map[string]any{"room_id": room, "user_id": user, "typing": typing})
}

// Receipt sends a local user's public read receipt to the room's other
// servers.
func (p *Peers) Receipt(room spec.RoomID, user spec.UserID, eventID spec.EventID, thread string, ts int64) {
	data := map[string]any{"ts": ts}
	if thread != "" {
		data["thread_id"] = thread
	}
	p.sendEDU(room, user, "m.receipt", map[string]any{string(room): map[string]any{"m.read": map[string]any{
		string(user): map[string]any{"event_ids": []spec.EventID{eventID}, "data": data}}}})
}

// Presence sends a local user's presence to the servers of those who share
// a room with them, only when presence over federation is on.
func (p *Peers) Presence(user spec.UserID, state string, statusMsg *string, lastActiveAgo int64, currentlyActive bool) {
	if !p.cfg.Presence {
		return
	}
	push := map[string]any{"user_id": user, "presence": state, "last_active_ago": lastActiveAgo, "currently_active": currentlyActive}
	if statusMsg != nil {
		push["status_msg"] = *statusMsg
	}
	p.sendEDU("", user, "m.presence", map[string]any{"push": []any{push}})
}

// sendEDU sends an ephemeral EDU of a local user to the servers in room,
// or for presence (room "") to those of the users sharing a room with them.
func (p *Peers) sendEDU(room spec.RoomID, user spec.UserID, typ string, content any) {
	s := p.service()
	if s == nil {
		return
	}
	for _, d := range s.eduDestinations(room, user) {
		if err := p.SendEphemeralEDU(d, typ, content); err != nil {
			p.log.Warn().Str("edu_type", typ).Err(err).Msg("federation: an EDU not sent")
		}
	}
}

func (s *Service) eduDestinations(room spec.RoomID, user spec.UserID) []spec.ServerName {
	var servers []spec.ServerName
	if room != "" {
		servers = s.rooms.ServersInRoom(room)
	} else {
		seen := map[spec.ServerName]bool{}
		for _, u := range s.rooms.UsersSharingRoomsWith(user) {
			if !seen[u.Server()] {
				seen[u.Server()] = true
				servers = append(servers, u.Server())
			}
		}
	}
	out := servers[:0:0]
	for _, d := range servers {
		if s.Allowed(d) { // never this server itself
			out = append(out, d)
		}
	}
	return out
}
