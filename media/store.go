package media

import (
	"context"
	"database/sql"
	"errors"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Schema is the media tables; cmd migrates it with the others.
//
// A row of media is one mxc:// URI. While an ID from /create waits for its
// bytes, sha256 and uploaded_ts are NULL and expires_ts says when the ID
// lapses; once uploaded, sha256 names the blob on disk. Several rows may name
// the same blob (deduplication); the blob is removed with the last of them.
// Thumbnails are keyed by the source's hash, so equal uploads share them.
var Schema = storage.Schema{Domain: "media", Migrations: []string{`
CREATE TABLE media (
	server_name  TEXT    NOT NULL,
	media_id     TEXT    NOT NULL,
	uploader     TEXT    NOT NULL,
	created_ts   BIGINT  NOT NULL,
	expires_ts   BIGINT,
	sha256       TEXT,
	size         BIGINT,
	content_type TEXT,
	filename     TEXT,
	uploaded_ts  BIGINT,
	quarantined  BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (server_name, media_id),
	CHECK ((sha256 IS NULL) = (uploaded_ts IS NULL)),
	CHECK (sha256 IS NULL OR (length(sha256) = 64 AND size IS NOT NULL AND size >= 0 AND content_type IS NOT NULL)),
	CHECK (sha256 IS NOT NULL OR expires_ts IS NOT NULL)
);
CREATE INDEX media_by_uploader ON media (uploader, created_ts);
CREATE INDEX media_by_sha256 ON media (sha256);

CREATE TABLE media_thumbnails (
	source_sha256 TEXT    NOT NULL,
	width         INTEGER NOT NULL CHECK (width > 0),
	height        INTEGER NOT NULL CHECK (height > 0),
	method        TEXT    NOT NULL CHECK (method IN ('crop', 'scale')),
	sha256        TEXT    NOT NULL CHECK (length(sha256) = 64),
	size          BIGINT  NOT NULL CHECK (size >= 0),
	content_type  TEXT    NOT NULL,
	thumb_width   INTEGER NOT NULL,
	thumb_height  INTEGER NOT NULL,
	created_ts    BIGINT  NOT NULL,
	PRIMARY KEY (source_sha256, width, height, method)
);
CREATE INDEX media_thumbnails_by_sha256 ON media_thumbnails (sha256);`,
	// 2: media retention (retention.go): when the media was last
	// downloaded or thumbnailed, to the hour (NULL: never since upload).
	`ALTER TABLE media ADD COLUMN last_access_ts BIGINT;`,
}}

// record is one row of media.
type record struct {
	server      spec.ServerName
	mediaID     string
	uploader    spec.UserID
	createdTS   int64
	expiresTS   sql.NullInt64
	sha256      sql.NullString
	size        int64
	contentType string
	filename    string
	uploadedTS  int64
	quarantined bool
	lastAccess  int64 // ms; 0: never since the upload (retention.go)
}

// pending reports whether the ID was created but its bytes have not arrived.
func (r *record) pending() bool { return !r.sha256.Valid }

const selectMedia = `SELECT server_name, media_id, uploader, created_ts, expires_ts, sha256,
	COALESCE(size, 0), COALESCE(content_type, ''), COALESCE(filename, ''), COALESCE(uploaded_ts, 0), quarantined,
	COALESCE(last_access_ts, 0) FROM media`

type scanner interface{ Scan(dest ...any) error }

func scanRecord(row scanner) (*record, error) {
	var r record
	var server, uploader string
	if err := row.Scan(&server, &r.mediaID, &uploader, &r.createdTS, &r.expiresTS, &r.sha256,
		&r.size, &r.contentType, &r.filename, &r.uploadedTS, &r.quarantined, &r.lastAccess); err != nil {
		return nil, err
	}
	r.server, r.uploader = spec.ServerName(server), spec.UserID(uploader)
	return &r, nil
}

// getMedia reads one row; (nil, nil) when there is none.
func (s *Service) getMedia(ctx context.Context, server spec.ServerName, mediaID string) (*record, error) {
	r, err := scanRecord(s.db.QueryRow(ctx, selectMedia+` WHERE server_name = $1 AND media_id = $2`, string(server), mediaID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, err
}

// usedBytes is what a user's uploads take against the quota, read inside
// the write transaction so that concurrent uploads cannot both slip under it.
func usedBytes(tx *storage.Tx, user spec.UserID) (int64, error) {
	var n int64
	err := tx.QueryRow(`SELECT COALESCE(SUM(size), 0) FROM media WHERE uploader = $1 AND sha256 IS NOT NULL`, string(user)).Scan(&n)
	return n, err
}

// blobReferenced reports whether any row still names the blob.
func blobReferenced(tx *storage.Tx, hash string) (bool, error) {
	var n int
	err := tx.QueryRow(`SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $2)`, hash, hash).Scan(&n)
	return n > 0, err
}

// thumbRow is one cached thumbnail.
type thumbRow struct {
	sha256      string
	size        int64
	contentType string
	width       int
	height      int
}

func (s *Service) getThumbnail(ctx context.Context, source string, w, h int, method string) (*thumbRow, error) {
	var t thumbRow
	err := s.db.QueryRow(ctx, `SELECT sha256, size, content_type, thumb_width, thumb_height FROM media_thumbnails
		WHERE source_sha256 = $1 AND width = $2 AND height = $3 AND method = $4`, source, w, h, method).
		Scan(&t.sha256, &t.size, &t.contentType, &t.width, &t.height)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &t, nil
}
