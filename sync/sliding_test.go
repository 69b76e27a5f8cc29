package sync

import (
	"crypto/ed25519"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
)

func TestSlidingConnectionBounds(t *testing.T) {
	cs := newConnStore()
	now := time.Now()
	k := func(id string) connKey { return connKey{user: bob, device: "D", connID: id} }
	first := cs.start(k("c0"), now)
	pos0 := first.save(&connState{})
	for i := 1; i < 3*maxConnsPerDevice; i++ {
		c := cs.start(k("c"+strconv.Itoa(i)), now.Add(time.Duration(i)*time.Second))
		c.save(&connState{})
	}
	if n := cs.count(); n != maxConnsPerDevice {
		t.Fatalf("%d connections for one device, want %d", n, maxConnsPerDevice)
	}
	if _, _, err := cs.resume(k("c0"), pos0, now.Add(time.Hour/2-time.Minute)); err == nil {
		t.Fatal("the least recently used connection was kept")
	}
	// Positions: the last few are kept, older ones are unknown.
	c := cs.start(k("p"), now)
	var positions []string
	for i := 0; i < keptPositions+2; i++ {
		positions = append(positions, c.save(&connState{}))
	}
	if _, _, err := cs.resume(k("p"), positions[0], now); err == nil {
		t.Fatal("an old pos was kept")
	}
	if _, _, err := cs.resume(k("p"), positions[len(positions)-1], now); err != nil {
		t.Fatalf("the latest pos: %v", err)
	}
	// Another device, the same conn_id and pos: unknown.
	if _, _, err := cs.resume(connKey{user: bob, device: "E", connID: "p"}, positions[len(positions)-1], now); err == nil {
		t.Fatal("another device resumed the connection")
	}
	// Idle connections expire.
	if _, _, err := cs.resume(k("p"), positions[len(positions)-1], now.Add(connIdle+2*sweepEvery)); err == nil {
		t.Fatal("an idle connection did not expire")
	}
	if cs.count() != 0 {
		t.Fatalf("%d connections left after expiry", cs.count())
	}
}

func TestRequiredStateMatching(t *testing.T) {
	var rs requiredState
	for _, e := range [][2]string{{"m.room.name", ""}, {"m.room.member", "$ME"}, {"m.room.member", "$LAZY"}, {"m.space.child", "*"}, {"*", "k"}} {
		rs.add(e[0], e[1])
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	key := events.SigningKey{ServerName: "test", KeyID: "ed25519:1", Private: priv}
	pdu := func(typ, sk string) *events.PDU {
		p, err := events.Build(events.ProtoEvent{Type: typ, StateKey: &sk, Sender: alice, RoomID: "!r:test",
			Content: []byte(`{}`), Depth: 1, OriginServerTS: 1}, spec.RoomVersion("11"), key)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	senders := map[spec.UserID]bool{alice: true}
	for _, c := range []struct {
		typ, key string
		want     bool
	}{
		{"m.room.name", "", true}, {"m.room.topic", "", false}, {"m.room.member", bob, true},
		{"m.room.member", alice, true}, {"m.room.member", "@carol:test", false}, {"m.space.child", "!x:test", true},
		{"org.example", "k", true}, {"org.example", "j", false},
	} {
		if got := rs.matches(pdu(c.typ, c.key), bob, senders); got != c.want {
			t.Errorf("[%s %q]: %v, want %v", c.typ, c.key, got, c.want)
		}
	}
}

// The hand-written answer decodes to what encoding/json would have written.
func TestSlidingEncodeMatchesEncodingJSON(t *testing.T) {
	name, n, live, bump, joined := "Room", int64(2), 1, int64(9), 3
	ev := json.RawMessage(`{"type":"m.room.message","content":{"body":"<hi> & \"there\""}}`)
	for _, resp := range []*slidingResponse{
		{Pos: "p_1", Lists: map[string]slidingListResponse{}, Rooms: map[spec.RoomID]*slidingRoomResp{}},
		{Pos: "p_2", TxnID: "t", Lists: map[string]slidingListResponse{"a": {Count: 4}},
			Rooms: map[spec.RoomID]*slidingRoomResp{
				"!a:test": {Name: &name, Avatar: json.RawMessage(`null`), Initial: true, NotificationCount: &n, HighlightCount: &n,
					Timeline: []json.RawMessage{ev, ev}, RequiredState: []json.RawMessage{ev}, PrevBatch: "s1", Limited: true,
					JoinedCount: &joined, NumLive: &live, BumpStamp: &bump, Heroes: []slidingHero{{UserID: alice, DisplayName: "A"}}},
				"!b:test": {InviteState: []json.RawMessage{ev}},
				"!c:test": {},
			},
			Extensions: slidingExtResponse{
				ToDevice:    &toDeviceResponse{NextBatch: "5", Events: []json.RawMessage{}},
				E2EE:        &e2eeResponse{OTKCounts: map[string]int{"signed_curve25519": 0}, FallbackKeyTypes: []string{}, DeviceLists: &DeviceLists{Changed: []spec.UserID{bob}}},
				AccountData: &accountDataResponse{Global: []json.RawMessage{ev}, Rooms: map[spec.RoomID][]json.RawMessage{"!a:test": {ev}}},
				Receipts:    &roomEventsResponse{Rooms: map[spec.RoomID]json.RawMessage{"!a:test": ev}},
				Typing:      &roomEventsResponse{Rooms: map[spec.RoomID]json.RawMessage{}},
			}},
	} {
		mine, err := resp.encode()
		if err != nil {
			t.Fatal(err)
		}
		theirs, _ := json.Marshal(resp)
		var a, b any
		if err := json.Unmarshal(mine, &a); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, mine)
		}
		_ = json.Unmarshal(theirs, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("encode:\n%s\nencoding/json:\n%s", mine, theirs)
		}
	}
}

func TestFirstByRecency(t *testing.T) {
	for n := 0; n < 60; n++ {
		for _, k := range []int{0, 1, 3, 5, 20, 59, 60} {
			list := make([]candidate, n)
			for i := range list {
				list[i] = candidate{ID: spec.RoomID("!" + strconv.Itoa(i*7919%61)), Bump: int64(i * 7919 % 13)}
			}
			want := slices.Clone(list)
			slices.SortFunc(want, byRecency)
			firstByRecency(list, min(k, n))
			for i := 0; i < min(k, n); i++ {
				if list[i] != want[i] {
					t.Fatalf("n=%d k=%d: [%d] = %v, want %v", n, k, i, list[i], want[i])
				}
			}
		}
	}
}
