package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/chatalot/chatalot/storage"
)

// A backup directory has the layout of a data directory (chatalot.db,
// signing.key, media/), so that in an emergency a server can even be started
// on it directly, plus two files of its own:
//
//	backup.json        written last: the backup is complete
//	backup.incomplete  present while a backup is being written
const (
	manifestFile   = "backup.json"
	incompleteFile = "backup.incomplete"
	backupFormat   = 1
)

// backupManifest is backup.json.
type backupManifest struct {
	Format          int            `json:"format"`
	ChatalotVersion string         `json:"chatalot_version"`
	ServerName      string         `json:"server_name,omitempty"` // what the data directory records; restore says to use it
	Created         time.Time      `json:"created"`
	SchemaVersions  map[string]int `json:"schema_versions"`
	DatabaseBytes   int64          `json:"database_bytes"`
	MediaFiles      int64          `json:"media_files"`
	MediaBytes      int64          `json:"media_bytes"`
}

// adminBackup: chatalot admin backup DIR
//
// The copy is consistent while the server runs and writes:
//
//  1. The database is copied first, in one SQLite read transaction (VACUUM
//     INTO, see storage.BackupFile): it holds every write acknowledged before
//     the copy began, and a prefix of those after.
//  2. Then the media store. A media row is committed only after its file is
//     in place and fsynced, and files are named by their SHA-256 and never
//     change, so every file a row in the copied database names is already
//     there to copy. (Only a file deleted by an admin between steps 1 and 2
//     can be missing: its row is in the copy, its content was deleted on
//     purpose.) Files already in DIR from an earlier backup with the same
//     size and time are not copied again; files no longer in the store are
//     removed from DIR, so deleted media do not live on in backups.
//  3. The signing key, which never changes.
//  4. backup.json, which marks the backup complete.
func adminBackup(args []string, stdout io.Writer) error {
	cfg, pos, err := adminFlags("backup", args, nil)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("admin backup: expected one directory: chatalot admin backup DIR")
	}
	if cfg.onPostgres() {
		return errors.New("admin backup: the database is in PostgreSQL: back it up with pg_dump, and the data directory (signing key, media) with a file copy")
	}
	src, dst := pathsOf(cfg.DataDir), pathsOf(pos[0])
	if _, err := os.Stat(src.db); err != nil {
		return fmt.Errorf("admin backup: no database at %s (are --data-dir or --config right?)", src.db)
	}
	if err := checkDistinct(src.dir, dst.dir); err != nil {
		return fmt.Errorf("admin backup: %w", err)
	}
	refresh, lock, err := prepareBackupDir(dst.dir)
	if err != nil {
		return fmt.Errorf("admin backup: %w", err)
	}
	defer lock.release()
	start := time.Now()

	// 1. The database.
	info, serverName, err := backupDatabase(src, dst)
	if err != nil {
		return err
	}
	dbSize := fileSize(dst.db)

	// 2. The media store.
	st, err := copyTree(src.media, dst.media, refresh)
	if err != nil {
		return fmt.Errorf("admin backup: media: %w", err)
	}

	// 3. The signing key.
	if err := copyFile(src.key, dst.key, 0o600); err != nil {
		return fmt.Errorf("admin backup: signing key: %w", err)
	}

	// 4. The manifest.
	m := backupManifest{
		Format: backupFormat, ChatalotVersion: version, ServerName: serverName, Created: start.UTC().Truncate(time.Second),
		SchemaVersions: info.Versions, DatabaseBytes: dbSize, MediaFiles: st.files, MediaBytes: st.bytes,
	}
	if err := writeManifest(dst.dir, m); err != nil {
		return fmt.Errorf("admin backup: %w", err)
	}
	if err := os.Remove(filepath.Join(dst.dir, incompleteFile)); err != nil {
		return err
	}
	if err := syncDir(dst.dir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup of %s written to %s in %s\n", src.dir, dst.dir, time.Since(start).Round(time.Millisecond))
	printBackup(stdout, m, st, dst)
	return nil
}

// backupDatabase copies the database (online, as SQLite's backup API does)
// into a temporary name, checks the copy, then puts it over the old one.
// It returns what the copy holds and the server name it records.
func backupDatabase(src, dst dataPaths) (storage.FileInfo, string, error) {
	partial := dst.db + ".partial"
	if err := os.Remove(partial); err != nil && !errors.Is(err, os.ErrNotExist) {
		return storage.FileInfo{}, "", err
	}
	if err := storage.BackupFile(context.Background(), src.db, partial); err != nil {
		return storage.FileInfo{}, "", fmt.Errorf("admin backup: %w", err)
	}
	info, err := storage.Inspect(context.Background(), partial)
	if err != nil {
		return info, "", fmt.Errorf("admin backup: check the copy: %w", err)
	}
	if info.Integrity != "ok" {
		return info, "", fmt.Errorf("admin backup: the copied database fails SQLite's integrity check: %s", info.Integrity)
	}
	serverName, err := recordedServerName(context.Background(), partial)
	if err != nil {
		return info, "", fmt.Errorf("admin backup: read the server name: %w", err)
	}
	for _, stale := range []string{dst.db + "-wal", dst.db + "-shm"} {
		if err := os.Remove(stale); err != nil && !errors.Is(err, os.ErrNotExist) {
			return info, "", err
		}
	}
	return info, serverName, os.Rename(partial, dst.db)
}

// printBackup tells what a backup holds and what the media copy did.
func printBackup(w io.Writer, m backupManifest, st treeStats, dst dataPaths) {
	fmt.Fprintf(w, "  database     %d bytes (schema %s)\n", m.DatabaseBytes, formatVersions(m.SchemaVersions))
	fmt.Fprintf(w, "  media        %d files, %d bytes (%d copied, %d removed)\n", m.MediaFiles, m.MediaBytes, st.copied, st.removed)
	fmt.Fprintf(w, "  signing key  %s\n", dst.key)
	if m.ServerName != "" {
		fmt.Fprintf(w, "  server name  %s\n", m.ServerName)
	}
}

// adminRestore: chatalot admin restore DIR [--force]
//
// It refuses a data directory a server is using (the server's lock is held),
// and one that already holds data unless --force, which moves that data
// aside into DATA/replaced-TIME instead of deleting it.
func adminRestore(args []string, stdout io.Writer) error {
	var force bool
	cfg, pos, err := adminFlags("restore", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&force, "force", false, "move the data directory's current data aside into DATA/replaced-TIME, then restore")
	})
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("admin restore: expected one directory: chatalot admin restore DIR")
	}
	if cfg.onPostgres() {
		return errors.New("admin restore: restores an SQLite backup, but the database setting names PostgreSQL (restore it with pg_restore)")
	}
	src, dst := pathsOf(pos[0]), pathsOf(cfg.DataDir)
	m, info, err := checkBackup(src, dst)
	if err != nil {
		return err
	}

	if err := os.MkdirAll(dst.dir, 0o700); err != nil {
		return fmt.Errorf("admin restore: create data directory: %w", err)
	}
	lock, err := lockDataDir(dst.dir)
	if err != nil {
		return fmt.Errorf("admin restore: %w", err)
	}
	defer lock.release()
	aside, err := moveAside(dst, force)
	if err != nil {
		return err
	}

	// The CLI's poke file of the data directory's old database (admin/cli.go)
	// means nothing to the restored one, whose queue is in its own tables.
	if err := os.Remove(followupsFile(dst)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin restore: remove the stale follow-up queue: %w", err)
	}

	st, err := restoreFiles(src, dst)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored the backup made %s by Chatalot %s into %s\n", m.Created.Format(time.RFC3339), m.ChatalotVersion, dst.dir)
	fmt.Fprintf(stdout, "  database     schema %s\n", formatVersions(info.Versions))
	fmt.Fprintf(stdout, "  media        %d files, %d bytes\n", st.files, st.bytes)
	if aside != "" {
		fmt.Fprintf(stdout, "the data it replaced is in %s (delete it once the restored server works)\n", aside)
	}
	fmt.Fprintln(stdout, restoredServerName(m.ServerName, cfg.ServerName))
	return nil
}

// checkBackup reads a backup's manifest and checks that it can be
// restored into dst: another directory, a sound database and a readable
// signing key.
func checkBackup(src, dst dataPaths) (backupManifest, storage.FileInfo, error) {
	m, err := readManifest(src.dir)
	if err != nil {
		return m, storage.FileInfo{}, fmt.Errorf("admin restore: %w", err)
	}
	if err := checkDistinct(src.dir, dst.dir); err != nil {
		return m, storage.FileInfo{}, fmt.Errorf("admin restore: %w", err)
	}
	info, err := storage.Inspect(context.Background(), src.db)
	if err != nil {
		return m, info, fmt.Errorf("admin restore: %w", err)
	}
	if info.Integrity != "ok" {
		return m, info, fmt.Errorf("admin restore: the backup's database fails SQLite's integrity check: %s", info.Integrity)
	}
	if m.ServerName == "" { // a backup made before the manifest said
		if m.ServerName, err = recordedServerName(context.Background(), src.db); err != nil {
			return m, info, fmt.Errorf("admin restore: read the server name: %w", err)
		}
	}
	if _, err := os.Stat(src.key); err != nil {
		return m, info, fmt.Errorf("admin restore: the backup has no signing key: %w", err)
	}
	if _, err := loadOrCreateSigningKey(src.key, ""); err != nil { // exists: only read
		return m, info, fmt.Errorf("admin restore: %w", err)
	}
	return m, info, nil
}

// moveAside moves the data a data directory already holds into
// DATA/replaced-TIME and returns that folder ("" if there was none); it
// refuses unless force.
func moveAside(dst dataPaths, force bool) (string, error) {
	var present []string
	for _, p := range []string{dst.db, dst.db + "-wal", dst.db + "-shm", dst.key, dst.media} {
		if _, err := os.Lstat(p); err == nil {
			present = append(present, filepath.Base(p))
		}
	}
	if len(present) == 0 {
		return "", nil
	}
	if !force {
		return "", fmt.Errorf("admin restore: the data directory %s already holds data (%s); add --force to move it aside and restore",
			dst.dir, strings.Join(present, ", "))
	}
	aside := filepath.Join(dst.dir, "replaced-"+time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Mkdir(aside, 0o700); err != nil {
		return "", fmt.Errorf("admin restore: %w", err)
	}
	for _, name := range present {
		if err := os.Rename(filepath.Join(dst.dir, name), filepath.Join(aside, name)); err != nil {
			return "", fmt.Errorf("admin restore: move %s aside: %w", name, err)
		}
	}
	if err := os.Rename(followupsFile(dst), filepath.Join(aside, filepath.Base(followupsFile(dst)))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("admin restore: move the follow-up queue aside: %w", err)
	}
	return aside, syncDir(dst.dir)
}

// restoreFiles copies the backup's media, signing key and database into
// the data directory. The database goes last: a data directory with a
// database but without its media would serve rows whose files are missing.
func restoreFiles(src, dst dataPaths) (treeStats, error) {
	st, err := copyTree(src.media, dst.media, false)
	if err != nil {
		return st, fmt.Errorf("admin restore: media: %w", err)
	}
	if err := copyFile(src.key, dst.key, 0o600); err != nil {
		return st, fmt.Errorf("admin restore: signing key: %w", err)
	}
	if err := copyFile(src.db, dst.db, 0o600); err != nil {
		return st, fmt.Errorf("admin restore: database: %w", err)
	}
	if err := syncDir(dst.dir); err != nil {
		return st, err
	}
	if err := chownLikeDir(dst); err != nil {
		return st, fmt.Errorf("admin restore: %w", err)
	}
	return st, nil
}

// restoredServerName says which server_name to start the restored data
// directory with: the backup's, which the server would otherwise refuse.
func restoredServerName(backup, configured string) string {
	switch {
	case backup == "":
		return "start the server with the same server_name as the backed-up one"
	case backup == configured:
		return fmt.Sprintf("start the server with server_name = %q, as configured", backup)
	}
	return fmt.Sprintf("start the server with server_name = %q, the backup's: the configuration given here says %q, which the server would refuse for this data directory", backup, configured)
}

// followupsFile is the file beside the database that the admin CLI appends
// to after queuing follow-ups for a running server (admin/cli.go).
func followupsFile(p dataPaths) string { return p.db + "-followups" }

// prepareBackupDir makes DIR ready for a backup and locks it (so that two
// backups, or a server and a backup, never write into it at once). It is
// refreshed in place when it holds an earlier backup, complete or not;
// a directory with anything else in it is refused.
func prepareBackupDir(dir string) (refresh bool, lock *dataLock, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, nil, err
		}
	case err != nil:
		return false, nil, err
	case len(entries) > 1 || len(entries) == 1 && entries[0].Name() != lockFile:
		_, e1 := os.Stat(filepath.Join(dir, manifestFile))
		_, e2 := os.Stat(filepath.Join(dir, incompleteFile))
		if e1 != nil && e2 != nil {
			return false, nil, fmt.Errorf("%s is not empty and holds no Chatalot backup (no %s); choose a new or empty directory", dir, manifestFile)
		}
		refresh = true
	}
	lock, err = lockDataDir(dir)
	if err != nil {
		return false, nil, err
	}
	// From here until the manifest is written again, the directory says it
	// is incomplete, so that an interrupted backup is never restored.
	f, err := os.OpenFile(filepath.Join(dir, incompleteFile), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = f.WriteString("a backup is being written, or was interrupted; restore refuses this directory\n")
		err = errors.Join(err, f.Sync(), f.Close())
	}
	if err == nil {
		err = os.Remove(filepath.Join(dir, manifestFile))
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		lock.release()
		return false, nil, err
	}
	return refresh, lock, nil
}

// checkDistinct refuses a backup or restore between a directory and itself
// or its own media store.
func checkDistinct(a, b string) error {
	aa, err := filepath.Abs(a)
	if err != nil {
		return err
	}
	bb, err := filepath.Abs(b)
	if err != nil {
		return err
	}
	if aa == bb {
		return fmt.Errorf("%s is the data directory itself", b)
	}
	for _, pair := range [][2]string{{aa, bb}, {bb, aa}} {
		if strings.HasPrefix(pair[1]+string(filepath.Separator), filepath.Join(pair[0], "media")+string(filepath.Separator)) {
			return fmt.Errorf("%s is inside %s's media store", pair[1], pair[0])
		}
	}
	return nil
}

func writeManifest(dir string, m backupManifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, manifestFile+".partial")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	if err := syncPath(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, manifestFile))
}

func readManifest(dir string) (backupManifest, error) {
	var m backupManifest
	if _, err := os.Stat(filepath.Join(dir, incompleteFile)); err == nil {
		return m, fmt.Errorf("the backup in %s is incomplete (it was interrupted or is still being written); make a new one", dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return m, fmt.Errorf("%s holds no complete Chatalot backup (no %s)", dir, manifestFile)
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", manifestFile, err)
	}
	if m.Format != backupFormat {
		return m, fmt.Errorf("%s: backup format %d is not one this Chatalot reads (%d); restore it with the Chatalot that made it (%s)",
			manifestFile, m.Format, backupFormat, m.ChatalotVersion)
	}
	return m, nil
}

// treeStats counts what copyTree found and did.
type treeStats struct{ files, bytes, copied, removed int64 }

// copyTree copies the regular files under src into dst (mode 0600, folders
// 0700), skipping src/tmp (uploads in progress). A file already in dst with
// the same size and modification time is left as it is: media files are
// named by their content and never change. With prune, files in dst that
// are no longer in src are removed. A missing src is an empty store.
func copyTree(src, dst string, prune bool) (treeStats, error) {
	var st treeStats
	seen := map[string]bool{}
	dirs := []string{dst}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return st, err
	}
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walk: not part of the copy
			}
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			if rel == "tmp" {
				return filepath.SkipDir
			}
			seen[rel] = true
			dirs = append(dirs, filepath.Join(dst, rel))
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
		seen[rel] = true
		st.files++
		st.bytes += fi.Size()
		target := filepath.Join(dst, rel)
		if have, err := os.Stat(target); err == nil && have.Size() == fi.Size() && have.ModTime().Equal(fi.ModTime()) {
			return nil
		}
		if err := copyFile(path, target, 0o600); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				st.files--
				st.bytes -= fi.Size()
				delete(seen, rel)
				return nil
			}
			return err
		}
		st.copied++
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return st, err
	}
	if prune {
		if st.removed, err = pruneTree(dst, seen); err != nil {
			return st, err
		}
	}
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return st, err
		}
	}
	return st, nil
}

// pruneTree removes what is under dst but not in seen (paths relative to
// dst), and returns how many files and folders it removed.
func pruneTree(dst string, seen map[string]bool) (int64, error) {
	var extra []string
	_ = filepath.WalkDir(dst, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dst, path)
		if rel != "." && !seen[rel] {
			extra = append(extra, path)
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	sort.Strings(extra)
	var removed int64
	for _, p := range extra {
		if err := os.RemoveAll(p); err != nil {
			return removed, err
		}
		removed++
	}
	return removed, nil
}

// copyFile copies src to dst through a temporary file that is fsynced and
// renamed into place, so dst is either the old or the whole new file. dst
// keeps src's modification time (copyTree compares it).
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := dst + ".partial"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// chownLikeDir gives the restored files to the owner of the data directory
// when restore runs as root (`sudo chatalot admin restore`), so that the
// server's own user can open them.
func chownLikeDir(p dataPaths) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(p.dir)
	if err != nil {
		return err
	}
	sys, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid == 0 {
		return nil
	}
	uid, gid := int(sys.Uid), int(sys.Gid)
	for _, f := range []string{p.db, p.key, filepath.Join(p.dir, lockFile)} {
		if err := os.Lchown(f, uid, gid); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return filepath.WalkDir(p.media, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func syncPath(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func formatVersions(v map[string]int) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, v[k])
	}
	return strings.Join(parts, ", ")
}
