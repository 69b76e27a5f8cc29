package storage

import (
	"os"
	"time"
)

// checkpointPages is how large the WAL grows, in pages of 4 KiB, before it
// is checkpointed: SQLite's own default.
const checkpointPages = 1000

// walGrew tells the checkpointer that a commit added to the WAL; it never
// blocks the writer.
func (db *DB) walGrew() {
	select {
	case db.ckptWake <- struct{}{}:
	default:
	}
}

// checkpointSpacing is the least time between two checkpoints, so that a
// WAL kept large by readers is not checkpointed after every commit.
const checkpointSpacing = 100 * time.Millisecond

// checkpointLoop copies the WAL back into the database once it passes
// checkpointPages, with a passive checkpoint that runs beside the writer
// and the readers: its fsyncs and page copies delay no commit. The writer
// then finishes the job between two batches (finishCheckpoint). It stops
// when the DB closes.
func (db *DB) checkpointLoop() {
	defer close(db.ckptDone)
	var last time.Time
	for {
		select {
		case <-db.stop:
			return
		case <-db.ckptWake:
		}
		if db.truncate.Load() || time.Since(last) < checkpointSpacing {
			continue // the writer has not finished the last one, or it was just now
		}
		fi, err := os.Stat(db.path + "-wal")
		if err != nil || fi.Size() < checkpointPages*4096 {
			continue
		}
		last = time.Now()
		if _, err := db.ckpt.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err == nil {
			db.truncate.Store(true)
		}
	}
}

// finishCheckpoint runs in the writer between batches, after a passive
// checkpoint: it copies what was committed since and empties the WAL, so
// that it starts over (a busy writer would otherwise append for ever). Few
// frames are left to copy. A reader still on an old snapshot makes it give
// up at once: the next passive checkpoint tries again.
func (db *DB) finishCheckpoint() {
	if !db.truncate.Swap(false) {
		return
	}
	_, _ = db.write.Exec("PRAGMA busy_timeout = 0")
	_, _ = db.write.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	_, _ = db.write.Exec("PRAGMA busy_timeout = 10000")
}
