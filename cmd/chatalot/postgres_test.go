package main

import (
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

// TestServeOnPostgres: with database set to a postgres:// URL the server
// and the admin commands keep everything in PostgreSQL — a message sent
// before a restart is there after it — and no SQLite file is made; the
// SQLite file operations (backup, compaction) say they are not for
// PostgreSQL.
func TestServeOnPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	cfg := defaults()
	cfg.DataDir = t.TempDir()
	cfg.Database = dsn
	cfg.Registration, cfg.RateLimits, cfg.Encryption = "open", "off", "optional"
	if ps := cfg.Validate(); len(ps) > 0 {
		t.Fatal(ps)
	}
	if err := adminCreateUser([]string{"boss", "--admin", "--password-stdin", "--data-dir", cfg.DataDir, "--database", dsn},
		strings.NewReader(purgePassword+"\n"), io.Discard); err != nil {
		t.Fatal(err)
	}
	start := func() (*App, *httptest.Server) {
		app, err := openApp(cfg, zerolog.New(io.Discard))
		if err != nil {
			t.Fatal(err)
		}
		if app.db.Dialect() != storage.Postgres {
			t.Fatalf("dialect %q", app.db.Dialect())
		}
		return app, httptest.NewServer(app.Router())
	}
	app, srv := start()
	login := `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"boss"},"password":"` + purgePassword + `"}`
	tok := between(mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/login", "", login), `"access_token":"`, `"`)
	room := between(mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", tok, `{}`), `"room_id":"`, `"`)
	mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+room+"/send/m.room.message/t1", tok, `{"msgtype":"m.text","body":"kept in postgres"}`)
	app.BeginShutdown()
	srv.Close()
	app.Close()

	app, srv = start()
	defer func() { app.BeginShutdown(); srv.Close(); app.Close() }()
	// A second server on the same database, from another data directory,
	// would keep a stream position of its own: it is refused.
	other := cfg
	other.DataDir = t.TempDir()
	if second, err := openApp(other, zerolog.New(io.Discard)); !errors.Is(err, storage.ErrDatabaseServed) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("a second server on the database: %v", err)
	}
	tok = between(mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/login", "", login), `"access_token":"`, `"`)
	if out := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+room+"/messages?dir=b", tok, ""); !strings.Contains(out, "kept in postgres") {
		t.Fatalf("message lost over the restart: %s", out)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "chatalot.db")); !os.IsNotExist(err) {
		t.Fatalf("an SQLite file was made: %v", err)
	}
	if code, out := request(t, "POST", srv.URL+"/_synapse/admin/v1/chatalot/database/compact", tok, ""); code != 400 || !strings.Contains(out, "SQLite") {
		t.Fatalf("compact on PostgreSQL: %d %s", code, out)
	}
	if out := mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/chatalot/database", tok, ""); !strings.Contains(out, `"auto_vacuum":"postgres"`) {
		t.Fatalf("database space on PostgreSQL: %s", out)
	}
	err := adminBackup([]string{"--data-dir", cfg.DataDir, "--database", dsn, filepath.Join(t.TempDir(), "b")}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "pg_dump") {
		t.Fatalf("backup on PostgreSQL: %v", err)
	}
}

// TestDatabaseSettingIsSQLiteOrPostgres: anything but empty or a
// postgres:// URL is refused.
func TestDatabaseSettingIsSQLiteOrPostgres(t *testing.T) {
	cfg := defaults()
	cfg.Database = "mysql://x"
	found := false
	for _, p := range cfg.Validate() {
		found = found || p.Key == "database"
	}
	if !found {
		t.Fatal("database = mysql://x accepted")
	}
}
