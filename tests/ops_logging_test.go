package tests

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// opsProc is a server started by the test itself rather than the harness,
// whose default flags would fix the log level and format: flags win over
// the configuration file, at start and at every reload.
type opsProc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
	url   string
}

func opsLaunch(t *testing.T, args ...string) *opsProc {
	t.Helper()
	p := &opsProc{done: make(chan struct{})}
	data := t.TempDir()
	p.cmd = exec.Command(harness.Binary(t), append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", data}, args...)...)
	p.cmd.Env = harness.DatabaseEnv(t, data)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
		}
	})
	return p
}

func (p *opsProc) log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLine waits for a line satisfying match and returns its index.
func (p *opsProc) waitLine(t *testing.T, from int, what string, match func(string) bool) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		lines := p.log()
		for i := from; i < len(lines); i++ {
			if match(lines[i]) {
				return i
			}
		}
		select {
		case <-p.done:
			t.Fatalf("the server exited waiting for %s:\n%s", what, strings.Join(p.log(), "\n"))
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("no %s in the log:\n%s", what, strings.Join(p.log(), "\n"))
	return 0
}

type opsLogLine struct {
	Level        string   `json:"level"`
	Message      string   `json:"message"`
	Listen       string   `json:"listen"`
	Route        string   `json:"route"`
	Applied      []string `json:"applied"`
	NeedsRestart []string `json:"needs_restart"`
	LogLevel     string   `json:"log_level"`
}

func opsParseLogLine(s string) opsLogLine {
	var l opsLogLine
	_ = json.Unmarshal([]byte(s), &l)
	return l
}

// TestOpsSIGHUPChangesLogLevel: SIGHUP re-reads the configuration file,
// applies the log level at once, says which other changes need a restart,
// and keeps the old configuration when the new one is invalid.
func TestOpsSIGHUPChangesLogLevel(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "chatalot.toml")
	write := func(s string) {
		if err := os.WriteFile(conf, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log_format = \"json\"\nlog_level = \"info\"\n")
	p := opsLaunch(t, "--config", conf)
	i := p.waitLine(t, 0, "the start line", func(s string) bool { return opsParseLogLine(s).Message == "Chatalot is serving" })
	base := "http://" + opsParseLogLine(p.log()[i]).Listen
	isRequest := func(s string) bool {
		l := opsParseLogLine(s)
		return l.Message == "request" && l.Route == "/_matrix/client/versions"
	}
	get := func() {
		resp, err := http.Get(base + "/_matrix/client/versions")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	hup := func() {
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	// At info, requests are logged.
	get()
	i = p.waitLine(t, i, "an info request line", isRequest)

	// warn: applied at once; max_body_bytes needs a restart.
	write("log_format = \"json\"\nlog_level = \"warn\"\nmax_body_bytes = 2097152\n")
	hup()
	i = p.waitLine(t, i, "the reload to warn", func(s string) bool {
		return opsParseLogLine(s).Message != "" && strings.HasPrefix(opsParseLogLine(s).Message, "configuration reloaded")
	})
	l := opsParseLogLine(p.log()[i])
	if strings.Join(l.Applied, ",") != "log_level" || strings.Join(l.NeedsRestart, ",") != "max_body_bytes" || l.LogLevel != "warn" || l.Level != "warn" {
		t.Fatalf("reload line: %+v", l)
	}
	get()

	// An invalid file changes nothing and says why.
	write("log_level = \"loud\"\n")
	hup()
	j := p.waitLine(t, i, "the refused reload", func(s string) bool {
		l := opsParseLogLine(s)
		return l.Level == "error" && strings.Contains(l.Message, "not reloaded") && strings.Contains(s, "log_level")
	})
	get()

	// debug: requests are logged again.
	write("log_format = \"json\"\nlog_level = \"debug\"\nmax_body_bytes = 2097152\n")
	hup()
	k := p.waitLine(t, j, "the reload to debug", func(s string) bool { return opsParseLogLine(s).LogLevel == "debug" })
	for _, s := range p.log()[i:k] {
		if isRequest(s) {
			t.Fatalf("an info line was logged at level warn: %s", s)
		}
	}
	get()
	p.waitLine(t, k, "a request line at debug", isRequest)
	// The console format needs a restart; the server is still serving.
	if resp, err := http.Get(base + "/health"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("health after reloads: %v", err)
	}
}

// TestOpsConsoleLogsByDefault: without --log-format the log is for people
// (no JSON, and no colour codes when it is not a terminal, as under
// systemd), and --log-format json gives one JSON object per line.
func TestOpsConsoleLogsByDefault(t *testing.T) {
	p := opsLaunch(t)
	i := p.waitLine(t, 0, "the start line", func(s string) bool { return strings.Contains(s, "Chatalot is serving") })
	line := p.log()[i]
	if json.Valid([]byte(line)) || strings.Contains(line, "\x1b[") || !strings.Contains(line, "INF") {
		t.Fatalf("console line: %q", line)
	}
	j := opsLaunch(t, "--log-format", "json")
	i = j.waitLine(t, 0, "the start line", func(s string) bool { return strings.Contains(s, "Chatalot is serving") })
	for _, s := range j.log()[:i+1] {
		if !json.Valid([]byte(s)) {
			t.Fatalf("not JSON: %q", s)
		}
	}
}
