package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// TestAdminCLIEraseServerRunning: `chatalot admin deactivate NAME --erase`
// on a running server's data directory erases the account as the admin
// API does: the server, told by the CLI, redacts the user's messages in
// the database, deletes their upload and records the erasure; the
// message's text leaves the database files (secure_delete zeroes it).
func TestAdminCLIEraseServerRunning(t *testing.T) {
	e := admStart(t)
	carol := e.register("carol")
	bob := e.register("bob")
	room := e.createRoom(bob, map[string]any{"preset": "public_chat"})
	e.want("POST", e.url("/_matrix/client/v3/join/%s", room), carol, map[string]any{}, 200, "")
	canary := "clierasecanary" + randomSuffix()
	e.send(carol, room, canary+" "+strings.Repeat("x", 2000))
	media := e.upload(carol, "carol's file "+canary)

	admCLI(t, e.s.DataDir, "", "deactivate", "carol", "--erase")
	admWait(t, 15*time.Second, "the server to erase the account", func() bool {
		for _, a := range e.auditActions() {
			if a == "erase_user" {
				return true
			}
		}
		return false
	})
	msgs := e.want("GET", e.url("/_matrix/client/v3/rooms/%s/messages?dir=b&limit=50", room), bob, nil, 200, "")
	if raw, _ := json.Marshal(msgs); strings.Contains(string(raw), canary) {
		t.Fatalf("/messages still shows the erased user's text: %.400s", raw)
	}
	if c := e.download(bob, media); c != 404 {
		t.Fatalf("the erased user's upload answers %d", c)
	}
	if harness.OnPostgres(e.s.DataDir) {
		// No row holds the text (PostgreSQL's files are its own business).
		if strings.Contains(dumpDatabase(t, e.s.DataDir), canary) {
			t.Fatal("the database still holds the erased user's text")
		}
		return
	}
	// The text is gone from the files once the log is checkpointed.
	e.admin("POST", e.s.URL+"/_synapse/admin/v1/chatalot/database/compact", map[string]any{}, 200)
	db := filepath.Join(e.s.DataDir, "chatalot.db")
	for _, p := range []string{db, db + "-wal"} {
		if raw, err := os.ReadFile(p); err == nil && strings.Contains(string(raw), canary) {
			t.Fatalf("%s still holds the erased user's text", filepath.Base(p))
		}
	}
}
