package rooms

import (
	"github.com/chatalot/chatalot/rooms/authrules"
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
	if create == nil {
		return nil
	}
	if listed := authrules.ListedCreators(create, gjson.ParseBytes(contentOrEmpty(content))); len(listed) > 0 {
		return spec.BadJSON("%s is a room creator: creators have unlimited power and cannot be listed in users", listed[0])
	}
	return nil
}
