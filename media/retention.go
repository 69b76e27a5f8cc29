package media

import (
	"context"
	"strconv"
	"time"

	"github.com/chatalot/chatalot/storage"
)

// Media retention: the server admin may have media expire by last access
// (not downloaded or thumbnailed for a while) and by age (uploaded long
// ago), and orphaned files removed. Quarantined media never expires: it
// is kept for whoever is looking into the report that got it quarantined,
// until an admin releases or deletes it.

// RetentionPolicy is the media retention settings; zero durations expire
// nothing.
type RetentionPolicy struct {
	// LocalUnaccessed expires this server's media not downloaded (or
	// thumbnailed) for that long; an upload never downloaded counts from
	// its upload.
	LocalUnaccessed time.Duration
	// MaxAge expires this server's media uploaded that long ago, however
	// often it is read.
	MaxAge time.Duration
	// RemoteUnaccessed expires the cached copies of other servers' media
	// not downloaded (or thumbnailed) for that long; a copy never read
	// again counts from its fetch. A later request fetches it again.
	RemoteUnaccessed time.Duration
}

// Enabled says whether the policy expires anything.
func (p RetentionPolicy) Enabled() bool {
	return p.LocalUnaccessed > 0 || p.MaxAge > 0 || p.RemoteUnaccessed > 0
}

// accessGranularity is how stale a recorded last access may be: a
// download writes the time only when the stored one is older, so a
// popular file costs one write an hour, not one per download. Retention
// periods are days, so an hour's error does not matter.
const accessGranularity = time.Hour

// touch records a download of r, at most once per accessGranularity.
func (s *Service) touch(ctx context.Context, r *record) {
	now := s.now().UnixMilli()
	if now-max(r.lastAccess, r.uploadedTS) < accessGranularity.Milliseconds() {
		return
	}
	err := s.db.Write(context.WithoutCancel(ctx), func(tx *storage.Tx) error {
		_, err := tx.Exec(`UPDATE media SET last_access_ts = $1 WHERE server_name = $2 AND media_id = $3`, now, string(r.server), r.mediaID)
		return err
	})
	if err != nil {
		s.log.Warn().Err(err).Msg("media: could not record an access")
	}
}

// Expire deletes the uploaded media and cached remote media the policy
// expires at now (not quarantined; keep may veto more), with the
// thumbnails and files no other row names.
func (s *Service) Expire(ctx context.Context, p RetentionPolicy, dryRun bool, keep Keep) (Deletion, error) {
	if !p.Enabled() {
		return Deletion{}, nil
	}
	now := s.now()
	where := `sha256 IS NOT NULL AND NOT quarantined AND (FALSE`
	args := []any{string(s.serverName)}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if p.LocalUnaccessed > 0 {
		where += ` OR (server_name = $1 AND ` + lastUsed + ` < ` + arg(now.Add(-p.LocalUnaccessed).UnixMilli()) + `)`
	}
	if p.MaxAge > 0 {
		where += ` OR (server_name = $1 AND uploaded_ts < ` + arg(now.Add(-p.MaxAge).UnixMilli()) + `)`
	}
	if p.RemoteUnaccessed > 0 {
		where += ` OR (server_name <> $1 AND ` + remoteLastRead + ` < ` + arg(now.Add(-p.RemoteUnaccessed).UnixMilli()) + `)`
	}
	return s.deleteMatching(ctx, dryRun, keep, where+`)`, args...)
}

// lastUsed is when an upload was last read, or uploaded if never: the
// larger of the two, written without SQLite's two-argument max, which
// PostgreSQL calls GREATEST.
const lastUsed = `CASE WHEN COALESCE(last_access_ts, 0) > uploaded_ts THEN last_access_ts ELSE uploaded_ts END`

// remoteLastRead is when a cached remote copy was last read, or fetched if
// never since (a recorded access is never before the fetch).
const remoteLastRead = `COALESCE(last_access_ts, uploaded_ts)`

// PurgeRemoteCache deletes the cached copies of other servers' media last
// read (or, never read, fetched) before the time, but quarantined ones (the
// admin API's POST /_synapse/admin/v1/purge_media_cache). A later request
// fetches the media again.
func (s *Service) PurgeRemoteCache(ctx context.Context, before time.Time, dryRun bool) (Deletion, error) {
	return s.deleteMatching(ctx, dryRun, nil, `server_name <> $1 AND sha256 IS NOT NULL AND NOT quarantined
		AND `+remoteLastRead+` < $2`, string(s.serverName), before.UnixMilli())
}

// DeleteUnaccessedBefore deletes this server's uploaded media last read
// (or, never read, uploaded) before the time and larger than sizeGT
// bytes, but quarantined media and what keep keeps (the admin API's
// POST /_synapse/admin/v1/media/delete).
func (s *Service) DeleteUnaccessedBefore(ctx context.Context, before time.Time, sizeGT int64, dryRun bool, keep Keep) (Deletion, error) {
	return s.deleteMatching(ctx, dryRun, keep, `server_name = $1 AND sha256 IS NOT NULL AND NOT quarantined
		AND `+lastUsed+` < $2 AND size > $3`, string(s.serverName), before.UnixMilli(), sizeGT)
}
