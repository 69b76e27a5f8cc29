// Package pgtest gives tests a fresh PostgreSQL database on a throwaway
// cluster: initdb into a temporary directory, postgres on a free loopback
// port with its unix socket in that directory and fsync off, one cluster per
// test binary, one new database per test.
//
// A test binary that uses it stops the cluster at the end from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// (without it the cluster still dies with the process, through the parent
// death signal, but its directory stays in the temporary directory).
//
// PostgreSQL refuses to run as root. When the tests run as root (CI
// containers do) the cluster runs as the user nobody, in a directory that
// user owns; the test binary itself stays root.
//
// Package tests run on PostgreSQL with CHATALOT_TEST_DATABASE=postgres:
// their helpers open Location(t, dir, file) instead of the SQLite file.
//
// Where the PostgreSQL binaries are missing the tests that ask for a
// database are skipped, unless CHATALOT_REQUIRE_POSTGRES=1 (make test and
// .ci/run set it), which makes them fail instead: CI never skips silently.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// BinDirs are where the PostgreSQL server binaries are looked for, after
// $CHATALOT_POSTGRES_BIN and before $PATH: Debian's postgresql package.
var BinDirs = []string{"/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"}

// Required reports whether a missing PostgreSQL fails the tests rather
// than skipping them.
func Required() bool { return os.Getenv("CHATALOT_REQUIRE_POSTGRES") == "1" }

// Cluster is one running throwaway PostgreSQL server.
type Cluster struct {
	dir   string // owns data/ and the socket
	port  int
	user  string // the database superuser (the OS user postgres runs as)
	cmd   *exec.Cmd
	exit  chan struct{}
	admin *sql.DB
	n     atomic.Int64
}

var (
	once    sync.Once
	shared  *Cluster
	initErr error
)

// Main runs the tests and stops the cluster, if one was started; use it
// from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	return code
}

// DSN returns the URL of a new, empty database that is dropped when the
// test ends. It skips the test (or fails it, see Required) when no
// cluster can run here.
func DSN(t testing.TB) string {
	t.Helper()
	c := Get(t)
	name := fmt.Sprintf("t%d_%d", os.Getpid(), c.n.Add(1))
	if _, err := c.admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		// FORCE: a test that failed may have left connections open.
		_, _ = c.admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	return c.URL(name)
}

// OnPostgres reports whether package tests are asked to run on PostgreSQL
// (CHATALOT_TEST_DATABASE=postgres) rather than SQLite.
func OnPostgres() bool { return os.Getenv("CHATALOT_TEST_DATABASE") == "postgres" }

var (
	locMu     sync.Mutex
	locations = map[string]string{}
)

// Location is where a test helper opens its database: the SQLite file
// dir/file, or with OnPostgres a database of its own for dir, the same one
// each time dir is given (a server restarted on the same data directory
// finds its data). The database is dropped when the test that first asked
// for it ends.
func Location(t testing.TB, dir, file string) string {
	t.Helper()
	if !OnPostgres() {
		return filepath.Join(dir, file)
	}
	key := filepath.Join(dir, file)
	locMu.Lock()
	defer locMu.Unlock()
	if dsn, ok := locations[key]; ok {
		return dsn
	}
	dsn := DSN(t)
	locations[key] = dsn
	t.Cleanup(func() {
		locMu.Lock()
		delete(locations, key)
		locMu.Unlock()
	})
	return dsn
}

// Get returns the process's cluster, starting it at the first call.
func Get(t testing.TB) *Cluster {
	t.Helper()
	once.Do(func() { shared, initErr = start() })
	if initErr != nil {
		var missing *missingError
		if errors.As(initErr, &missing) && !Required() {
			t.Skipf("pgtest: %v (set CHATALOT_REQUIRE_POSTGRES=1 to fail instead)", initErr)
		}
		t.Fatalf("pgtest: %v", initErr)
	}
	return shared
}

// URL is the address of database name on the cluster.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", c.user, c.port, name)
}

type missingError struct{ what string }

func (e *missingError) Error() string { return "PostgreSQL is not installed: no " + e.what + " found" }

// findBin finds a PostgreSQL server binary.
func findBin(name string) (string, error) {
	dirs := BinDirs
	if d := os.Getenv("CHATALOT_POSTGRES_BIN"); d != "" {
		dirs = append([]string{d}, dirs...)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", &missingError{what: name + " (in " + strings.Join(dirs, ", ") + " or $PATH)"}
}

// runAs is who the cluster's processes run as: nil for the current user;
// the user nobody when the tests run as root, which PostgreSQL refuses.
func runAs() (*syscall.Credential, string, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return nil, "", err
		}
		return nil, u.Username, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, "", fmt.Errorf("running as root and there is no user nobody to run PostgreSQL as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, u.Username, nil
}

func start() (*Cluster, error) {
	initdb, err := findBin("initdb")
	if err != nil {
		return nil, err
	}
	postgres, err := findBin("postgres")
	if err != nil {
		return nil, err
	}
	cred, username, err := runAs()
	if err != nil {
		return nil, err
	}
	sweep()
	dir, err := os.MkdirTemp(tempRoot(cred != nil), "chatalot-pg-")
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	cmd := exec.Command(initdb, "-D", data, "-U", username, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &Cluster{dir: dir, port: port, user: username, exit: make(chan struct{})}
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// The server is started from a goroutine locked to its own thread,
	// which lives until the process ends: the parent death signal (sent
	// when the starting thread exits) then stops an orphaned server.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		c.cmd = exec.Command(postgres, "-D", data,
			"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-k", dir,
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "max_connections=300", "-c", "shared_buffers=32MB",
			"-c", "log_min_messages=warning", "-c", "log_min_error_statement=panic")
		c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
		c.cmd.Dir = dir
		c.cmd.Stdout, c.cmd.Stderr = logf, logf
		c.cmd.Env = append(os.Environ(), "LC_ALL=C")
		err := c.cmd.Start()
		started <- err
		if err != nil {
			return
		}
		_ = c.cmd.Wait()
		logf.Close()
		close(c.exit)
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	admin, err := sql.Open("pgx", c.URL("postgres"))
	if err != nil {
		c.Stop()
		return nil, err
	}
	c.admin = admin
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = admin.PingContext(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-c.exit:
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			c.Stop()
			return nil, fmt.Errorf("postgres exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			c.Stop()
			return nil, fmt.Errorf("postgres did not answer in 30s: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c, nil
}

// Stop shuts the cluster down (fast shutdown, by its PID) and removes its
// directory.
func (c *Cluster) Stop() {
	if c.admin != nil {
		c.admin.Close()
	}
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.exit:
		case <-time.After(20 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exit
		}
	}
	os.RemoveAll(c.dir)
}

// tempRoot is where the cluster's directory goes: the temporary
// directory, unless the cluster runs as another user (nobody) who could not
// reach it (a private $TMPDIR of root's), then /tmp.
func tempRoot(otherUser bool) string {
	root := os.TempDir()
	if !otherUser {
		return root
	}
	for d := root; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return "/tmp"
		}
		if d == filepath.Dir(d) {
			return root
		}
	}
}

// sweep removes the directories of earlier clusters whose server is gone:
// a test binary without pgtest.Main leaves its cluster's directory behind
// (the server itself stops with the process).
func sweep() {
	var old []string
	for _, root := range []string{os.TempDir(), "/tmp"} {
		m, _ := filepath.Glob(filepath.Join(root, "chatalot-pg-*"))
		old = append(old, m...)
	}
	for _, d := range old {
		fi, err := os.Stat(d)
		if err != nil || time.Since(fi.ModTime()) < time.Minute {
			continue // maybe a cluster another test binary is setting up
		}
		raw, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid"))
		if err == nil {
			pid, _ := strconv.Atoi(strings.SplitN(string(raw), "\n", 2)[0])
			if err := syscall.Kill(pid, 0); pid > 0 && (err == nil || err == syscall.EPERM) {
				continue // still running
			}
		}
		os.RemoveAll(d)
	}
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before postgres binds it; postgres then fails to start and the
// error says so.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
