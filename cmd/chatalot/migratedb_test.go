package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/storage"
)

// TestMigrateDBInterruptedThenResumed: a copy stopped after a few tables
// goes on at the next run without copying any table twice; the server
// then starts on PostgreSQL with the accounts, the messages and the stream
// position of the SQLite one, and a copy is refused into a database that
// is not empty or while the server runs.
func TestMigrateDBInterruptedThenResumed(t *testing.T) {
	if pgtest.OnPostgres() {
		t.Skip("the source of migrate-db is an SQLite database: this test makes its own, and its target")
	}
	cfg := defaults()
	cfg.DataDir = t.TempDir()
	cfg.Registration, cfg.RateLimits, cfg.Encryption = "open", "off", "optional"
	if err := adminCreateUser([]string{"boss", "--admin", "--password-stdin", "--data-dir", cfg.DataDir},
		strings.NewReader(purgePassword+"\n"), io.Discard); err != nil {
		t.Fatal(err)
	}
	start := func(cfg Config) (*App, *httptest.Server) {
		t.Helper()
		app, err := openApp(cfg, zerolog.New(io.Discard))
		if err != nil {
			t.Fatal(err)
		}
		return app, httptest.NewServer(app.Router())
	}
	app, srv := start(cfg)
	login := `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"boss"},"password":"` + purgePassword + `"}`
	tok := between(mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/login", "", login), `"access_token":"`, `"`)
	room := between(mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", tok, `{"name":"moving"}`), `"room_id":"`, `"`)
	for _, body := range []string{"one", "two", "three"} {
		mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+room+"/send/m.room.message/"+body, tok, `{"msgtype":"m.text","body":"before the move: `+body+`"}`)
	}
	dsn := pgtest.DSN(t)
	// While the server runs, the copy is refused.
	if err := migrateDB([]string{"--data-dir", cfg.DataDir, "--to", dsn}, io.Discard); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("migrate-db with the server running: %v", err)
	}
	position := app.db.Position()
	app.BeginShutdown()
	srv.Close()
	app.Close()

	// Before the copy, the server refuses the empty PostgreSQL database
	// rather than starting there with nothing.
	pgCfg := cfg
	pgCfg.Database = dsn
	if _, err := openApp(pgCfg, zerolog.New(io.Discard)); err == nil || !strings.Contains(err.Error(), "chatalot migrate-db --to URL") {
		t.Fatalf("the server on an empty PostgreSQL database beside an SQLite one: %v", err)
	}

	// Interrupted after the third table.
	n := 0
	stop := errors.New("interrupted")
	migrateAfterTable = func(string) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	}
	defer func() { migrateAfterTable = nil }()
	var out bytes.Buffer
	if err := migrateDB([]string{"--data-dir", cfg.DataDir, "--to", dsn}, &out); !errors.Is(err, stop) {
		t.Fatalf("first run: %v\n%s", err, out.String())
	}
	migrateAfterTable = nil
	// The half-copied database is refused by the server.
	if _, err := openApp(pgCfg, zerolog.New(io.Discard)); err == nil || !strings.Contains(err.Error(), "migrate-db has not finished") {
		t.Fatalf("the server on a half-copied PostgreSQL database: %v", err)
	}
	out.Reset()
	if err := migrateDB([]string{"--data-dir", cfg.DataDir, "--to", dsn}, &out); err != nil {
		t.Fatalf("second run: %v\n%s", err, out.String())
	}
	t.Logf("second run:\n%s", out.String())
	if c := strings.Count(out.String(), "(copied before)"); c != 3 || !strings.Contains(out.String(), "resuming: 3 of") {
		t.Fatalf("the second run did not go on after the three copied tables (%d):\n%s", c, out.String())
	}
	// Each table's row count is the source's, so nothing was copied twice.
	src, err := storage.Open(pathsOf(cfg.DataDir).db, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, table := range []string{"events", "users", "stream_position", "room_state"} {
		var want, got int
		if err := src.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&got); err != nil || got != want || want == 0 {
			t.Fatalf("%s: %d rows in PostgreSQL, %d in SQLite (%v)", table, got, want, err)
		}
	}
	// A third run finds the copy finished and changes nothing.
	out.Reset()
	if err := migrateDB([]string{"--data-dir", cfg.DataDir, "--to", dsn}, &out); err != nil || !strings.Contains(out.String(), "finished by an earlier run: nothing to do") {
		t.Fatalf("third run: %v\n%s", err, out.String())
	}

	// A target that is not empty, or no SQLite database, is refused.
	other := pgtest.DSN(t)
	oc, err := pgx.Connect(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Exec(ctx, "CREATE TABLE something (x TEXT)"); err != nil {
		t.Fatal(err)
	}
	oc.Close(ctx)
	if err := migrateDB([]string{"--data-dir", cfg.DataDir, "--to", other}, io.Discard); err == nil || !strings.Contains(err.Error(), "not empty (it has the tables something)") {
		t.Fatalf("migrate-db into a database that is not empty: %v", err)
	}
	if err := migrateDB([]string{"--data-dir", t.TempDir(), "--to", other}, io.Discard); err == nil || !strings.Contains(err.Error(), "no SQLite database") {
		t.Fatalf("migrate-db without a database: %v", err)
	}

	// The server on PostgreSQL has everything.
	cfg.Database = dsn
	app, srv = start(cfg)
	defer func() { app.BeginShutdown(); srv.Close(); app.Close() }()
	if app.db.Position() != position {
		t.Fatalf("stream position %d on PostgreSQL, %d on SQLite", app.db.Position(), position)
	}
	tok = between(mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/login", "", login), `"access_token":"`, `"`)
	msgs := mustRequest(t, "GET", srv.URL+"/_matrix/client/v3/rooms/"+room+"/messages?dir=b", tok, "")
	for _, body := range []string{"one", "two", "three"} {
		if !strings.Contains(msgs, "before the move: "+body) {
			t.Fatalf("message %q missing after the move: %s", body, msgs)
		}
	}
	// Search on PostgreSQL goes through its tsvector index (search_tsv),
	// which the copy of the word index filled: the copied messages are
	// found by a word's prefix, the room name too (4 results).
	var tsv int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM search_tsv").Scan(&tsv); err != nil || tsv != 4 {
		t.Fatalf("search_tsv after the move: %d rows (%v), want 4 (3 messages and the room name)", tsv, err)
	}
	found := mustRequest(t, "POST", srv.URL+"/_matrix/client/v3/search", tok, `{"search_categories":{"room_events":{"search_term":"mov","order_by":"rank"}}}`)
	if !strings.Contains(found, `"count":4`) {
		t.Fatalf("search after the move: %s", found)
	}
	// New events get positions past the copied ones.
	mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+room+"/send/m.room.message/after", tok, `{"msgtype":"m.text","body":"after the move"}`)
	if app.db.Position() <= position {
		t.Fatalf("position %d after a send, was %d", app.db.Position(), position)
	}
}
