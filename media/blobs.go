package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// blobStore keeps file contents on disk, named by their SHA-256:
//
//	DIR/blobs/ab/ab12…ef   a complete, durable file
//	DIR/tmp/upload-*       an upload being received
//
// A blob becomes visible only through a database row that names it, and that
// row is written only after the blob is in place and fsynced, so a reader
// never finds a row whose file is partial. The hash is known only once the
// last byte has arrived, so bytes are received into DIR/tmp and renamed into
// their shard: rename within one file system is atomic, and the shard
// directory is fsynced so the new name survives a power cut. Whatever is in
// DIR/tmp at start-up is left over from a crash and is removed.
type blobStore struct {
	blobs string
	tmp   string
}

// dirMode and fileMode keep media private to the server's user.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

func openBlobStore(dir string) (*blobStore, error) {
	b := &blobStore{blobs: filepath.Join(dir, "blobs"), tmp: filepath.Join(dir, "tmp")}
	for _, d := range []string{dir, b.blobs, b.tmp} {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return nil, fmt.Errorf("media: create %s: %w", d, err)
		}
	}
	// The 256 shards are created up front, so placing a blob never has to
	// make (and fsync) a directory on the request path.
	created := false
	for i := 0; i < 256; i++ {
		shard := filepath.Join(b.blobs, fmt.Sprintf("%02x", i))
		if _, err := os.Stat(shard); err == nil {
			continue
		}
		if err := os.Mkdir(shard, dirMode); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("media: create %s: %w", shard, err)
		}
		created = true
	}
	if created {
		if err := syncDir(b.blobs); err != nil {
			return nil, err
		}
		if err := syncDir(dir); err != nil {
			return nil, err
		}
	}
	leftovers, err := os.ReadDir(b.tmp)
	if err != nil {
		return nil, fmt.Errorf("media: read %s: %w", b.tmp, err)
	}
	for _, e := range leftovers {
		if err := os.RemoveAll(filepath.Join(b.tmp, e.Name())); err != nil {
			return nil, fmt.Errorf("media: remove leftover %s: %w", e.Name(), err)
		}
	}
	return b, nil
}

// validHash reports whether h is a lowercase hex SHA-256, the only thing a
// blob path is ever built from.
func validHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (b *blobStore) path(hash string) (string, error) {
	if !validHash(hash) {
		return "", fmt.Errorf("media: invalid blob name %q", hash)
	}
	return filepath.Join(b.blobs, hash[:2], hash), nil
}

// open opens a blob for reading.
func (b *blobStore) open(hash string) (*os.File, error) {
	p, err := b.path(hash)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

// staged is a received file, fsynced in DIR/tmp, not yet placed.
type staged struct {
	tmpPath string
	size    int64
	sha256  string
}

// stage copies r into a new temporary file while hashing it, and fsyncs
// it. On any error (a client that went away midway, a size limit) the
// temporary file is removed and nothing remains.
func (b *blobStore) stage(r io.Reader) (st *staged, err error) {
	f, err := os.CreateTemp(b.tmp, "upload-*")
	if err != nil {
		return nil, fmt.Errorf("media: create temporary file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("media: fsync: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("media: close: %w", err)
	}
	return &staged{tmpPath: f.Name(), size: n, sha256: hex.EncodeToString(h.Sum(nil))}, nil
}

// discard removes a staged file that will not be placed.
func (b *blobStore) discard(st *staged) {
	if st != nil {
		os.Remove(st.tmpPath)
	}
}

// place moves a staged file to its blob path, or drops it when an equal
// blob is already there (deduplication), and makes the name durable. The
// caller holds Service.blobMu shared.
func (b *blobStore) place(st *staged) error {
	final, err := b.path(st.sha256)
	if err != nil {
		return err
	}
	if fi, err := os.Lstat(final); err == nil && fi.Mode().IsRegular() && fi.Size() == st.size {
		// Same SHA-256 and size: the same bytes are already stored.
		return os.Remove(st.tmpPath)
	}
	if err := os.Rename(st.tmpPath, final); err != nil {
		os.Remove(st.tmpPath)
		return fmt.Errorf("media: place blob: %w", err)
	}
	return syncDir(filepath.Dir(final))
}

// remove unlinks a blob. The caller holds Service.blobMu exclusively and
// has committed the deletion of the last row naming it.
func (b *blobStore) remove(hash string) error {
	p, err := b.path(hash)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// size is a blob's size on disk (0 if it is not there).
func (b *blobStore) size(hash string) int64 {
	p, err := b.path(hash)
	if err != nil {
		return 0
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// sweepOrphans removes blobs that no row names: a crash between placing a
// blob and committing its row leaves one, unreachable but taking space. It
// runs at start-up, before any upload can be between those two steps; a
// shard at a time, so memory stays small however many files there are.
func (s *Service) sweepOrphans(ctx context.Context) error {
	files, _, err := s.orphans(ctx, false)
	if files > 0 {
		s.log.Info().Int("blobs", files).Msg("media: removed blobs left unreferenced by a crash")
	}
	return err
}

// SweepOrphans is sweepOrphans for a running server (the media retention
// pass): blobMu held exclusively keeps every upload out of the window
// between placing its blob and committing its row. It returns the files
// removed (or, in a dry run, that would be) and their bytes.
func (s *Service) SweepOrphans(ctx context.Context, dryRun bool) (files int, bytes int64, err error) {
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	return s.orphans(ctx, dryRun)
}

// orphans finds the blobs no row names, a shard at a time, so memory stays
// small however many files there are, and removes them unless dryRun.
func (s *Service) orphans(ctx context.Context, dryRun bool) (removed int, bytes int64, err error) {
	for i := 0; i < 256; i++ {
		shard := fmt.Sprintf("%02x", i)
		entries, err := os.ReadDir(filepath.Join(s.blobs.blobs, shard))
		if err != nil {
			return removed, bytes, fmt.Errorf("media: read shard %s: %w", shard, err)
		}
		if len(entries) == 0 {
			continue
		}
		// Hashes are lowercase hex, so every name in the shard sorts at or
		// after the shard prefix and before the prefix followed by "g".
		rows, err := s.db.Query(ctx, `SELECT sha256 FROM media WHERE sha256 >= $1 AND sha256 < $2
			UNION SELECT sha256 FROM media_thumbnails WHERE sha256 >= $3 AND sha256 < $4`, shard, shard+"g", shard, shard+"g")
		if err != nil {
			return removed, bytes, fmt.Errorf("media: list blobs: %w", err)
		}
		named := map[string]bool{}
		for rows.Next() {
			var h string
			if err := rows.Scan(&h); err != nil {
				rows.Close()
				return removed, bytes, err
			}
			named[h] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return removed, bytes, err
		}
		for _, e := range entries {
			if !e.Type().IsRegular() || !validHash(e.Name()) || named[e.Name()] {
				continue
			}
			size := s.blobs.size(e.Name())
			if !dryRun {
				if err := s.blobs.remove(e.Name()); err != nil {
					return removed, bytes, fmt.Errorf("media: remove orphan blob: %w", err)
				}
			}
			removed++
			bytes += size
		}
	}
	return removed, bytes, nil
}

// syncDir fsyncs a directory so that names created or renamed in it are
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("media: open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("media: fsync %s: %w", dir, err)
	}
	return nil
}
