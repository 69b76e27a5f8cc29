package rooms

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Backfill: when a client's /messages reaches the start of what this
// server holds of a federated room (a room joined over federation starts
// at its join; a gap ends at a backwards extremity), the history before it
// is asked of a server in the room (/backfill). The events come back
// verified and checked against their auth events, and are stored before
// everything the server holds: at negative stream positions, below every
// other event, the older the lower. So /messages, which pages by position,
// shows them in order before the room's known start; /sync, which delivers
// positions after a token, never sends them as new. They change no current
// state: they are history.

// Backfiller asks another server for a room's history (the federation
// package's client side, part of RemoteServers).
type Backfiller interface {
	Backfill(ctx context.Context, srv spec.ServerName, room spec.RoomID, from []spec.EventID, limit int) ([][]byte, error)
	// Event is one event of srv (/event), for a backfilled event's auth
	// events this server lacks.
	Event(ctx context.Context, srv spec.ServerName, id spec.EventID) ([]byte, error)
}

// Bounds of one backfill.
const (
	backfillLimit     = 100              // events asked for
	backfillScan      = 200              // the room's oldest events looked at for missing prev events
	backfillRetry     = 30 * time.Second // after a backfill that got nothing
	backfillAuthFetch = 50               // auth events fetched
)

// minPosition is below every stream position, backfilled ones included.
const minPosition = math.MinInt64 + 1

// backfill asks a server in the room for the history before what this
// server holds, and stores what it answers; it returns how many events it
// stored. It does nothing in a room whose history is complete here.
func (s *Service) backfill(ctx context.Context, r *liveRoom) (int, error) {
	if s.federation == nil {
		return 0, nil
	}
	r.backfillMu.Lock()
	defer r.backfillMu.Unlock()
	if r.historyComplete || time.Now().Before(r.backfillAfter) {
		return 0, nil
	}
	from, err := s.backwardExtremities(ctx, r)
	if err != nil || len(from) == 0 {
		r.historyComplete = err == nil
		return 0, err
	}
	n, err := s.backfillFrom(ctx, r, from)
	if n == 0 {
		r.backfillAfter = time.Now().Add(backfillRetry)
	}
	return n, err
}

// backwardExtremities are the events the room's oldest held events follow
// and this server does not hold.
func (s *Service) backwardExtremities(ctx context.Context, r *liveRoom) ([]spec.EventID, error) {
	oldest, err := s.queryEvents(ctx, `WHERE e.room_id = $1 ORDER BY e.position LIMIT $2`, string(r.id), backfillScan)
	if err != nil {
		return nil, err
	}
	seen := map[spec.EventID]bool{}
	var out []spec.EventID
	for _, ev := range oldest {
		for _, id := range ev.PDU.PrevEvents() {
			if seen[id] || len(out) >= maxNamed {
				continue
			}
			seen[id] = true
			if p, err := s.dagEvent(ctx, id); err != nil {
				return nil, err
			} else if p == nil {
				out = append(out, id)
			}
		}
	}
	return out, nil
}

func (s *Service) backfillFrom(ctx context.Context, r *liveRoom, from []spec.EventID) (int, error) {
	var last error
	for _, srv := range s.ServersInRoom(r.id) {
		if srv == s.server || !s.federation.Allowed(srv) {
			continue
		}
		raws, err := s.federation.Backfill(ctx, srv, r.id, from, backfillLimit)
		if err != nil {
			last = err
			s.log.Info().Str("room_id", string(r.id)).Str("server", string(srv)).Err(err).Msg("federation: backfill failed")
			continue
		}
		n, err := s.storeBackfilled(ctx, r, srv, raws)
		if n > 0 || err != nil {
			s.log.Info().Str("room_id", string(r.id)).Str("server", string(srv)).Int("events", n).Err(err).Msg("federation: backfilled")
			return n, err
		}
	}
	return 0, last
}

// storeBackfilled verifies and checks the events a server answered and
// stores those this server lacks, oldest lowest.
func (s *Service) storeBackfilled(ctx context.Context, r *liveRoom, srv spec.ServerName, raws [][]byte) (int, error) {
	byID := map[spec.EventID]*events.PDU{}
	for _, raw := range raws[:min(len(raws), backfillLimit)] {
		p, err := s.verifyInRoom(ctx, r, raw, s.federation)
		if err != nil {
			s.log.Info().Str("room_id", string(r.id)).Err(err).Msg("federation: refused a backfilled event")
			continue
		}
		if held, err := s.dagEvent(ctx, p.EventID()); err != nil {
			return 0, err
		} else if held == nil {
			byID[p.EventID()] = p
		}
	}
	// Oldest first, so that a batch's events authorise the later ones.
	list := make([]*events.PDU, 0, len(byID))
	for _, p := range byID {
		list = append(list, p)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].Depth() != list[j].Depth() {
			return list[i].Depth() < list[j].Depth()
		}
		return list[i].EventID() < list[j].EventID()
	})
	create := r.cur.Load().get(spec.MRoomCreate, "")
	fetches := backfillAuthFetch
	var ok []*events.PDU
	for _, p := range list {
		auth, err := s.backfillAuth(ctx, r, srv, p, byID, &fetches)
		if err == nil {
			err = checkAgainstAuthEvents(p, auth, create)
		}
		if err != nil {
			s.log.Info().Str("room_id", string(r.id)).Str("event_id", string(p.EventID())).Err(err).Msg("federation: refused a backfilled event")
			delete(byID, p.EventID()) // nor may it authorise another
			continue
		}
		ok = append(ok, p)
	}
	if len(ok) == 0 {
		return 0, nil
	}
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		var low int64
		if err := tx.QueryRow(`SELECT coalesce(min(position), 0) FROM events`).Scan(&low); err != nil {
			return err
		}
		low = min(low, 0)
		// Newest highest: the batch sits below everything, in order.
		for i := len(ok) - 1; i >= 0; i-- {
			low--
			if err := insertEvent(tx, &Event{PDU: ok[i], Position: low}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store backfilled events: %w", err)
	}
	// Memory held the room's whole history it knew; it holds none of
	// these, which the database answers.
	r.histMu.Lock()
	r.rewritten++
	r.recentFloor = max(r.recentFloor, -1)
	r.histMu.Unlock()
	return len(ok), nil
}

// backfillAuth are a backfilled event's auth events: held, in the batch, or
// fetched from srv (checked against their own, and held as outliers).
func (s *Service) backfillAuth(ctx context.Context, r *liveRoom, srv spec.ServerName, p *events.PDU, batch map[spec.EventID]*events.PDU, fetches *int) ([]*events.PDU, error) {
	var out []*events.PDU
	for _, id := range p.AuthEvents() {
		if a := batch[id]; a != nil {
			out = append(out, a)
			continue
		}
		a, err := s.dagEvent(ctx, id)
		if err != nil {
			return nil, err
		}
		if a == nil {
			if *fetches <= 0 {
				return nil, fmt.Errorf("auth event %s is not held", id)
			}
			*fetches--
			raw, err := s.federation.Event(ctx, srv, id)
			if err != nil {
				return nil, err
			}
			if a, err = s.verifyInRoom(ctx, r, raw, s.federation); err != nil {
				return nil, err
			}
			if a.EventID() != id {
				return nil, spec.Forbidden("the server answered another event for %s", id)
			}
			aa, err := s.backfillAuth(ctx, r, srv, a, batch, fetches)
			if err != nil {
				return nil, err
			}
			if a.Type() != spec.MRoomCreate {
				if err := checkAgainstAuthEvents(a, aa, r.cur.Load().get(spec.MRoomCreate, "")); err != nil {
					return nil, err
				}
			}
			if err := s.storeOutlier(ctx, a, outlierState); err != nil {
				return nil, err
			}
		}
		out = append(out, a)
	}
	return out, nil
}
