package storage

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Several nodes, one PostgreSQL database (docs/scaling.md). Each node keeps
// its one ordered writer; what makes their writes one stream is the stored
// stream position: a node's batch takes its row for update before handing
// out positions, and holds it until it commits, so batches of different
// nodes commit one after another and positions become visible in order.
// A reader that sees position P has seen everything below it, on every node.
//
// A node learns of the other nodes' commits in two ways: at the start of
// each of its own batches (the stored position is past its own), and from a
// notification each commit sends, which makes an idle node catch up. Either
// way it runs its followers over the positions it did not write, on the
// writer goroutine, before its own writes: memory moves in position order.

// Follower brings what a package keeps in memory up to date with the
// changes other nodes committed at positions in (from, to]. It reads
// through tx, which sees every commit up to to. An error fails the batch
// the catch-up ran for; the next one tries again.
type Follower func(tx *Tx, from, to int64) error

// OnFollow registers f to follow the other nodes' writes. It has no use on
// a database with no Node.
func (db *DB) OnFollow(f Follower) {
	db.followMu.Lock()
	defer db.followMu.Unlock()
	var fs []Follower
	if old := db.followers.Load(); old != nil {
		fs = append(fs, *old...)
	}
	fs = append(fs, f)
	db.followers.Store(&fs)
}

// Node is the cluster node's name ("" outside a cluster).
func (db *DB) Node() string { return db.node }

// streamChannel is the notification channel of committed positions.
const streamChannel = "chatalot_stream"

// catchUp takes the stored position for this batch (locking it until the
// commit) and follows what other nodes committed since this node's last
// position.
func (db *DB) catchUp(tx *Tx) error {
	var stored int64
	if err := tx.tx.QueryRow("SELECT position FROM stream_position WHERE id = 1 FOR UPDATE").Scan(&stored); err != nil {
		return fmt.Errorf("lock stream position: %w", err)
	}
	from := db.committed.Load()
	if stored <= from {
		return nil
	}
	if fs := db.followers.Load(); fs != nil {
		for _, f := range *fs {
			if err := f(tx, from, stored); err != nil {
				return fmt.Errorf("follow positions %d to %d: %w", from+1, stored, err)
			}
		}
	}
	// Positions a failed commit of this node skipped may be above what is
	// stored: never hand one out twice from here.
	db.next = max(db.next, stored)
	db.committed.Store(stored)
	db.publish(stored)
	return nil
}

// announce tells the other nodes, at commit, how far the stream went.
func (db *DB) announce(tx *Tx, to int64) error {
	_, err := tx.tx.Exec("SELECT pg_notify($1, $2)", streamChannel, db.node+" "+strconv.FormatInt(to, 10))
	return err
}

// listen keeps a connection LISTENing for the other nodes' commits and
// queues an empty write whenever one is past this node's position: the
// batch it runs in catches up. Notifications are only a wake-up; the
// stored position is the truth, so one missed while reconnecting costs
// nothing but the catch-up write made on every (re)connection.
func (db *DB) listen() {
	defer close(db.listenDone)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-db.stop; cancel() }()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		conn, err := pgx.Connect(ctx, db.url)
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+streamChannel)
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			db.Submit(ctx, nil, func(*Tx) error { return nil })
			for {
				n, err := conn.WaitForNotification(ctx)
				if err != nil {
					break
				}
				node, pos, _ := strings.Cut(n.Payload, " ")
				to, _ := strconv.ParseInt(pos, 10, 64)
				if node != db.node && to > db.committed.Load() {
					db.Submit(ctx, nil, func(*Tx) error { return nil })
				}
			}
		}
		if conn != nil {
			_ = conn.Close(context.Background())
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}
