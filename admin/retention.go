package admin

import (
	"context"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/tidwall/gjson"
)

// Message retention (MSC1763): a room's m.room.retention state event sets
// max_lifetime, the milliseconds its messages are kept; the server admin
// sets the lifetime of rooms without one and the bounds a room's own must
// keep to. A pass on a timer purges, in each room, the message events
// older than its lifetime, with a history purge (purgeHistoryRows): every
// package's rows about them go, and the pages go back to the file system.

// RetentionPolicy is the server admin's retention settings; all zero
// means nothing expires.
type RetentionPolicy struct {
	// Default is the lifetime of rooms with no m.room.retention (0: kept).
	Default time.Duration
	// Min and Max bound a room's own max_lifetime (0: no bound).
	Min, Max time.Duration
	// Interval is how often expired events are purged (default 1m).
	Interval time.Duration
}

// retentionEventType is the state event of MSC1763.
const retentionEventType = "m.room.retention"

// roomLifetime is how long the room's messages are kept (0: for ever).
func (s *Service) roomLifetime(room spec.RoomID) time.Duration {
	for _, ev := range s.rooms.AdminState(room) {
		if key, _ := ev.StateKey(); ev.Type() == retentionEventType && key == "" {
			return s.cfg.Retention.roomLifetime(ev.Content())
		}
	}
	return s.cfg.Retention.Default
}

// lifetime applies the policy to a room's max_lifetime (a JSON value that
// may be absent or invalid: then the server's default applies).
func (p RetentionPolicy) lifetime(maxLifetime gjson.Result) time.Duration {
	if maxLifetime.Type != gjson.Number || maxLifetime.Int() <= 0 {
		return p.Default
	}
	d := time.Duration(maxLifetime.Int()) * time.Millisecond
	if p.Min > 0 && d < p.Min {
		d = p.Min
	}
	if p.Max > 0 && d > p.Max {
		d = p.Max
	}
	return d
}

// roomLifetime is lifetime for a room's m.room.retention content, which
// also honours its min_lifetime (MSC1763: the room's promise that events
// are kept at least that long): a lifetime shorter than it, the room's own
// or the server's default or minimum, is raised to it. The server's Max
// still caps it: the admin's ceiling on how long anything is kept wins.
func (p RetentionPolicy) roomLifetime(content gjson.Result) time.Duration {
	d := p.lifetime(content.Get("max_lifetime"))
	least := content.Get("min_lifetime")
	if d <= 0 || least.Type != gjson.Number || least.Int() <= 0 {
		return d
	}
	if m := time.Duration(least.Int()) * time.Millisecond; m > d {
		d = m
	}
	if p.Max > 0 && d > p.Max {
		d = p.Max
	}
	return d
}

// RunRetention purges expired messages every Interval until ctx ends.
func (s *Service) RunRetention(ctx context.Context) {
	every(ctx, s.cfg.Retention.Interval, time.Minute, func() {
		s.RetentionPass(ctx)
		if s.cfg.ForgottenRoomRetention > 0 {
			if _, err := s.CollectForgottenRooms(ctx, Actor{User: "retention"}); err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("retention: forgotten rooms")
			}
		}
	})
}

// every runs pass at each interval (fallback when the setting is not
// positive) until ctx ends.
func every(ctx context.Context, interval, fallback time.Duration, pass func()) {
	if interval <= 0 {
		interval = fallback
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pass()
		}
	}
}

// RetentionPass purges, in every room with a lifetime, the message events
// older than it. The room's latest event stays (history purges keep it:
// new events name it as their parent) until a newer one arrives.
func (s *Service) RetentionPass(ctx context.Context) {
	list, err := s.rooms.AdminRooms(ctx)
	if err != nil {
		s.log.Warn().Err(err).Msg("retention: could not list rooms")
		return
	}
	for _, r := range list {
		life := s.roomLifetime(r.RoomID)
		if life <= 0 {
			continue
		}
		cutoff := s.now().Add(-life).UnixMilli()
		before, found, err := s.rooms.FirstPositionAt(ctx, r.RoomID, cutoff)
		if err != nil {
			s.log.Warn().Err(err).Str("room_id", string(r.RoomID)).Msg("retention")
			continue
		}
		if !found {
			before = 1 << 62 // every event is older: all but the latest
		}
		if expired, err := s.rooms.HasExpired(ctx, r.RoomID, before); err != nil || !expired {
			continue
		}
		if _, err := s.expireRoom(ctx, r.RoomID, before, life); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Str("room_id", string(r.RoomID)).Msg("retention: purge failed")
		}
	}
}

// expireRoom purges the room's messages before the position; the audit
// row (actor "retention") is written only when something went.
func (s *Service) expireRoom(ctx context.Context, room spec.RoomID, before int64, life time.Duration) (storage.Removed, error) {
	opts := s.historyOptions(false)
	opts.Record = func(tx *storage.Tx, removed storage.Removed) error {
		if removed["events"] == 0 && removed["events_redacted"] == 0 {
			return nil
		}
		e := AuditEntry{TS: s.now().UnixMilli(), Actor: "retention", Origin: s.origin(), Action: "retention_purge",
			Target: string(room), Details: map[string]any{"max_lifetime_ms": life.Milliseconds(),
				"removed_rows": removed, "total_rows": removed.Total()}}
		return insertAudit(tx, e)
	}
	removed, err := s.rooms.PurgeHistoryWith(ctx, room, before, opts)
	if err != nil || (removed["events"] == 0 && removed["events_redacted"] == 0) {
		return removed, err
	}
	if err := s.db.FreePages(ctx); err != nil {
		s.log.Warn().Err(err).Msg("retention: could not give the pages back")
	}
	return removed, nil
}
