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

// receiveEphemeralEDU handles an EDU of origin if it is one of the
// ephemeral ones, and reports whether it was. An EDU about a user of
// another server, or about a room the user is not joined to, is dropped.
func (s *Service) receiveEphemeralEDU(ctx context.Context, origin spec.ServerName, typ string, content gjson.Result) bool {
	if s.ephemeral == nil {
		return typ == "m.typing" || typ == "m.receipt" || typ == "m.presence"
	}
	switch typ {
	case "m.typing":
		room, user := spec.RoomID(content.Get("room_id").String()), spec.UserID(content.Get("user_id").String())
		if s.joinedFrom(origin, room, user) {
			s.ephemeral.RemoteTyping(room, user, content.Get("typing").Bool(), remoteTypingTimeout)
		}
	case "m.receipt":
		content.ForEach(func(room, byType gjson.Result) bool {
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
	case "m.presence":
		if !s.cfg.Presence {
			return true // presence over federation is off: dropped
		}
		for _, p := range content.Get("push").Array() {
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
	default:
		return false
	}
	return true
}

// joinedFrom reports whether user is of origin and joined to room.
func (s *Service) joinedFrom(origin spec.ServerName, room spec.RoomID, user spec.UserID) bool {
	u, err := spec.ParseUserID(string(user))
	return err == nil && u.Server() == origin && s.rooms.Membership(u, room) == spec.Join
}

// outboundEDU is one ephemeral EDU of a local user on its way: for the
// servers in room, or for presence (room "") those sharing a room with the
// user.
type outboundEDU struct {
	room spec.RoomID
	user spec.UserID
	edu  json.RawMessage
}

// maxPendingEDUs bounds the EDUs waiting to be routed; past it they are
// dropped (they are best effort).
const maxPendingEDUs = 1024

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

func (p *Peers) sendEDU(room spec.RoomID, user spec.UserID, typ string, content any) {
	b, err := json.Marshal(map[string]any{"edu_type": typ, "content": content})
	if err != nil {
		return
	}
	select {
	case p.edus <- outboundEDU{room: room, user: user, edu: b}:
	default:
		p.log.Warn().Str("edu_type", typ).Msg("federation: too many EDUs waiting, one dropped")
	}
}

// routeEDUs queues each local EDU for its destinations until stopping.
func (s *Service) routeEDUs() {
	for {
		select {
		case e := <-s.edus:
			for _, d := range s.eduDestinations(e) {
				s.queue(d).addEDU(e.edu)
			}
		case <-s.stopping:
			return
		}
	}
}

func (s *Service) eduDestinations(e outboundEDU) []spec.ServerName {
	var servers []spec.ServerName
	if e.room != "" {
		servers = s.rooms.ServersInRoom(e.room)
	} else {
		seen := map[spec.ServerName]bool{}
		for _, u := range s.rooms.UsersSharingRoomsWith(e.user) {
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

// maxQueuedEDUs bounds the EDUs kept for one destination while it is
// unreachable; the oldest go first.
const maxQueuedEDUs = 200

// addEDU keeps an EDU for the destination's next transaction.
func (q *queue) addEDU(edu json.RawMessage) {
	q.eduMu.Lock()
	q.edus = append(q.edus, edu)
	if len(q.edus) > maxQueuedEDUs {
		q.edus = q.edus[len(q.edus)-maxQueuedEDUs:]
	}
	q.eduMu.Unlock()
	q.poke(false)
}

// takeEDUs takes up to a transaction's worth of EDUs.
func (q *queue) takeEDUs() []json.RawMessage {
	q.eduMu.Lock()
	defer q.eduMu.Unlock()
	n := min(len(q.edus), maxEDUs)
	out := q.edus[:n:n]
	q.edus = q.edus[n:]
	return out
}

// restoreEDUs puts back EDUs a failed transaction did not deliver.
func (q *queue) restoreEDUs(edus []json.RawMessage) {
	if len(edus) == 0 {
		return
	}
	q.eduMu.Lock()
	q.edus = append(edus, q.edus...)
	if len(q.edus) > maxQueuedEDUs {
		q.edus = q.edus[len(q.edus)-maxQueuedEDUs:]
	}
	q.eduMu.Unlock()
}
