package media

import (
	"context"
	"errors"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Info describes one piece of media, for the admin API.
type Info struct {
	ServerName  spec.ServerName
	MediaID     string
	Uploader    spec.UserID
	ContentType string // empty while pending
	Filename    string
	Size        int64
	SHA256      string    // empty while pending
	CreatedAt   time.Time // when the ID was made
	UploadedAt  time.Time // zero while pending
	Pending     bool
	Quarantined bool
	// LastAccess is when it was last downloaded, to the hour (zero: never
	// since the upload; retention.go).
	LastAccess time.Time
}

// URI is the media's mxc:// URI.
func (i Info) URI() string { return "mxc://" + string(i.ServerName) + "/" + i.MediaID }

func (r *record) info() Info {
	i := Info{
		ServerName:  r.server,
		MediaID:     r.mediaID,
		Uploader:    r.uploader,
		ContentType: r.contentType,
		Filename:    r.filename,
		Size:        r.size,
		SHA256:      r.sha256.String,
		CreatedAt:   time.UnixMilli(r.createdTS),
		Pending:     r.pending(),
		Quarantined: r.quarantined,
	}
	if !r.pending() {
		i.UploadedAt = time.UnixMilli(r.uploadedTS)
	}
	if r.lastAccess > 0 {
		i.LastAccess = time.UnixMilli(r.lastAccess)
	}
	return i
}

// Get describes one piece of media; 404 M_NOT_FOUND if there is none.
func (s *Service) Get(ctx context.Context, server spec.ServerName, mediaID string) (Info, error) {
	r, err := s.getMedia(ctx, server, mediaID)
	if err != nil {
		return Info{}, err
	}
	if r == nil {
		return Info{}, errUnknownMedia
	}
	return r.info(), nil
}

// Quarantine hides media from every download and thumbnail (or shows it
// again) without deleting it, so that an admin can look into a report.
func (s *Service) Quarantine(ctx context.Context, server spec.ServerName, mediaID string, quarantined bool) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(`UPDATE media SET quarantined = $1 WHERE server_name = $2 AND media_id = $3`, quarantined, string(server), mediaID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err != nil {
				return err
			}
			return errUnknownMedia
		}
		return nil
	})
}

// ListUserMedia lists every piece of media a user uploaded or reserved,
// oldest first.
func (s *Service) ListUserMedia(ctx context.Context, user spec.UserID) ([]Info, error) {
	rows, err := s.db.Query(ctx, selectMedia+` WHERE uploader = $1 ORDER BY created_ts, media_id`, string(user))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Info
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r.info())
	}
	return out, rows.Err()
}

// Delete removes one piece of media; its bytes and thumbnails go with the
// last media that names them. 404 M_NOT_FOUND if there is none.
func (s *Service) Delete(ctx context.Context, server spec.ServerName, mediaID string) error {
	n, err := s.deleteWhere(ctx, `server_name = $1 AND media_id = $2`, string(server), mediaID)
	if err != nil {
		return err
	}
	if n == 0 {
		return errUnknownMedia
	}
	return nil
}

// DeleteUserMedia removes every piece of media of a user and returns how
// many there were.
func (s *Service) DeleteUserMedia(ctx context.Context, user spec.UserID) (int, error) {
	return s.deleteWhere(ctx, `uploader = $1`, string(user))
}

// deleteWhere deletes the media rows matching where, then the thumbnails
// and blobs no remaining row names (see deleteMatching).
func (s *Service) deleteWhere(ctx context.Context, where string, args ...any) (int, error) {
	res, err := s.deleteMatching(ctx, false, nil, where, args...)
	return res.Media, err
}

// Deletion is what a media deletion removed (or, in a dry run, would).
type Deletion struct {
	Media      int      `json:"media"`      // rows of media (mxc:// URIs)
	Thumbnails int      `json:"thumbnails"` // rows of thumbnails
	Files      int      `json:"files"`      // blobs unlinked (originals and thumbnails)
	Bytes      int64    `json:"bytes"`      // their size on disk
	Kept       int      `json:"kept"`       // rows selected but kept (Keep)
	IDs        []string `json:"-"`          // the media IDs deleted
}

// Keep vetoes the deletion of one row of those a deletion selected (the
// row's URI); it runs inside the deletion's transaction.
type Keep func(tx *storage.Tx, uri string) (bool, error)

// deleteMatching deletes the media rows matching where (but those keep
// keeps), then the thumbnails and blobs no remaining row names. The rows go
// in one transaction; the files are unlinked after it commits, under
// blobMu held exclusively, so that no upload can take a new reference to a
// blob between the count and the unlink (see Service.blobMu). A dry run
// counts and changes nothing.
func (s *Service) deleteMatching(ctx context.Context, dryRun bool, keep Keep, where string, args ...any) (Deletion, error) {
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	var res Deletion
	var orphans []string
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		res, orphans = Deletion{}, nil
		rows, err := tx.Query(`SELECT server_name, media_id FROM media WHERE `+where, args...)
		if err != nil {
			return err
		}
		type key struct{ server, id string }
		var picked []key
		for rows.Next() {
			var k key
			if err := rows.Scan(&k.server, &k.id); err != nil {
				rows.Close()
				return err
			}
			picked = append(picked, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		sources := map[string]bool{}
		for _, k := range picked {
			if keep != nil {
				kept, err := keep(tx, "mxc://"+k.server+"/"+k.id)
				if err != nil {
					return err
				}
				if kept {
					res.Kept++
					continue
				}
			}
			var h *string
			if err := tx.QueryRow(`DELETE FROM media WHERE server_name = $1 AND media_id = $2 RETURNING sha256`, k.server, k.id).Scan(&h); err != nil {
				return err
			}
			res.Media++
			res.IDs = append(res.IDs, k.id)
			if h != nil {
				sources[*h] = true
			}
		}
		candidates := map[string]bool{}
		for src := range sources {
			var n int
			if err := tx.QueryRow(`SELECT COUNT(*) FROM media WHERE sha256 = $1`, src).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue // another upload of the same bytes remains
			}
			candidates[src] = true
			thumbs, err := tx.Query(`DELETE FROM media_thumbnails WHERE source_sha256 = $1 RETURNING sha256`, src)
			if err != nil {
				return err
			}
			for thumbs.Next() {
				var t string
				if err := thumbs.Scan(&t); err != nil {
					thumbs.Close()
					return err
				}
				res.Thumbnails++
				candidates[t] = true
			}
			thumbs.Close()
			if err := thumbs.Err(); err != nil {
				return err
			}
		}
		for h := range candidates {
			used, err := blobReferenced(tx, h)
			if err != nil {
				return err
			}
			if !used {
				orphans = append(orphans, h)
			}
		}
		if dryRun {
			return errDryRun
		}
		if res.Media > 0 {
			tx.AfterCommit(s.uploaded.notify) // downloads waiting on a deleted ID answer now
		}
		return nil
	})
	if dryRun && errors.Is(err, errDryRun) {
		err = nil
	}
	if err != nil {
		return Deletion{}, err
	}
	for _, h := range orphans {
		res.Files++
		res.Bytes += s.blobs.size(h)
		if dryRun {
			continue
		}
		if err := s.blobs.remove(h); err != nil {
			s.log.Warn().Err(err).Msg("media: could not remove a deleted blob")
		}
	}
	return res, nil
}

// errDryRun rolls a dry run's write back.
var errDryRun = errors.New("dry run")

// DeleteUploadsOf deletes the uploads of an erased user but those keep
// keeps (media a room still needs). The kept ones are disowned: their
// uploader is emptied, so no row names the user, and they no longer count
// against anyone's quota. Quarantined uploads stay as they are, uploader
// included: they are kept for whoever looks into the report.
func (s *Service) DeleteUploadsOf(ctx context.Context, user spec.UserID, dryRun bool, keep Keep) (Deletion, error) {
	res, err := s.deleteMatching(ctx, dryRun, keep, `uploader = $1 AND NOT quarantined`, string(user))
	if err != nil || dryRun {
		return res, err
	}
	return res, s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`UPDATE media SET uploader = '' WHERE uploader = $1 AND NOT quarantined`, string(user))
		return err
	})
}
