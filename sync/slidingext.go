package sync

import (
	"context"
	"encoding/json"

	"github.com/chatalot/chatalot/spec"
)

// extensions fills the extensions asked for; empty reports that none has
// anything new. Each reads from memory first and touches the database only
// when the in-memory position says something changed.
func (b *slidingBuild) extensions(ctx context.Context, resp *slidingResponse, view map[spec.RoomID]*viewRoom, inList map[string][]spec.RoomID) (bool, error) {
	s := b.s
	ext := b.q.ext
	empty := true
	var since Token
	if b.prev != nil {
		since = b.prev.token
	}
	// newToConn: a room this answer sends whole, or a new connection: its
	// receipts and typing are sent in full too.
	newToConn := func(id spec.RoomID) bool {
		r := resp.Rooms[id]
		return b.prev == nil || r != nil && r.Initial
	}

	if td := ext.toDevice; td != nil && s.keys != nil {
		msgs, last, err := s.keys.ToDevice(ctx, b.user, b.device, td.since, b.now.Pos, td.limit)
		if err != nil {
			return false, err
		}
		if msgs == nil {
			msgs = []json.RawMessage{}
		}
		resp.Extensions.ToDevice = &toDeviceResponse{NextBatch: positionString(max(last, td.since)), Events: msgs}
		if len(msgs) > 0 {
			empty = false
		}
	}

	if ext.e2ee && s.keys != nil {
		e := &e2eeResponse{}
		var err error
		if e.OTKCounts, e.FallbackKeyTypes, err = s.keyCounts(ctx, b.user, b.device); err != nil {
			return false, err
		}
		if b.prev != nil {
			quiet := s.notifier.quietSince(b.user, since.Pos, since.Serial)
			if e.DeviceLists, err = s.deviceLists(ctx, b.req, b.now, quiet); err != nil {
				return false, err
			}
			if e.DeviceLists != nil {
				empty = false
			}
		}
		resp.Extensions.E2EE = e
	}

	if sc := ext.accountData; sc != nil && s.acct != nil {
		ad := &accountDataResponse{}
		if b.prev == nil || s.acct.AccountDataPosition(b.user) > since.Pos {
			global, perRoom, err := s.acct.AccountData(ctx, b.user, since.Pos, b.now.Pos)
			if err != nil {
				return false, err
			}
			ad.Global = global
			for _, id := range b.scope(sc, view, inList) {
				if evs := perRoom[id]; len(evs) > 0 {
					if ad.Rooms == nil {
						ad.Rooms = map[spec.RoomID][]json.RawMessage{}
					}
					ad.Rooms[id] = evs
				}
			}
		}
		if b.prev != nil {
			// Rooms new to the connection get their account data whole.
			var fresh []spec.RoomID
			for _, id := range b.scope(sc, view, inList) {
				if newToConn(id) {
					fresh = append(fresh, id)
				}
			}
			if len(fresh) > 0 {
				_, perRoom, err := s.acct.AccountData(ctx, b.user, 0, b.now.Pos)
				if err != nil {
					return false, err
				}
				for _, id := range fresh {
					if evs := perRoom[id]; len(evs) > 0 {
						if ad.Rooms == nil {
							ad.Rooms = map[spec.RoomID][]json.RawMessage{}
						}
						ad.Rooms[id] = evs
					}
				}
			}
		}
		if len(ad.Global) > 0 || len(ad.Rooms) > 0 {
			resp.Extensions.AccountData = ad
			empty = false
		}
	}

	if sc := ext.receipts; sc != nil {
		out := &roomEventsResponse{}
		for _, id := range b.scope(sc, view, inList) {
			if view[id].cand.Membership != spec.Join {
				continue
			}
			from := since.Pos
			if newToConn(id) {
				from = 0
			}
			ev, err := s.receiptsSince(ctx, b.user, id, from, b.now.Pos)
			if err != nil {
				return false, err
			}
			if ev != nil {
				if out.Rooms == nil {
					out.Rooms = map[spec.RoomID]json.RawMessage{}
				}
				out.Rooms[id] = ev
			}
		}
		if len(out.Rooms) > 0 {
			resp.Extensions.Receipts = out
			empty = false
		}
	}

	if sc := ext.typing; sc != nil {
		out := &roomEventsResponse{}
		for _, id := range b.scope(sc, view, inList) {
			if view[id].cand.Membership != spec.Join {
				continue
			}
			if ev := s.typingSince(id, since.Serial, newToConn(id)); ev != nil {
				if out.Rooms == nil {
					out.Rooms = map[spec.RoomID]json.RawMessage{}
				}
				out.Rooms[id] = ev
			}
		}
		if len(out.Rooms) > 0 {
			resp.Extensions.Typing = out
			empty = false
		}
	}
	return empty, nil
}

// scope lists the rooms in view that an extension covers.
func (b *slidingBuild) scope(sc *roomScope, view map[spec.RoomID]*viewRoom, inList map[string][]spec.RoomID) []spec.RoomID {
	seen := map[spec.RoomID]bool{}
	var out []spec.RoomID
	add := func(id spec.RoomID) {
		if !seen[id] && view[id] != nil {
			seen[id] = true
			out = append(out, id)
		}
	}
	for _, name := range b.q.listOrder {
		if sc.lists == nil || sc.lists[name] {
			for _, id := range inList[name] {
				add(id)
			}
		}
	}
	for _, id := range sortedRoomIDs(b.subs) {
		if sc.allRooms || sc.rooms[id] {
			add(id)
		}
	}
	return out
}

// keyCounts is the device's one-time key counts, with signed_curve25519
// always present (the SDK reads a missing count as "unchanged" and would
// never upload more once they ran out), and its unused fallback key types.
func (s *Service) keyCounts(ctx context.Context, user spec.UserID, device string) (map[string]int, []string, error) {
	counts, err := s.keys.OneTimeKeyCounts(ctx, user, device)
	if err != nil {
		return nil, nil, err
	}
	if counts == nil {
		counts = map[string]int{}
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		counts["signed_curve25519"] = 0
	}
	fb, err := s.keys.UnusedFallbackKeyTypes(ctx, user, device)
	if err != nil {
		return nil, nil, err
	}
	if fb == nil {
		fb = []string{}
	}
	return counts, fb, nil
}
