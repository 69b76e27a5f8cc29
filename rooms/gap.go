package rooms

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
)

// Gaps in the DAG, both ways. A received event that follows events this
// server lacks has them asked of its origin: get_missing_events for the
// gap between the room's forward extremities and the event (at most maxGap
// events, in rounds of maxMissing), then single events (/event),
// fetchBudget of them. When the gap is wider, the state at a missing prev
// event is asked instead (/state_ids, once per received event) and the
// prev event is held as an outlier whose state is known: a backwards
// extremity. The same questions asked of this server are served.go's.

// Origin is a server a received event came from, asked for what this
// server lacks (the federation package's client side).
type Origin interface {
	// Event is one event (/event).
	Event(ctx context.Context, id spec.EventID) ([]byte, error)
	// MissingEvents are the events before latest back to earliest
	// (get_missing_events), at most limit.
	MissingEvents(ctx context.Context, room spec.RoomID, earliest, latest []spec.EventID, limit int, minDepth int64) ([][]byte, error)
	// StateIDs is the state before an event and its auth chain
	// (/state_ids).
	StateIDs(ctx context.Context, room spec.RoomID, event spec.EventID) (state, authChain []spec.EventID, err error)
}

// Bounds of the work one received event may cause: a server cannot make
// this one walk a whole room's history.
const (
	maxMissing     = 50   // events of one get_missing_events
	maxGap         = 200  // events of all the get_missing_events for one event
	maxNamed       = 20   // events one get_missing_events starts from
	fetchBudget    = 20   // single events fetched
	maxStateEvents = 1000 // events named by the state at a gap
	maxStateFetch  = 100  // of which fetched, not already held
	maxGapDepth    = 100  // the depth below the room's a gap may reach back
)

// remoteSource is where a received event's missing predecessors come from.
// Its requests share one deadline: the room's write lock is held while
// they run, and a slow server must not hold the room for long.
type remoteSource struct {
	keys       KeySource
	origin     Origin
	budget     int
	askedGap   bool
	askedState bool
	deadline   time.Time
}

// gapTimeout bounds the requests made for one received event.
const gapTimeout = 30 * time.Second

func newRemoteSource(keys KeySource, origin Origin) *remoteSource {
	return &remoteSource{keys: keys, origin: origin, budget: fetchBudget, deadline: time.Now().Add(gapTimeout)}
}

func (src *remoteSource) event(ctx context.Context, id spec.EventID) ([]byte, error) {
	ctx, cancel := context.WithDeadline(ctx, src.deadline)
	defer cancel()
	return src.origin.Event(ctx, id)
}

func (src *remoteSource) missingEvents(ctx context.Context, room spec.RoomID, earliest, latest []spec.EventID, minDepth int64) ([][]byte, error) {
	ctx, cancel := context.WithDeadline(ctx, src.deadline)
	defer cancel()
	return src.origin.MissingEvents(ctx, room, earliest, latest, maxMissing, minDepth)
}

func (src *remoteSource) stateIDs(ctx context.Context, room spec.RoomID, id spec.EventID) ([]spec.EventID, []spec.EventID, error) {
	ctx, cancel := context.WithDeadline(ctx, src.deadline)
	defer cancel()
	return src.origin.StateIDs(ctx, room, id)
}

// unknown are the ids this server holds neither in a timeline nor as an
// outlier.
func (s *Service) unknown(ctx context.Context, ids []spec.EventID) ([]spec.EventID, error) {
	var out []spec.EventID
	for _, id := range ids {
		p, err := s.dagEvent(ctx, id)
		if err != nil {
			return nil, err
		}
		if p == nil {
			out = append(out, id)
		}
	}
	return out, nil
}

// fetchMissing accepts the prev events of pdu this server does not have;
// the room's write lock is held.
func (s *Service) fetchMissing(ctx context.Context, r *liveRoom, pdu *events.PDU, src *remoteSource) error {
	missing, err := s.unknown(ctx, pdu.PrevEvents())
	if err != nil || len(missing) == 0 {
		return err
	}
	if src == nil {
		return spec.NewError(spec.ErrNotFound, "event %s follows %s, which this server does not have", pdu.EventID(), missing[0])
	}
	if !src.askedGap {
		src.askedGap = true
		if err := s.fillGap(ctx, r, pdu, src); err != nil {
			s.log.Info().Str("room_id", string(r.id)).Str("event_id", string(pdu.EventID())).Err(err).Msg("federation: get_missing_events failed")
		}
		if missing, err = s.unknown(ctx, pdu.PrevEvents()); err != nil || len(missing) == 0 {
			return err
		}
	}
	for _, prev := range missing {
		if src.budget > 0 {
			src.budget--
			if err := s.fetchOne(ctx, r, prev, src); err == nil {
				continue
			} else if !errors.Is(err, errTooDeep) {
				s.log.Info().Str("room_id", string(r.id)).Str("event_id", string(prev)).Err(err).Msg("federation: fetching a missing event failed")
			}
		}
		// Too far back: the state there instead, once per received event.
		if src.askedState {
			return fmt.Errorf("event %s follows %s, which this server cannot get", pdu.EventID(), prev)
		}
		src.askedState = true
		if err := s.stateAtGap(ctx, r, prev, src); err != nil {
			return fmt.Errorf("event %s follows %s, which this server cannot get: %w", pdu.EventID(), prev, err)
		}
	}
	return nil
}

var errTooDeep = errors.New("the missing event's own predecessors are missing too")

// fetchOne accepts one missing event, fetched alone; it refuses one whose
// own predecessors are missing once the budget is spent.
func (s *Service) fetchOne(ctx context.Context, r *liveRoom, id spec.EventID, src *remoteSource) error {
	raw, err := src.event(ctx, id)
	if err != nil {
		return err
	}
	p, err := s.verifyInRoom(ctx, r, raw, src.keys)
	if err != nil {
		return err
	}
	if p.EventID() != id {
		return spec.Forbidden("the server answered another event for %s", id)
	}
	if src.budget <= 0 {
		if missing, err := s.unknown(ctx, p.PrevEvents()); err != nil {
			return err
		} else if len(missing) > 0 {
			return errTooDeep
		}
	}
	if _, err := s.acceptRemote(ctx, r, p, false, src); err != nil && !errors.Is(err, ErrSoftFailed) {
		return err
	}
	return nil
}

func (s *Service) verifyInRoom(ctx context.Context, r *liveRoom, raw []byte, keys KeySource) (*events.PDU, error) {
	p, err := VerifyRemotePDU(ctx, raw, r.version, keys)
	if err != nil {
		return nil, err
	}
	if p.RoomID() != r.id {
		return nil, spec.Forbidden("event %s is in another room", p.EventID())
	}
	return p, nil
}

// fillGap asks the origin for the events between the room's forward
// extremities and pdu, in rounds of get_missing_events from the oldest
// events it answered (at most maxGap events in all), and accepts them
// oldest first.
func (s *Service) fillGap(ctx context.Context, r *liveRoom, pdu *events.PDU, src *remoteSource) error {
	snap := r.cur.Load()
	var earliest []spec.EventID
	for _, e := range snap.extremity {
		earliest = append(earliest, e.EventID())
	}
	minDepth := max(0, snap.depth-maxGapDepth)
	got := map[spec.EventID]*events.PDU{pdu.EventID(): pdu}
	latest := []spec.EventID{pdu.EventID()}
	for round := 0; round < maxGap/maxMissing && len(latest) > 0; round++ {
		raws, err := src.missingEvents(ctx, r.id, earliest, latest, minDepth)
		if err != nil {
			return err
		}
		for _, raw := range raws[:min(len(raws), maxMissing)] {
			p, err := s.verifyInRoom(ctx, r, raw, src.keys)
			if err != nil {
				s.log.Info().Str("room_id", string(r.id)).Err(err).Msg("federation: refused an event of get_missing_events")
				continue
			}
			got[p.EventID()] = p
		}
		// The next round starts from the events whose prev events are
		// neither held nor answered.
		latest = latest[:0]
		for id, p := range got {
			missing, err := s.unknown(ctx, p.PrevEvents())
			if err != nil {
				return err
			}
			if slices.ContainsFunc(missing, func(m spec.EventID) bool { return got[m] == nil }) && len(latest) < maxNamed {
				latest = append(latest, id)
			}
		}
		if len(raws) == 0 {
			break
		}
	}
	delete(got, pdu.EventID())
	list := slices.Collect(maps.Values(got))
	sort.SliceStable(list, func(i, j int) bool {
		if list[i].Depth() != list[j].Depth() {
			return list[i].Depth() < list[j].Depth()
		}
		return list[i].EventID() < list[j].EventID()
	})
	accepted := 0
	for _, p := range list {
		// Each is accepted after its own predecessors, which come first.
		if _, err := s.acceptRemote(ctx, r, p, false, src); err != nil && !errors.Is(err, ErrSoftFailed) {
			s.log.Info().Str("room_id", string(r.id)).Str("event_id", string(p.EventID())).Err(err).Msg("federation: refused a missing event")
			continue
		}
		accepted++
	}
	s.log.Info().Str("room_id", string(r.id)).Int("events", accepted).Msg("federation: filled a gap with get_missing_events")
	return nil
}

// stateAtGap makes the missing event id a backwards extremity: it is
// fetched and held as an outlier, with the state after it, which the
// origin answers (/state_ids at it) and whose events are fetched, verified
// and checked against their own auth events.
func (s *Service) stateAtGap(ctx context.Context, r *liveRoom, id spec.EventID, src *remoteSource) error {
	raw, err := src.event(ctx, id)
	if err != nil {
		return err
	}
	prev, err := s.verifyInRoom(ctx, r, raw, src.keys)
	if err != nil {
		return err
	}
	if prev.EventID() != id {
		return spec.Forbidden("the server answered another event for %s", id)
	}
	stateIDs, chainIDs, err := src.stateIDs(ctx, r.id, id)
	if err != nil {
		return err
	}
	if len(stateIDs)+len(chainIDs) > maxStateEvents {
		return fmt.Errorf("the state at %s is more than %d events", id, maxStateEvents)
	}
	byID := map[spec.EventID]*events.PDU{}
	fetches := 0
	for _, eid := range append(slices.Clone(chainIDs), stateIDs...) {
		if byID[eid] != nil {
			continue
		}
		p, err := s.dagEvent(ctx, eid)
		if err != nil {
			return err
		}
		if p == nil {
			if fetches++; fetches > maxStateFetch {
				return fmt.Errorf("the state at %s holds more than %d events this server lacks", id, maxStateFetch)
			}
			raw, err := src.event(ctx, eid)
			if err != nil {
				return err
			}
			if p, err = s.verifyInRoom(ctx, r, raw, src.keys); err != nil {
				return err
			}
			if p.EventID() != eid {
				return spec.Forbidden("the server answered another event for %s", eid)
			}
		}
		byID[eid] = p
	}
	create := r.cur.Load().get(spec.MRoomCreate, "")
	// Oldest first, each checked against its own auth events.
	fetched := slices.Collect(func(yield func(*events.PDU) bool) {
		for _, p := range byID {
			if !yield(p) {
				return
			}
		}
	})
	sort.Slice(fetched, func(i, j int) bool { return fetched[i].Depth() < fetched[j].Depth() })
	for _, p := range fetched {
		if known, err := s.dagEvent(ctx, p.EventID()); err != nil {
			return err
		} else if known != nil {
			continue
		}
		var auth []*events.PDU
		for _, a := range p.AuthEvents() {
			if byID[a] == nil {
				return fmt.Errorf("the state at %s: %s's auth event %s is not in the auth chain", id, p.EventID(), a)
			}
			auth = append(auth, byID[a])
		}
		if p.Type() != spec.MRoomCreate {
			if err := checkAgainstAuthEvents(p, auth, create); err != nil {
				return fmt.Errorf("the state at %s: %w", id, err)
			}
		}
		if err := s.storeOutlier(ctx, p, outlierState); err != nil {
			return err
		}
	}
	var st roomState
	for _, eid := range stateIDs {
		p := byID[eid]
		if !p.IsState() {
			return fmt.Errorf("the state at %s names %s, not a state event", id, eid)
		}
		st = st.With(keyOf(p), p)
	}
	if st.get(authrules.StateKeyPair{Type: spec.MRoomCreate}) == nil {
		return fmt.Errorf("the state at %s has no create event", id)
	}
	if err := authrules.CheckAuthEvents(prev, authOf(prev, byID)); err != nil {
		return err
	}
	if err := authrules.Allowed(prev, st); err != nil {
		return fmt.Errorf("event %s is not allowed by the state before it: %w", id, err)
	}
	if prev.IsState() {
		st = st.With(keyOf(prev), prev)
	}
	if err := s.storeOutlier(ctx, prev, outlierState); err != nil {
		return err
	}
	r.histMu.Lock()
	r.rememberStates([]*Event{{PDU: prev, stateAfter: st}})
	r.histMu.Unlock()
	return nil
}

func authOf(p *events.PDU, byID map[spec.EventID]*events.PDU) []*events.PDU {
	var out []*events.PDU
	for _, id := range p.AuthEvents() {
		if a := byID[id]; a != nil {
			out = append(out, a)
		}
	}
	return out
}
