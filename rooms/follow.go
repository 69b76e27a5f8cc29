package rooms

import (
	"context"
	"fmt"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Following the other nodes of a cluster (docs/scaling.md). A node keeps
// every room in memory, as a single server does; the events another node
// commits reach that memory through follow, which storage runs on the
// writer goroutine for the positions the other nodes wrote, before this
// node's own writes and before Position moves past them. It makes the
// events visible through the same path as a local commit (builder.published),
// so memory, histories and wakes are those the writing node has.
//
// Only one node writes a room: the one holding its lease (lease.go). The
// follower therefore takes no room's write lock: it runs on the writer
// goroutine, where a local commit's published runs too, and a room another
// node writes has no local write that can commit (a write in flight when
// the lease was lost fails the fencing check).

// loadFollowing loads the rooms of a cluster node and registers its
// follower. It loads inside a write: the writer holds the stored stream
// position's row lock (storage/cluster.go), so no node commits while the
// rooms are read, and the follower starts exactly where the load ends.
// Other nodes' writes wait for the load, once, at start-up.
func (s *Service) loadFollowing(ctx context.Context) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := s.loadAll(tx); err != nil {
			return err
		}
		s.db.OnFollow(s.follow)
		return nil
	})
}

// followedRoom is the events of one room in a followed range.
type followedRoom struct {
	r   *liveRoom
	evs []*Event
	// loaded marks a room this node had never seen whose earlier events
	// are not in the range: it was loaded whole from the database.
	loaded bool
	// redacted are the events the range's redactions redacted, in their
	// redacted form.
	redacted []*events.PDU
}

// follow brings memory up to date with the events other nodes committed
// at positions in (from, to] (a storage.Follower). It reads everything
// first and changes memory only once nothing can fail, so that a follow
// that fails changes nothing and the next batch's retry starts clean.
func (s *Service) follow(tx *storage.Tx, from, to int64) error {
	evs, err := queryEventsOn(tx, `WHERE e.position > $1 AND e.position <= $2 ORDER BY e.position`, from, to)
	if err != nil {
		return fmt.Errorf("read followed events: %w", err)
	}
	if len(evs) == 0 {
		return nil
	}
	var rooms []*followedRoom
	byRoom := map[spec.RoomID]*followedRoom{}
	var targets []any
	redactions := map[spec.EventID]bool{}
	for _, ev := range evs {
		id := ev.PDU.RoomID()
		f := byRoom[id]
		if f == nil {
			if f, err = s.followedRoom(tx, id, from); err != nil {
				return fmt.Errorf("room %s: %w", id, err)
			}
			byRoom[id] = f
			rooms = append(rooms, f)
		}
		if !f.loaded && ev.Position <= f.r.cur.Load().position {
			continue // in memory already
		}
		f.evs = append(f.evs, ev)
		if ev.PDU.Type() == spec.MRoomRedaction && !f.loaded {
			redactions[ev.PDU.EventID()] = true
			targets = append(targets, string(ev.PDU.Redacts()))
		}
	}
	if len(targets) > 0 {
		// The events the range's redactions redacted, stored in their
		// redacted form by the writing node (applyRedactions). A redaction
		// that redacted nothing (its sender may not redact the event, or
		// the event is unknown) left its target as it was.
		redacted, err := queryEventsOn(tx, `WHERE e.event_id IN (`+placeholders(1, len(targets))+`)`, targets...)
		if err != nil {
			return fmt.Errorf("read redacted events: %w", err)
		}
		for _, ev := range redacted {
			if f := byRoom[ev.PDU.RoomID()]; f != nil && ev.RedactedBecause != nil && redactions[ev.RedactedBecause.EventID()] {
				f.redacted = append(f.redacted, ev.PDU)
			}
		}
	}
	for _, f := range rooms {
		if len(f.evs) > 0 {
			s.publishFollowed(f)
		}
	}
	return nil
}

// followedRoom returns the room of followed events: the one in memory, a
// new one if the range holds its first event (it is built from the events
// as a new local room is), or else the room loaded from the database.
func (s *Service) followedRoom(tx *storage.Tx, id spec.RoomID, from int64) (*followedRoom, error) {
	if r := s.room(id); r != nil {
		return &followedRoom{r: r}, nil
	}
	var version string
	var first int64
	if err := tx.QueryRow(`SELECT r.version, min(e.position) FROM rooms r JOIN events e ON e.room_id = r.room_id
		WHERE r.room_id = $1 GROUP BY r.version`, string(id)).Scan(&version, &first); err != nil {
		return nil, err
	}
	r := newLiveRoom(id, spec.RoomVersion(version))
	if first > from {
		return &followedRoom{r: r}, nil
	}
	if err := s.loadRoom(tx, r); err != nil {
		return nil, err
	}
	return &followedRoom{r: r, loaded: true}, nil
}

// publishFollowed makes a room's followed events visible, as a local
// commit of them would.
func (s *Service) publishFollowed(f *followedRoom) {
	pos := f.evs[len(f.evs)-1].Position
	if f.loaded {
		// Memory holds the events already: only the room's members and
		// the wake are missing.
		snap := f.r.cur.Load()
		s.addLoaded(f.r)
		s.rememberTxns(f.evs)
		w := s.usersToWake(nil, f.evs, snap)
		s.wake(f.r, pos, f.evs, w)
		return
	}
	newRoom := s.room(f.r.id) == nil
	b := s.begin(f.r)
	for _, ev := range f.evs {
		// What a builder knows of the events it builds (addProto): the
		// state each replaced, so that memory derives recent state.
		if sk, ok := ev.PDU.StateKey(); ok {
			ev.replaced, ev.replacedKnown = b.snap.state.Get(ev.PDU.Type(), sk), true
		}
		b.applyLocal(ev.PDU)
		b.evs = append(b.evs, ev)
	}
	b.redactions = f.redacted
	b.published(pos, b.snap, s.usersToWake(b.base, b.evs, b.snap), newRoom)
}
