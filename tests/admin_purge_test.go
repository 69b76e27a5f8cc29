package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/tests/harness"
)

// TestAdminPurgeFreesDisk: through the real binary, a purged room's
// ciphertext-sized messages leave the database file (it shrinks and no
// longer holds the text), and `chatalot admin compact` reports the sizes
// before and after while the server runs.
func TestAdminPurgeFreesDisk(t *testing.T) {
	e := admStart(t)
	alice := e.register("alice")
	room := e.createRoom(alice, map[string]any{"preset": "private_chat"})
	canary := "purgecanary" + randomSuffix()
	for i := 0; i < 200; i++ {
		e.send(alice, room, canary+" "+strings.Repeat("z", 3000))
	}
	db := filepath.Join(e.s.DataDir, "chatalot.db")
	size := func() int64 {
		var n int64
		for _, p := range []string{db, db + "-wal"} {
			if fi, err := os.Stat(p); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	full := size()
	out := e.admin("DELETE", e.url("/_synapse/admin/v1/rooms/%s", room), map[string]any{"force_purge": true}, 200)
	removed, _ := out["removed_rows"].(map[string]any)
	if removed["events"] == nil || removed["events"].(float64) < 200 {
		t.Fatalf("purge answer: %v", out)
	}
	if harness.OnPostgres(e.s.DataDir) {
		// The rows are gone; giving their space back is autovacuum's job,
		// and the compaction command says so.
		if strings.Contains(dumpDatabase(t, e.s.DataDir), canary) {
			t.Fatal("the database still holds the purged messages' text")
		}
		cli, err := harness.Run(t, "", "admin", "compact", "--data-dir", e.s.DataDir)
		if err == nil || !strings.Contains(cli, "not available on PostgreSQL") {
			t.Fatalf("admin compact on PostgreSQL: %v\n%s", err, cli)
		}
		return
	}
	cli, err := harness.Run(t, "", "admin", "compact", "--data-dir", e.s.DataDir)
	if err != nil {
		t.Fatalf("admin compact: %v\n%s", err, cli)
	}
	m := regexp.MustCompile(`(\d+) bytes before, (\d+) bytes after`).FindStringSubmatch(cli)
	if m == nil {
		t.Fatalf("admin compact output: %s", cli)
	}
	after, _ := strconv.ParseInt(m[2], 10, 64)
	t.Logf("database with the room %d bytes; after purge and compact %d bytes (compact: %s)", full, after, strings.TrimSpace(cli))
	if after >= full/2 {
		t.Fatalf("the database did not shrink: %d → %d bytes", full, after)
	}
	for _, p := range []string{db, db + "-wal"} {
		if raw, err := os.ReadFile(p); err == nil && strings.Contains(string(raw), canary) {
			t.Fatalf("%s still holds the purged messages' text", filepath.Base(p))
		}
	}
	if !strings.Contains(strings.Join(e.auditActions(), ","), "compact_database") {
		t.Fatalf("audit log: %v", e.auditActions())
	}
}
