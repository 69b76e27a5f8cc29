package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// serverOptions say how to start the server under test.
type serverOptions struct {
	Bin       string   // the chatalot binary
	ExtraArgs []string // appended to the serve command line
	Keep      bool     // keep the data directory afterwards
}

// Server is one chatalot process started for one scenario, on a fresh data
// directory and a port the kernel picks.
type Server struct {
	cmd       *exec.Cmd
	Pid       int
	BaseURL   string // http://127.0.0.1:PORT
	DataDir   string
	StartedIn time.Duration // from exec to the first healthy /health
	keep      bool
	measuring bool // a measured phase has begun (VmHWM was reset then)

	exited  chan struct{} // closed when the process has exited
	exitErr error         // set before exited is closed

	mu       sync.Mutex
	problems []string // error-level log lines and non-JSON output (panics)
	errLines int      // how many such lines, including those not kept
	tail     []string // the last log lines, for a crash report
}

// startServer runs `chatalot serve` on a new temporary data directory,
// reads the address from the "Chatalot is serving" log line and waits until
// /health answers.
func startServer(ctx context.Context, o serverOptions) (*Server, error) {
	dir, err := os.MkdirTemp("", "chatalot-bench-*")
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--log-format", "json",
		"--registration", "open", "--rate-limits", "off", "--encryption", "optional",
		"--max-connections-per-address", "0"} // every simulated client comes from 127.0.0.1
	args = append(args, o.ExtraArgs...)
	cmd := exec.Command(o.Bin, args...)
	// The server must not outlive the benchmark if the benchmark is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", o.Bin, err)
	}
	s := &Server{cmd: cmd, Pid: cmd.Process.Pid, DataDir: dir, keep: o.Keep, exited: make(chan struct{})}
	listen := make(chan string, 2)
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); s.readLog(stdout, listen) }()
	go func() { defer readers.Done(); s.readLog(stderr, listen) }()
	go func() {
		readers.Wait() // Wait closes the pipes, so read them to the end first
		s.exitErr = cmd.Wait()
		close(s.exited)
	}()

	select {
	case addr := <-listen:
		s.BaseURL = "http://" + addr
	case <-s.exited:
		s.cleanup()
		return nil, fmt.Errorf("server exited before serving (%v):\n%s", s.exitErr, s.tailText())
	case <-time.After(60 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("no %q log line within 60s:\n%s", "Chatalot is serving", s.tailText())
	case <-ctx.Done():
		s.Stop()
		return nil, ctx.Err()
	}
	if err := s.waitHealthy(ctx, 30*time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	s.StartedIn = time.Since(start)
	return s, nil
}

// logLine is the part of a zerolog JSON line the benchmark reads.
type logLine struct {
	Level   string `json:"level"`
	Message string `json:"message"`
	Listen  string `json:"listen"`
	Error   string `json:"error"`
}

// readLog follows one output stream of the server: it reports the listen
// address and keeps error lines and anything that is not JSON (a panic).
func (s *Server) readLog(r io.Reader, listen chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		var l logLine
		isJSON := json.Unmarshal([]byte(line), &l) == nil
		if isJSON && l.Message == "Chatalot is serving" && l.Listen != "" {
			listen <- l.Listen
		}
		s.mu.Lock()
		s.tail = append(s.tail, line)
		if len(s.tail) > 30 {
			s.tail = s.tail[1:]
		}
		if !isJSON || l.Level == "error" || l.Level == "fatal" || l.Level == "panic" {
			s.errLines++
			if len(s.problems) < 10 {
				s.problems = append(s.problems, "log: "+truncate(line, 300))
			}
		}
		s.mu.Unlock()
	}
}

func (s *Server) waitHealthy(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var lastErr error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.BaseURL+"/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /health: %s", resp.Status)
		}
		lastErr = err
		select {
		case <-s.exited:
			return fmt.Errorf("server exited while starting (%v):\n%s", s.exitErr, s.tailText())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("server not healthy within %v: %v", limit, lastErr)
}

// CPU is the server's CPU time so far (utime+stime from /proc/PID/stat).
func (s *Server) CPU() (time.Duration, error) {
	t, err := cpuTicks(s.Pid)
	if err != nil {
		return 0, fmt.Errorf("server process gone? %w", err)
	}
	return ticksToDuration(t), nil
}

// quietWindow and quietLimit define "the server has finished its work": no
// CPU tick for quietWindow, waiting at most quietLimit. The window is longer
// than the server waits before work it defers to the end of a burst (push
// moves staged notifications 200 ms after the last), so that a phase is
// charged with that work.
const (
	quietWindow = 500 * time.Millisecond
	quietLimit  = 20 * time.Second
)

// WaitQuiet waits until the server's CPU stops rising, so that a reading
// includes the work the server does after the clients saw their answers
// (group commits, cache upkeep, garbage collection). It reports false if the
// server was still busy after quietLimit.
func (s *Server) WaitQuiet(ctx context.Context) (bool, error) {
	deadline := time.Now().Add(quietLimit)
	prev, err := cpuTicks(s.Pid)
	if err != nil {
		return false, err
	}
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(quietWindow):
		}
		now, err := cpuTicks(s.Pid)
		if err != nil {
			return false, err
		}
		if now == prev {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		prev = now
	}
}

// ResetPeak makes VmHWM start again from the current RSS (Linux 4.0+:
// "5" in /proc/PID/clear_refs), so that the peak a scenario reports is that
// of its measured work rather than of its set-up (registration hashes
// passwords with a large memory cost).
func (s *Server) ResetPeak() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", s.Pid), []byte("5"), 0)
}

// Memory reads VmRSS, VmHWM and the thread count.
func (s *Server) Memory() (memory, error) { return readMemory(s.Pid) }

// Alive reports whether the process is still running.
func (s *Server) Alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM, waits for a clean exit (SIGKILL after 30s), removes
// the data directory and returns what went wrong, if anything.
func (s *Server) Stop() []string {
	var problems []string
	if s.Alive() {
		start := time.Now()
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
			if d := time.Since(start); d > 5*time.Second {
				problems = append(problems, fmt.Sprintf("shutdown took %v", d.Round(time.Millisecond)))
			}
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
			problems = append(problems, "did not stop within 30s of SIGTERM; killed")
		}
		if s.exitErr != nil && len(problems) == 0 {
			problems = append(problems, fmt.Sprintf("exit after SIGTERM: %v", s.exitErr))
		}
	} else {
		problems = append(problems, fmt.Sprintf("server exited during the scenario (%v); last output:\n%s", s.exitErr, s.tailText()))
	}
	s.mu.Lock()
	problems = append(problems, s.problems...)
	if s.errLines > len(s.problems) {
		problems = append(problems, fmt.Sprintf("... %d more error log lines", s.errLines-len(s.problems)))
	}
	s.mu.Unlock()
	s.cleanup()
	return problems
}

func (s *Server) cleanup() {
	if s.keep {
		fmt.Fprintf(os.Stderr, "kept data directory %s\n", s.DataDir)
		return
	}
	os.RemoveAll(s.DataDir)
}

func (s *Server) tailText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "  " + strings.Join(s.tail, "\n  ")
}

// problem records something the report must mention.
func (s *Server) problem(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
