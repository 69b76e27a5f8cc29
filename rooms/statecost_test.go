package rooms_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"github.com/chatalot/chatalot/rooms"

	"github.com/chatalot/chatalot/spec"
)

// benchStateChange measures one state change (a new state key, as a join
// or a profile change adds or replaces one member event) in a room that
// already holds entries state events (issue 19, item 7): it should cost
// what it changes, not what the room holds.
func benchStateChange(b *testing.B, entries int) {
	ts := newTestServer(&testing.T{}, "optional")
	defer func() { ts.Close() }()
	ctx := context.Background()
	init := make([]rooms.InitialState, entries)
	for i := range init {
		init[i] = rooms.InitialState{Type: "org.example.entry", StateKey: fmt.Sprint("k", i), Content: json.RawMessage(`{"v":1}`)}
	}
	id, _, err := ts.s.CreateRoom(ctx, "@alice:test", rooms.CreateRequest{Preset: "public_chat", InitialState: init})
	if err != nil {
		b.Fatal(err)
	}
	content := []byte(`{"v":2}`)
	b.ResetTimer()
	cpu0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		key := fmt.Sprint("new", i)
		if _, err := ts.s.Send(ctx, rooms.Sender{User: "@alice:test", Device: "D"}, id, rooms.SendRequest{Type: "org.example.entry", StateKey: &key, Content: content}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N)*1000, "cpu-ms/op")
}

func BenchmarkStateChangeSmallRoom(b *testing.B) { benchStateChange(b, 10) }
func BenchmarkStateChangeLargeRoom(b *testing.B) { benchStateChange(b, 50000) }

// benchJoin measures a join (a member event, which changes who is joined)
// in a room of entries state events.
func benchJoin(b *testing.B, entries int) {
	ts := newTestServer(&testing.T{}, "optional")
	defer func() { ts.Close() }()
	ctx := context.Background()
	init := make([]rooms.InitialState, entries)
	for i := range init {
		init[i] = rooms.InitialState{Type: "org.example.entry", StateKey: fmt.Sprint("k", i), Content: json.RawMessage(`{"v":1}`)}
	}
	id, _, err := ts.s.CreateRoom(ctx, "@alice:test", rooms.CreateRequest{Preset: "public_chat", InitialState: init})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		user := spec.UserID(fmt.Sprintf("@u%d:test", i))
		if _, err := ts.s.Change(ctx, rooms.Sender{User: user}, id, rooms.MembershipChange{Target: user, Membership: spec.Join}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N)*1000, "cpu-ms/op")
}

func BenchmarkJoinSmallRoom(b *testing.B) { benchJoin(b, 10) }
func BenchmarkJoinLargeRoom(b *testing.B) { benchJoin(b, 50000) }

// TestStateChangeCostsWhatItChanges is the attack of issue 19, item 7, as a
// test that cannot be fooled by a noisy machine: it counts the bytes one
// state change allocates, not its time. A change that copied or rescanned
// the room's state would allocate in proportion to the 20,000 entries
// (megabytes); a persistent state map allocates a path (kilobytes).
func TestStateChangeCostsWhatItChanges(t *testing.T) {
	small := stateChangeBytes(t, 10)
	large := stateChangeBytes(t, 20000)
	t.Logf("bytes allocated per state change: %d in a room of 10 state events, %d in one of 20,000", small, large)
	if large > 2*small+64<<10 {
		t.Fatalf("a state change in a room of 20,000 state events allocates %d bytes, %d in a room of 10: it costs what the room holds", large, small)
	}
}

// stateChangeBytes creates a room holding entries state events and
// returns the bytes allocated per new state key set in it, averaged over
// a few changes.
func stateChangeBytes(t *testing.T, entries int) uint64 {
	ts := newTestServer(t, "optional")
	ctx := context.Background()
	init := make([]rooms.InitialState, entries)
	for i := range init {
		init[i] = rooms.InitialState{Type: "org.example.entry", StateKey: fmt.Sprint("k", i), Content: json.RawMessage(`{"v":1}`)}
	}
	id, _, err := ts.s.CreateRoom(ctx, "@alice:test", rooms.CreateRequest{Preset: "public_chat", InitialState: init})
	if err != nil {
		t.Fatal(err)
	}
	content := []byte(`{"v":2}`)
	send := func(i int) {
		key := fmt.Sprint("new", i)
		if _, err := ts.s.Send(ctx, rooms.Sender{User: "@alice:test", Device: "D"}, id, rooms.SendRequest{Type: "org.example.entry", StateKey: &key, Content: content}); err != nil {
			t.Fatal(err)
		}
	}
	send(-1) // warm the room's caches and prepared statements
	const n = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		send(i)
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / n
}
