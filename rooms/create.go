package rooms

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// CreateRequest is the body of POST /createRoom.
type CreateRequest struct {
	Visibility                string            `json:"visibility"`
	RoomAliasName             string            `json:"room_alias_name"`
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
	Invite3PID                []json.RawMessage `json:"invite_3pid"`
	RoomVersion               string            `json:"room_version"`
	CreationContent           json.RawMessage   `json:"creation_content"`
	InitialState              []InitialState    `json:"initial_state"`
	Preset                    string            `json:"preset"`
	IsDirect                  bool              `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage   `json:"power_level_content_override"`
	// Unencrypted is for the server's own rooms (server notices, the
	// notice room of a deleted room): the server writes their messages
	// itself, in plaintext. Clients cannot set it.
	Unencrypted bool `json:"-"`
}

// InitialState is one entry of initial_state.
type InitialState struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRoom creates a room with the events createRoom implies, in the
// spec's order, committed in one transaction: a failure leaves no room. An
// event of the room that the auth rules refuse (power_level_content_override
// leaving the creator unable to set the name, or listing a v12 creator) is
// invalid initial state: 400 M_INVALID_ROOM_STATE, as the spec asks.
func (s *Service) CreateRoom(ctx context.Context, creator spec.UserID, req CreateRequest) (spec.RoomID, spec.RoomAlias, error) {
	id, alias, err := s.createRoom(ctx, creator, req)
	var refused *authRuleError
	if errors.As(err, &refused) {
		return "", "", spec.NewError(spec.ErrInvalidRoomState, "%s", refused.err.Message)
	}
	return id, alias, err
}

// errUnsupportedVersion answers a room version Chatalot does not implement.
func errUnsupportedVersion(v string) *spec.Error {
	return spec.NewError(spec.ErrUnsupportedRoomVersion, "room version %q is not supported (the stable versions 1 to 12 are)", v)
}

// The presets of createRoom.
const (
	presetPrivateChat        = "private_chat"
	presetPublicChat         = "public_chat"
	presetTrustedPrivateChat = "trusted_private_chat"
)

// createPlan is a createRoom request checked and resolved: what the room's
// first events are built from.
type createPlan struct {
	creator  spec.UserID
	version  spec.RoomVersion
	preset   string
	invitees []spec.UserID
	alias    spec.RoomAlias // "" for none
	public   bool           // published in the room directory
}

// createRoom builds the room's first events in the spec's order
// (client-server API, POST /createRoom, "server behaviour") and commits
// them.
func (s *Service) createRoom(ctx context.Context, creator spec.UserID, req CreateRequest) (spec.RoomID, spec.RoomAlias, error) {
	plan, err := s.planRoom(ctx, creator, req)
	if err != nil {
		return "", "", err
	}
	id, err := newRoomID(s.server, plan.version)
	if err != nil {
		return "", "", err
	}
	r := newLiveRoom(id, plan.version)
	b := s.begin(r)
	// 1. m.room.create
	create, err := createContent(plan, req.CreationContent)
	if err != nil {
		return "", "", err
	}
	if err := s.addJSON(b, spec.MRoomCreate, strPtr(""), creator, create); err != nil {
		return "", "", err
	}
	// 2. the creator joins
	content, err := s.memberContent(ctx, MembershipChange{Target: creator, Membership: spec.Join})
	if err != nil {
		return "", "", err
	}
	if _, err := b.add(spec.MRoomMember, strPtr(string(creator)), creator, content); err != nil {
		return "", "", err
	}
	// 3. power levels
	pl, err := withOverride(defaultPowerLevels(plan), req.PowerLevelContentOverride)
	if err != nil {
		return "", "", err
	}
	if err := s.addJSON(b, spec.MRoomPowerLevels, strPtr(""), creator, pl); err != nil {
		return "", "", err
	}
	// 4. canonical alias
	if plan.alias != "" {
		if err := s.addJSON(b, spec.MRoomCanonicalAlias, strPtr(""), creator, map[string]any{"alias": string(plan.alias)}); err != nil {
			return "", "", err
		}
	}
	// 5. preset, 6. initial_state, 7. name and topic, 8. invites
	if err := s.addPresetState(b, plan); err != nil {
		return "", "", err
	}
	if err := s.addInitialState(b, creator, req); err != nil {
		return "", "", err
	}
	if err := s.addNameAndTopic(b, creator, req); err != nil {
		return "", "", err
	}
	if err := s.addInvites(ctx, b, plan, req.IsDirect); err != nil {
		return "", "", err
	}
	if err := b.commitNewRoom(ctx, plan); err != nil {
		return "", "", err
	}
	return r.id, plan.alias, nil
}

// planRoom checks what a createRoom request asks for before any event is
// built: the room version, the visibility and preset, the invitees and the
// alias (which must be free).
func (s *Service) planRoom(ctx context.Context, creator spec.UserID, req CreateRequest) (createPlan, error) {
	plan := createPlan{creator: creator, version: s.DefaultRoomVersion(), public: req.Visibility == "public"}
	if req.RoomVersion != "" {
		plan.version = spec.RoomVersion(req.RoomVersion)
		if !plan.version.Supported() {
			return plan, errUnsupportedVersion(req.RoomVersion)
		}
	}
	if len(req.Invite3PID) > 0 {
		return plan, spec.Forbidden("third-party invites are not supported by this server")
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return plan, spec.InvalidParam("visibility must be public or private")
	}
	plan.preset = req.Preset
	if plan.preset == "" {
		plan.preset = presetPrivateChat
		if req.Visibility == "public" {
			plan.preset = presetPublicChat
		}
	}
	if plan.preset != presetPrivateChat && plan.preset != presetPublicChat && plan.preset != presetTrustedPrivateChat {
		return plan, spec.InvalidParam("unknown preset %q", plan.preset)
	}
	plan.invitees = make([]spec.UserID, 0, len(req.Invite))
	for _, raw := range req.Invite {
		u, err := spec.ParseUserID(raw)
		if err != nil {
			return plan, spec.InvalidParam("invite: %q is not a user ID", raw)
		}
		plan.invitees = append(plan.invitees, u)
	}
	if req.RoomAliasName != "" {
		a, err := spec.ParseRoomAlias("#" + req.RoomAliasName + ":" + string(s.server))
		if err != nil {
			return plan, spec.InvalidParam("room_alias_name: %v", err)
		}
		plan.alias = a
		if id, _ := s.ResolveAlias(ctx, plan.alias); id != "" {
			return plan, spec.NewError(spec.ErrRoomInUse, "the alias %s is already taken", plan.alias)
		}
	}
	return plan, nil
}

// createContent is the content of the m.room.create event: the client's
// creation_content with the room version and, before v11, the creator. In
// v12 a trusted private chat makes its invitees creators too.
func createContent(plan createPlan, creationContent json.RawMessage) (map[string]any, error) {
	v := plan.version
	create := map[string]any{}
	if len(creationContent) > 0 && string(creationContent) != "null" {
		if err := json.Unmarshal(creationContent, &create); err != nil {
			return nil, spec.BadJSON("creation_content must be an object")
		}
	}
	create["room_version"] = string(v)
	if v.AtLeast11() {
		delete(create, "creator")
	} else {
		create["creator"] = string(plan.creator)
	}
	if err := checkAdditionalCreators(v, create); err != nil {
		return nil, err
	}
	if v.AtLeast12() && plan.preset == presetTrustedPrivateChat && len(plan.invitees) > 0 {
		extra := []any{}
		seen := map[string]bool{}
		if prev, ok := create["additional_creators"].([]any); ok {
			for _, p := range prev {
				if ps, ok := p.(string); ok && !seen[ps] {
					seen[ps] = true
					extra = append(extra, ps)
				}
			}
		}
		for _, u := range plan.invitees {
			if !seen[string(u)] {
				seen[string(u)] = true
				extra = append(extra, string(u))
			}
		}
		create["additional_creators"] = extra
	}
	return create, nil
}

// addPresetState adds the state the preset sets: join rules, history
// visibility and guest access.
func (s *Service) addPresetState(b *builder, plan createPlan) error {
	joinRule, guest := "invite", "can_join"
	if plan.preset == presetPublicChat {
		joinRule, guest = "public", "forbidden"
	}
	for _, e := range []struct {
		typ     string
		content map[string]any
	}{
		{spec.MRoomJoinRules, map[string]any{"join_rule": joinRule}},
		{spec.MRoomHistoryVisibility, map[string]any{"history_visibility": "shared"}},
		{spec.MRoomGuestAccess, map[string]any{"guest_access": guest}},
	} {
		if err := s.addJSON(b, e.typ, strPtr(""), plan.creator, e.content); err != nil {
			return err
		}
	}
	return nil
}

// addInitialState adds the request's initial_state, then m.room.encryption
// as the server's policy asks unless initial_state set it.
func (s *Service) addInitialState(b *builder, creator spec.UserID, req CreateRequest) error {
	hasEncryption := false
	for _, st := range req.InitialState {
		if st.Type == "" {
			return spec.BadJSON("initial_state: every event needs a type")
		}
		if st.Type == spec.MRoomCreate || st.Type == spec.MRoomMember {
			return spec.InvalidParam("initial_state cannot set %s", st.Type)
		}
		if err := validEventType(st.Type); err != nil {
			return err
		}
		if s.cfg.Encryption == "required" && !req.Unencrypted {
			// The room will be encrypted (below, or by initial_state).
			if err := checkStateTypeInEncryptedRoom(st.Type); err != nil {
				return err
			}
		}
		c, err := events.CanonicalObject(contentOrEmpty(st.Content))
		if err != nil {
			return err
		}
		if st.Type == spec.MRoomEncryption && st.StateKey == "" {
			hasEncryption = true
			if err := s.checkEncryptionPolicy(b.snap, st.Type, &st.StateKey, c); err != nil {
				return err
			}
		}
		if _, err := b.add(st.Type, strPtr(st.StateKey), creator, c); err != nil {
			return err
		}
	}
	if !hasEncryption && s.cfg.Encryption != "optional" && !req.Unencrypted {
		return s.addJSON(b, spec.MRoomEncryption, strPtr(""), creator, map[string]any{"algorithm": "m.megolm.v1.aes-sha2"})
	}
	return nil
}

// addNameAndTopic adds the room's name and topic if the request gives them.
func (s *Service) addNameAndTopic(b *builder, creator spec.UserID, req CreateRequest) error {
	if req.Name != nil {
		if err := s.addJSON(b, spec.MRoomName, strPtr(""), creator, map[string]any{"name": *req.Name}); err != nil {
			return err
		}
	}
	if req.Topic != nil {
		// The topic goes out both as plain "topic" and as the v1.15
		// m.topic block's text/plain representation, which it duplicates.
		topic := map[string]any{
			"topic":   *req.Topic,
			"m.topic": map[string]any{"m.text": []map[string]string{{"body": *req.Topic, "mimetype": "text/plain"}}},
		}
		if err := s.addJSON(b, spec.MRoomTopic, strPtr(""), creator, topic); err != nil {
			return err
		}
	}
	return nil
}

// addInvites invites the plan's invitees, marked as direct if asked.
func (s *Service) addInvites(ctx context.Context, b *builder, plan createPlan, isDirect bool) error {
	for _, u := range plan.invitees {
		c, err := s.memberContent(ctx, MembershipChange{Target: u, Membership: spec.Invite})
		if err != nil {
			return err
		}
		if isDirect {
			var m map[string]any
			_ = json.Unmarshal(c, &m)
			m["is_direct"] = true
			if c, err = events.MarshalCanonical(m); err != nil {
				return err
			}
		}
		if _, err := b.add(spec.MRoomMember, strPtr(string(u)), plan.creator, c); err != nil {
			return err
		}
	}
	return nil
}

// checkAdditionalCreators refuses a malformed creation_content
// additional_creators (room version 12, MSC4289): it must be an array of
// valid user IDs. Earlier versions give the key no meaning.
func checkAdditionalCreators(v spec.RoomVersion, create map[string]any) error {
	raw, ok := create["additional_creators"]
	if !ok || !v.AtLeast12() {
		return nil
	}
	list, ok := raw.([]any)
	if !ok {
		return spec.BadJSON("creation_content.additional_creators must be an array of user IDs")
	}
	for _, u := range list {
		s, ok := u.(string)
		if !ok {
			return spec.BadJSON("creation_content.additional_creators must be an array of user IDs")
		}
		if _, err := spec.ParseUserID(s); err != nil {
			return spec.BadJSON("creation_content.additional_creators: %q is not a valid user ID", s)
		}
	}
	return nil
}

func (s *Service) addJSON(b *builder, typ string, stateKey *string, sender spec.UserID, content any) error {
	c, err := events.MarshalCanonical(content)
	if err != nil {
		return err
	}
	_, err = b.add(typ, stateKey, sender, c)
	return err
}

// defaultPowerLevels is the spec's default power levels for a new room.
func defaultPowerLevels(plan createPlan) map[string]any {
	v := plan.version
	users := map[string]any{}
	if !v.AtLeast12() {
		users[string(plan.creator)] = 100
		if plan.preset == presetTrustedPrivateChat {
			for _, u := range plan.invitees {
				users[string(u)] = 100
			}
		}
	}
	tombstone := 100
	if v.AtLeast12() {
		tombstone = 150 // must be above state_default in v12
	}
	pl := map[string]any{
		"users":          users,
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         0,
		"events": map[string]any{
			spec.MRoomName:              50,
			spec.MRoomPowerLevels:       100,
			spec.MRoomHistoryVisibility: 100,
			spec.MRoomCanonicalAlias:    50,
			spec.MRoomAvatar:            50,
			spec.MRoomTombstone:         tombstone,
			spec.MRoomServerACL:         100,
			spec.MRoomEncryption:        100,
		},
		"notifications": map[string]any{"room": 50},
	}
	if plan.preset == presetPrivateChat || plan.preset == presetTrustedPrivateChat {
		pl["invite"] = 0
	} else {
		pl["invite"] = 50
	}
	return pl
}

// withOverride merges a power_level_content_override into power levels.
func withOverride(pl map[string]any, override json.RawMessage) (map[string]any, error) {
	if len(override) > 0 && string(override) != "null" {
		var o map[string]any
		if err := json.Unmarshal(override, &o); err != nil {
			return nil, spec.BadJSON("power_level_content_override must be an object")
		}
		for k, val := range o {
			pl[k] = val
		}
	}
	return pl, nil
}

// commitNewRoom commits a new room's first events together with its row,
// its alias and its directory visibility.
func (b *builder) commitNewRoom(ctx context.Context, plan createPlan) error {
	also := func(tx *storage.Tx) error {
		if plan.alias != "" {
			if err := insertAlias(tx, plan.alias, b.r.id, plan.creator); err != nil {
				return err
			}
		}
		if plan.public {
			if err := setPublished(tx, b.r.id, true); err != nil {
				return err
			}
		}
		return nil
	}
	if err := b.s.leases.hold(ctx, b.r.id); err != nil {
		return err
	}
	return b.commit(ctx, commitOpts{NewRoom: true, Creator: plan.creator, Also: also})
}
