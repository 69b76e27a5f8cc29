// Package harness builds the real chatalot binary and runs it on a free
// loopback port with a temporary data directory: the base of every
// end-to-end test.
package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/pgtest"
)

// Tags are the build tags of the server binary (and of `make test`).
const Tags = "sqlite_fts5 goolm nomsgpack"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/chatalot once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "chatalot-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "chatalot")
		cmd := exec.Command("go", "build", "-tags", Tags, "-o", binPath, "./cmd/chatalot")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// BuildPlain builds cmd/chatalot as `go build` does without any tag (as
// `go install` and `go run` do too) and returns its path.
func BuildPlain(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(t.TempDir(), "chatalot")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/chatalot")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build without tags: %v\n%s", err, out)
	}
	return bin
}

// Server is one running chatalot process.
type Server struct {
	t       testing.TB
	DataDir string
	Args    []string // extra flags given at every start
	Env     []string
	wrapper []string
	bin     string // the binary; Binary's when empty
	URL     string // http://127.0.0.1:PORT
	Addr    string // 127.0.0.1:PORT

	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	logs   bytes.Buffer // every line the server has logged, over all runs
}

// Option changes how the server is started.
type Option func(*Server)

// WithArgs adds flags, for example WithArgs("--registration", "open").
func WithArgs(args ...string) Option { return func(s *Server) { s.Args = append(s.Args, args...) } }

// WithDataDir reuses a data directory (for restarts and upgrade fixtures).
func WithDataDir(dir string) Option { return func(s *Server) { s.DataDir = dir } }

// WithWrapper runs the server under another program (strace, …): the
// wrapper's arguments come first, then the server's command line.
func WithWrapper(cmd ...string) Option { return func(s *Server) { s.wrapper = cmd } }

// WithBinary runs another build of the server (BuildPlain's).
func WithBinary(path string) Option { return func(s *Server) { s.bin = path } }

// WithEnv adds environment variables (KEY=VALUE).
func WithEnv(kv ...string) Option { return func(s *Server) { s.Env = append(s.Env, kv...) } }

// Start runs a server with open registration, rate limits off and optional
// encryption unless the options say otherwise, and stops it when the test
// ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{t: t}
	for _, o := range opts {
		o(s)
	}
	if s.DataDir == "" {
		s.DataDir = t.TempDir()
	}
	s.Launch()
	t.Cleanup(func() {
		if s.Running() {
			s.Stop()
		}
		if t.Failed() {
			s.logErrors()
		}
	})
	return s
}

// logErrors adds the server's error lines to a failed test's output: a 500
// names an error ID, which these lines explain.
func (s *Server) logErrors() {
	for _, line := range strings.Split(s.Logs(), "\n") {
		if strings.Contains(line, `"level":"error"`) || strings.Contains(line, `"level":"fatal"`) {
			s.t.Logf("server: %s", line)
		}
	}
}

// DefaultArgs are given before the test's own flags, which win.
var DefaultArgs = []string{"--registration", "open", "--rate-limits", "off", "--encryption", "optional"}

// Launch starts the process and waits until it answers /health.
func (s *Server) Launch() {
	s.t.Helper()
	args := append([]string{"serve", "--data-dir", s.DataDir, "--listen", "127.0.0.1:0",
		"--log-format", "json", "--log-level", "info"}, DefaultArgs...)
	args = append(args, s.Args...)
	bin := s.bin
	if bin == "" {
		bin = Binary(s.t)
	}
	cmd := exec.Command(bin, args...)
	if len(s.wrapper) > 0 {
		cmd = exec.Command(s.wrapper[0], append(append(s.wrapper[1:], bin), args...)...)
	}
	cmd.Env = append(os.Environ(), s.Env...)
	if OnPostgres(s.DataDir) {
		// The data in a PostgreSQL database of this data directory's
		// (CHATALOT_TEST_DATABASE=postgres); a --database flag still wins.
		cmd.Env = append(cmd.Env, "CHATALOT_DATABASE="+pgtest.Location(s.t, s.DataDir, "chatalot.db"))
	}
	// Its own process group, so that Kill also ends whatever the server
	// runs under (strace) or starts.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			s.mu.Lock()
			s.logs.Write(line)
			s.logs.WriteByte('\n')
			s.mu.Unlock()
			var m struct {
				Message string `json:"message"`
				Listen  string `json:"listen"`
			}
			if json.Unmarshal(line, &m) == nil && m.Message == "Chatalot is serving" {
				select {
				case addr <- m.Listen:
				default:
				}
			}
		}
		_ = cmd.Wait()
		close(s.exited)
	}()
	select {
	case a := <-addr:
		s.Addr = a
		s.URL = "http://" + a
	case <-s.exited:
		s.t.Fatalf("server exited at start:\n%s", s.Logs())
	case <-time.After(60 * time.Second):
		s.Kill()
		s.t.Fatalf("server did not start within 60s:\n%s", s.Logs())
	}
	s.WaitHealthy(30 * time.Second)
}

// healthClient keeps no idle connection open: a test that counts the
// server's connections (the per-address cap) must not find the harness's.
var healthClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// WaitHealthy polls /health until it answers 200 or the deadline passes.
func (s *Server) WaitHealthy(d time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		resp, err := healthClient.Get(s.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("server not healthy after %s: %v", d, err)
		}
		select {
		case <-s.exited:
			s.t.Fatalf("server exited:\n%s", s.Logs())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Running reports whether the process is alive.
func (s *Server) Running() bool {
	if s.exited == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// PID is the server's process ID.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop sends SIGTERM and waits for a clean exit; it fails the test if the
// server does not stop within 30 s.
func (s *Server) Stop() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.Kill()
		s.t.Fatalf("server did not stop within 30s of SIGTERM")
	}
}

// Kill ends the server with SIGKILL, as a crash would.
func (s *Server) Kill() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

// ExitCode is the exit status of a stopped server.
func (s *Server) ExitCode() int { return s.cmd.ProcessState.ExitCode() }

// Exited is closed when the process ends.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Restart stops the server (SIGTERM) and starts it again on the same data
// directory; the port changes.
func (s *Server) Restart() {
	s.t.Helper()
	if s.Running() {
		s.Stop()
	}
	s.Launch()
}

// Logs returns everything the server has logged so far.
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// Run runs a chatalot subcommand (config, admin, …) to completion and
// returns its combined output.
func Run(t testing.TB, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	for i, a := range args[:max(len(args)-1, 0)] {
		if a == "--data-dir" && OnPostgres(args[i+1]) { // the database of the server on that directory
			cmd.Env = append(os.Environ(), "CHATALOT_DATABASE="+pgtest.Location(t, args[i+1], "chatalot.db"))
		}
	}
	cmd.Stdin = strings.NewReader(stdin)
	// A command that should have exited (serve refusing to start) but
	// serves instead fails the test rather than hanging it.
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(RunTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("chatalot %s did not exit within %s:\n%s", strings.Join(args, " "), RunTimeout, out.String())
		return "", nil
	}
}

// RunTimeout bounds a command Run runs.
var RunTimeout = 3 * time.Minute

var (
	sqliteMu   sync.Mutex
	sqliteDirs = map[string]bool{}
)

// KeepSQLite makes the servers and commands on data directory dir use its
// SQLite file even when the tests run on PostgreSQL: a data directory from
// an older release, or one a test reads as a file, is an SQLite one.
func KeepSQLite(t testing.TB, dir string) {
	dir = filepath.Clean(dir)
	sqliteMu.Lock()
	sqliteDirs[dir] = true
	sqliteMu.Unlock()
	t.Cleanup(func() {
		sqliteMu.Lock()
		delete(sqliteDirs, dir)
		sqliteMu.Unlock()
	})
}

// OnPostgres reports whether the servers on data directory dir keep their
// data in PostgreSQL (CHATALOT_TEST_DATABASE=postgres, and not KeepSQLite).
func OnPostgres(dir string) bool {
	if !pgtest.OnPostgres() {
		return false
	}
	sqliteMu.Lock()
	defer sqliteMu.Unlock()
	return !sqliteDirs[filepath.Clean(dir)]
}

// Database is where the servers on data directory dir keep their data: the
// SQLite file chatalot.db in it, or the URL of its PostgreSQL database.
func Database(t testing.TB, dir string) string {
	t.Helper()
	if !OnPostgres(dir) {
		return filepath.Join(dir, "chatalot.db")
	}
	return pgtest.Location(t, dir, "chatalot.db")
}

// Database is where this server keeps its data (see the function).
func (s *Server) Database() string { return Database(s.t, s.DataDir) }

// DatabaseEnv is the environment for a process the test starts itself on
// data directory dir: the test's, plus the PostgreSQL database of dir's
// when the tests run there.
func DatabaseEnv(t testing.TB, dir string) []string {
	t.Helper()
	if !OnPostgres(dir) {
		return os.Environ()
	}
	return append(os.Environ(), "CHATALOT_DATABASE="+pgtest.Location(t, dir, "chatalot.db"))
}
