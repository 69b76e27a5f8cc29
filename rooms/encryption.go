package rooms

import (
	"encoding/json"
	"strings"

	"github.com/chatalot/chatalot/spec"
)

// The "required" encryption policy. In a room with m.room.encryption, a
// message event (no state key) is accepted only as ciphertext
// (m.room.encrypted) or as one of the few types clients send in clear by
// design; every other type, custom ones included, is refused, so that no
// new plaintext event type (polls, locations, call signalling with its SDP)
// slips past a deny-list. State events stay plaintext in Matrix, but the
// types of message events are refused as state, where they would be a
// plaintext message by another name. The README lists both sets.

// clearMessageTypes are the message event types accepted unencrypted in an
// encrypted room under "required".
var clearMessageTypes = map[string]string{
	spec.MRoomEncrypted: "the ciphertext itself",
	spec.MReaction: "reactions (annotations): clients send them in clear so that the server can aggregate them; " +
		"the key is visible to the server",
	spec.MRoomRedaction: "redactions: the server must read which event they redact",
}

// messageLikeStateTypes and messageLikeStatePrefixes are the message event
// types (and their unstable names) refused as state events in an encrypted
// room under "required".
var (
	messageLikeStateTypes = map[string]bool{
		spec.MRoomMessage: true, spec.MSticker: true, spec.MReaction: true, "m.location": true,
		"m.beacon": true, "org.matrix.msc3672.beacon": true, "org.matrix.msc3488.location": true,
	}
	messageLikeStatePrefixes = []string{"m.poll.", "org.matrix.msc3381.", "m.call.", "org.matrix.call.", "m.key.verification."}
)

// checkEncryptionPolicy refuses plaintext in encrypted rooms and any
// weakening of a room's encryption, under the "required" policy.
func (s *Service) checkEncryptionPolicy(snap *snapshot, typ string, stateKey *string, content []byte) error {
	enc := snap.get(spec.MRoomEncryption, "")
	if typ == spec.MRoomEncryption && stateKey != nil && *stateKey == "" {
		// Whatever the policy, a room once encrypted stays encrypted with
		// Megolm: clients never downgrade, and neither do we.
		if enc != nil && !isMegolm(content) {
			return spec.Forbidden("this room is end-to-end encrypted; its encryption cannot be removed or changed")
		}
		if s.cfg.Encryption == "required" && !isMegolm(content) {
			return spec.Forbidden("this server only allows the m.megolm.v1.aes-sha2 encryption algorithm")
		}
		return nil
	}
	if s.cfg.Encryption != "required" || enc == nil {
		return nil
	}
	if stateKey != nil {
		return checkStateTypeInEncryptedRoom(typ)
	}
	if _, ok := clearMessageTypes[typ]; !ok {
		return spec.Forbidden("this room is end-to-end encrypted: send %s events encrypted (m.room.encrypted)", typ)
	}
	return nil
}

// checkStateTypeInEncryptedRoom refuses a message event type as a state
// event, where it would be plaintext in an encrypted room.
func checkStateTypeInEncryptedRoom(typ string) error {
	if messageLikeStateTypes[typ] {
		return spec.Forbidden("%s is a message event type: it cannot be sent as state in an end-to-end encrypted room", typ)
	}
	for _, p := range messageLikeStatePrefixes {
		if strings.HasPrefix(typ, p) {
			return spec.Forbidden("%s is a message event type: it cannot be sent as state in an end-to-end encrypted room", typ)
		}
	}
	return nil
}

func isMegolm(content []byte) bool {
	var c struct {
		Algorithm string `json:"algorithm"`
	}
	return json.Unmarshal(contentOrEmpty(content), &c) == nil && c.Algorithm == "m.megolm.v1.aes-sha2"
}
