package sync

import (
	"context"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
)

const alice, bob = "@alice:test", "@bob:test"

// A change notified from an after-commit hook must wake its waiters only
// once the committed position covers it: a request woken earlier builds
// from the old position, finds nothing and waits for a wake already spent.
func TestNotifyWakesOnlyWhenThePositionIsPublished(t *testing.T) {
	db := openDB(t)
	n := NewNotifier(db)

	w := n.subscribe("@a:test", nil)
	defer w.cancel()
	seen := make(chan int64, 1)
	go func() {
		<-w.woken()
		seen <- db.Position()
	}()

	var pos int64
	var wokeInHook bool
	err := db.Write(context.Background(), func(tx *storage.Tx) error {
		pos = tx.NextPosition()
		tx.AfterCommit(func() {
			n.Notify(pos, wake.Of(wake.Any), "@a:test")
			select {
			case <-w.woken():
				wokeInHook = true
			default:
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if wokeInHook {
		t.Fatal("the waiter was woken before the position moved")
	}
	select {
	case got := <-seen:
		if got < pos {
			t.Fatalf("woken waiter saw position %d, the change is at %d", got, pos)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was never woken")
	}

	// A change already visible (or without a position) wakes at once.
	w2 := n.subscribe("@a:test", nil)
	defer w2.cancel()
	n.Notify(0, wake.Of(wake.Any), "@a:test")
	select {
	case <-w2.woken():
	default:
		t.Fatal("a change without a position did not wake at once")
	}
}

func TestNotifierQuietSince(t *testing.T) {
	n := NewNotifier(openDB(t))
	if n.quietSince(alice, 100, 100) {
		t.Fatal("quiet before tracking began")
	}
	serial := int64(100)
	n.track(10, func() int64 { return serial })
	if n.quietSince(alice, 9, 200) {
		t.Fatal("quiet for a token from before tracking began")
	}
	if !n.quietSince(alice, 10, 100) {
		t.Fatal("not quiet with nothing told")
	}
	n.Notify(12, wake.Of(wake.Any), alice)
	if n.quietSince(alice, 11, 100) || !n.quietSince(alice, 12, 100) {
		t.Fatal("a change at position 12 is after 11 and not after 12")
	}
	serial = 150
	n.Notify(0, wake.Of(wake.Any), alice)
	if n.quietSince(alice, 12, 149) || !n.quietSince(alice, 12, 150) {
		t.Fatal("a change without a position counts from the serial at the time")
	}
	if !n.quietSince(bob, 10, 100) {
		t.Fatal("bob was told nothing")
	}
}

func openDB(t *testing.T) *storage.DB {
	t.Helper()
	db, err := storage.Open(pgtest.Location(t, t.TempDir(), "db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Migrate(context.Background(), Schema); err != nil {
		t.Fatal(err)
	}
	return db
}

// A change held until its position is published is judged against the
// interest the waiter has by then: narrowed during the build, it still
// wakes for its room, not for another.
func TestHeldChangeWakesTheWaitersItConcerns(t *testing.T) {
	db := openDB(t)
	n := NewNotifier(db)
	inA := n.subscribe(alice, nil)
	inB := n.subscribe(alice, nil)
	defer inA.cancel()
	defer inB.cancel()
	err := db.Write(context.Background(), func(tx *storage.Tx) error {
		pos := tx.NextPosition()
		tx.AfterCommit(func() {
			n.Notify(pos, wake.InRoom(wake.Timeline, "!a:test"), alice)
			inA.narrow(&interest{rooms: map[spec.RoomID]bool{"!a:test": true}})
			inB.narrow(&interest{rooms: map[spec.RoomID]bool{"!b:test": true}})
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-inA.woken():
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter on the room was not woken")
	}
	select {
	case <-inB.woken():
		t.Fatal("the waiter on another room was woken")
	default:
	}
}

func TestInterestWokenBy(t *testing.T) {
	const a, b = spec.RoomID("!a:test"), spec.RoomID("!b:test")
	encryption := &interest{device: "D", toDevice: true, e2ee: true}
	subOnA := &interest{rooms: map[spec.RoomID]bool{a: true}, typing: map[spec.RoomID]bool{a: true}}
	list := &interest{rooms: map[spec.RoomID]bool{a: true}, lists: true, globalAccountData: true, bumps: true,
		notInLists: map[spec.RoomID]bool{b: true}}
	for _, c := range []struct {
		name string
		in   *interest
		c    wake.Change
		want bool
	}{
		{"encryption: room message", encryption, wake.Change{Kind: wake.Timeline, Room: a, Bump: true}, false},
		{"encryption: to-device for it", encryption, wake.Change{Kind: wake.ToDevice, Device: "D"}, true},
		{"encryption: to-device for another device", encryption, wake.Change{Kind: wake.ToDevice, Device: "E"}, false},
		{"encryption: to-device for every device", encryption, wake.Of(wake.ToDevice), true},
		{"encryption: device lists", encryption, wake.Of(wake.DeviceLists), true},
		{"encryption: presence", encryption, wake.Of(wake.Presence), false},
		{"encryption: a change of no kind", encryption, wake.Of(wake.Any), true},
		{"sub: its room", subOnA, wake.InRoom(wake.Timeline, a), true},
		{"sub: a bump elsewhere", subOnA, wake.Change{Kind: wake.Timeline, Room: b, Bump: true}, false},
		{"sub: a new room elsewhere", subOnA, wake.Change{Kind: wake.Timeline, Room: b, Membership: true}, false},
		{"sub: typing in its room", subOnA, wake.InRoom(wake.Typing, a), true},
		{"sub: receipts in its room, extension off", subOnA, wake.InRoom(wake.Receipts, a), false},
		{"sub: unread counts in its room", subOnA, wake.InRoom(wake.UnreadCounts, a), true},
		{"sub: global account data, extension off", subOnA, wake.Of(wake.AccountData), false},
		{"list: a bump of a room its filters take", list, wake.Change{Kind: wake.Timeline, Room: "!c:test", Bump: true}, true},
		{"list: a bump of a room its filters leave out", list, wake.Change{Kind: wake.Timeline, Room: b, Bump: true}, false},
		{"list: no bump outside the window", list, wake.InRoom(wake.Timeline, "!c:test"), false},
		{"list: the user's membership", list, wake.Change{Kind: wake.Timeline, Room: b, Membership: true}, true},
		{"list: global account data (m.direct)", list, wake.Of(wake.AccountData), true},
	} {
		if got := c.in.wokenBy(c.c); got != c.want {
			t.Errorf("%s: woken %v, want %v", c.name, got, c.want)
		}
	}
}
