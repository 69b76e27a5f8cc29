package stateres

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
)

func TestPublishedScenarios(t *testing.T) { runScenarios(t, "published.json") }

func TestAdversarialScenarios(t *testing.T) { runScenarios(t, "adversarial.json") }

func TestPublishedV21Scenarios(t *testing.T) { runScenarios(t, "published_v21.json") }

func runScenarios(t *testing.T, file string) {
	f := loadScenarios(t, file)
	for _, c := range f.Cases {
		versions := c.Versions
		if len(versions) == 0 {
			versions = defaultVersions
		}
		for _, v := range versions {
			t.Run(c.Name+"/v"+string(v), func(t *testing.T) {
				d := buildDAG(t, v, f.Initial, c)
				sets := d.stateSets(c)
				got, err := Resolve(v, sets, d.fetch)
				if err != nil {
					t.Fatalf("resolve: %v", err)
				}
				want := c.Expected
				if w, ok := c.ExpectedByVersion[v]; ok {
					want = w
				}
				d.checkExpected(got, want, c.Exact)

				// The order of the state sets does not matter.
				slices.Reverse(sets)
				again, err := Resolve(v, sets, d.fetch)
				if err != nil {
					t.Fatalf("resolve reversed: %v", err)
				}
				if !sameState(got, again) {
					t.Error("the resolution depends on the order of the state sets")
				}
			})
		}
	}
}

// stateSets are the states a case resolves: its Resolve lists, or the
// states after END's prev events.
func (d *dag) stateSets(c scenario) []authrules.StateMap {
	var sets []authrules.StateMap
	if len(c.Resolve) > 0 {
		for _, names := range c.Resolve {
			if c.Exact {
				sets = append(sets, d.apply(authrules.StateMap{}, names))
			} else {
				sets = append(sets, d.stateWith(names...))
			}
		}
		return sets
	}
	end := d.node("END")
	for _, id := range end.PrevEvents() {
		for n, ev := range d.byNode {
			if ev.EventID() == id {
				sets = append(sets, d.after[n])
			}
		}
	}
	if len(sets) < 2 {
		d.t.Fatal("END does not merge two branches")
	}
	return sets
}

func sameState(a, b authrules.StateMap) bool {
	if len(a) != len(b) {
		return false
	}
	for k, ev := range a {
		if b[k] == nil || b[k].EventID() != ev.EventID() {
			return false
		}
	}
	return true
}

// forkDAG builds the initial room and a case written in Go.
func forkDAG(t *testing.T, v spec.RoomVersion, c scenario) *dag {
	t.Helper()
	return buildDAG(t, v, loadScenarios(t, "published.json").Initial, c)
}

func topicFork() scenario {
	topic := func(id, text string) node {
		return node{ID: id, Sender: "@alice:example.com", Type: "m.room.topic", StateKey: ptr(""), Content: []byte(`{"topic":"` + text + `"}`)}
	}
	// P0 supersedes IPOWER, which is then only in the auth chains.
	p0 := node{ID: "P0", Sender: "@alice:example.com", Type: spec.MRoomPowerLevels, StateKey: ptr(""),
		Content: []byte(`{"users":{"@alice:example.com":100,"@bob:example.com":10}}`)}
	return scenario{
		Events: []node{p0, topic("T1", "one"), topic("T2", "two")},
		Edges:  [][]string{{"END", "T1", "P0", "START"}, {"END", "T2", "P0"}},
	}
}

func ptr(s string) *string { return &s }

func TestUnsupportedVersions(t *testing.T) {
	for _, v := range []spec.RoomVersion{spec.RoomV1, "99", ""} {
		_, err := Resolve(v, []authrules.StateMap{{}}, func(spec.EventID) (*events.PDU, error) { return nil, nil })
		if !errors.Is(err, ErrUnsupportedVersion) {
			t.Errorf("v%q: %v, want ErrUnsupportedVersion", v, err)
		}
	}
}

func TestResolveFailsClosed(t *testing.T) {
	for _, v := range []spec.RoomVersion{spec.RoomV2, spec.RoomV11, spec.RoomV12} {
		t.Run(string(v), func(t *testing.T) {
			d := forkDAG(t, v, topicFork())
			s1, s2 := d.after["T1"], d.after["T2"]
			if _, err := Resolve(v, []authrules.StateMap{s1, s2}, d.fetch); err != nil {
				t.Fatalf("control: %v", err)
			}
			wantErr := func(name string, sets []authrules.StateMap, fetch Fetcher, contains string) {
				t.Helper()
				got, err := Resolve(v, sets, fetch)
				if err == nil {
					t.Errorf("%s: resolved to %d events, want an error", name, len(got))
				} else if !strings.Contains(err.Error(), contains) {
					t.Errorf("%s: %v, want an error about %q", name, err, contains)
				}
			}
			wantErr("no state sets", nil, d.fetch, "no state sets")
			wantErr("no fetcher", []authrules.StateMap{s1, s2}, nil, "no event fetcher")

			// An auth chain the caller cannot complete.
			missing := d.node("IPOWER").EventID()
			partial := func(id spec.EventID) (*events.PDU, error) {
				if id == missing {
					return nil, errors.New("not stored")
				}
				return d.fetch(id)
			}
			wantErr("missing auth event", []authrules.StateMap{s1, s2}, partial, "not stored")
			lying := func(id spec.EventID) (*events.PDU, error) {
				if id == missing {
					return d.node("IMC"), nil
				}
				return d.fetch(id)
			}
			wantErr("fetcher answers with another event", []authrules.StateMap{s1, s2}, lying, "another event")
			silent := func(id spec.EventID) (*events.PDU, error) {
				if id == missing {
					return nil, nil
				}
				return d.fetch(id)
			}
			wantErr("fetcher answers nothing", []authrules.StateMap{s1, s2}, silent, "another event")
			panicky := func(spec.EventID) (*events.PDU, error) { panic("storage exploded") }
			wantErr("fetcher panics", []authrules.StateMap{s1, s2}, panicky, "internal error")

			// An event under another key, a nil event, no create event.
			bad := maps(s1)
			bad[authrules.StateKeyPair{Type: "m.room.name"}] = d.node("T1")
			wantErr("wrong key", []authrules.StateMap{bad, s2}, d.fetch, "another key")
			bad = maps(s1)
			bad[authrules.StateKeyPair{Type: "m.room.name"}] = nil
			wantErr("nil event", []authrules.StateMap{bad, s2}, d.fetch, "no event")
			bad = maps(s1)
			delete(bad, authrules.StateKeyPair{Type: spec.MRoomCreate})
			wantErr("no create", []authrules.StateMap{bad, s2}, d.fetch, "no m.room.create")

			// A state set of another room.
			other := forkDAG(t, v, scenario{
				Events: []node{{ID: "X", Sender: "@bob:example.com", Type: "m.room.member", StateKey: ptr("@bob:example.com"), Content: []byte(`{"membership":"leave"}`)}},
				Edges:  [][]string{{"X", "START"}},
				// Another create event: another room in v12, a second
				// create event under the same room ID before.
				tsStart: 1000,
			})
			if (other.roomID == d.roomID) == v.AtLeast12() {
				t.Fatal("test needs the same room ID exactly before v12")
			}
			wantErr("another create event", []authrules.StateMap{s1, other.after["X"]}, d.fetch, "different m.room.create")
			mixed := maps(s1)
			mixed[authrules.StateKeyPair{Type: spec.MRoomMember, StateKey: "@bob:example.com"}] = other.node("X")
			want := "second m.room.create"
			if v.AtLeast12() {
				want = "another room"
			}
			both := func(id spec.EventID) (*events.PDU, error) {
				if ev, err := d.fetch(id); err == nil {
					return ev, nil
				}
				return other.fetch(id)
			}
			wantErr("an event of another room", []authrules.StateMap{mixed, s2}, both, want)
		})
	}
}

// TestStateAfterCreate resolves the state after the create event alone
// against a later state: the create event is then in the auth difference.
func TestStateAfterCreate(t *testing.T) {
	for _, v := range defaultVersions {
		t.Run(string(v), func(t *testing.T) {
			d := forkDAG(t, v, topicFork())
			for _, later := range []string{"IMA", "IJR", "T1"} {
				want := d.after[later]
				got, err := Resolve(v, []authrules.StateMap{d.after["CREATE"], want}, d.fetch)
				if err != nil {
					t.Fatalf("%s: %v", later, err)
				}
				if !sameState(got, want) {
					t.Errorf("%s: resolved to %d events, want the %d of the later state", later, len(got), len(want))
				}
			}
		})
	}
}

// TestConflictedCreate forges a second create event with the room's own ID
// (possible before v12, where room IDs are not derived from the create
// event) and hides it in the auth chain of a state event.
func TestConflictedCreate(t *testing.T) {
	for _, v := range []spec.RoomVersion{spec.RoomV2, spec.RoomV10, spec.RoomV11} {
		t.Run(string(v), func(t *testing.T) {
			d := forkDAG(t, v, topicFork())
			key := keyFor("example.com")
			proto := events.ProtoEvent{
				Type: spec.MRoomCreate, StateKey: ptr(""), Sender: "@alice:example.com", RoomID: d.roomID,
				Content: d.content(node{ID: "CREATE2", Sender: "@alice:example.com", Type: spec.MRoomCreate, Content: []byte(`{"forged":true}`)}),
			}
			create2, err := events.Build(proto, v, key)
			if err != nil {
				t.Fatal(err)
			}
			d.byID[create2.EventID()] = create2
			// A set whose create event is the forged one.
			forged := maps(d.after["T2"])
			forged[authrules.StateKeyPair{Type: spec.MRoomCreate}] = create2
			if _, err := Resolve(v, []authrules.StateMap{d.after["T1"], forged}, d.fetch); err == nil {
				t.Error("state sets with two create events resolved")
			}
			// A topic whose auth events cite the forged create.
			topic := events.ProtoEvent{
				Type: "m.room.topic", StateKey: ptr(""), Sender: "@alice:example.com", RoomID: d.roomID,
				Content: []byte(`{"topic":"forged"}`), Depth: 20, OriginServerTS: 999,
				PrevEvents: []spec.EventID{d.node("START").EventID()},
				AuthEvents: []spec.EventID{create2.EventID(), d.node("IPOWER").EventID(), d.node("IMA").EventID()},
			}
			topic.ReferenceHashes = map[spec.EventID][32]byte{}
			for _, e := range []*events.PDU{create2, d.node("START"), d.node("IPOWER"), d.node("IMA")} {
				d.addHash(topic.ReferenceHashes, e)
			}
			tf, err := events.Build(topic, v, key)
			if err != nil {
				t.Fatal(err)
			}
			d.byID[tf.EventID()] = tf
			withForged := maps(d.after["START"])
			withForged[authrules.StateKeyPair{Type: "m.room.topic"}] = tf
			_, err = Resolve(v, []authrules.StateMap{d.after["T1"], withForged}, d.fetch)
			if err == nil || !strings.Contains(err.Error(), "second m.room.create") {
				t.Errorf("a forged create in an auth chain: %v", err)
			}
		})
	}
}

// TestRejectedAuthEvent: the iterative auth checks do not fall back to an
// auth event the caller rejected. Bob's topic is authorised by PA, the
// power levels that give him 50; with PA rejected, and not in the state
// the checks build, it fails under the room's other power levels.
func TestRejectedAuthEvent(t *testing.T) {
	for _, v := range []spec.RoomVersion{spec.RoomV11, spec.RoomV12} {
		t.Run(string(v), func(t *testing.T) {
			pa := node{ID: "PA", Sender: "@alice:example.com", Type: spec.MRoomPowerLevels, StateKey: ptr(""),
				Content: []byte(`{"users":{"@alice:example.com":100,"@bob:example.com":50}}`)}
			topic := func(id string) node {
				return node{ID: id, Sender: "@bob:example.com", Type: "m.room.topic", StateKey: ptr(""), Content: []byte(`{"topic":"` + id + `"}`)}
			}
			d := forkDAG(t, v, scenario{
				Events: []node{pa, topic("T1"), topic("T2")},
				Edges:  [][]string{{"T1", "PA", "START"}, {"T2", "PA"}},
			})
			// The states hold the topics but not PA: PA is only in the auth
			// chains, and v12 starts from nothing, so PA reaches the checks
			// only as an auth event.
			sets := []authrules.StateMap{d.stateWith("T1"), d.stateWith("T2")}
			got, err := Resolve(v, sets, d.fetch)
			if err != nil {
				t.Fatal(err)
			}
			if v.AtLeast12() && got.Get("m.room.topic", "") == nil {
				t.Fatal("control: the topic was lost")
			}
			pid := d.node("PA").EventID()
			got, err = Resolver{Version: v, Fetch: d.fetch, Rejected: func(id spec.EventID) bool { return id == pid }}.Resolve(sets)
			if err != nil {
				t.Fatal(err)
			}
			if tp := got.Get("m.room.topic", ""); tp != nil {
				t.Errorf("topic %s stands on a rejected auth event", d.name(tp))
			}
		})
	}
}

// TestConflictedSubgraph: in v2.1 an event on an auth path between two
// conflicted events joins the full conflicted set even when every state
// set's auth chain holds it (so it is not in the auth difference).
func TestConflictedSubgraph(t *testing.T) {
	v := spec.RoomV12
	pl := func(id string, bob int) node {
		return node{ID: id, Sender: "@alice:example.com", Type: spec.MRoomPowerLevels, StateKey: ptr(""),
			Content: fmt.Appendf(nil, `{"users":{"@bob:example.com":%d}}`, bob)}
	}
	d := forkDAG(t, v, scenario{
		Events: []node{pl("P1", 10), pl("P2", 20), pl("P3", 30),
			{ID: "TB", Sender: "@alice:example.com", Type: "m.room.topic", StateKey: ptr(""), Content: []byte(`{"topic":"x"}`)}},
		Edges: [][]string{{"TB", "P3", "P2", "P1", "START"}},
	})
	p1, p2, p3 := d.node("P1"), d.node("P2"), d.node("P3")
	// Both sets cite P2 (S1 through TB), so P2 is in both auth chains;
	// the power levels key is conflicted between P1 and P3.
	s1 := d.stateWith("P1", "TB")
	s2 := d.stateWith("P3")
	res := newResolution(Resolver{Version: v, Fetch: d.fetch})
	if err := res.readStateSets([]authrules.StateMap{s1, s2}); err != nil {
		t.Fatal(err)
	}
	_, conflicted := split([]authrules.StateMap{s1, s2})
	diff, err := res.authDifference([]authrules.StateMap{s1, s2})
	if err != nil {
		t.Fatal(err)
	}
	if diff[p2.EventID()] {
		t.Fatal("test needs P2 outside the auth difference")
	}
	sub, err := res.conflictedSubgraph(conflicted)
	if err != nil {
		t.Fatal(err)
	}
	if !sub[p2.EventID()] || !sub[p1.EventID()] || !sub[p3.EventID()] {
		t.Errorf("subgraph misses the path P3 -> P2 -> P1: %v", sub)
	}
	if sub[d.node("IPOWER").EventID()] {
		t.Error("subgraph holds an event on no path between conflicted events")
	}
	got, err := Resolve(v, []authrules.StateMap{s1, s2}, d.fetch)
	if err != nil {
		t.Fatal(err)
	}
	if got.Get(spec.MRoomPowerLevels, "") != p3 {
		t.Errorf("power levels resolved to %s, want P3", d.name(got.Get(spec.MRoomPowerLevels, "")))
	}
}

// TestPowerOrderTieBreaks checks the comparison of the reverse topological
// power ordering directly: power level first, then timestamp, then ID.
func TestPowerOrderTieBreaks(t *testing.T) {
	v := spec.RoomV11
	mk := func(id, sender string, content string) node {
		return node{ID: id, Sender: sender, Type: spec.MRoomPowerLevels, StateKey: ptr(""), Content: []byte(content)}
	}
	d := forkDAG(t, v, scenario{
		Events: []node{
			mk("PA", "@alice:example.com", `{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50}}`),
			mk("PC", "@charlie:example.com", `{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50},"x":1}`),
			mk("PB", "@bob:example.com", `{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50},"x":2}`),
			mk("PZ", "@alice:example.com", `{"users":{"@alice:example.com":100,"@bob:example.com":50,"@charlie:example.com":50},"x":3}`),
		},
		// Built in name order: PB before PC before PZ.
		Edges: [][]string{{"PB", "PA", "START"}, {"PC", "PA"}, {"PZ", "PA"}},
	})
	res := newResolution(Resolver{Version: v, Fetch: d.fetch})
	res.roomID, res.create = d.roomID, d.node("CREATE")
	set := map[spec.EventID]bool{}
	for _, n := range []string{"PA", "PB", "PC", "PZ"} {
		ev := d.node(n)
		res.known[ev.EventID()] = ev
		set[ev.EventID()] = true
	}
	order, err := res.reverseTopologicalPowerOrder(set)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ev := range order {
		names = append(names, d.name(ev))
	}
	// PA first (the others cite it), then Alice's PZ (100), then the two
	// at 50 by origin_server_ts.
	if want := []string{"PA", "PZ", "PB", "PC"}; !slices.Equal(names, want) {
		t.Errorf("order %v, want %v", names, want)
	}
}
