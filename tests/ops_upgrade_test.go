package tests

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/tests/harness"
)

// Upgrade fixtures: tests/testdata/upgrade-vN/ is a small data directory
// made by a released build of the schema (see its README). Each later
// binary must start on a copy of it, migrating it once, and serve its data.
// A fixture is never regenerated: a schema change that breaks it is a
// schema change that would break a real server. New fixtures are added
// beside it (upgrade-v2, …) when a release changes the schema.

// upgradeFixture is fixture.json: what the fixture holds, for the test to
// look for.
type upgradeFixture struct {
	MadeBy         string         `json:"made_by"`
	ServerName     string         `json:"server_name"`
	SchemaVersions map[string]int `json:"schema_versions"`
	Users          []struct {
		Name, UserID, Password, AccessToken string
	} `json:"users"`
	RoomID         string   `json:"room_id"`
	RoomName       string   `json:"room_name"`
	Alias          string   `json:"alias"`
	Messages       []string `json:"messages"`
	Redacted       string   `json:"redacted"`
	MediaURI       string   `json:"media_uri"`
	MediaSHA256    string   `json:"media_sha256"`
	AccountData    string   `json:"account_data"`
	RegistrationTK string   `json:"registration_token"`
}

// opsFixtureDirs lists the committed upgrade fixtures.
func opsFixtureDirs(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join("testdata", "upgrade-v*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no upgrade fixtures under tests/testdata: %v", err)
	}
	return dirs
}

// opsUnpackFixture copies a fixture into a new data directory, unpacking
// chatalot.db.gz.
func opsUnpackFixture(t *testing.T, fixture string) (string, upgradeFixture) {
	t.Helper()
	var fx upgradeFixture
	raw, err := os.ReadFile(filepath.Join(fixture, "fixture.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "data")
	// An older release's data directory is an SQLite one, also when the
	// tests run on PostgreSQL (TestMigrateDBFromFixture moves one there).
	harness.KeepSQLite(t, data)
	opsCopyDir(t, fixture, data)
	gz, err := os.Open(filepath.Join(data, "chatalot.db.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(gz)
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.OpenFile(filepath.Join(data, "chatalot.db"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(db, zr); err != nil {
		t.Fatal(err)
	}
	db.Close()
	gz.Close()
	for _, f := range []string{"chatalot.db.gz", "fixture.json", "README.md"} {
		os.Remove(filepath.Join(data, f))
	}
	return data, fx
}

// TestOpsUpgradeFromFixture starts today's server on a copy of every
// committed fixture and checks that it migrated the data directory and
// serves what was in it.
func TestOpsUpgradeFromFixture(t *testing.T) {
	for _, fixture := range opsFixtureDirs(t) {
		t.Run(filepath.Base(fixture), func(t *testing.T) {
			data, fx := opsUnpackFixture(t, fixture)
			s := harness.Start(t, harness.WithDataDir(data), harness.WithArgs("--server-name", fx.ServerName))
			alice, bob := fx.Users[0], fx.Users[1]

			// Sessions made by the old build still work; passwords too.
			var who struct {
				UserID string `json:"user_id"`
			}
			opsJSON(t, "GET", s.URL+"/_matrix/client/v3/account/whoami", alice.AccessToken, nil, &who)
			if who.UserID != alice.UserID {
				t.Fatalf("whoami: %q, want %q", who.UserID, alice.UserID)
			}
			var login struct {
				AccessToken string `json:"access_token"`
			}
			opsJSON(t, "POST", s.URL+"/_matrix/client/v3/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": bob.Name}, "password": bob.Password,
			}, &login)

			// Rooms, their state, timeline, aliases and redactions.
			var joined struct {
				JoinedRooms []string `json:"joined_rooms"`
			}
			opsJSON(t, "GET", s.URL+"/_matrix/client/v3/joined_rooms", login.AccessToken, nil, &joined)
			if len(joined.JoinedRooms) != 1 || joined.JoinedRooms[0] != fx.RoomID {
				t.Fatalf("bob's rooms: %v, want %s", joined.JoinedRooms, fx.RoomID)
			}
			var name struct {
				Name string `json:"name"`
			}
			opsJSON(t, "GET", s.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(fx.RoomID)+"/state/m.room.name", alice.AccessToken, nil, &name)
			if name.Name != fx.RoomName {
				t.Fatalf("room name %q, want %q", name.Name, fx.RoomName)
			}
			var alias struct {
				RoomID string `json:"room_id"`
			}
			opsJSON(t, "GET", s.URL+"/_matrix/client/v3/directory/room/"+url.PathEscape(fx.Alias), alice.AccessToken, nil, &alias)
			if alias.RoomID != fx.RoomID {
				t.Fatalf("alias %s → %q", fx.Alias, alias.RoomID)
			}
			// Newest first; the redacted message is there without its body.
			var got []string
			redacted := 0
			for _, b := range opsMessages(t, s.URL, login.AccessToken, fx.RoomID) {
				switch b {
				case "":
					redacted++
				case fx.Redacted:
					t.Fatalf("the redacted message %q came back", b)
				default:
					got = append([]string{b}, got...)
				}
			}
			if !reflect.DeepEqual(got, fx.Messages) || redacted != 1 {
				t.Fatalf("timeline %q and %d redacted, want %q and 1", got, redacted, fx.Messages)
			}

			// Search: the old build's FTS5 index is gone, and the events it
			// held are in the word index that replaced it (rooms migration 5
			// and the reindex at start).
			for term, want := range map[string]int{"third": 1, "fixture message": 1, "redacted": 0} {
				var res struct {
					SearchCategories struct {
						RoomEvents struct {
							Count int `json:"count"`
						} `json:"room_events"`
					} `json:"search_categories"`
				}
				opsJSON(t, "POST", s.URL+"/_matrix/client/v3/search", alice.AccessToken, map[string]any{
					"search_categories": map[string]any{"room_events": map[string]any{"search_term": term}},
				}, &res)
				if res.SearchCategories.RoomEvents.Count != want {
					t.Fatalf("search %q after the upgrade: %d results, want %d", term, res.SearchCategories.RoomEvents.Count, want)
				}
			}

			// Account data, media and invite codes.
			var ad map[string]string
			opsJSON(t, "GET", s.URL+"/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/account_data/org.chatalot.fixture", alice.AccessToken, nil, &ad)
			if ad["value"] != fx.AccountData {
				t.Fatalf("account data %v", ad)
			}
			code, media := opsDownload(t, s.URL, alice.AccessToken, fx.MediaURI)
			sum := sha256.Sum256(media)
			if code != 200 || hex.EncodeToString(sum[:]) != fx.MediaSHA256 {
				t.Fatalf("media %s: %d, sha256 %x", fx.MediaURI, code, sum)
			}
			out, err := harness.Run(t, "", "admin", "registration-token", "list", "--data-dir", data, "--server-name", fx.ServerName)
			if err != nil || !strings.Contains(out, fx.RegistrationTK) {
				t.Fatalf("registration tokens: %v\n%s", err, out)
			}

			// New writes work on the upgraded directory.
			if _, err := opsSend(t, s.URL, alice.AccessToken, fx.RoomID, "upgraded", "written after the upgrade"); err != nil {
				t.Fatal(err)
			}
			s.Stop()

			// The schema is now exactly what a new data directory gets, and a
			// second start finds nothing more to migrate.
			freshDir := t.TempDir()
			harness.KeepSQLite(t, freshDir) // compared with the fixture's SQLite file
			fresh := harness.Start(t, harness.WithDataDir(freshDir))
			fresh.Stop()
			want := opsSchemaVersions(t, filepath.Join(fresh.DataDir, "chatalot.db"))
			have := opsSchemaVersions(t, filepath.Join(data, "chatalot.db"))
			if !reflect.DeepEqual(have, want) {
				t.Fatalf("after the upgrade the schema is %v; a new data directory has %v", have, want)
			}
			for domain, v := range fx.SchemaVersions {
				if want[domain] < v {
					t.Fatalf("the fixture has %s at version %d, this build knows %d", domain, v, want[domain])
				}
			}
			s.Launch()
			if got := opsMessages(t, s.URL, alice.AccessToken, fx.RoomID); len(got) != len(fx.Messages)+2 || got[0] != "written after the upgrade" {
				t.Fatalf("after a second start: %q", got)
			}
		})
	}
}

// TestOpsNewerSchemaRefused plays an older binary meeting a data directory
// a newer one has migrated: one schema version is bumped past what this
// build knows, and the server must refuse to start, say why and what to do,
// and leave the database as it was.
func TestOpsNewerSchemaRefused(t *testing.T) {
	data, fx := opsUnpackFixture(t, opsFixtureDirs(t)[0])
	// Bring it to today's schema first, so that only the bump differs.
	s := harness.Start(t, harness.WithDataDir(data), harness.WithArgs("--server-name", fx.ServerName))
	s.Stop()
	path := filepath.Join(data, "chatalot.db")
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	var rooms int
	if err := db.QueryRow("SELECT version FROM schema_versions WHERE domain = 'rooms'").Scan(&rooms); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("UPDATE schema_versions SET version = 999 WHERE domain = 'rooms'"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	before := opsSchemaVersions(t, path)

	out, err := harness.Run(t, "", "serve", "--data-dir", data, "--server-name", fx.ServerName, "--listen", "127.0.0.1:0", "--log-format", "json")
	if err == nil {
		t.Fatalf("the server started on a database from a newer Chatalot:\n%s", out)
	}
	for _, want := range []string{"newer Chatalot", `"rooms" version 999`, "knows up to", "run the newer binary, or restore a backup"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the refusal does not say %q:\n%s", want, out)
		}
	}
	if after := opsSchemaVersions(t, path); !reflect.DeepEqual(after, before) {
		t.Fatalf("the refused start changed the schema versions: %v → %v", before, after)
	}
	// It is refused, not locked: a newer binary (played by undoing the
	// bump) still starts on it.
	db, _ = sql.Open("sqlite3", "file:"+path)
	db.Exec("UPDATE schema_versions SET version = $1 WHERE domain = 'rooms'", rooms)
	db.Close()
	s.Launch()
}

func opsSchemaVersions(t *testing.T, path string) map[string]int {
	t.Helper()
	info, err := storage.Inspect(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Integrity != "ok" {
		t.Fatalf("%s: integrity check: %s", path, info.Integrity)
	}
	return info.Versions
}

// TestOpsMakeUpgradeFixture writes a new upgrade fixture with the current
// build. It runs only when asked:
//
//	CHATALOT_MAKE_UPGRADE_FIXTURE=testdata/upgrade-v2 go test -tags 'sqlite_fts5 goolm nomsgpack' -run TestOpsMakeUpgradeFixture ./tests
//
// and only into a directory that does not exist: fixtures are never
// regenerated.
func TestOpsMakeUpgradeFixture(t *testing.T) {
	dest := os.Getenv("CHATALOT_MAKE_UPGRADE_FIXTURE")
	if dest == "" {
		t.Skip("set CHATALOT_MAKE_UPGRADE_FIXTURE=testdata/upgrade-vN to write a new upgrade fixture")
	}
	if _, err := os.Stat(dest); err == nil {
		t.Fatalf("%s exists: fixtures are never regenerated; choose the next name", dest)
	}
	const server = "fixture.example"
	s := harness.Start(t, harness.WithArgs("--server-name", server))
	fx := upgradeFixture{ServerName: server, RoomName: "Upgrade fixture room", Alias: "#fixture:" + server}
	for _, name := range []string{"alice", "bob"} {
		u := opsRegister(t, s.URL, name)
		fx.Users = append(fx.Users, struct{ Name, UserID, Password, AccessToken string }{name, u.ID, u.Password, u.Token})
	}
	alice, bob := fx.Users[0], fx.Users[1]
	fx.RoomID = opsCreateRoom(t, s.URL, alice.AccessToken, fx.RoomName)
	opsJSON(t, "PUT", s.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(fx.RoomID)+"/state/m.room.topic", alice.AccessToken, map[string]string{"topic": "kept across upgrades"}, nil)
	opsJSON(t, "PUT", s.URL+"/_matrix/client/v3/directory/room/"+url.PathEscape(fx.Alias), alice.AccessToken, map[string]string{"room_id": fx.RoomID}, nil)
	opsJSON(t, "POST", s.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(fx.RoomID)+"/invite", alice.AccessToken, map[string]string{"user_id": bob.UserID}, nil)
	opsJSON(t, "POST", s.URL+"/_matrix/client/v3/join/"+url.PathEscape(fx.RoomID), bob.AccessToken, map[string]any{}, nil)
	fx.Messages = []string{"first message of the fixture", "a reply from bob", "third message"}
	fx.Redacted = "this one gets redacted"
	for i, m := range []string{fx.Messages[0], fx.Redacted, fx.Messages[1], fx.Messages[2]} {
		tok := alice.AccessToken
		if m == fx.Messages[1] {
			tok = bob.AccessToken
		}
		id, err := opsSend(t, s.URL, tok, fx.RoomID, "fx"+string(rune('a'+i)), m)
		if err != nil {
			t.Fatal(err)
		}
		if m == fx.Redacted {
			opsJSON(t, "PUT", s.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(fx.RoomID)+"/redact/"+url.PathEscape(id)+"/r1", alice.AccessToken, map[string]string{"reason": "fixture"}, nil)
		}
	}
	fx.AccountData = "account data kept across upgrades"
	opsJSON(t, "PUT", s.URL+"/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/account_data/org.chatalot.fixture", alice.AccessToken, map[string]string{"value": fx.AccountData}, nil)
	media := []byte("Chatalot upgrade fixture: a small media file.\n")
	fx.MediaURI = opsUpload(t, s.URL, alice.AccessToken, media)
	sum := sha256.Sum256(media)
	fx.MediaSHA256 = hex.EncodeToString(sum[:])
	fx.RegistrationTK = "fixture-invite-code"
	if out, err := harness.Run(t, "", "admin", "registration-token", "create", fx.RegistrationTK, "--uses", "5", "--data-dir", s.DataDir, "--server-name", server); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, _ := harness.Run(t, "", "version")
	fx.MadeBy = strings.TrimSpace(out)
	s.Stop()
	fx.SchemaVersions = opsSchemaVersions(t, filepath.Join(s.DataDir, "chatalot.db"))

	// The database, compacted and gzipped; the key; the media files.
	if err := os.MkdirAll(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	compact := filepath.Join(t.TempDir(), "compact.db")
	if err := storage.BackupFile(context.Background(), filepath.Join(s.DataDir, "chatalot.db"), compact); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(compact)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(raw)
	zw.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dest, "chatalot.db.gz"), gz.Bytes(), 0o644))
	key, err := os.ReadFile(filepath.Join(s.DataDir, "signing.key"))
	must(err)
	must(os.WriteFile(filepath.Join(dest, "signing.key"), key, 0o644))
	must(filepath.Walk(filepath.Join(s.DataDir, "media"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(s.DataDir, p)
		if strings.HasPrefix(rel, filepath.Join("media", "tmp")) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		must(os.MkdirAll(filepath.Join(dest, filepath.Dir(rel)), 0o755))
		return os.WriteFile(filepath.Join(dest, rel), b, 0o644)
	}))
	j, _ := json.MarshalIndent(fx, "", "  ")
	must(os.WriteFile(filepath.Join(dest, "fixture.json"), append(j, '\n'), 0o644))
	t.Logf("wrote %s (%s): database %d bytes, %d gzipped", dest, fx.MadeBy, len(raw), gz.Len())
}
