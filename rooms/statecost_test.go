package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

// benchStateChange measures one state change (a new state key, as a join
// or a profile change adds or replaces one member event) in a room that
// already holds entries state events (issue 19, item 7): it should cost
// what it changes, not what the room holds.
func benchStateChange(b *testing.B, entries int) {
	ts := newTestServer(&testing.T{}, "optional")
	defer func() { ts.srv.Close(); ts.db.Close() }()
	ctx := context.Background()
	init := make([]InitialState, entries)
	for i := range init {
		init[i] = InitialState{Type: "org.example.entry", StateKey: fmt.Sprint("k", i), Content: json.RawMessage(`{"v":1}`)}
	}
	id, _, err := ts.s.CreateRoom(ctx, "@alice:test", CreateRequest{Preset: "public_chat", InitialState: init})
	if err != nil {
		b.Fatal(err)
	}
	content := []byte(`{"v":2}`)
	b.ResetTimer()
	cpu0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		key := fmt.Sprint("new", i)
		if _, err := ts.s.Send(ctx, Sender{User: "@alice:test", Device: "D"}, id, SendRequest{Type: "org.example.entry", StateKey: &key, Content: content}); err != nil {
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
	defer func() { ts.srv.Close(); ts.db.Close() }()
	ctx := context.Background()
	init := make([]InitialState, entries)
	for i := range init {
		init[i] = InitialState{Type: "org.example.entry", StateKey: fmt.Sprint("k", i), Content: json.RawMessage(`{"v":1}`)}
	}
	id, _, err := ts.s.CreateRoom(ctx, "@alice:test", CreateRequest{Preset: "public_chat", InitialState: init})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		user := spec.UserID(fmt.Sprintf("@u%d:test", i))
		if _, err := ts.s.Change(ctx, Sender{User: user}, id, MembershipChange{Target: user, Membership: spec.Join}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N)*1000, "cpu-ms/op")
}

func BenchmarkJoinSmallRoom(b *testing.B) { benchJoin(b, 10) }
func BenchmarkJoinLargeRoom(b *testing.B) { benchJoin(b, 50000) }
