package keys

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// ForgetUser deletes an erased user's end-to-end encryption data (account
// erasure): the devices' keys (one-time, fallback and device keys, the
// dehydrated device and the to-device inbox go with their device by
// cascade), the cross-signing keys, the signatures they made or received,
// every key backup, the to-device messages they sent that are still
// waiting, and their to-device transaction IDs. The device list position
// (device_list_changes) is kept: it is how other users' clients learn
// that the keys are gone.
func (s *Service) ForgetUser(tx *storage.Tx, user spec.UserID, removed storage.Removed) error {
	sender := `json_extract(message, '$.sender')`
	if tx.Dialect() == storage.Postgres {
		sender = `message::jsonb ->> 'sender'`
	}
	for _, d := range []struct{ table, query string }{
		{"dehydrated_devices", `DELETE FROM dehydrated_devices WHERE user_id = $1`},
		{"one_time_keys", `DELETE FROM one_time_keys WHERE user_id = $1`},
		{"fallback_keys", `DELETE FROM fallback_keys WHERE user_id = $1`},
		{"device_keys", `DELETE FROM device_keys WHERE user_id = $1`},
		{"to_device_messages", `DELETE FROM to_device_messages WHERE user_id = $1 OR ` + sender + ` = $1`},
		{"to_device_txns", `DELETE FROM to_device_txns WHERE user_id = $1`},
		{"key_devices", `DELETE FROM key_devices WHERE user_id = $1`},
		{"cross_signing_keys", `DELETE FROM cross_signing_keys WHERE user_id = $1`},
		{"key_signatures", `DELETE FROM key_signatures WHERE target_user = $1 OR signer_user = $1`},
		{"backup_keys", `DELETE FROM backup_keys WHERE user_id = $1`},
		{"backup_versions", `DELETE FROM backup_versions WHERE user_id = $1`},
	} {
		if err := tx.Delete(removed, d.table, d.query, string(user)); err != nil {
			return err
		}
	}
	return nil
}
