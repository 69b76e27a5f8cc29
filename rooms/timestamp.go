package rooms

import (
	"context"
	"net/http"
	"strconv"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Direction is the way a walk through a room's timeline goes.
type Direction int

const (
	Backward Direction = iota // towards older events (dir=b)
	Forward                   // towards newer events (dir=f)
)

func (d Direction) String() string {
	if d == Forward {
		return "forward"
	}
	return "backward"
}

// EventAtTimestamp returns the visible event closest to ts in a direction:
// forward, the first with origin_server_ts ≥ ts; backward, the last with
// origin_server_ts ≤ ts. Ties on the timestamp go by stream order. Events
// the user may not see are skipped, so the answer never points into history
// hidden from them.
func (s *Service) EventAtTimestamp(ctx context.Context, user spec.UserID, room spec.RoomID, ts int64, dir Direction) (*Event, error) {
	a, err := s.readAccess(user, room)
	if err != nil {
		return nil, err
	}
	const batch = 100
	// The cursor is (origin_server_ts, position) of the last event looked at.
	curTS, curPos := ts, int64(-1)
	if dir == Backward {
		curPos = a.upTo + 1
	}
	for {
		var q string
		if dir == Forward {
			q = `WHERE e.room_id = $1 AND e.position <= $2
				AND (e.origin_server_ts > $3 OR (e.origin_server_ts = $4 AND e.position > $5))
				ORDER BY e.origin_server_ts, e.position LIMIT ` + strconv.Itoa(batch)
		} else {
			q = `WHERE e.room_id = $1 AND e.position <= $2
				AND (e.origin_server_ts < $3 OR (e.origin_server_ts = $4 AND e.position < $5))
				ORDER BY e.origin_server_ts DESC, e.position DESC LIMIT ` + strconv.Itoa(batch)
		}
		evs, err := s.queryEvents(ctx, q, string(room), a.upTo, curTS, curTS, curPos)
		if err != nil {
			return nil, err
		}
		for _, ev := range evs {
			if a.r.canSee(user, ev) {
				return ev, nil
			}
			curTS, curPos = ev.PDU.OriginServerTS(), ev.Position
		}
		if len(evs) < batch {
			return nil, spec.NotFound("no event from %d in the %s direction", ts, dir)
		}
	}
}

// GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event: the event
// closest to a timestamp in the direction asked.
func (h *handlers) timestampToEvent(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	room, err := roomIDParam(c)
	if err != nil {
		return err
	}
	raw := c.Query("ts")
	if raw == "" {
		return spec.MissingParam("ts is required")
	}
	ts, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || ts < 0 {
		return spec.InvalidParam("ts must be a timestamp in milliseconds")
	}
	var dir Direction
	switch c.Query("dir") {
	case "f":
		dir = Forward
	case "b":
		dir = Backward
	case "":
		return spec.MissingParam("dir is required")
	default:
		return spec.InvalidParam("dir must be f or b")
	}
	ev, err := h.s.EventAtTimestamp(c.Request.Context(), dev.UserID, room, ts, dir)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"event_id": ev.PDU.EventID(), "origin_server_ts": ev.PDU.OriginServerTS()})
	return nil
}
