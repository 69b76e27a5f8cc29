package tests

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// opsBackupRefusedOnPostgres: on PostgreSQL, backup and restore are
// pg_dump's and pg_restore's jobs; the commands refuse and name them. It
// reports whether the server is on PostgreSQL (the test then ends there).
func opsBackupRefusedOnPostgres(t *testing.T, s *harness.Server) bool {
	t.Helper()
	if !harness.OnPostgres(s.DataDir) {
		return false
	}
	bk := filepath.Join(t.TempDir(), "backup")
	if out, err := harness.Run(t, "", "admin", "backup", bk, "--data-dir", s.DataDir); err == nil || !strings.Contains(out, "back it up with pg_dump") {
		t.Fatalf("admin backup on PostgreSQL: %v\n%s", err, out)
	}
	if _, err := os.Stat(bk); err == nil {
		t.Fatal("admin backup on PostgreSQL made a backup directory")
	}
	os.MkdirAll(bk, 0o700)
	if out, err := harness.Run(t, "", "admin", "restore", bk, "--data-dir", s.DataDir); err == nil || !strings.Contains(out, "pg_restore") {
		t.Fatalf("admin restore on PostgreSQL: %v\n%s", err, out)
	}
	return true
}

// TestOpsBackupWhileClientsWrite backs up a running server while clients
// send messages, restores the backup into a new data directory, starts a
// server on it, and finds every write acknowledged before the backup began
// (and, for each client, an unbroken prefix of its later writes: the backup
// is one consistent moment, not a mix).
func TestOpsBackupWhileClientsWrite(t *testing.T) {
	s := harness.Start(t)
	if opsBackupRefusedOnPostgres(t, s) {
		return
	}
	alice := opsRegister(t, s.URL, "alice")
	bob := opsRegister(t, s.URL, "bob")
	room := opsCreateRoom(t, s.URL, alice.Token, "backups")
	opsJSON(t, "POST", s.URL+"/_matrix/client/v3/rooms/"+room+"/invite", alice.Token, map[string]string{"user_id": bob.ID}, nil)
	opsJSON(t, "POST", s.URL+"/_matrix/client/v3/join/"+room, bob.Token, map[string]any{}, nil)
	media := make([]byte, 200_000)
	rand.Read(media)
	mxc := opsUpload(t, s.URL, alice.Token, media)
	opsJSON(t, "PUT", s.URL+"/_matrix/client/v3/user/"+alice.ID+"/account_data/org.example.backup", alice.Token, map[string]string{"kept": "yes"}, nil)

	// Three writers, each sending numbered messages one after the other:
	// acked[w] counts the messages of writer w the server acknowledged.
	const writers = 3
	var acked [writers]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := alice.Token
			if w == 1 {
				tok = bob.Token
			}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := opsSend(t, s.URL, tok, room, fmt.Sprintf("w%d-%d", w, n), fmt.Sprintf("w%d %d", w, n)); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				acked[w].Add(1)
			}
		}()
	}
	waitFor(t, 30*time.Second, "the writers to get going", func() bool { return acked[0].Load() >= 20 && acked[2].Load() >= 20 })

	var before [writers]int64
	for w := range before {
		before[w] = acked[w].Load()
	}
	bk := filepath.Join(t.TempDir(), "backup")
	out, err := harness.Run(t, "", "admin", "backup", bk, "--data-dir", s.DataDir)
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("admin backup: %v\n%s", err, out)
	}
	// Writes go on after the backup, and must not be in it beyond a prefix.
	waitFor(t, 30*time.Second, "writes after the backup", func() bool { return acked[0].Load() >= before[0]+10 })
	close(stop)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("backup: %s", out)
	for _, name := range []string{"chatalot.db", "signing.key", "backup.json"} {
		fi, err := os.Stat(filepath.Join(bk, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("backup %s: %v, mode %v; want a file of mode 0600", name, err, fi)
		}
	}

	data := filepath.Join(t.TempDir(), "restored")
	if out, err := harness.Run(t, "", "admin", "restore", bk, "--data-dir", data); err != nil {
		t.Fatalf("admin restore: %v\n%s", err, out)
	}
	r := harness.Start(t, harness.WithDataDir(data))

	// The same signing key, so that events already signed stay valid.
	_, _, k1 := getJSON(t, "GET", s.URL+"/_matrix/key/v2/server", "")
	_, _, k2 := getJSON(t, "GET", r.URL+"/_matrix/key/v2/server", "")
	if !sameKeys(k1, k2) {
		t.Fatalf("the restored server has another signing key: %v vs %v", k1["verify_keys"], k2["verify_keys"])
	}
	// Sessions, password, account data and media survive.
	var who struct {
		UserID string `json:"user_id"`
	}
	opsJSON(t, "GET", r.URL+"/_matrix/client/v3/account/whoami", alice.Token, nil, &who)
	if who.UserID != alice.ID {
		t.Fatalf("whoami on the restored server: %q", who.UserID)
	}
	opsJSON(t, "POST", r.URL+"/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "bob"}, "password": bob.Password,
	}, nil)
	var ad map[string]string
	opsJSON(t, "GET", r.URL+"/_matrix/client/v3/user/"+alice.ID+"/account_data/org.example.backup", alice.Token, nil, &ad)
	if ad["kept"] != "yes" {
		t.Fatalf("account data: %v", ad)
	}
	if code, got := opsDownload(t, r.URL, bob.Token, mxc); code != 200 || !bytes.Equal(got, media) {
		t.Fatalf("media after restore: %d, %d bytes (want %d)", code, len(got), len(media))
	}

	// Every acknowledged write up to the backup point, and per writer a
	// prefix of its writes.
	seen := map[int][]int{}
	for _, b := range opsMessages(t, r.URL, alice.Token, room) {
		var w, n int
		if _, err := fmt.Sscanf(b, "w%d %d", &w, &n); err != nil {
			t.Fatalf("unexpected message %q", b)
		}
		seen[w] = append(seen[w], n)
	}
	for w := 0; w < writers; w++ {
		ns := seen[w]
		sort.Ints(ns)
		for i, n := range ns {
			if n != i {
				t.Fatalf("writer %d: the backup holds messages %v…: not a prefix (missing %d)", w, opsHead(ns), i)
			}
		}
		if int64(len(ns)) < before[w] {
			t.Fatalf("writer %d: %d messages were acknowledged before the backup began, the restored server has %d", w, before[w], len(ns))
		}
		if int64(len(ns)) > acked[w].Load() {
			t.Fatalf("writer %d: the restored server has %d messages, more than the %d ever sent", w, len(ns), acked[w].Load())
		}
		t.Logf("writer %d: %d acknowledged before the backup, %d in it, %d sent in all", w, before[w], len(ns), acked[w].Load())
	}

	// The restored server takes new writes and /sync works.
	if _, err := opsSend(t, r.URL, alice.Token, room, "after-restore", "after restore"); err != nil {
		t.Fatal(err)
	}
	if tok := firstSync(t, r.URL, bob.Token); tok == "" {
		t.Fatal("no sync token")
	}
}

func opsHead(ns []int) []int {
	if len(ns) > 10 {
		return ns[:10]
	}
	return ns
}

// TestOpsBackupRefreshAndRestoreRefusals covers what protects a data
// directory: a server's lock, which restore and a second server respect
// (and which a crash does not leave behind); restore refusing to overwrite
// data without --force, and moving it aside with it; incomplete backups;
// and refreshing an earlier backup in place.
func TestOpsBackupRefreshAndRestoreRefusals(t *testing.T) {
	s := harness.Start(t)
	if opsBackupRefusedOnPostgres(t, s) {
		return
	}
	alice := opsRegister(t, s.URL, "alice")
	room := opsCreateRoom(t, s.URL, alice.Token, "refusals")
	media := []byte("an immutable media file, content-addressed")
	mxc := opsUpload(t, s.URL, alice.Token, media)

	bk := filepath.Join(t.TempDir(), "backup")
	if out, err := harness.Run(t, "", "admin", "backup", bk, "--data-dir", s.DataDir); err != nil {
		t.Fatalf("admin backup: %v\n%s", err, out)
	}
	pid := strconv.Itoa(s.PID())

	// In use: restore refuses, with or without --force, naming the process.
	for _, extra := range [][]string{nil, {"--force"}} {
		out, err := harness.Run(t, "", append([]string{"admin", "restore", bk, "--data-dir", s.DataDir}, extra...)...)
		if err == nil || !strings.Contains(out, "in use") || !strings.Contains(out, pid) {
			t.Fatalf("restore into a running server's directory %v: %v\n%s", extra, err, out)
		}
	}
	// A second server on the same directory is refused at start.
	out, err := harness.Run(t, "", "serve", "--data-dir", s.DataDir, "--listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(out, "in use") {
		t.Fatalf("a second server on the same data directory: %v\n%s", err, out)
	}

	// Refresh: a second backup into the same directory copies only what
	// changed (the media file is already there).
	if _, err := opsSend(t, s.URL, alice.Token, room, "t1", "after the first backup"); err != nil {
		t.Fatal(err)
	}
	out, err = harness.Run(t, "", "admin", "backup", bk, "--data-dir", s.DataDir)
	if err != nil || !strings.Contains(out, "(0 copied") {
		t.Fatalf("refreshing a backup: %v\n%s", err, out)
	}
	// A directory holding something else is not a backup target.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o600)
	if out, err := harness.Run(t, "", "admin", "backup", other, "--data-dir", s.DataDir); err == nil || !strings.Contains(out, "not empty") {
		t.Fatalf("backup into a foreign directory: %v\n%s", err, out)
	}

	// Crashed: the kernel dropped the lock, nothing stale remains. The
	// directory still holds data, so restore wants --force…
	s.Kill()
	out, err = harness.Run(t, "", "admin", "restore", bk, "--data-dir", s.DataDir)
	if err == nil || !strings.Contains(out, "--force") {
		t.Fatalf("restore over existing data without --force: %v\n%s", err, out)
	}
	// …and with it moves the old data aside rather than deleting it,
	// with the admin CLI's poke file of the old database's follow-ups.
	followups := filepath.Join(s.DataDir, "chatalot.db-followups")
	os.WriteFile(followups, []byte("\n\n"), 0o600)
	if out, err := harness.Run(t, "", "admin", "restore", bk, "--data-dir", s.DataDir, "--force"); err != nil {
		t.Fatalf("restore --force: %v\n%s", err, out)
	}
	aside, _ := filepath.Glob(filepath.Join(s.DataDir, "replaced-*", "chatalot.db"))
	if len(aside) != 1 {
		t.Fatalf("the replaced database was not kept aside: %v", aside)
	}
	if _, err := os.Stat(followups); err == nil {
		t.Fatal("restore left the old database's follow-up queue file behind")
	}
	// A stale poke file alone is no data to protect: restore removes it.
	stale := t.TempDir()
	os.WriteFile(filepath.Join(stale, "chatalot.db-followups"), []byte("\n"), 0o600)
	if out, err := harness.Run(t, "", "admin", "restore", bk, "--data-dir", stale); err != nil {
		t.Fatalf("restore next to a stale follow-up file: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(stale, "chatalot.db-followups")); err == nil {
		t.Fatal("restore left a stale follow-up queue file behind")
	}
	s.Launch()
	bodies := opsMessages(t, s.URL, alice.Token, room)
	if len(bodies) != 1 || bodies[0] != "after the first backup" {
		t.Fatalf("restored from the refreshed backup, the room holds %q", bodies)
	}
	if code, got := opsDownload(t, s.URL, alice.Token, mxc); code != 200 || !bytes.Equal(got, media) {
		t.Fatalf("media after restore: %d %q", code, got)
	}

	// An interrupted backup is never restored.
	os.WriteFile(filepath.Join(bk, "backup.incomplete"), []byte("x"), 0o600)
	out, err = harness.Run(t, "", "admin", "restore", bk, "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(out, "incomplete") {
		t.Fatalf("restore of an interrupted backup: %v\n%s", err, out)
	}
	out, err = harness.Run(t, "", "admin", "restore", t.TempDir(), "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(out, "no complete Chatalot backup") {
		t.Fatalf("restore of an empty directory: %v\n%s", err, out)
	}
}
