package sync

import (
	"strings"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// ForgetUser deletes an erased user's stored filters and read receipts
// (account erasure). Other members' clients keep the receipts they were
// sent; a fresh sync no longer shows them.
func (s *Service) ForgetUser(tx *storage.Tx, user spec.UserID, removed storage.Removed) error {
	if err := tx.Delete(removed, "filters", `DELETE FROM filters WHERE user_id = $1`, string(user)); err != nil {
		return err
	}
	if err := tx.Delete(removed, "receipts", `DELETE FROM receipts WHERE user_id = $1`, string(user)); err != nil {
		return err
	}
	tx.AfterCommit(func() {
		s.filterCache.Range(func(k, _ any) bool {
			if key, ok := k.(string); ok && strings.HasPrefix(key, string(user)+"\x00") {
				s.filterCache.Delete(k)
			}
			return true
		})
	})
	return nil
}
