package sync

import (
	"context"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/storage"
)

const alice, bob = "@alice:test", "@bob:test"

// A change notified from an after-commit hook must wake its waiters only
// once the committed position covers it: a request woken earlier builds
// from the old position, finds nothing and waits for a wake already spent.
func TestNotifyWakesOnlyWhenThePositionIsPublished(t *testing.T) {
	db := openDB(t)
	n := NewNotifier(db)

	wake, cancel := n.subscribe("@a:test")
	defer cancel()
	seen := make(chan int64, 1)
	go func() {
		<-wake
		seen <- db.Position()
	}()

	var pos int64
	var wokeInHook bool
	err := db.Write(context.Background(), func(tx *storage.Tx) error {
		pos = tx.NextPosition()
		tx.AfterCommit(func() {
			n.Notify(pos, "@a:test")
			select {
			case <-wake:
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
	wake2, cancel2 := n.subscribe("@a:test")
	defer cancel2()
	n.Notify(0, "@a:test")
	select {
	case <-wake2:
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
	n.Notify(12, alice)
	if n.quietSince(alice, 11, 100) || !n.quietSince(alice, 12, 100) {
		t.Fatal("a change at position 12 is after 11 and not after 12")
	}
	serial = 150
	n.Notify(0, alice)
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
