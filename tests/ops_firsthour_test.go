package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// The first hour of a new operator (issue 20): what a mistake on the
// command line, in the configuration or with the data directory does.

// cliResult is one run of the binary.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cliRun runs the binary in dir (the test's directory when empty) and
// returns its outputs and exit status.
func cliRun(t *testing.T, dir, stdin string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(harness.Binary(t), args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errOut.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// TestCLIConventions: help on -h/--help with status 0, the version, a bare
// `chatalot` that explains instead of serving, and each command's -h
// showing its own flags with their types and defaults.
func TestCLIConventions(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		r := cliRun(t, dir, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "chatalot serve") || !strings.Contains(r.stdout, "chatalot admin") {
			t.Errorf("chatalot %v: status %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		if r := cliRun(t, dir, "", args...); r.code != 0 || !strings.HasPrefix(r.stdout, "chatalot ") {
			t.Errorf("chatalot %v: status %d %q", args, r.code, r.stdout)
		}
	}
	// Neither a bare `chatalot` nor flags without a command start a server.
	for _, args := range [][]string{nil, {"--listen", "127.0.0.1:0"}} {
		r := cliRun(t, dir, "", args...)
		if r.code != 2 || !strings.Contains(r.stderr, "chatalot serve") {
			t.Errorf("chatalot %v: status %d, want 2 and a pointer to serve\n%s", args, r.code, r.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Fatal("a bare chatalot made a data directory")
	}
	// A command's -h shows its own flags and where the data directory is,
	// not every server setting.
	r := cliRun(t, dir, "", "admin", "create-user", "-h")
	if r.code != 0 || !strings.Contains(r.stdout, "--password-stdin") || !strings.Contains(r.stdout, "--data-dir DIR") ||
		!strings.Contains(r.stdout, "--config FILE") || strings.Contains(r.stdout, "--max-upload-bytes") {
		t.Errorf("admin create-user -h: status %d\n%s", r.code, r.stdout)
	}
	r = cliRun(t, dir, "", "admin", "token", "create", "-h")
	if r.code != 0 || !strings.Contains(r.stdout, "--uses integer") || !strings.Contains(r.stdout, "--expires duration") {
		t.Errorf("admin token create -h: status %d\n%s", r.code, r.stdout)
	}
	r = cliRun(t, dir, "", "migrate-db", "-h")
	if r.code != 0 || !strings.Contains(r.stdout, "--to URL") || !strings.Contains(r.stdout, "--data-dir DIR") {
		t.Errorf("migrate-db -h: status %d\n%s", r.code, r.stdout)
	}
	// serve -h lists every setting with its type and default.
	r = cliRun(t, dir, "", "serve", "-h")
	for _, want := range []string{
		"--shutdown-grace duration", "(default 10s)", "--max-body-bytes size", "(default 1048576)",
		"--password-min-length integer", "--listen HOST:PORT", `--server-name string`, `(default "localhost")`, "--presence\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("serve -h lacks %q", want)
		}
	}
	if r.code != 0 {
		t.Errorf("serve -h: status %d", r.code)
	}
	// Mistakes: status 2 and where to look.
	for _, args := range [][]string{{"serve", "--no-such-flag"}, {"bogus"}, {"admin", "create-user"}, {"config"}, {"migrate-db"}} {
		if r := cliRun(t, dir, "", args...); r.code != 2 || !strings.Contains(r.stderr, "chatalot") {
			t.Errorf("chatalot %v: status %d, want 2\n%s", args, r.code, r.stderr)
		}
	}
}

// TestConfigCheckNamesEveryProblem: type errors in the file, a misspelt
// variable, a bad port, a server name with capitals or a port: all in one
// run, each named by its key.
func TestConfigCheckNamesEveryProblem(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "chatalot.toml")
	os.WriteFile(path, []byte(`server_name = "Chat.Example.org"
listen = "127.0.0.1:80800"
max_upload_bytes = "50MiB"
presence = "yes"
shutdown_grace = 10
lisen = "127.0.0.1:8008"
data_dir = "`+filepath.Join(dir, "data")+`"
`), 0o600)
	cmd := exec.Command(harness.Binary(t), "config", "check", path)
	cmd.Env = append(os.Environ(), "CHATALOT_SERVERNAME=chat.example.org", "CHATALOT_NOT_A_THING_AT_ALL=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("config check passed:\n%s", out)
	}
	for _, want := range []string{
		`server_name: "Chat.Example.org" has capital letters`,
		`listen: "127.0.0.1:80800": the port "80800" is not a number from 0 to 65535`,
		`max_upload_bytes: must be a whole number without quotes, not the string "50MiB"`,
		`presence: must be true or false, not the string "yes"`,
		`shutdown_grace: must be a duration in quotes, such as "10s" or "1h", not the integer 10`,
		`lisen: unknown key; did you mean listen?`,
		`CHATALOT_SERVERNAME: not a Chatalot setting; did you mean CHATALOT_SERVER_NAME?`,
		`warning: CHATALOT_NOT_A_THING_AT_ALL is not a Chatalot setting; it is ignored`,
	} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("config check does not say %q:\n%s", want, out)
		}
	}
	text, err := harness.Run(t, "", "config", "check", "--server-name", "chat.example.org:8448", "--data-dir", dir)
	if err == nil || !strings.Contains(text, `server_name: "chat.example.org:8448" has a port`) {
		t.Fatalf("a server name with a port: %v\n%s", err, text)
	}
	// The server refuses the same at start.
	text, err = harness.Run(t, "", "serve", "--config", path)
	if err == nil || !strings.Contains(text, "lisen") || !strings.Contains(text, "shutdown_grace") {
		t.Fatalf("serve with the bad file: %v\n%s", err, text)
	}
}

// TestConfigCheckFindsAnUnwritableDataDirectory: `config check` run as a
// user who cannot write the data directory says so, naming data_dir. As
// root, the check runs as nobody, as the README runs it as the service
// user.
func TestConfigCheckFindsAnUnwritableDataDirectory(t *testing.T) {
	top, err := os.MkdirTemp("", "chatalot-unwritable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	os.Chmod(top, 0o755)
	bin := filepath.Join(top, "chatalot")
	raw, err := os.ReadFile(harness.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, raw, 0o755)
	data := filepath.Join(top, "data")
	os.Mkdir(data, 0o700)
	cmd := exec.Command(bin, "config", "check", "--data-dir", data)
	cmd.Dir = top
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	} else {
		os.Chmod(data, 0o500)
		t.Cleanup(func() { os.Chmod(data, 0o700) })
	}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "data_dir: the data directory "+data+" is not writable by this user") {
		t.Fatalf("config check on an unwritable data directory: %v\n%s", err, out)
	}
	// Its owner may.
	if out, err := exec.Command(bin, "config", "check", "--data-dir", filepath.Join(top, "data")).CombinedOutput(); os.Geteuid() == 0 && err != nil {
		t.Fatalf("config check as the owner: %v\n%s", err, out)
	}
}

// TestOpsServerNameIsRecorded: a data directory keeps the server name it
// was first started with; the server and the admin commands refuse
// another, naming both; backups carry it and restore says which to use.
func TestOpsServerNameIsRecorded(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--server-name", "first.example"))
	alice := opsRegister(t, s.URL, "alice")
	bk := filepath.Join(t.TempDir(), "backup")
	// Backups are SQLite's (on PostgreSQL, pg_dump's: ops_backup_test.go).
	sqlite := !harness.OnPostgres(s.DataDir)
	if sqlite {
		out, err := harness.Run(t, "", "admin", "backup", bk, "--data-dir", s.DataDir, "--server-name", "first.example")
		if err != nil || !strings.Contains(out, "server name  first.example") {
			t.Fatalf("backup: %v\n%s", err, out)
		}
		var manifest struct {
			ServerName string `json:"server_name"`
		}
		raw, _ := os.ReadFile(filepath.Join(bk, "backup.json"))
		if json.Unmarshal(raw, &manifest); manifest.ServerName != "first.example" {
			t.Fatalf("backup.json: %s", raw)
		}
	}
	s.Stop()

	both := func(what, out string) {
		t.Helper()
		if !strings.Contains(out, `"first.example"`) || !strings.Contains(out, `"second.example"`) {
			t.Fatalf("%s does not name both server names:\n%s", what, out)
		}
	}
	out, err := harness.Run(t, "", "serve", "--data-dir", s.DataDir, "--listen", "127.0.0.1:0", "--server-name", "second.example")
	if err == nil {
		t.Fatalf("the server started under another name:\n%s", out)
	}
	both("serve", out)
	out, err = harness.Run(t, admPassword+"\n", "admin", "create-user", "yan", "--password-stdin", "--data-dir", s.DataDir, "--server-name", "second.example")
	if err == nil {
		t.Fatalf("the CLI created an account under another name:\n%s", out)
	}
	both("admin create-user", out)

	// Under its own name, alice is still there.
	s.Launch()
	opsJSON(t, "POST", s.URL+"/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": alice.Password,
	}, nil)

	if !sqlite {
		return
	}
	// Restore names the backup's server name when the configuration
	// given says another.
	out, err = harness.Run(t, "", "admin", "restore", bk, "--data-dir", filepath.Join(t.TempDir(), "restored"), "--server-name", "second.example")
	if err != nil || !strings.Contains(out, `start the server with server_name = "first.example", the backup's`) {
		t.Fatalf("restore: %v\n%s", err, out)
	}
}

// TestOpsServerNameOfAnOlderDataDirectory: a data directory from before
// the name was recorded belongs to the server name of its accounts.
func TestOpsServerNameOfAnOlderDataDirectory(t *testing.T) {
	data, fx := opsUnpackFixture(t, opsFixtureDirs(t)[0])
	out, err := harness.Run(t, "", "serve", "--data-dir", data, "--listen", "127.0.0.1:0", "--server-name", "localhost")
	if err == nil || !strings.Contains(out, `belongs to the server name "`+fx.ServerName+`", but server_name is "localhost"`) {
		t.Fatalf("an older data directory under another name: %v\n%s", err, out)
	}
	s := harness.Start(t, harness.WithDataDir(data), harness.WithArgs("--server-name", fx.ServerName))
	s.Stop()
}

// TestOpsAdminCLINeedsTheDataDirectory: without --config or --data-dir, in
// a directory with no ./data, an admin command refuses and says where it
// looked, instead of making a new data directory there.
func TestOpsAdminCLINeedsTheDataDirectory(t *testing.T) {
	dir := t.TempDir()
	r := cliRun(t, dir, admPassword+"\n", "admin", "create-user", "alice", "--admin", "--password-stdin")
	if r.code != 1 || !strings.Contains(r.stderr, "no data directory at ./data ("+filepath.Join(dir, "data")+")") || !strings.Contains(r.stderr, "--config") {
		t.Fatalf("status %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Fatal("the admin command made a data directory")
	}
	// An existing data directory is used, as before a first start.
	os.Mkdir(filepath.Join(dir, "data"), 0o700)
	if r := cliRun(t, dir, admPassword+"\n", "admin", "create-user", "alice", "--admin", "--password-stdin"); r.code != 0 {
		t.Fatalf("create-user in ./data: status %d\n%s", r.code, r.stderr)
	}
}

// TestOpsPortInUseCreatesNothing: a listen address in use stops the server
// with the setting named, before the data directory is made.
func TestOpsPortInUseCreatesNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	data := filepath.Join(t.TempDir(), "data")
	out, err := harness.Run(t, "", "serve", "--listen", ln.Addr().String(), "--data-dir", data)
	if err == nil || !strings.Contains(out, "listen: "+ln.Addr().String()+" is already in use") {
		t.Fatalf("serve on a port in use: %v\n%s", err, out)
	}
	if _, err := os.Stat(data); err == nil {
		t.Fatal("the data directory was made although the server could not listen")
	}
}

// TestOpsMigrationsLoggedOnce: upgrading a data directory logs each
// migration once, from → to; the next start logs none; a new data
// directory logs one line. Durations in the logs carry their unit.
func TestOpsMigrationsLoggedOnce(t *testing.T) {
	data, fx := opsUnpackFixture(t, opsFixtureDirs(t)[0])
	s := harness.Start(t, harness.WithDataDir(data), harness.WithArgs("--server-name", fx.ServerName))
	opsJSON(t, "GET", s.URL+"/_matrix/client/v3/account/whoami", fx.Users[0].AccessToken, nil, nil)
	s.Stop()
	migrations := func() map[string]int {
		seen := map[string]int{}
		for _, line := range strings.Split(s.Logs(), "\n") {
			var m struct {
				Message, Schema string
				From, To        int
			}
			if json.Unmarshal([]byte(line), &m) == nil && strings.HasPrefix(m.Message, "migrated schema ") {
				seen[m.Schema]++
				if m.From >= m.To || !strings.Contains(m.Message, "→") {
					t.Errorf("migration line %s", line)
				}
			}
		}
		return seen
	}
	first := migrations()
	if first["rooms"] != 1 || first["identity"] != 1 {
		t.Fatalf("migrations logged at the upgrade: %v\n%s", first, s.Logs())
	}
	for schema, n := range first {
		if n != 1 {
			t.Errorf("schema %s logged %d times", schema, n)
		}
	}
	s.Launch()
	s.Stop()
	if again := migrations(); len(again) != len(first) {
		t.Fatalf("a second start logged migrations again: %v, then %v", first, again)
	}

	fresh := harness.Start(t)
	opsJSON(t, "GET", fresh.URL+"/_matrix/client/versions", "", nil, nil)
	// The access log line is written after the answer.
	waitFor(t, 10*time.Second, "the access log line", func() bool {
		return strings.Contains(fresh.Logs(), `"route":"/_matrix/client/versions"`)
	})
	created, units := 0, 0
	for _, line := range strings.Split(fresh.Logs(), "\n") {
		var m struct {
			Message  string
			Duration any
		}
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if m.Message == "created a new database" {
			created++
		}
		if m.Message == "request" {
			d, ok := m.Duration.(string)
			if _, err := time.ParseDuration(d); !ok || err != nil {
				t.Errorf("request duration without a unit: %s", line)
			}
			units++
		}
	}
	if created != 1 || units == 0 {
		t.Fatalf("%d 'created a new database' lines, %d request lines:\n%s", created, units, fresh.Logs())
	}
}
