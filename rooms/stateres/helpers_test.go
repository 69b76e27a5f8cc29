package stateres

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// A scenario file describes rooms as a DAG of named events ("nodes"). The
// harness builds every node as a real signed PDU, in topological order:
// the state before a node is the resolution (by the package under test) of
// the states after its prev events, its auth events are the auth events
// selection from that state, and its origin_server_ts counts up in the
// order nodes are built. Edges are chains [A, B, C]: A's prev event is B,
// B's is C.
type scenarioFile struct {
	Description string     `json:"description"`
	Initial     scenario   `json:"initial"`
	Cases       []scenario `json:"cases"`
}

type scenario struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	// Versions to run under; the file's default when empty.
	Versions []spec.RoomVersion `json:"versions"`
	Events   []node             `json:"events"`
	Edges    [][]string         `json:"edges"`
	// Resolve, when set, lists state sets to resolve directly, each the
	// state after START with the named nodes applied in order. Otherwise
	// the harness resolves the state before END.
	Resolve [][]string `json:"resolve"`
	// Exact makes each Resolve list a whole state rather than changes to
	// the state after START, and Expected the whole result.
	Exact bool `json:"exact"`
	// Expected names the nodes of the result: every key whose event
	// differs from the state after START must be one of them, and each
	// must be in the result.
	Expected          []string                      `json:"expected"`
	ExpectedByVersion map[spec.RoomVersion][]string `json:"expected_by_version"`
	// Unauthorised nodes are meant to fail the auth rules against the
	// state before them (a server sent them anyway); every other node
	// must pass.
	Unauthorised []string `json:"unauthorised"`
	// tsStart is the first origin_server_ts (a second room built from the
	// same nodes differs by it).
	tsStart int64
}

type node struct {
	ID       string          `json:"id"`
	Sender   string          `json:"sender"`
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
	// Auth, when set, names the node's auth events instead of the auth
	// events selection from the state before it (before room version 12
	// the create event is added). A fixture can so cite old state.
	Auth []string `json:"auth"`
}

// defaultVersions cover the state resolution v2 versions with different
// auth rules, and v2.1.
// testRoomID is the room ID before room version 12, where the creating
// server chooses it.
const testRoomID spec.RoomID = "!test:example.com"

var defaultVersions = []spec.RoomVersion{spec.RoomV2, spec.RoomV6, spec.RoomV10, spec.RoomV11, spec.RoomV12}

func loadScenarios(t testing.TB, name string) scenarioFile {
	t.Helper()
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var f scenarioFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return f
}

// keys signs the events of each server; deterministic so that event IDs,
// and so the tie-breaks on them, are the same on every run.
var keys = map[string]events.SigningKey{}

func keyFor(server string) events.SigningKey {
	k, ok := keys[server]
	if !ok {
		seed := sha256.Sum256([]byte("stateres test key " + server))
		k = events.SigningKey{ServerName: server, KeyID: "ed25519:test", Private: ed25519.NewKeyFromSeed(seed[:])}
		keys[server] = k
	}
	return k
}

// dag is a built scenario.
type dag struct {
	t      testing.TB
	v      spec.RoomVersion
	roomID spec.RoomID
	byNode map[string]*events.PDU
	byID   map[spec.EventID]*events.PDU
	after  map[string]authrules.StateMap // the state after each node
	ts     int64
}

func (d *dag) fetch(id spec.EventID) (*events.PDU, error) {
	if ev, ok := d.byID[id]; ok {
		return ev, nil
	}
	return nil, fmt.Errorf("no event %s", id)
}

// buildDAG builds the initial nodes and the case's nodes.
func buildDAG(t testing.TB, v spec.RoomVersion, initial, c scenario) *dag {
	t.Helper()
	d := &dag{t: t, v: v, byNode: map[string]*events.PDU{}, byID: map[spec.EventID]*events.PDU{}, after: map[string]authrules.StateMap{}, ts: c.tsStart}
	nodes := map[string]node{}
	prevs := map[string][]string{}
	for _, n := range append(slices.Clone(initial.Events), c.Events...) {
		if _, dup := nodes[n.ID]; dup {
			t.Fatalf("node %s defined twice", n.ID)
		}
		nodes[n.ID] = n
		prevs[n.ID] = nil
	}
	for _, chain := range append(slices.Clone(initial.Edges), c.Edges...) {
		for i := 0; i+1 < len(chain); i++ {
			a, b := chain[i], chain[i+1]
			if _, ok := nodes[a]; !ok {
				t.Fatalf("edge from unknown node %s", a)
			}
			if _, ok := nodes[b]; !ok {
				t.Fatalf("edge to unknown node %s", b)
			}
			if !slices.Contains(prevs[a], b) {
				prevs[a] = append(prevs[a], b)
			}
		}
	}
	for _, id := range topoOrder(t, prevs) {
		n := nodes[id]
		if len(prevs[id]) == 0 && n.Type != spec.MRoomCreate {
			continue // not part of this case's graph (END in a Resolve case)
		}
		d.buildNode(n, prevs[id], slices.Contains(c.Unauthorised, id))
	}
	return d
}

// topoOrder is Kahn's algorithm over the prev edges, taking the smallest
// node name among those ready.
func topoOrder(t testing.TB, prevs map[string][]string) []string {
	waiting := map[string]int{}
	next := map[string][]string{}
	for n, ps := range prevs {
		waiting[n] = len(ps)
		for _, p := range ps {
			next[p] = append(next[p], n)
		}
	}
	var ready, out []string
	for n, w := range waiting {
		if w == 0 {
			ready = append(ready, n)
		}
	}
	for len(ready) > 0 {
		slices.Sort(ready)
		n := ready[0]
		ready = ready[1:]
		out = append(out, n)
		for _, m := range next[n] {
			if waiting[m]--; waiting[m] == 0 {
				ready = append(ready, m)
			}
		}
	}
	if len(out) != len(prevs) {
		t.Fatal("the scenario's edges form a cycle")
	}
	return out
}

func (d *dag) buildNode(n node, prevs []string, unauthorised bool) {
	t := d.t
	t.Helper()
	var before authrules.StateMap
	switch len(prevs) {
	case 0:
		before = authrules.StateMap{}
	case 1:
		before = maps(d.after[prevs[0]])
	default:
		var sets []authrules.StateMap
		for _, p := range prevs {
			sets = append(sets, d.after[p])
		}
		var err error
		if before, err = Resolve(d.v, sets, d.fetch); err != nil {
			t.Fatalf("%s: resolving the state before it: %v", n.ID, err)
		}
	}
	content := d.content(n)
	if n.Type == spec.MRoomCreate && !d.v.AtLeast12() {
		d.roomID = testRoomID
	}
	p := events.ProtoEvent{
		Type: n.Type, StateKey: n.StateKey, Sender: spec.UserID(n.Sender), RoomID: d.roomID,
		Content: content, OriginServerTS: d.ts, ReferenceHashes: map[spec.EventID][sha256.Size]byte{},
	}
	d.ts++
	for _, pn := range prevs {
		prev := d.byNode[pn]
		p.PrevEvents = append(p.PrevEvents, prev.EventID())
		p.Depth = max(p.Depth, prev.Depth()+1)
		d.addHash(p.ReferenceHashes, prev)
	}
	authState := authrules.StateMap{}
	cite := func(a *events.PDU) {
		p.AuthEvents = append(p.AuthEvents, a.EventID())
		d.addHash(p.ReferenceHashes, a)
		sk, _ := a.StateKey()
		authState[authrules.StateKeyPair{Type: a.Type(), StateKey: sk}] = a
	}
	switch {
	case n.Type == spec.MRoomCreate:
	case n.Auth != nil:
		if !d.v.AtLeast12() {
			cite(d.node("CREATE"))
		}
		for _, name := range n.Auth {
			cite(d.node(name))
		}
	default:
		for _, k := range authrules.AuthEventKeys(n.Type, n.StateKey, p.Sender, gjson.ParseBytes(content), d.v) {
			if a := before[k]; a != nil {
				cite(a)
			}
		}
	}
	_, server, _ := strings.Cut(n.Sender, ":")
	ev, err := events.Build(p, d.v, keyFor(server))
	if err != nil {
		t.Fatalf("%s: build: %v", n.ID, err)
	}
	if n.Type == spec.MRoomCreate {
		d.roomID = ev.RoomID()
	}
	// The node is checked against its auth events, and in v12 the create
	// event the room ID names.
	if create := d.byNode["CREATE"]; create != nil {
		authState[authrules.StateKeyPair{Type: spec.MRoomCreate}] = create
	}
	if err := authrules.Allowed(ev, authState); (err == nil) == unauthorised {
		t.Fatalf("%s (v%s): auth rules said %v, fixture says unauthorised=%v", n.ID, d.v, err, unauthorised)
	}
	d.byNode[n.ID] = ev
	d.byID[ev.EventID()] = ev
	after := maps(before)
	if sk, ok := ev.StateKey(); ok {
		after[authrules.StateKeyPair{Type: ev.Type(), StateKey: sk}] = ev
	}
	d.after[n.ID] = after
}

func (d *dag) addHash(h map[spec.EventID][sha256.Size]byte, ev *events.PDU) {
	sum, err := ev.ReferenceHash()
	if err != nil {
		d.t.Fatal(err)
	}
	h[ev.EventID()] = sum
}

// content fills in what the room version needs: the create event's
// room_version (and creator before v11); in v12, room creators are taken
// out of power levels' users, where the auth rules forbid them (they
// outrank everyone anyway).
func (d *dag) content(n node) []byte {
	var c map[string]any
	if len(n.Content) > 0 {
		if err := json.Unmarshal(n.Content, &c); err != nil {
			d.t.Fatalf("%s: content: %v", n.ID, err)
		}
	}
	if c == nil {
		c = map[string]any{}
	}
	switch n.Type {
	case spec.MRoomCreate:
		c["room_version"] = string(d.v)
		if !d.v.AtLeast11() {
			c["creator"] = n.Sender
		}
	case spec.MRoomPowerLevels:
		if users, ok := c["users"].(map[string]any); ok && d.v.AtLeast12() {
			for _, creator := range d.creators() {
				delete(users, string(creator))
			}
		}
	}
	raw, err := json.Marshal(c)
	if err != nil {
		d.t.Fatal(err)
	}
	canon, err := events.CanonicalObject(raw)
	if err != nil {
		d.t.Fatal(err)
	}
	return canon
}

func (d *dag) creators() []spec.UserID {
	for _, ev := range d.byID {
		if ev.Type() == spec.MRoomCreate {
			cs, err := authrules.Creators(ev)
			if err != nil {
				d.t.Fatal(err)
			}
			return cs
		}
	}
	return nil
}

// stateWith is the state after START with the named nodes applied.
func (d *dag) stateWith(names ...string) authrules.StateMap {
	return d.apply(maps(d.after["START"]), names)
}

// apply sets the named nodes in s, in order.
func (d *dag) apply(s authrules.StateMap, names []string) authrules.StateMap {
	for _, n := range names {
		ev := d.node(n)
		sk, _ := ev.StateKey()
		s[authrules.StateKeyPair{Type: ev.Type(), StateKey: sk}] = ev
	}
	return s
}

func (d *dag) node(name string) *events.PDU {
	ev, ok := d.byNode[name]
	if !ok {
		d.t.Fatalf("no node %s", name)
	}
	return ev
}

// name is the node name of an event, for messages.
func (d *dag) name(ev *events.PDU) string {
	for n, e := range d.byNode {
		if e == ev {
			return n
		}
	}
	return string(ev.EventID())
}

func maps(m authrules.StateMap) authrules.StateMap {
	out := make(authrules.StateMap, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// checkExpected compares a result with the expected nodes, as described
// on scenario.Expected.
func (d *dag) checkExpected(got authrules.StateMap, expected []string, exact bool) {
	t := d.t
	t.Helper()
	want := authrules.StateMap{}
	for _, n := range expected {
		ev := d.node(n)
		sk, _ := ev.StateKey()
		want[authrules.StateKeyPair{Type: ev.Type(), StateKey: sk}] = ev
	}
	start := d.after["START"]
	if exact {
		start = authrules.StateMap{}
	}
	keys := map[authrules.StateKeyPair]bool{}
	for k := range want {
		keys[k] = true
	}
	for k, ev := range got {
		if s := start[k]; s == nil || s.EventID() != ev.EventID() {
			keys[k] = true
		}
	}
	for k, ev := range start {
		if got[k] == nil {
			t.Errorf("(%s, %s): %s was dropped", k.Type, k.StateKey, d.name(ev))
		}
	}
	for k := range keys {
		g, w := got[k], want[k]
		switch {
		case w == nil:
			t.Errorf("(%s, %s): got %s, expected the state at START", k.Type, k.StateKey, d.name(g))
		case g == nil:
			t.Errorf("(%s, %s): missing, want %s", k.Type, k.StateKey, d.name(w))
		case g.EventID() != w.EventID():
			t.Errorf("(%s, %s): got %s, want %s", k.Type, k.StateKey, d.name(g), d.name(w))
		}
	}
}
