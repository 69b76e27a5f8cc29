// Command chatalot-bench is Chatalot's load generator. For each scenario it
// starts a fresh server from a built binary, drives it over plain HTTP as
// many Matrix clients at once, and reports wall-clock figures together with
// the server's CPU-seconds per unit of work (from /proc/PID/stat), its RSS
// and the load generator's own CPU. Every scenario also checks correctness:
// each receiver must see each event exactly once, or the run fails.
//
//	chatalot-bench [-bin ./bin/chatalot] [-scenario all|growth|NAME[,NAME…]]
//	               [-members 50] [-rooms 30] [-history 1000] [-json]
//
// Scenarios (issue 12): fanout, fanout-rate, rooms, join, idle, register;
// "all" runs these six. history measures initial sync and /messages over
// one room with -history events. sliding sets Element X's room-list
// connection (sliding sync) for an account in -rooms rooms beside /v3/sync
// (make it -rooms 500 for issue 22's figure). "growth" runs fanout with 10, 50, 200 and
// 1,000 members, rooms with 10, 100 and 500 rooms and history with 1,000,
// 10,000 and 100,000 events.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// params are the sizes a scenario runs with.
type params struct {
	Members        int           // fanout, fanout-rate: members of the room
	Rooms          int           // rooms: rooms per user
	History        int           // history: events in the room
	DeliverTimeout time.Duration // how long to wait for the last delivery
}

// scenario is one entry of issue 12's table (or a growth run).
type scenario struct {
	name  string
	about string
	shown func(p params) map[string]int // the params that appear in the title
	run   func(r *Run) error
}

var scenarios = []scenario{
	{"fanout", "one room, N members long-polling /sync; 4 senders send 500 messages, 16 in flight",
		func(p params) map[string]int { return map[string]int{"members": p.Members} }, runFanout},
	{"fanout-rate", "the same room; 10 messages/s for 20 s",
		func(p params) map[string]int { return map[string]int{"members": p.Members} }, runFanoutRate},
	{"rooms", "10 users in N rooms of 50 messages: initial, empty and one-event incremental syncs, /messages pages",
		func(p params) map[string]int { return map[string]int{"rooms": p.Rooms} }, runRooms},
	{"join", "a room of 200 members; 10 users join and sync with full state, 10 with lazy-loaded members",
		nil, runJoin},
	{"idle", "the server started and left alone for 10 s", nil, runIdle},
	{"register", "200 users registered, 16 at a time", nil, runRegister},
	{"history", "one room with N events: seeding, initial sync, paging all of it with /messages",
		func(p params) map[string]int { return map[string]int{"history": p.History} }, runHistory},
	{"sliding", "Element X's room-list connection (sliding sync) for an account in N rooms, beside /v3/sync of 20 rooms",
		func(p params) map[string]int { return map[string]int{"rooms": p.Rooms} }, runSliding},
}

// allScenarios is what "-scenario all" (and `make bench`) runs.
var allScenarios = []string{"fanout", "fanout-rate", "rooms", "join", "idle", "register"}

// planned is one scenario with the sizes it runs with.
type planned struct {
	sc scenario
	p  params
}

func main() {
	bin := flag.String("bin", "./bin/chatalot", "the chatalot binary to start for each scenario")
	names := flag.String("scenario", "all", "all, growth, or a comma-separated list of: "+scenarioNames())
	members := flag.Int("members", 50, "fanout, fanout-rate: members of the room (growth: 10, 50, 200, 1000)")
	rooms := flag.Int("rooms", 30, "rooms: rooms each of the 10 users is in (growth: 10, 100, 500)")
	history := flag.Int("history", 1000, "history: events in the room (growth: 1000, 10000, 100000)")
	asJSON := flag.Bool("json", false, "print the results as JSON instead of a table")
	serverArgs := flag.String("server-args", "", "extra arguments for the serve command, space-separated (e.g. \"--durability full\")")
	keep := flag.Bool("keep", false, "keep each server's data directory")
	deliverTimeout := flag.Duration("deliver-timeout", 60*time.Second, "how long to wait for missing deliveries before counting them missing")
	cpuProfile := flag.String("cpuprofile", "", "write the load generator's own CPU profile to this file")
	flag.Usage = printUsage
	flag.Parse()
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench ")
	// The generator shares the machine with the server it measures: trade
	// its memory (never measured) for less of its CPU in garbage
	// collection. This sets only the generator's own collector.
	debug.SetGCPercent(400)

	p := params{Members: *members, Rooms: *rooms, History: *history, DeliverTimeout: *deliverTimeout}
	plan, err := makePlan(*names, p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatalot-bench:", err)
		os.Exit(2)
	}
	if _, err := os.Stat(*bin); err != nil {
		fmt.Fprintf(os.Stderr, "chatalot-bench: %v (build the server first: make build)\n", err)
		os.Exit(2)
	}
	opts := serverOptions{Bin: *bin, ExtraArgs: strings.Fields(*serverArgs), Keep: *keep}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "chatalot-bench:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var results []*Result
	for _, x := range plan {
		if ctx.Err() != nil {
			break
		}
		results = append(results, runScenario(ctx, opts, x.sc, x.p))
	}

	if *asJSON {
		if err := printJSON(os.Stdout, results); err != nil {
			fmt.Fprintln(os.Stderr, "chatalot-bench:", err)
			os.Exit(1)
		}
	} else {
		fmt.Printf("\nchatalot-bench %s (server CPU from /proc/PID/stat, %d ticks/s; %s)\n\n",
			strings.Join(os.Args[1:], " "), clockTicks, time.Now().Format(time.RFC3339))
		printTable(os.Stdout, results)
	}
	for _, r := range results {
		if r.failed() {
			os.Exit(1)
		}
	}
	if ctx.Err() != nil {
		os.Exit(130)
	}
}

func printUsage() {
	out := flag.CommandLine.Output()
	fmt.Fprintf(out, "usage: chatalot-bench [flags]\n\nStarts a fresh server per scenario and reports its cost per unit of work.\n\nscenarios:\n")
	for _, s := range scenarios {
		fmt.Fprintf(out, "  %-12s %s\n", s.name, s.about)
	}
	fmt.Fprintf(out, "  %-12s %s\n", "all", strings.Join(allScenarios, ", "))
	fmt.Fprintf(out, "  %-12s %s\n\nflags:\n", "growth", "fanout × members 10/50/200/1000, rooms × 10/100/500, history × 1k/10k/100k")
	flag.PrintDefaults()
}

func scenarioNames() string {
	var n []string
	for _, s := range scenarios {
		n = append(n, s.name)
	}
	return strings.Join(n, ", ")
}

func findScenario(name string) (scenario, bool) {
	for _, s := range scenarios {
		if s.name == name {
			return s, true
		}
	}
	return scenario{}, false
}

// makePlan turns -scenario into the runs to make.
func makePlan(names string, p params) ([]planned, error) {
	var plan []planned
	add := func(name string, p params) {
		s, _ := findScenario(name)
		plan = append(plan, planned{s, p})
	}
	for _, name := range strings.Split(names, ",") {
		switch name = strings.TrimSpace(name); name {
		case "all":
			for _, n := range allScenarios {
				add(n, p)
			}
		case "growth":
			for _, m := range []int{10, 50, 200, 1000} {
				q := p
				q.Members = m
				add("fanout", q)
			}
			for _, n := range []int{10, 100, 500} {
				q := p
				q.Rooms = n
				add("rooms", q)
			}
			for _, h := range []int{1000, 10000, 100000} {
				q := p
				q.History = h
				add("history", q)
			}
		default:
			if _, ok := findScenario(name); !ok {
				return nil, fmt.Errorf("unknown scenario %q (have: all, growth, %s)", name, scenarioNames())
			}
			add(name, p)
		}
	}
	if p.Members < 4 || p.Rooms < 1 || p.History < 1 {
		return nil, fmt.Errorf("need -members ≥ 4, -rooms ≥ 1 and -history ≥ 1")
	}
	return plan, nil
}

// Run is one scenario against one server.
type Run struct {
	ctx     context.Context
	srv     *Server
	hc      *http.Client
	retries atomic.Int64 // 429 answers the clients retried
	p       params
	res     *Result
}

// runScenario starts a fresh server, runs sc against it, reads the server's
// memory at the end and stops it.
func runScenario(ctx context.Context, opts serverOptions, sc scenario, p params) *Result {
	res := &Result{Scenario: sc.name}
	if sc.shown != nil {
		res.Params = sc.shown(p)
	}
	log.Printf("%s: starting a fresh server", res.title())
	srv, err := startServer(ctx, opts)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	r := &Run{ctx: ctx, srv: srv, hc: newHTTPClient(), p: p, res: res}
	start := time.Now()
	if err := sc.run(r); err != nil {
		res.Err = err.Error()
	}
	if n := r.retries.Load(); n > 0 {
		res.add("retried_429", float64(n))
	}
	if m, err := srv.Memory(); err == nil {
		res.add("rss_mib", float64(m.RSSKiB)/1024)
		res.add("hwm_mib", float64(m.HWMKiB)/1024) // since the measured work began
		res.add("threads", float64(m.Threads))
	}
	res.add("data_dir_mib", float64(dirBytes(srv.DataDir))/(1<<20))
	r.hc.CloseIdleConnections()
	res.Problems = append(res.Problems, srv.Stop()...)
	log.Printf("%s: done in %v", res.title(), time.Since(start).Round(time.Millisecond))
	return res
}

func (r *Run) logf(format string, args ...any) {
	log.Printf("%s: %s", r.res.title(), fmt.Sprintf(format, args...))
}

// register creates n users named prefix0, prefix1, …, 16 at a time.
func (r *Run) register(prefix string, n int) ([]*Client, error) {
	r.logf("registering %d users", n)
	clients := make([]*Client, n)
	err := pool(r.ctx, n, 16, func(ctx context.Context, i int) error {
		c, err := register(ctx, r.hc, r.srv.BaseURL, &r.retries, fmt.Sprintf("%s%d", prefix, i))
		clients[i] = c
		return err
	})
	return clients, err
}

// joinAll makes every client join roomID, 16 at a time.
func (r *Run) joinAll(clients []*Client, roomID string) error {
	return pool(r.ctx, len(clients), 16, func(ctx context.Context, i int) error {
		return clients[i].Join(ctx, roomID)
	})
}
