package storage

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/internal/pgtest"
)

// clusterNode is one node of a test cluster, with what its follower saw.
type clusterNode struct {
	db *DB
	mu sync.Mutex
	// followed are the positions of the items the follower read, in the
	// order it read them.
	followed []int64
	// ranges are the (from, to] the follower was given.
	ranges [][2]int64
}

func openNode(t *testing.T, dsn, name string) *clusterNode {
	t.Helper()
	db, err := Open(dsn, Options{Node: name})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(context.Background(), testSchema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	n := &clusterNode{db: db}
	db.OnFollow(func(tx *Tx, from, to int64) error {
		rows, err := tx.Query("SELECT pos FROM items WHERE pos > $1 AND pos <= $2 ORDER BY pos", from, to)
		if err != nil {
			return err
		}
		defer rows.Close()
		n.mu.Lock()
		defer n.mu.Unlock()
		n.ranges = append(n.ranges, [2]int64{from, to})
		for rows.Next() {
			var p int64
			if err := rows.Scan(&p); err != nil {
				return err
			}
			n.followed = append(n.followed, p)
		}
		return rows.Err()
	})
	return n
}

func waitPosition(t *testing.T, db *DB, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for db.Position() < want {
		if time.Now().After(deadline) {
			t.Fatalf("node %s at position %d, want %d", db.Node(), db.Position(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClusterNodesShareOneStream: two nodes writing the same database at
// once hand out every position once, and each follows exactly the other's
// writes, in order, before its own later ones; an idle node catches up on
// the notification alone.
func TestClusterNodesShareOneStream(t *testing.T) {
	dsn := pgtest.DSN(t)
	a, b := openNode(t, dsn, "a"), openNode(t, dsn, "b")
	const each = 150
	own := map[*clusterNode]map[int64]bool{a: {}, b: {}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range []*clusterNode{a, b} {
		for i := 0; i < each; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pos, err := insert(n.db, n.db.Node())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, m := range own {
					if m[pos] {
						t.Errorf("position %d handed out twice", pos)
					}
				}
				own[n][pos] = true
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Both see the whole stream: the last writer's position, and the idle
	// other node through the notification.
	top := max(a.db.Position(), b.db.Position())
	if top != 2*each {
		t.Fatalf("stream at %d after %d writes", top, 2*each)
	}
	waitPosition(t, a.db, top)
	waitPosition(t, b.db, top)
	for _, n := range []*clusterNode{a, b} {
		other := own[a]
		if n == a {
			other = own[b]
		}
		n.mu.Lock()
		followed, ranges := n.followed, n.ranges
		n.mu.Unlock()
		if len(followed) != len(other) {
			t.Fatalf("node %s followed %d positions, the other node wrote %d", n.db.Node(), len(followed), len(other))
		}
		for i, p := range followed {
			if !other[p] {
				t.Fatalf("node %s followed position %d, which it wrote itself", n.db.Node(), p)
			}
			if i > 0 && p <= followed[i-1] {
				t.Fatalf("node %s followed %d after %d", n.db.Node(), p, followed[i-1])
			}
		}
		for i := 1; i < len(ranges); i++ {
			if ranges[i][0] < ranges[i-1][1] {
				t.Fatalf("node %s followed overlapping ranges %v then %v", n.db.Node(), ranges[i-1], ranges[i])
			}
		}
	}
	// An idle node follows a write of the other by the notification.
	pos, err := insert(a.db, "late")
	if err != nil {
		t.Fatal(err)
	}
	waitPosition(t, b.db, pos)
	b.mu.Lock()
	last := b.followed[len(b.followed)-1]
	b.mu.Unlock()
	if last != pos {
		t.Fatalf("node b's last followed position %d, want %d", last, pos)
	}
}

// TestClusterLocks: a node's name is its own, a lone server and a cluster
// never share a database, and nodes are for PostgreSQL only.
func TestClusterLocks(t *testing.T) {
	defer func(d time.Duration) { servingLockWait = d }(servingLockWait)
	servingLockWait = 200 * time.Millisecond
	dsn := pgtest.DSN(t)
	a := openNode(t, dsn, "a")
	if db, err := Open(dsn, Options{Node: "a"}); !errors.Is(err, ErrDatabaseServed) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("a second node named a: %v", err)
	}
	if db, err := Open(dsn, Options{Serving: true}); !errors.Is(err, ErrDatabaseServed) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("a lone server beside a cluster: %v", err)
	}
	a.db.Close()
	lone, err := Open(dsn, Options{Serving: true})
	if err != nil {
		t.Fatal(err)
	}
	if db, err := Open(dsn, Options{Node: "b"}); !errors.Is(err, ErrDatabaseServed) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("a node beside a lone server: %v", err)
	}
	lone.Close()
	if _, err := Open(filepath.Join(t.TempDir(), "db.sqlite"), Options{Node: "a"}); err == nil {
		t.Fatal("a node on SQLite was opened")
	}
}
