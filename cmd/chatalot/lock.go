package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFile is the file a server holds locked for as long as it uses a data
// directory, so that a second server and `chatalot admin restore` can tell.
//
// Why flock rather than a PID file: the kernel drops the lock when the
// process ends however it ends (SIGKILL, power loss), so a crash never
// leaves a stale lock behind that an admin must find and delete. The file
// itself is never removed (removing a lock file races with the next locker);
// it holds the PID of the last holder, for messages only.
const lockFile = ".lock"

// dataLock is a held lock on a data directory.
type dataLock struct{ f *os.File }

// errInUse says another process holds the data directory.
type errInUse struct {
	dir string
	pid int
}

func (e *errInUse) Error() string {
	who := "another Chatalot process"
	if e.pid > 0 {
		who += fmt.Sprintf(" (pid %d)", e.pid)
	}
	return fmt.Sprintf("the data directory %s is in use by %s; stop it first", e.dir, who)
}

// lockDataDir takes the data directory's lock without waiting. It fails with
// *errInUse when a running server (or a restore) holds it.
func lockDataDir(dir string) (*dataLock, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &errInUse{dir: dir, pid: lockHolder(path)}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Record who holds it; a failure here only makes messages vaguer.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dataLock{f: f}, nil
}

// release drops the lock (the kernel would at exit anyway).
func (l *dataLock) release() {
	if l == nil || l.f == nil {
		return
	}
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
	l.f = nil
}

// lockHolder reads the PID the holder wrote, or 0.
func lockHolder(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
