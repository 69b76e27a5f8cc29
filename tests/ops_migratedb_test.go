package tests

import (
	"bufio"
	"fmt"
	"net/url"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/tests/harness"
)

// TestMigrateDBFromFixture moves an older release's data directory to
// PostgreSQL: the server upgrades it on SQLite, refuses an empty
// PostgreSQL database beside it, `chatalot migrate-db` is killed while it
// copies the events table and run again, and the server then starts on
// PostgreSQL with the fixture's accounts, sessions, rooms, messages and
// media, and takes new messages.
func TestMigrateDBFromFixture(t *testing.T) {
	data, fx := opsUnpackFixture(t, opsFixtureDirs(t)[0])
	s := harness.Start(t, harness.WithDataDir(data), harness.WithArgs("--server-name", fx.ServerName))
	alice := fx.Users[0]
	// Enough rows in events that the kill below lands inside its copy.
	const extra = 400
	big := strings.Repeat("m", 30000)
	for i := 0; i < extra; i++ {
		if _, err := opsSend(t, s.URL, alice.AccessToken, fx.RoomID, fmt.Sprintf("bulk%d", i), fmt.Sprintf("bulk %d %s", i, big)); err != nil {
			t.Fatal(err)
		}
	}
	s.Stop()

	dsn := pgtest.DSN(t)
	out, err := harness.Run(t, "", "serve", "--data-dir", data, "--listen", "127.0.0.1:0", "--server-name", fx.ServerName, "--database", dsn)
	if err == nil || !strings.Contains(out, `chatalot migrate-db --to URL`) {
		t.Fatalf("serve on an empty PostgreSQL database beside the SQLite one: %v\n%s", err, out)
	}

	// Killed (SIGKILL) once it has copied rooms, the table before events.
	cmd := exec.Command(harness.Binary(t), "migrate-db", "--data-dir", data, "--to", dsn)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var first []string
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		first = append(first, sc.Text())
		if f := strings.Fields(sc.Text()); len(f) > 0 && f[0] == "rooms" && !killed {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed || strings.Contains(strings.Join(first, "\n"), "copied ") {
		t.Fatalf("the first run was not interrupted after rooms:\n%s", strings.Join(first, "\n"))
	}

	// The second run goes on: the tables copied before are verified, not
	// copied again; the rest are copied.
	start := time.Now()
	out, err = harness.Run(t, "", "migrate-db", "--data-dir", data, "--to", dsn)
	if err != nil {
		t.Fatalf("migrate-db after the kill: %v\n%s", err, out)
	}
	t.Logf("migrate-db after the kill (%s):\n%s", time.Since(start).Round(time.Millisecond), out)
	rows := migratedTables(out)
	if !strings.Contains(out, "resuming: ") || !strings.Contains(rows["rooms"], "(copied before)") ||
		strings.Contains(rows["events"], "(copied before)") || rows["events"] == "" {
		t.Fatalf("the second run did not go on after rooms:\n%s", out)
	}
	// A third run finds the copy finished and leaves it alone.
	if again, err := harness.Run(t, "", "migrate-db", "--data-dir", data, "--to", dsn); err != nil || len(rows) < 50 ||
		!strings.Contains(again, "finished by an earlier run: nothing to do") {
		t.Fatalf("a third run: %v\n%s", err, again)
	}

	// The server on PostgreSQL serves what the SQLite one held.
	s = harness.Start(t, harness.WithDataDir(data), harness.WithArgs("--server-name", fx.ServerName, "--database", dsn))
	var who struct {
		UserID string `json:"user_id"`
	}
	opsJSON(t, "GET", s.URL+"/_matrix/client/v3/account/whoami", alice.AccessToken, nil, &who)
	if who.UserID != alice.UserID {
		t.Fatalf("whoami on PostgreSQL: %q, want %q", who.UserID, alice.UserID)
	}
	bob := fx.Users[1]
	var login struct {
		AccessToken string `json:"access_token"`
	}
	opsJSON(t, "POST", s.URL+"/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": bob.Name}, "password": bob.Password,
	}, &login)
	var joined struct {
		JoinedRooms []string `json:"joined_rooms"`
	}
	opsJSON(t, "GET", s.URL+"/_matrix/client/v3/joined_rooms", login.AccessToken, nil, &joined)
	if len(joined.JoinedRooms) != 1 || joined.JoinedRooms[0] != fx.RoomID {
		t.Fatalf("bob's rooms on PostgreSQL: %v, want %s", joined.JoinedRooms, fx.RoomID)
	}
	var name struct {
		Name string `json:"name"`
	}
	opsJSON(t, "GET", s.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(fx.RoomID)+"/state/m.room.name", login.AccessToken, nil, &name)
	if name.Name != fx.RoomName {
		t.Fatalf("room name %q, want %q", name.Name, fx.RoomName)
	}
	var fixture []string
	bulk, redacted := 0, 0
	for _, b := range opsMessages(t, s.URL, login.AccessToken, fx.RoomID) {
		switch {
		case b == "":
			redacted++
		case strings.HasPrefix(b, "bulk "):
			bulk++
		default:
			fixture = append([]string{b}, fixture...)
		}
	}
	if !reflect.DeepEqual(fixture, fx.Messages) || bulk != extra || redacted != 1 {
		t.Fatalf("timeline on PostgreSQL: %q, %d bulk and %d redacted; want %q, %d and 1", fixture, bulk, redacted, fx.Messages, extra)
	}
	if code, _ := opsDownload(t, s.URL, alice.AccessToken, fx.MediaURI); code != 200 {
		t.Fatalf("media %s on PostgreSQL: %d", fx.MediaURI, code)
	}
	if _, err := opsSend(t, s.URL, alice.AccessToken, fx.RoomID, "after-move", "written on PostgreSQL"); err != nil {
		t.Fatal(err)
	}
	if msgs := opsMessages(t, s.URL, login.AccessToken, fx.RoomID); len(msgs) == 0 || msgs[0] != "written on PostgreSQL" {
		t.Fatalf("the newest message on PostgreSQL: %.80q", msgs)
	}
}

// migratedTables picks the table lines out of migrate-db's output: name,
// rows, content hash, and whether an earlier run copied it.
func migratedTables(out string) map[string]string {
	re := regexp.MustCompile(`^(\S+)\s+\d+\s+[0-9a-f]{32}( \(copied before\))?$`)
	rows := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			rows[m[1]] = line
		}
	}
	return rows
}
