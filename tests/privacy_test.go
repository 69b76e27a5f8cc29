package tests

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// dumpDatabase renders every row of every table of the database of a
// stopped server (on data directory dir) as text.
func dumpDatabase(t *testing.T, dir string) string {
	t.Helper()
	db := openServerDB(t, dir, "")
	defer db.Close()
	tables := serverTables(t, dir, db)
	var b strings.Builder
	for _, tb := range tables {
		r, err := db.Query(`SELECT * FROM "` + tb + `"`)
		if err != nil {
			continue // FTS shadow tables
		}
		cols, _ := r.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for r.Next() {
			r.Scan(ptrs...)
			for _, v := range vals {
				fmt.Fprintf(&b, "%s\t", v)
			}
			b.WriteByte('\n')
		}
		r.Close()
	}
	return b.String()
}

// TestSecretsNeverStoredOrLogged runs accounts, sessions, messages, keys and
// media through a server, then searches its logs, database and media store
// for every password and token used: there must be none. Passwords appear
// only as Argon2id hashes; no client IP address is kept.
func TestSecretsNeverStoredOrLogged(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--log-level", "debug"))
	password := "pw-" + randomSuffix() + "-secret"
	newPassword := "pw2-" + randomSuffix() + "-secret"
	a := &api{base: func() string { return s.URL }, hc: httpClient()}
	code, reg, err := a.do("POST", "/_matrix/client/v3/register", map[string]any{"username": "keeper", "password": password, "auth": map[string]any{"type": "m.login.dummy"}})
	if err != nil || code != 200 {
		t.Fatalf("register: %d %v", code, err)
	}
	a.token = reg["access_token"].(string)
	secrets := []string{password, newPassword, a.token}
	code, login, _ := a.do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "keeper"}, "password": password})
	if code != 200 {
		t.Fatalf("login: %d", code)
	}
	secrets = append(secrets, login["access_token"].(string))
	// Token in the query string, the legacy way some bots still use.
	a.hc.Get(s.URL + "/_matrix/client/v3/account/whoami?access_token=" + a.token)
	room := a.must(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"})["room_id"].(string)
	a.must(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.encrypted/1", map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnAc"})
	a.must(t, "POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": newPassword, "logout_devices": false,
		"auth": map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "keeper"}, "password": password}})
	a.must(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": map[string]any{"curve25519:AAAA": fakeCurveKey(7)}})
	a.do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "keeper"}, "password": "wrong-" + password})
	s.Stop()

	dump := dumpDatabase(t, s.DataDir)
	var files bytes.Buffer
	filepath.WalkDir(s.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			raw, _ := os.ReadFile(p)
			files.Write(raw)
		}
		return nil
	})
	for _, secret := range secrets {
		for name, hay := range map[string]string{"logs": s.Logs(), "database": dump, "data directory": files.String()} {
			if strings.Contains(hay, secret) {
				t.Errorf("a secret (%.6s…) appears in the %s", secret, name)
			}
		}
	}
	if !regexp.MustCompile(`\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$`).MatchString(dump) {
		t.Error("no Argon2id password hash in the database")
	}
	if strings.Contains(dump, "127.0.0.1") {
		t.Error("a client IP address is stored")
	}
	// Every file the server wrote is for its own user only.
	filepath.WalkDir(s.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, _ := d.Info(); info.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s has mode %v", p, info.Mode().Perm())
			}
		}
		return nil
	})
}

// TestZeroTelemetry runs the server under strace with default settings,
// leaves it idle, uses it, and requires that it opened no connection at all
// beyond the loopback address it serves (and its PostgreSQL database's).
func TestZeroTelemetry(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Fatal("strace is needed (Debian package strace; .ci/run installs it)")
	}
	trace := filepath.Join(t.TempDir(), "trace")
	s := harness.Start(t, harness.WithWrapper("strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", trace))
	idle := 15 * time.Second
	if os.Getenv("CHATALOT_SOAK") != "" {
		idle = time.Minute
	}
	time.Sleep(idle) // the point of the test: what does an idle server do on its own
	a := login(t, s, "user")
	room := a.must(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})["room_id"].(string)
	a.must(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "hi"})
	a.must(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)
	s.Kill()
	raw, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	// On PostgreSQL the database's own address is the one connection the
	// configuration asks for.
	database := "no database address"
	if harness.OnPostgres(s.DataDir) {
		u, err := url.Parse(harness.Database(t, s.DataDir))
		if err != nil || u.Hostname() != "127.0.0.1" {
			t.Fatalf("database URL %v: %v", u, err)
		}
		database = fmt.Sprintf(`sin_port=htons(%s), sin_addr=inet_addr("127.0.0.1")`, u.Port())
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.Contains(line, "connect(") && !strings.Contains(line, "sendto(") && !strings.Contains(line, "sendmsg(") {
			continue
		}
		if strings.Contains(line, database) {
			continue
		}
		if strings.Contains(line, "AF_INET") || strings.Contains(line, "AF_INET6") || strings.Contains(line, "AF_NETLINK") {
			t.Errorf("the server opened a connection: %s", line)
		}
	}
}
