package main

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// usage is what one measured phase cost.
type usage struct {
	Wall      time.Duration // from begin to the moment the clients were done
	ServerCPU time.Duration // including the server's work after that moment
	ClientCPU time.Duration // this process, over the same phase
	NotQuiet  bool          // the server was still busy when the reading was taken
}

func (u *usage) add(v usage) {
	u.Wall += v.Wall
	u.ServerCPU += v.ServerCPU
	u.ClientCPU += v.ClientCPU
	u.NotQuiet = u.NotQuiet || v.NotQuiet
}

// window measures one phase. begin waits until the server is quiet, so that
// the set-up's trailing work is not charged to the phase.
type window struct {
	srv     *Server
	start   time.Time
	cpu0    time.Duration
	client0 time.Duration
}

func begin(ctx context.Context, srv *Server) (*window, error) {
	quiet, err := srv.WaitQuiet(ctx)
	if err != nil {
		return nil, err
	}
	if !quiet {
		srv.problem("server CPU still rising %v after the set-up; the next phase's figures include some of it", quietLimit)
	}
	if !srv.measuring {
		srv.measuring = true
		if err := srv.ResetPeak(); err != nil {
			srv.problem("could not reset VmHWM, so it includes the set-up: %v", err)
		}
	}
	cpu, err := srv.CPU()
	if err != nil {
		return nil, err
	}
	return &window{srv: srv, start: time.Now(), cpu0: cpu, client0: clientCPU()}, nil
}

// end is called when the clients have seen everything: it takes the wall
// time and the client's CPU at once, then waits for the server to go quiet
// before reading its CPU.
func (w *window) end(ctx context.Context) (usage, error) {
	u := usage{Wall: time.Since(w.start), ClientCPU: clientCPU() - w.client0}
	quiet, err := w.srv.WaitQuiet(ctx)
	if err != nil {
		return u, err
	}
	cpu, err := w.srv.CPU()
	if err != nil {
		return u, err
	}
	u.ServerCPU, u.NotQuiet = cpu-w.cpu0, !quiet
	return u, nil
}

// pool runs fn(i) for i in [0, n) with at most conc calls at once. It stops
// handing out work at the first error and returns it.
func pool(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	ds []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.ds = append(l.ds, d)
	l.mu.Unlock()
}

// timed runs fn and records how long it took.
func (l *latencies) timed(fn func() error) error {
	t := time.Now()
	err := fn()
	if err == nil {
		l.add(time.Since(t))
	}
	return err
}

func (l *latencies) sorted() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.ds)
	slices.Sort(s)
	return s
}

// percentile is the nearest-rank percentile p (0–100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(0, min(rank-1, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func seconds(d time.Duration) float64 { return d.Seconds() }
