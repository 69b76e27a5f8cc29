package admin

import (
	"context"
	"errors"
	"net/http"
	"sort"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Room purges that free space: every package's rows about the room go in
// one transaction (rooms.PurgeRoom with the forgetters of forget.go), the
// audit row commits with them, and the freed pages go back to the file
// system. Compaction rewrites the file for databases made before
// incremental vacuum was on.

// readDeleteRequest parses the roomId and the body of a room deletion;
// dry_run may also come as a query parameter.
func readDeleteRequest(c *gin.Context) (spec.RoomID, DeleteRoomRequest, error) {
	var req DeleteRoomRequest
	id, err := roomParam(c)
	if err != nil {
		return "", req, err
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return "", req, err
	}
	q, err := boolParam(c, "dry_run")
	if err != nil {
		return "", req, err
	}
	if req.DryRun == nil {
		req.DryRun = q
	}
	return id, req, nil
}

func (r DeleteRoomRequest) dryRun(*gin.Context) bool { return r.DryRun != nil && *r.DryRun }

// dryRunDelete answers what a deletion would do, changing nothing but the
// audit log (an admin looking at a room's data is an admin action too).
func (s *Service) dryRunDelete(c *gin.Context, id spec.RoomID, req DeleteRoomRequest) error {
	if !s.rooms.Exists(id) {
		return spec.NotFound("room %s not found", id)
	}
	ctx := c.Request.Context()
	members := s.rooms.MembersOf(id)
	kick := []spec.UserID{}
	for u, m := range members {
		if m == spec.Join && u.Server() == s.server {
			kick = append(kick, u)
		}
	}
	sort.Slice(kick, func(i, j int) bool { return kick[i] < kick[j] })
	aliases, err := s.rooms.LocalAliases(ctx, rooms.Caller{ServerAdmin: true}, id)
	if err != nil {
		return err
	}
	if aliases == nil {
		aliases = []string{}
	}
	purge := req.Purge == nil || *req.Purge
	removed := storage.Removed{}
	if purge {
		if removed, err = s.rooms.PurgeRoom(ctx, id, s.purgeOptions(true)); err != nil {
			return err
		}
	}
	details := map[string]any{"dry_run": true, "purge": purge, "total_rows": removed.Total()}
	if err := s.record(ctx, actor(c), "delete_room_dry_run", string(id), details, nil); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{
		"dry_run": true, "kicked_users": kick, "local_aliases": aliases,
		"removed_rows": removed, "total_rows": removed.Total(),
	})
	return nil
}

// purgeRoom deletes every row about the room, with its audit row in the
// same transaction, then gives the freed pages back to the file system.
func (s *Service) purgeRoom(ctx context.Context, who Actor, room spec.RoomID, deleteID string) (storage.Removed, error) {
	opts := s.purgeOptions(false)
	opts.Record = func(tx *storage.Tx, removed storage.Removed) error {
		e := AuditEntry{TS: s.now().UnixMilli(), Actor: who.String(), Origin: s.origin(), Action: "purge_room",
			Target: string(room), Details: map[string]any{"delete_id": deleteID, "removed_rows": removed, "total_rows": removed.Total()}}
		s.logAction(e)
		return insertAudit(tx, e)
	}
	removed, err := s.rooms.PurgeRoom(ctx, room, opts)
	if err != nil {
		return nil, err
	}
	if err := s.db.FreePages(ctx); err != nil {
		s.log.Warn().Err(err).Msg("could not give a purged room's pages back") // the rows are gone all the same
	}
	return removed, nil
}

// Compact rewrites the database file without free pages (and switches an
// older file to incremental vacuum), recording it in the audit log. The
// API and `chatalot admin compact` call it.
func (s *Service) Compact(ctx context.Context, who Actor) (before, after storage.Space, err error) {
	before, after, err = s.db.Compact(ctx)
	if err != nil {
		return before, after, err
	}
	details := map[string]any{"bytes_before": before.FileBytes, "bytes_after": after.FileBytes,
		"auto_vacuum": after.AutoVacuum}
	return before, after, s.record(ctx, who, "compact_database", "", details, nil)
}

// GET /_synapse/admin/v1/chatalot/database: the database's size, free
// space and vacuum mode.
func (s *Service) databaseSpace(c *gin.Context) error {
	sp, err := s.db.Space(c.Request.Context())
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, sp)
	return nil
}

// POST /_synapse/admin/v1/chatalot/database/compact: VACUUM, answering
// the sizes before and after. Writes wait while it runs.
func (s *Service) compact(c *gin.Context) error {
	before, after, err := s.Compact(c.Request.Context(), actor(c))
	if errors.Is(err, storage.ErrNotOnPostgres) {
		return spec.Unrecognized("compaction is for an SQLite database; PostgreSQL's autovacuum manages its space").WithStatus(http.StatusBadRequest)
	}
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"before": before, "after": after, "freed_bytes": before.FileBytes - after.FileBytes})
	return nil
}

// dryRunPurgeHistory answers the rows a history purge would delete.
func (s *Service) dryRunPurgeHistory(c *gin.Context, room spec.RoomID, before int64, details map[string]any) error {
	ctx := c.Request.Context()
	removed, err := s.rooms.PurgeHistoryWith(ctx, room, before, s.historyOptions(true))
	if err != nil {
		return err
	}
	details["dry_run"] = true
	details["total_rows"] = removed.Total()
	if err := s.record(ctx, actor(c), "purge_history_dry_run", string(room), details, nil); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"dry_run": true, "removed_rows": removed, "total_rows": removed.Total()})
	return nil
}

// purgeHistoryRows deletes the room's message events before the position
// with every package's rows about them, the audit row of the figures in the
// same transaction, then gives the freed pages back.
func (s *Service) purgeHistoryRows(ctx context.Context, who Actor, room spec.RoomID, before int64, purgeID string) (storage.Removed, error) {
	opts := s.historyOptions(false)
	opts.Record = func(tx *storage.Tx, removed storage.Removed) error {
		e := AuditEntry{TS: s.now().UnixMilli(), Actor: who.String(), Origin: s.origin(), Action: "purged_history",
			Target: string(room), Details: map[string]any{"purge_id": purgeID, "removed_rows": removed, "total_rows": removed.Total()}}
		s.logAction(e)
		return insertAudit(tx, e)
	}
	removed, err := s.rooms.PurgeHistoryWith(ctx, room, before, opts)
	if err != nil {
		return nil, err
	}
	if err := s.db.FreePages(ctx); err != nil {
		s.log.Warn().Err(err).Msg("could not give a history purge's pages back")
	}
	return removed, nil
}

// ResumePurges finishes, in the background, the room deletions a stop or
// crash interrupted before their purge committed: the members still there
// leave, then the room is purged.
func (s *Service) ResumePurges(ctx context.Context) error {
	list, err := s.pendingPurges(ctx)
	if err != nil {
		return err
	}
	for _, p := range list {
		if !s.rooms.Exists(p.Room) {
			if err := s.db.Write(ctx, func(tx *storage.Tx) error {
				return forgetPendingPurge(tx, p.Room, storage.Removed{})
			}); err != nil {
				return err
			}
			continue
		}
		t, started := s.tasks.start(p.Room, "delete")
		if !started {
			continue
		}
		s.tasks.rename(t, p.DeleteID)
		if p.Actor != CLIActor.String() {
			t.by = Actor{User: spec.UserID(p.Actor)}
		}
		s.log.Info().Str("room_id", string(p.Room)).Str("delete_id", p.DeleteID).Msg("resuming an interrupted room deletion")
		force := p.Force
		go s.shutdownRoom(context.WithoutCancel(ctx), t, &DeleteRoomRequest{ForcePurge: &force})
	}
	return nil
}
