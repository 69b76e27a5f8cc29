package rooms

import (
	"context"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
)

// What the external tests (package rooms_test) reach inside rooms.

// SetClockForTest replaces the service's clock, which stamps events.
func SetClockForTest(s *Service, now func() time.Time) { s.now = now }

// RecentSize is how many of a room's latest events memory keeps.
const RecentSize = recentSize

// ReindexSearchForTest rebuilds the search index, as start-up does when a
// migration asked for it.
func (s *Service) ReindexSearchForTest(ctx context.Context) error { return s.reindexSearch(ctx) }

// StateAtFromMemoryForTest is the room's state at pos as memory derives it
// (ok false where memory cannot answer), and StateAtFromDBForTest as the
// database holds it.
func (s *Service) StateAtFromMemoryForTest(id spec.RoomID, pos int64) ([]*events.PDU, bool) {
	return s.room(id).stateAtFromMemory(pos)
}

func (s *Service) StateAtFromDBForTest(ctx context.Context, id spec.RoomID, pos int64) ([]*Event, error) {
	return s.stateAt(ctx, id, pos)
}

// StopLeaseRenewalsForTest stops this cluster node renewing its room
// leases, as a node frozen past its leases does: it still believes it holds
// them, and its writes must fail the fencing check once another node took
// them over.
func (s *Service) StopLeaseRenewalsForTest() { s.leases.paused.Store(true) }
