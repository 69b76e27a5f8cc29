package admin

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/chatalot/chatalot/media"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Media retention (media/retention.go): a pass on a timer deletes the
// media the server admin's policy expires, and the files no row names; the
// admin API deletes media unread since a time, as Synapse's does.

// MediaRetention is the server admin's media retention settings.
type MediaRetention struct {
	media.RetentionPolicy
	// Interval is how often the pass runs (default 1h).
	Interval time.Duration
}

// MediaSweep is what a media retention pass removed (or would).
type MediaSweep struct {
	DryRun       bool           `json:"dry_run"`
	Expired      media.Deletion `json:"expired"`
	OrphanFiles  int            `json:"orphan_files"`
	OrphanBytes  int64          `json:"orphan_bytes"`
	FreedBytes   int64          `json:"freed_bytes"` // files: expired and orphaned
	DeletedMedia []string       `json:"deleted_media"`
}

// RunMediaRetention runs MediaRetentionPass every Interval until ctx ends;
// with no policy it returns at once (orphans are swept at each start).
func (s *Service) RunMediaRetention(ctx context.Context) {
	if !s.cfg.MediaRetention.Enabled() || s.media == nil {
		return
	}
	every(ctx, s.cfg.MediaRetention.Interval, time.Hour, func() {
		if _, err := s.MediaRetentionPass(ctx, Actor{}, false); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("media retention")
		}
	})
}

// MediaRetentionPass deletes the media the policy expires now, then the
// orphaned files, and records what went in the audit log (actor
// "retention" for the timer's passes) when anything did, or for a dry
// run.
func (s *Service) MediaRetentionPass(ctx context.Context, who Actor, dryRun bool) (MediaSweep, error) {
	out := MediaSweep{DryRun: dryRun}
	var err error
	if out.Expired, err = s.media.Expire(ctx, s.cfg.MediaRetention.RetentionPolicy, dryRun, nil); err != nil {
		return out, err
	}
	if out.OrphanFiles, out.OrphanBytes, err = s.media.SweepOrphans(ctx, dryRun); err != nil {
		return out, err
	}
	out.DeletedMedia = append([]string{}, out.Expired.IDs...)
	out.FreedBytes = out.Expired.Bytes + out.OrphanBytes
	return out, s.recordMedia(ctx, who, "media_retention", out.Expired, map[string]any{
		"orphan_files": out.OrphanFiles, "orphan_bytes": out.OrphanBytes}, dryRun, out.OrphanFiles > 0)
}

// recordMedia writes the audit row of a media deletion and gives the
// database pages back, when something went (or for a dry run).
func (s *Service) recordMedia(ctx context.Context, who Actor, action string, d media.Deletion, extra map[string]any, dryRun, other bool) error {
	if d.Media == 0 && !other && !dryRun {
		return nil
	}
	if dryRun {
		action += "_dry_run"
	}
	if who == (Actor{}) && !s.cli {
		who = Actor{User: "retention"}
	}
	details := map[string]any{"media": d.Media, "thumbnails": d.Thumbnails, "files": d.Files, "bytes": d.Bytes, "kept": d.Kept}
	for k, v := range extra {
		details[k] = v
	}
	if err := s.record(ctx, who, action, string(s.server), details, nil); err != nil {
		return err
	}
	if !dryRun && d.Media > 0 {
		if err := s.db.FreePages(ctx); err != nil {
			s.log.Warn().Err(err).Msg("media retention: could not give the pages back")
		}
	}
	return nil
}

// POST /_synapse/admin/v1/media/delete?before_ts=&size_gt=&keep_profiles=
// (and …/v1/media/{serverName}/delete): deletes this server's media not
// downloaded since before_ts (ms), larger than size_gt bytes; with
// keep_profiles (the default) not the avatars of active accounts.
// Quarantined media stays. Chatalot's addition: dry_run=true.
func (s *Service) deleteOldMedia(c *gin.Context) error {
	if server := c.Param("serverName"); server != "" && spec.ServerName(server) != s.server {
		return spec.InvalidParam("only media of this server (%s) can be deleted here", s.server)
	}
	raw, ok := c.GetQuery("before_ts")
	before, err := strconv.ParseInt(raw, 10, 64)
	if !ok || err != nil || before < 0 {
		return spec.MissingParam("before_ts (ms since the epoch) is required")
	}
	sizeGT, err := intParam(c, "size_gt", 0)
	if err != nil {
		return err
	}
	keepProfiles, err := boolParam(c, "keep_profiles")
	if err != nil {
		return err
	}
	dry, err := boolParam(c, "dry_run")
	if err != nil {
		return err
	}
	dryRun := dry != nil && *dry
	var keep media.Keep
	if keepProfiles == nil || *keepProfiles {
		keep = func(tx *storage.Tx, uri string) (bool, error) { return s.auth.AvatarInUse(tx, uri) }
	}
	ctx := c.Request.Context()
	d, err := s.media.DeleteUnaccessedBefore(ctx, time.UnixMilli(before), int64(sizeGT), dryRun, keep)
	if err != nil {
		return err
	}
	if err := s.recordMedia(ctx, actor(c), "delete_old_media", d, map[string]any{"before_ts": before, "size_gt": sizeGT}, dryRun, false); err != nil {
		return err
	}
	ids := append([]string{}, d.IDs...)
	c.JSON(http.StatusOK, gin.H{"deleted_media": ids, "total": len(ids), "dry_run": dryRun,
		"thumbnails": d.Thumbnails, "files": d.Files, "freed_bytes": d.Bytes})
	return nil
}

// POST /_synapse/admin/v1/purge_media_cache?before_ts=: deletes the cached
// copies of other servers' media not downloaded since before_ts (ms);
// quarantined copies stay. A later request fetches the media again.
// Chatalot's addition: dry_run=true.
func (s *Service) purgeMediaCache(c *gin.Context) error {
	before, err := strconv.ParseInt(c.Query("before_ts"), 10, 64)
	if err != nil || before < 0 {
		return spec.MissingParam("before_ts (ms since the epoch) is required")
	}
	dry, err := boolParam(c, "dry_run")
	if err != nil {
		return err
	}
	dryRun := dry != nil && *dry
	ctx := c.Request.Context()
	d, err := s.media.PurgeRemoteCache(ctx, time.UnixMilli(before), dryRun)
	if err != nil {
		return err
	}
	if err := s.recordMedia(ctx, actor(c), "purge_media_cache", d, map[string]any{"before_ts": before}, dryRun, false); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"deleted": d.Media, "dry_run": dryRun, "thumbnails": d.Thumbnails, "files": d.Files, "freed_bytes": d.Bytes})
	return nil
}

// POST /_synapse/admin/v1/chatalot/media/retention?dry_run=: runs a media
// retention pass now, with the configured policy, and answers what went.
func (s *Service) mediaRetentionNow(c *gin.Context) error {
	dry, err := boolParam(c, "dry_run")
	if err != nil {
		return err
	}
	out, err := s.MediaRetentionPass(c.Request.Context(), actor(c), dry != nil && *dry)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, out)
	return nil
}
