package media

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// POST /_matrix/media/v3/upload: store the body and answer its mxc:// URI.
func (s *Service) handleUpload(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	meta, err := uploadMetaFrom(c)
	if err != nil {
		return err
	}
	id, err := s.Upload(c.Request.Context(), dev.UserID, meta, c.Request.Body)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"content_uri": s.mxc(id)})
	return nil
}

// POST /_matrix/media/v1/create: reserve an mxc:// URI for a later PUT.
func (s *Service) handleCreate(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	id, expires, err := s.Create(c.Request.Context(), dev.UserID)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"content_uri": s.mxc(id), "unused_expires_at": expires})
	return nil
}

// PUT /_matrix/media/v3/upload/{serverName}/{mediaId}: the bytes for an
// ID from /create, by the user who created it, once.
func (s *Service) handleUploadTo(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	meta, err := uploadMetaFrom(c)
	if err != nil {
		return err
	}
	server, mediaID, err := parseMediaPath(c)
	if err != nil {
		return err
	}
	if err := s.UploadTo(c.Request.Context(), dev.UserID, server, mediaID, meta, c.Request.Body); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// UploadMeta is what a client says about an upload.
type UploadMeta struct {
	ContentType string // the Content-Type header; empty means application/octet-stream
	Filename    string // the filename query parameter; empty means none
}

// maxFilenameBytes bounds a stored file name. File systems stop at 255
// bytes; four times that leaves room for any real name.
const maxFilenameBytes = 1024

func uploadMetaFrom(c *gin.Context) (UploadMeta, error) {
	m := UploadMeta{ContentType: c.GetHeader("Content-Type"), Filename: c.Query("filename")}
	if len(m.Filename) > maxFilenameBytes {
		return m, spec.InvalidParam("filename is over %d bytes", maxFilenameBytes)
	}
	return m, nil
}

// normalize makes the metadata safe to store and to put in headers later:
// a content type that is not a valid media type becomes
// application/octet-stream (the spec's default), and a file name keeps its
// text but not invalid UTF-8 or NUL, which PostgreSQL's TEXT cannot hold.
// The name's other characters are escaped when it is served.
func (m UploadMeta) normalize() UploadMeta {
	m.ContentType = normalizeContentType(m.ContentType)
	m.Filename = strings.ReplaceAll(strings.ToValidUTF8(m.Filename, "\uFFFD"), "\x00", "\uFFFD")
	return m
}

const octetStream = "application/octet-stream"

func normalizeContentType(ct string) string {
	if strings.TrimSpace(ct) == "" || len(ct) > 255 {
		return octetStream
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(mt, "/") {
		return octetStream
	}
	out := mime.FormatMediaType(mt, params)
	if out == "" {
		out = mime.FormatMediaType(mt, nil)
	}
	if out == "" {
		return octetStream
	}
	return out
}

// newMediaID returns 24 random characters of the URL-safe base64 alphabet,
// which is exactly what the spec allows in a media ID.
func newMediaID() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *Service) mxc(mediaID string) string {
	return "mxc://" + string(s.serverName) + "/" + mediaID
}

var (
	errOverQuota = spec.Forbidden("this upload would exceed your media storage quota")
	errTooLarge  = spec.TooLarge("the upload is over the server's limit")
	// A client that stops sending midway gets this (if it still listens).
	errIncomplete = spec.NewError(spec.ErrUnknown, "the upload did not complete")
)

// bodyReader counts what it reads and stops at the upload limit or at the
// uploader's remaining quota. err records why reading stopped, so a failure
// of the client (or a limit) is told apart from a failure of the disk.
type bodyReader struct {
	r         io.Reader
	n         int64
	max       int64
	quotaLeft int64 // < 0: no quota
	err       error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	switch {
	case b.n > b.max:
		b.err = errTooLarge
	case b.quotaLeft >= 0 && b.n > b.quotaLeft:
		b.err = errOverQuota
	case err != nil && err != io.EOF:
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			b.err = errTooLarge
		} else {
			b.err = errIncomplete
		}
	}
	if b.err != nil {
		return n, b.err
	}
	return n, err
}

// receive stages body as a blob for user, enforcing the size limit and the
// quota while the bytes arrive.
func (s *Service) receive(ctx context.Context, user spec.UserID, body io.Reader) (*staged, error) {
	quotaLeft := int64(-1)
	if s.cfg.QuotaBytes > 0 {
		used, err := s.usage(ctx, user)
		if err != nil {
			return nil, err
		}
		quotaLeft = s.cfg.QuotaBytes - used
		if quotaLeft < 0 {
			quotaLeft = 0
		}
	}
	br := &bodyReader{r: body, max: s.cfg.MaxUploadBytes, quotaLeft: quotaLeft}
	st, err := s.blobs.stage(br)
	if err != nil {
		if br.err != nil {
			return nil, br.err
		}
		return nil, err
	}
	return st, nil
}

// usage is the bytes a user's uploads hold, read outside the writer: a
// first check that stops an upload early. The check that counts is made
// again in the write transaction.
func (s *Service) usage(ctx context.Context, user spec.UserID) (int64, error) {
	var n int64
	err := s.db.QueryRow(ctx, `SELECT COALESCE(SUM(size), 0) FROM media WHERE uploader = $1 AND sha256 IS NOT NULL`, string(user)).Scan(&n)
	return n, err
}

// Upload stores body as new media of user and returns its media ID. The
// media is visible once Upload returns: the blob is fsynced and in place
// before its row is committed.
func (s *Service) Upload(ctx context.Context, user spec.UserID, meta UploadMeta, body io.Reader) (string, error) {
	meta = meta.normalize()
	st, err := s.receive(ctx, user, body)
	if err != nil {
		return "", err
	}
	id := newMediaID()
	err = s.commitBlob(ctx, st, func(tx *storage.Tx, now int64) error {
		if err := s.checkQuota(tx, user, st.size); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO media (server_name, media_id, uploader, created_ts, sha256, size, content_type, filename, uploaded_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			string(s.serverName), id, string(user), now, st.sha256, st.size, meta.ContentType, nullIfEmpty(meta.Filename), now)
		return err
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (s *Service) checkQuota(tx *storage.Tx, user spec.UserID, size int64) error {
	if s.cfg.QuotaBytes <= 0 {
		return nil
	}
	used, err := usedBytes(tx, user)
	if err != nil {
		return err
	}
	if used+size > s.cfg.QuotaBytes {
		return errOverQuota
	}
	return nil
}

// commitBlob places a staged blob and runs record, which writes the row
// naming it, in the writer. If the row is not written, a blob that no row
// names is removed again.
func (s *Service) commitBlob(ctx context.Context, st *staged, record func(tx *storage.Tx, now int64) error) error {
	s.blobMu.RLock()
	if err := s.blobs.place(st); err != nil {
		s.blobMu.RUnlock()
		s.blobs.discard(st)
		return err
	}
	now := s.now().UnixMilli()
	err := s.db.Write(context.WithoutCancel(ctx), func(tx *storage.Tx) error { return record(tx, now) })
	s.blobMu.RUnlock()
	if err != nil {
		s.dropIfUnreferenced(ctx, st.sha256)
		return err
	}
	return nil
}

// dropIfUnreferenced removes a blob that no row names.
func (s *Service) dropIfUnreferenced(ctx context.Context, hashes ...string) {
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	var orphans []string
	err := s.db.Write(context.WithoutCancel(ctx), func(tx *storage.Tx) error {
		orphans = orphans[:0]
		for _, h := range hashes {
			used, err := blobReferenced(tx, h)
			if err != nil {
				return err
			}
			if !used {
				orphans = append(orphans, h)
			}
		}
		return nil
	})
	if err != nil {
		s.log.Warn().Err(err).Msg("media: could not check blob references; leaving the blobs")
		return
	}
	for _, h := range orphans {
		if err := s.blobs.remove(h); err != nil {
			s.log.Warn().Err(err).Msg("media: could not remove an unreferenced blob")
		}
	}
}

// Create reserves a media ID for user whose bytes come later by UploadTo,
// and returns it with the time (ms since the epoch) at which it lapses if
// unused.
func (s *Service) Create(ctx context.Context, user spec.UserID) (string, int64, error) {
	id := newMediaID()
	now := s.now().UnixMilli()
	expires := now + s.cfg.UnusedExpiry.Milliseconds()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		// Lapsed IDs of this user are dropped here rather than by a timer.
		if _, err := tx.Exec(`DELETE FROM media WHERE uploader = $1 AND sha256 IS NULL AND expires_ts < $2`, string(user), now); err != nil {
			return err
		}
		var pending int
		if err := tx.QueryRow(`SELECT COUNT(*) FROM media WHERE uploader = $1 AND sha256 IS NULL`, string(user)).Scan(&pending); err != nil {
			return err
		}
		if s.cfg.QuotaBytes > 0 {
			used, err := usedBytes(tx, user)
			if err != nil {
				return err
			}
			if used >= s.cfg.QuotaBytes {
				return errOverQuota // the ID could never be filled
			}
		}
		if pending >= s.cfg.MaxPendingUploads {
			e := spec.LimitExceeded(60_000)
			e.Message = "too many pending uploads: finish or abandon some first"
			return e
		}
		_, err := tx.Exec(`INSERT INTO media (server_name, media_id, uploader, created_ts, expires_ts) VALUES ($1, $2, $3, $4, $5)`,
			string(s.serverName), id, string(user), now, expires)
		return err
	})
	if err != nil {
		return "", 0, err
	}
	return id, expires, nil
}

// UploadTo stores the bytes of a media ID that user reserved with Create.
func (s *Service) UploadTo(ctx context.Context, user spec.UserID, server spec.ServerName, mediaID string, meta UploadMeta, body io.Reader) error {
	meta = meta.normalize()
	if server != s.serverName {
		return spec.NotFound("unknown media ID")
	}
	r, err := s.getMedia(ctx, server, mediaID)
	if err != nil {
		return err
	}
	if err := s.checkUploadTo(r, user); err != nil {
		return err
	}
	st, err := s.receive(ctx, user, body)
	if err != nil {
		return err
	}
	err = s.commitBlob(ctx, st, func(tx *storage.Tx, now int64) error {
		// Read again in the writer: another PUT may have won meanwhile.
		r, err := scanRecord(tx.QueryRow(selectMedia+` WHERE server_name = $1 AND media_id = $2`, string(server), mediaID))
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if r == nil {
			return spec.NotFound("unknown media ID")
		}
		if err := s.checkUploadTo(r, user); err != nil {
			return err
		}
		if err := s.checkQuota(tx, user, st.size); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE media SET sha256 = $1, size = $2, content_type = $3, filename = $4, uploaded_ts = $5, expires_ts = NULL
			WHERE server_name = $6 AND media_id = $7`,
			st.sha256, st.size, meta.ContentType, nullIfEmpty(meta.Filename), now, string(server), mediaID); err != nil {
			return err
		}
		tx.AfterCommit(s.uploaded.notify)
		return nil
	})
	return err
}

// checkUploadTo says whether user may PUT the bytes of r now.
func (s *Service) checkUploadTo(r *record, user spec.UserID) error {
	switch {
	case r == nil:
		return spec.NotFound("unknown media ID")
	case r.uploader != user:
		return spec.Forbidden("this media ID was created by another user")
	case !r.pending():
		return spec.NewError(spec.ErrCannotOverwriteMedia, "media already uploaded")
	case r.expiresTS.Int64 < s.now().UnixMilli():
		return spec.NotFound("this media ID has expired")
	}
	return nil
}
