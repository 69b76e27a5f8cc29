package rooms

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// checkCreatorsUnlisted refuses, as a malformed request (400 M_BAD_JSON),
// power levels content that lists a room creator in a room version 12 room:
// a creator's power is implicit and unlimited (MSC4289), so the auth rules
// would refuse the event; for the client it is invalid content rather than
// a missing permission. Other versions and event types pass.
func checkCreatorsUnlisted(snap *snapshot, typ string, content []byte) error {
	if typ != spec.MRoomPowerLevels {
		return nil
	}
	create := snap.get(spec.MRoomCreate, "")
	if create == nil || !create.Version().AtLeast12() {
		return nil
	}
	creators, err := Creators(create)
	if err != nil {
		return nil // the auth rules refuse the event
	}
	users := field(gjson.ParseBytes(contentOrEmpty(content)), "users")
	for _, c := range creators {
		if field(users, string(c)).Exists() {
			return spec.BadJSON("%s is a room creator: creators have unlimited power and cannot be listed in users", c)
		}
	}
	return nil
}
