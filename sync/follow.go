package sync

import (
	"fmt"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Following the other nodes of a cluster (docs/scaling.md). A long-poll on
// this node wakes for another node's room events through rooms' follower,
// which notifies as a local commit does. What sync keeps in memory itself
// is the position of each room's latest receipt: the receipts the other
// nodes store are followed here, from their rows, and wake who a local
// receipt wakes. Typing and presence live in each node's memory only and
// do not reach the other nodes yet.

// followReceipts follows the receipts other nodes stored at positions in
// (from, to] (a storage.Follower).
func (s *Service) followReceipts(tx *storage.Tx, from, to int64) error {
	rows, err := tx.Query(`SELECT room_id, user_id, receipt_type, position FROM receipts
		WHERE position > $1 AND position <= $2 ORDER BY position`, from, to)
	if err != nil {
		return fmt.Errorf("read followed receipts: %w", err)
	}
	defer rows.Close()
	type receipt struct {
		room spec.RoomID
		user spec.UserID
		typ  string
		pos  int64
	}
	var got []receipt
	for rows.Next() {
		var r receipt
		var room, user string
		if err := rows.Scan(&room, &user, &r.typ, &r.pos); err != nil {
			return err
		}
		r.room, r.user = spec.RoomID(room), spec.UserID(user)
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range got {
		s.receiptStored(r.room, r.user, r.typ, r.pos)
	}
	return nil
}
