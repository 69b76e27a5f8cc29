package storage

import "os"

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

// checkpointLoop copies the WAL back into the database once it passes
// checkpointPages, with a passive checkpoint that runs beside the writer
// and the readers: its fsyncs and page copies delay no commit. The writer
// then finishes the job between two batches (finishCheckpoint). It stops
// when the DB closes.
func (db *DB) checkpointLoop() {
	defer close(db.ckptDone)
	for {
		select {
		case <-db.stop:
			return
		case <-db.ckptWake:
		}
		if db.truncate.Load() {
			continue // the writer has not finished the last one yet
		}
		fi, err := os.Stat(db.path + "-wal")
		if err != nil || fi.Size() < checkpointPages*4096 {
			continue
		}
		if _, err := db.ckpt.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err == nil {
			db.truncate.Store(true)
		}
	}
}

// finishCheckpoint runs in the writer between batches, after a passive
// checkpoint: it copies what was committed since and empties the WAL, so
// that it starts over (a busy writer would otherwise append for ever). Few
// frames are left to copy; a reader still on an old snapshot makes it give
// up after a moment, to be tried again after a later commit.
func (db *DB) finishCheckpoint() {
	if !db.truncate.Load() {
		return
	}
	_, _ = db.write.Exec("PRAGMA busy_timeout = 20")
	var busy, frames, copied int
	err := db.write.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &frames, &copied)
	_, _ = db.write.Exec("PRAGMA busy_timeout = 10000")
	if err == nil && busy == 0 {
		db.truncate.Store(false)
	}
}
