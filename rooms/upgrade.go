package rooms

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Room upgrades (client-server API, "Room Upgrades", server behaviour).
//
// The old room's write lock is held for the whole upgrade, so its power
// levels cannot change between the permission check and the tombstone. The
// new room (its events, the moved aliases and the directory entry) commits
// in one transaction, the old room's tombstone and restricted power levels
// in a second: two rooms are two writes. The only way to end with a new room
// but no tombstone is a database failure between them; the upgrade can then
// simply be asked for again.

// transferredState is the state copied into the new room: the spec's
// recommended list, the canonical alias (whose aliases move with the room)
// and the space links. Member events are not copied, bans aside.
var transferredState = []string{
	spec.MRoomServerACL, spec.MRoomEncryption, spec.MRoomName, spec.MRoomAvatar, spec.MRoomTopic,
	spec.MRoomGuestAccess, spec.MRoomHistoryVisibility, spec.MRoomJoinRules, spec.MRoomCanonicalAlias,
}

// UpgradeRequest is the body of POST /upgrade.
type UpgradeRequest struct {
	NewVersion         string   `json:"new_version"`
	AdditionalCreators []string `json:"additional_creators"`
}

// Upgrade replaces a room with a new room of another version and returns
// the new room's ID.
func (s *Service) Upgrade(ctx context.Context, user spec.UserID, oldID spec.RoomID, req UpgradeRequest) (spec.RoomID, error) {
	u, err := planUpgrade(user, req)
	if err != nil {
		return "", err
	}
	u.old = s.room(oldID)
	if u.old == nil {
		return "", errNotInRoom(oldID)
	}
	if err := s.leases.hold(ctx, oldID); err != nil {
		return "", err
	}
	u.old.lockWrites()
	defer u.old.writeMu.Unlock()
	u.snap = u.old.cur.Load()
	if u.snap.membership(user) != spec.Join {
		return "", errNotInRoom(oldID)
	}
	oldPL, err := authrules.PowerLevelsOf(u.snap)
	if err != nil {
		return "", err
	}
	if !oldPL.CanSend(user, spec.MRoomTombstone, true) {
		return "", spec.Forbidden("you need power level %d to upgrade this room", oldPL.EventLevel(spec.MRoomTombstone, true))
	}
	newRoom, err := s.buildReplacement(ctx, u)
	if err != nil {
		return "", err
	}
	if err := s.retireOldRoom(ctx, u, oldPL, newRoom); err != nil {
		return "", err
	}
	return newRoom, nil
}

// upgrade is one room upgrade under way: who asks for it, the new version
// and the creators it adds, and the old room (its write lock held) with its
// state.
type upgrade struct {
	user          spec.UserID
	version       spec.RoomVersion
	extraCreators []spec.UserID // v12+: additional_creators, without the user
	old           *liveRoom
	snap          *snapshot
}

// planUpgrade checks the request: a supported version and, for v12+, valid
// additional creators (once each).
func planUpgrade(user spec.UserID, req UpgradeRequest) (*upgrade, error) {
	if req.NewVersion == "" {
		return nil, spec.MissingParam("new_version is required")
	}
	u := &upgrade{user: user, version: spec.RoomVersion(req.NewVersion)}
	if !u.version.Supported() {
		return nil, errUnsupportedVersion(req.NewVersion)
	}
	if !u.version.AtLeast12() {
		return u, nil
	}
	seen := map[spec.UserID]bool{user: true}
	for _, raw := range req.AdditionalCreators {
		c, err := spec.ParseUserID(raw)
		if err != nil {
			return nil, spec.InvalidParam("additional_creators: %q is not a user ID", raw)
		}
		if !seen[c] {
			seen[c] = true
			u.extraCreators = append(u.extraCreators, c)
		}
	}
	return u, nil
}

// retireOldRoom commits, in the old room, the tombstone, then power levels
// that stop ordinary messages and invites "if possible", and a canonical
// alias without the aliases that moved.
func (s *Service) retireOldRoom(ctx context.Context, u *upgrade, oldPL authrules.PowerLevels, newRoom spec.RoomID) error {
	b := s.begin(u.old)
	tomb, err := events.MarshalCanonical(map[string]any{"body": "This room has been replaced", "replacement_room": string(newRoom)})
	if err != nil {
		return err
	}
	if _, err := b.add(spec.MRoomTombstone, strPtr(""), u.user, tomb); err != nil {
		return err
	}
	if content, ok := restrictedPowerLevels(u.snap, oldPL); ok {
		_, _ = b.add(spec.MRoomPowerLevels, strPtr(""), u.user, content) // refused: left as is
	}
	if ca := u.snap.get(spec.MRoomCanonicalAlias, ""); ca != nil && ca.Content().Raw != "{}" {
		_, _ = b.add(spec.MRoomCanonicalAlias, strPtr(""), u.user, []byte("{}"))
	}
	return b.commit(ctx, commitOpts{})
}

// restrictedPowerLevels is the old room's power levels raised so that only
// users above the default may send messages or invite, if they change.
func restrictedPowerLevels(snap *snapshot, oldPL authrules.PowerLevels) ([]byte, bool) {
	plEv := snap.get(spec.MRoomPowerLevels, "")
	if plEv == nil {
		return nil, false
	}
	var c map[string]any
	if json.Unmarshal([]byte(plEv.Content().Raw), &c) != nil {
		return nil, false
	}
	restricted := max(int64(50), oldPL.UsersDefault+1)
	changed := false
	if oldPL.EventsDefault < restricted {
		c["events_default"], changed = restricted, true
	}
	if oldPL.Invite < restricted {
		c["invite"], changed = restricted, true
	}
	if !changed {
		return nil, false
	}
	content, err := events.MarshalCanonical(c)
	return content, err == nil
}

// buildReplacement creates and commits the new room.
func (s *Service) buildReplacement(ctx context.Context, u *upgrade) (spec.RoomID, error) {
	id, err := newRoomID(s.server, u.version)
	if err != nil {
		return "", err
	}
	r := newLiveRoom(id, u.version)
	b := s.begin(r)
	user := u.user
	// 1. m.room.create with the predecessor and the old room's type.
	if err := s.addJSON(b, spec.MRoomCreate, strPtr(""), user, replacementCreate(u)); err != nil {
		return "", err
	}
	// 2. The upgrading user joins.
	content, err := s.memberContent(ctx, MembershipChange{Target: user, Membership: spec.Join})
	if err != nil {
		return "", err
	}
	if _, err := b.add(spec.MRoomMember, strPtr(string(user)), user, content); err != nil {
		return "", err
	}
	invitees, banned := carriedMembers(u)
	// 3. Power levels: the old room's, adapted to the new version. The
	// upgrading user may need a higher level for the state to copy; they
	// then get it in a first power levels event, and the final one
	// restores the copied levels.
	final, err := s.upgradedPowerLevels(u.snap, u.version, user, u.extraCreators)
	if err != nil {
		return "", err
	}
	needed, err := levelNeeded(u, final, invitees, banned)
	if err != nil {
		return "", err
	}
	first := final
	if needed > 0 {
		first = withUserLevel(final, user, needed)
	}
	if err := s.addJSON(b, spec.MRoomPowerLevels, strPtr(""), user, first); err != nil {
		return "", err
	}
	// 4. The transferred state, as it is in the old room.
	if err := s.addTransferredState(b, u); err != nil {
		return "", err
	}
	// 5. Bans, then invites; one that the auth rules refuse (a banned
	// user of higher level) is left out rather than failing the upgrade.
	for _, t := range banned {
		c, err := events.MarshalCanonical(map[string]any{"membership": spec.Ban})
		if err == nil {
			_, _ = b.add(spec.MRoomMember, strPtr(string(t)), user, c)
		}
	}
	for _, t := range invitees {
		c, err := s.memberContent(ctx, MembershipChange{Target: t, Membership: spec.Invite})
		if err == nil {
			_, _ = b.add(spec.MRoomMember, strPtr(string(t)), user, c)
		}
	}
	if needed > 0 {
		if err := s.addJSON(b, spec.MRoomPowerLevels, strPtr(""), user, final); err != nil {
			return "", err
		}
	}
	moveDirectory, err := s.directoryMove(ctx, u.old.id, r)
	if err != nil {
		return "", err
	}
	if err := s.leases.hold(ctx, r.id); err != nil {
		return "", err
	}
	if err := b.commit(ctx, commitOpts{NewRoom: true, Creator: user, Also: moveDirectory}); err != nil {
		return "", err
	}
	return r.id, nil
}

// replacementCreate is the new room's m.room.create content: the version,
// the old room's type and m.federate, the predecessor, and the creators.
func replacementCreate(u *upgrade) map[string]any {
	v := u.version
	create := map[string]any{"room_version": string(v)}
	if oldCreate := u.snap.get(spec.MRoomCreate, ""); oldCreate != nil {
		for _, k := range []string{"type", "m.federate"} {
			if f := oldCreate.Content().Get(strings.ReplaceAll(k, ".", `\.`)); f.Exists() {
				create[k] = json.RawMessage(f.Raw)
			}
		}
	}
	// predecessor.event_id is deprecated (Matrix 1.16): a v12 room, whose
	// clients follow the tombstone, leaves it out.
	pred := map[string]any{"room_id": string(u.old.id)}
	if len(u.snap.extremity) > 0 && !v.AtLeast12() {
		pred["event_id"] = string(u.snap.extremity[0].EventID())
	}
	create["predecessor"] = pred
	if !v.AtLeast11() {
		create["creator"] = string(u.user)
	}
	if len(u.extraCreators) > 0 {
		list := make([]string, len(u.extraCreators))
		for i, c := range u.extraCreators {
			list[i] = string(c)
		}
		create["additional_creators"] = list
	}
	return create
}

// carriedMembers is who else comes along: invites for a room that is not
// public, bans always (so that a ban survives the upgrade).
func carriedMembers(u *upgrade) (invitees, banned []spec.UserID) {
	joinRule := ""
	if jr := u.snap.get(spec.MRoomJoinRules, ""); jr != nil {
		joinRule = jr.Content().Get("join_rule").String()
	}
	for k, ev := range u.snap.state.All() {
		if k.Type != spec.MRoomMember || spec.UserID(k.StateKey) == u.user {
			continue
		}
		switch ev.Content().Get("membership").String() {
		case spec.Join, spec.Invite:
			if joinRule != "public" {
				invitees = append(invitees, spec.UserID(k.StateKey))
			}
		case spec.Ban:
			banned = append(banned, spec.UserID(k.StateKey))
		}
	}
	return invitees, banned
}

// levelNeeded is the power level the upgrading user needs, before v12, to
// copy the old room's state, the invitees and the bans into the new room,
// or 0 when the level final gives them is enough. The levels needed are
// the old room's (the content is copied). From v12 the user is a creator.
func levelNeeded(u *upgrade, final map[string]any, invitees, banned []spec.UserID) (int64, error) {
	if u.version.AtLeast12() {
		return 0, nil
	}
	pl, err := authrules.PowerLevelsOf(u.snap)
	if err != nil {
		return 0, err
	}
	mine := pl.UsersDefault
	if users, ok := final["users"].(map[string]any); ok {
		if n, ok := users[string(u.user)].(float64); ok {
			mine = int64(n)
		} else if n, ok := users[string(u.user)].(int64); ok {
			mine = n
		}
	}
	needed := pl.EventLevel(spec.MRoomPowerLevels, true)
	for _, t := range transferredState {
		needed = max(needed, pl.EventLevel(t, true))
	}
	needed = max(needed, pl.EventLevel(spec.MSpaceChild, true), pl.EventLevel(spec.MSpaceParent, true))
	if len(invitees) > 0 {
		needed = max(needed, pl.Invite)
	}
	if len(banned) > 0 {
		needed = max(needed, pl.Ban, pl.Kick)
	}
	if mine >= needed {
		return 0, nil
	}
	return needed, nil
}

// withUserLevel is a copy of power levels content giving user the level.
func withUserLevel(pl map[string]any, user spec.UserID, level int64) map[string]any {
	out := clonePL(pl)
	users, _ := out["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	users[string(user)] = level
	out["users"] = users
	return out
}

// addTransferredState copies the transferred state and the space links. A
// room that was not encrypted becomes so if the server's policy encrypts
// new rooms: the replacement is a new room.
func (s *Service) addTransferredState(b *builder, u *upgrade) error {
	for _, t := range transferredState {
		if ev := u.snap.get(t, ""); ev != nil {
			if _, err := b.add(t, strPtr(""), u.user, []byte(ev.Content().Raw)); err != nil {
				return err
			}
		} else if t == spec.MRoomEncryption && s.cfg.Encryption != "optional" {
			if err := s.addJSON(b, t, strPtr(""), u.user, map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}); err != nil {
				return err
			}
		}
	}
	for k, ev := range u.snap.state.All() {
		if (k.Type == spec.MSpaceChild || k.Type == spec.MSpaceParent) && ev.Content().Raw != "{}" {
			if _, err := b.add(k.Type, strPtr(k.StateKey), u.user, []byte(ev.Content().Raw)); err != nil {
				return err
			}
		}
	}
	return nil
}

// directoryMove returns the write that moves the old room's aliases and
// directory entry to the new room, in the new room's commit.
func (s *Service) directoryMove(ctx context.Context, old spec.RoomID, r *liveRoom) (func(*storage.Tx) error, error) {
	wasPublished, err := s.Published(ctx, old)
	if err != nil {
		return nil, err
	}
	return func(tx *storage.Tx) error {
		// r.id is final by now: from v12 the create event gives it.
		if _, err := tx.Exec(`UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, string(r.id), string(old)); err != nil {
			return err
		}
		if wasPublished {
			if err := setPublished(tx, old, false); err != nil {
				return err
			}
			return setPublished(tx, r.id, true)
		}
		return nil
	}, nil
}

// newRoomID is a random room ID before v12; from v12 the create event gives
// it (builder.add sets it).
func newRoomID(server spec.ServerName, v spec.RoomVersion) (spec.RoomID, error) {
	if v.AtLeast12() {
		return "", nil
	}
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return spec.RoomID("!" + base64.RawURLEncoding.EncodeToString(b) + ":" + string(server)), nil
}

// upgradedPowerLevels is the old room's power levels content for the new
// room. From v12 the creators have unlimited power and must not be listed in
// users; into an older version, the old room's v12 creators (whose power was
// implicit and above every level) are listed at the highest level the
// content uses, and at least 100, so that they keep every power they had.
func (s *Service) upgradedPowerLevels(snap *snapshot, v spec.RoomVersion, user spec.UserID, extraCreators []spec.UserID) (map[string]any, error) {
	plEv := snap.get(spec.MRoomPowerLevels, "")
	if plEv == nil {
		return defaultPowerLevels(createPlan{creator: user, version: v, preset: presetPrivateChat}), nil
	}
	var c map[string]any
	if err := json.Unmarshal([]byte(plEv.Content().Raw), &c); err != nil {
		return nil, err
	}
	if v.IntegerPowerLevels() && !plEv.Version().IntegerPowerLevels() {
		if err := integerLevels(c, plEv); err != nil {
			return nil, err
		}
	}
	users, _ := c["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	if v.AtLeast12() {
		delete(users, string(user))
		for _, u := range extraCreators {
			delete(users, string(u))
		}
	} else if create := snap.get(spec.MRoomCreate, ""); create != nil && create.Version().AtLeast12() {
		if creators, err := authrules.Creators(create); err == nil {
			top := int64(authrules.CreatorImplicitLevel)
			if pl, err := authrules.PowerLevelsOf(snap); err == nil {
				for _, n := range []int64{pl.UsersDefault, pl.EventsDefault, pl.StateDefault, pl.Ban, pl.Kick, pl.Redact, pl.Invite} {
					top = max(top, n)
				}
				for _, m := range []map[string]int64{pl.Events, pl.Notifications} {
					for _, n := range m {
						top = max(top, n)
					}
				}
				for _, n := range pl.Users {
					top = max(top, n)
				}
			}
			for _, u := range creators {
				users[string(u)] = top
			}
		}
	}
	c["users"] = users
	return c, nil
}

// integerLevels rewrites, for a room version 10+ replacement, the levels of
// an older room's power levels content that are strings or floats there
// ("50", 50.0) as the integers they stand for; v10 allows only integers.
func integerLevels(c map[string]any, plEv *events.PDU) error {
	parsed, err := authrules.ReadPowerLevelsContent(plEv.Content(), plEv.Version())
	if err != nil {
		return spec.NewError(spec.ErrBadState, "the room's power levels cannot be carried over: %v", err)
	}
	for k, n := range parsed.Scalars {
		c[k] = n
	}
	for _, m := range []struct {
		key    string
		levels map[string]int64
	}{{"events", parsed.Events}, {"notifications", parsed.Notifications}, {"users", parsed.Users}} {
		if len(m.levels) == 0 {
			continue
		}
		out := make(map[string]any, len(m.levels))
		for k, n := range m.levels {
			out[k] = n
		}
		c[m.key] = out
	}
	return nil
}

func clonePL(c map[string]any) map[string]any {
	raw, _ := json.Marshal(c)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return out
}

// POST /_matrix/client/v3/rooms/{roomId}/upgrade: replace the room with a
// new room of another version.
func (h *handlers) upgrade(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	room, err := roomIDParam(c)
	if err != nil {
		return err
	}
	var req UpgradeRequest
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	id, err := h.s.Upgrade(c.Request.Context(), dev.UserID, room, req)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"replacement_room": id})
	return nil
}
