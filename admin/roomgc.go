package admin

import (
	"context"
	"net/http"

	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Garbage collection of forgotten rooms: a room that every local user who
// was ever in it has left and forgotten (or whose account is deactivated,
// and so can never read it again) serves nobody on this server, so the
// pass purges it like an admin's room purge (every package's rows, one
// transaction), once nothing happened in it for ForgottenRoomRetention (a
// user who forgot by mistake has that long to come back). A room published
// in the directory is kept: anyone may still join it from there. With no
// federation yet, local users are the only ones who could.

// abandoned says whether nobody local could want the room any more.
func (s *Service) abandoned(ctx context.Context, room spec.RoomID) (bool, error) {
	members := s.rooms.MembersOf(room)
	if len(members) == 0 {
		return false, nil
	}
	for u, m := range members {
		if u.Server() != s.server {
			continue
		}
		if m == spec.Join || m == spec.Invite || m == spec.Knock {
			return false, nil
		}
		if s.rooms.ForgotBy(u, room) {
			continue
		}
		gone, err := s.auth.IsDeactivated(ctx, u)
		if err != nil || !gone {
			return false, err
		}
	}
	return true, nil
}

// ForgottenRooms lists the rooms abandoned says nobody wants.
func (s *Service) ForgottenRooms(ctx context.Context) ([]spec.RoomID, error) {
	list, err := s.rooms.AdminRooms(ctx)
	if err != nil {
		return nil, err
	}
	var out []spec.RoomID
	for _, r := range list {
		if r.Public || r.JoinedLocalMembers > 0 {
			continue
		}
		if s.now().Add(-s.cfg.ForgottenRoomRetention).UnixMilli() < s.rooms.LastEventTS(r.RoomID) {
			continue // still within the grace period
		}
		ok, err := s.abandoned(ctx, r.RoomID)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, r.RoomID)
		}
	}
	return out, nil
}

// CollectForgottenRooms purges every room nobody wants (see above); the
// audit row of each purge has actor "retention". It runs with the message
// retention pass when forgotten_room_retention_period is set.
func (s *Service) CollectForgottenRooms(ctx context.Context, who Actor) (map[spec.RoomID]int64, error) {
	rooms, err := s.ForgottenRooms(ctx)
	if err != nil {
		return nil, err
	}
	out := map[spec.RoomID]int64{}
	for _, room := range rooms {
		// Looked at again just before: a join since the list was made
		// keeps the room.
		if ok, err := s.abandoned(ctx, room); err != nil || !ok {
			continue
		}
		removed, err := s.purgeRoom(ctx, who, room, "forgotten")
		if err != nil {
			return out, err
		}
		out[room] = removed.Total()
	}
	return out, nil
}

// POST /_synapse/admin/v1/chatalot/rooms/collect_forgotten?dry_run=:
// purges now the rooms every local member left and forgot (and quiet for
// forgotten_room_retention_period, if set); a dry run lists them.
func (s *Service) collectForgotten(c *gin.Context) error {
	dry, err := boolParam(c, "dry_run")
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	if dry != nil && *dry {
		list, err := s.ForgottenRooms(ctx)
		if err != nil {
			return err
		}
		if list == nil {
			list = []spec.RoomID{}
		}
		if err := s.record(ctx, actor(c), "collect_forgotten_rooms_dry_run", "", map[string]any{"rooms": list}, nil); err != nil {
			return err
		}
		c.JSON(http.StatusOK, gin.H{"dry_run": true, "rooms": list})
		return nil
	}
	purged, err := s.CollectForgottenRooms(ctx, actor(c))
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"dry_run": false, "purged_rows": purged})
	return nil
}
