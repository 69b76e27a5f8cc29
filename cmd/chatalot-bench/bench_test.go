package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeServerEnv) != "" {
		runFakeServer()
		return
	}
	os.Exit(m.Run())
}

func TestParseStatTicks(t *testing.T) {
	line := "4242 (chat alot) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 37 0 0 20 0 9 0 12345 123456789 6789 18446744073709551615\n"
	got, err := parseStatTicks([]byte(line))
	if err != nil || got != 187 {
		t.Fatalf("parseStatTicks = %d, %v; want 187", got, err)
	}
	if _, err := parseStatTicks([]byte("garbage")); err == nil {
		t.Fatal("no error for a malformed line")
	}
}

func TestParseStatus(t *testing.T) {
	m := parseStatus([]byte("Name:\tchatalot\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n"))
	if m.RSSKiB != 20480 || m.HWMKiB != 40960 || m.Threads != 9 {
		t.Fatalf("parseStatus = %+v", m)
	}
}

func TestClockTicksAndOwnCPU(t *testing.T) {
	if clockTicks <= 0 {
		t.Fatalf("clockTicks = %d", clockTicks)
	}
	if _, err := cpuTicks(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, err := readMemory(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(ds, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

func TestCompare(t *testing.T) {
	m, d, x := compare(map[string]int{"a": 1, "b": 3, "z": 1}, map[string]bool{"a": true, "b": true, "c": true})
	if m != 1 || d != 2 || x != 1 {
		t.Fatalf("compare = %d missing, %d dups, %d unexpected; want 1, 2, 1", m, d, x)
	}
}

// runFake runs one scenario against the fake server.
func runFake(t *testing.T, name string, p params) *Result {
	t.Helper()
	t.Setenv(fakeServerEnv, "1")
	sc, ok := findScenario(name)
	if !ok {
		t.Fatalf("no scenario %s", name)
	}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return runScenario(context.Background(), serverOptions{Bin: bin}, sc, p)
}

func metricOf(r *Result, name string) (float64, bool) {
	for _, m := range r.Metrics {
		if m.Name == name {
			return m.Value, true
		}
	}
	return 0, false
}

// TestScenariosAgainstFake runs every scenario, small, against the fake
// server and expects a clean pass with the work it should have done.
func TestScenariosAgainstFake(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	idleFor, rateTotal = time.Second, 20
	p := params{Members: 8, Rooms: 3, History: 300, DeliverTimeout: 10 * time.Second}
	want := map[string]map[string]float64{
		"fanout":      {"deliveries": 8 * 500, "sent": 500},
		"fanout-rate": {"deliveries": 8 * 20, "sent": 20},
		"rooms":       {"initial_syncs": 30, "empty_syncs": 500, "one_event_syncs": 100, "messages_pages": 10 * 3 * 2},
		"join":        {"members": 200},
		"idle":        {},
		"register":    {"users": 200},
		"history":     {"seed_sent": 300, "messages_pages": 8 * 7},
		"sliding":     {"rooms": 3},
	}
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			r := runFake(t, s.name, p)
			var b strings.Builder
			printTable(&b, []*Result{r})
			t.Log("\n" + b.String())
			if r.failed() {
				t.Fatalf("%s failed", s.name)
			}
			for name, v := range want[s.name] {
				if got, ok := metricOf(r, name); !ok || got != v {
					t.Errorf("%s = %v (reported: %v), want %v", name, got, ok, v)
				}
			}
		})
	}
}

// TestDuplicatesFail proves the exactly-once check: a server that delivers
// some messages twice fails the run.
func TestDuplicatesFail(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	t.Setenv(fakeDupEnv, "1")
	r := runFake(t, "fanout", params{Members: 4, Rooms: 1, History: 1, DeliverTimeout: 5 * time.Second})
	if dups, _ := metricOf(r, "duplicates"); dups == 0 || !r.failed() {
		t.Fatalf("duplicates = %v, failed = %v; want some and a failure", dups, r.failed())
	}
}

// The generator reads /sync with gjson for speed; it must read what
// encoding/json reads.
func TestDecodeRawMatchesEncodingJSON(t *testing.T) {
	raw := []byte(`{"account_data":{"events":[]},"next_batch":"s12_3","rooms":{"join":{
	"!a:x":{"state":{"events":[{"type":"m.room.member","state_key":"@b:x","sender":"@b:x","event_id":"$m","content":{"membership":"join"}}]},
		"timeline":{"limited":true,"prev_batch":"p1","events":[
			{"content":{"body":"hi","org.chatalot.bench":{"seq":7,"sent_us":123}},"event_id":"$1","sender":"@a:x","type":"m.room.message","unsigned":{"age":1}},
			{"type":"m.room.topic","state_key":"","sender":"@a:x","event_id":"$2","content":{"topic":"t"}}]}},
	"!b:x":{"timeline":{"limited":false}}}}}`)
	var got, want SyncResponse
	if err := got.decodeRaw(raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("decodeRaw read\n%s\nencoding/json read\n%s", g, w)
	}
	mark, ok := got.Rooms.Join["!a:x"].Timeline.Events[0].Bench()
	if !ok || mark.Seq != 7 || mark.SentUs != 123 {
		t.Fatalf("Bench() = %+v, %v", mark, ok)
	}
	if err := got.decodeRaw([]byte(`{"next_batch":`)); err == nil {
		t.Fatal("no error for a truncated answer")
	}
}
