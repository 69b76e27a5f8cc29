package rooms

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
)

// Room aliases and the published room directory (client-server API, "Room
// aliases", "Published room directory"). Aliases live in room_aliases, the
// directory in published_rooms; both are this server's only (no federation
// yet), so an alias on another server never resolves.

// parseAliasParam reads the roomAlias path parameter.
func parseAliasParam(c *gin.Context) (spec.RoomAlias, error) {
	alias, err := spec.ParseRoomAlias(c.Param("roomAlias"))
	if err != nil {
		return "", spec.InvalidParam("room alias: %v", err)
	}
	return alias, nil
}

// canManageAliases reports whether the user is joined to the room with the
// level to send m.room.canonical_alias: a moderator in the default power
// levels. That level also governs the room's directory visibility.
func (s *Service) canManageAliases(user spec.UserID, r *liveRoom) bool {
	snap := r.cur.Load()
	if snap.membership(user) != spec.Join {
		return false
	}
	pl, err := authrules.PowerLevelsOf(snap)
	return err == nil && pl.CanSend(user, spec.MRoomCanonicalAlias, true)
}

// CreateAlias maps a new alias on this server to a room the user is joined
// to.
func (s *Service) CreateAlias(ctx context.Context, user spec.UserID, alias spec.RoomAlias, room spec.RoomID) error {
	if alias.Server() != s.server {
		return spec.InvalidParam("this server can only create aliases on %s", s.server)
	}
	r := s.room(room)
	if r == nil || r.cur.Load().membership(user) != spec.Join {
		return errNotInRoom(room)
	}
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(`INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT (alias) DO NOTHING`,
			string(alias), string(room), string(user))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return spec.NewError(spec.ErrUnknown, "room alias %s already exists", alias).WithStatus(http.StatusConflict)
		}
		return nil
	})
}

// Caller is the user an alias or directory request acts for. A server admin
// may do what the room's power levels would not let the user do.
type Caller struct {
	User        spec.UserID
	ServerAdmin bool
}

// callerOf is the request's caller.
func callerOf(c *gin.Context) Caller {
	dev := auth.DeviceFrom(c)
	return Caller{User: dev.UserID, ServerAdmin: dev.IsAdmin}
}

// DeleteAlias removes an alias. Its creator, a moderator of its room (the
// level to send m.room.canonical_alias) or a server admin may. If the room's
// m.room.canonical_alias names it, the alias is taken out of that event too
// when the user may send it (the directory API's note recommends this).
func (s *Service) DeleteAlias(ctx context.Context, by Caller, alias spec.RoomAlias) error {
	user := by.User
	var room, creator string
	err := s.db.QueryRow(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, string(alias)).Scan(&room, &creator)
	if errors.Is(err, sql.ErrNoRows) {
		return spec.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return err
	}
	r := s.room(spec.RoomID(room))
	if !by.ServerAdmin && spec.UserID(creator) != user && (r == nil || !s.canManageAliases(user, r)) {
		return spec.Forbidden("only the alias's creator, a room moderator or a server admin may delete it")
	}
	if err := s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`DELETE FROM room_aliases WHERE alias = $1`, string(alias))
		return err
	}); err != nil {
		return err
	}
	if r != nil {
		s.dropFromCanonicalAlias(ctx, user, r, alias)
	}
	return nil
}

// dropFromCanonicalAlias sends a new m.room.canonical_alias without the
// alias, if the current one names it and the user may send it. Failing to is
// not an error: the alias is gone either way.
func (s *Service) dropFromCanonicalAlias(ctx context.Context, user spec.UserID, r *liveRoom, alias spec.RoomAlias) {
	cur := r.cur.Load().get(spec.MRoomCanonicalAlias, "")
	if cur == nil {
		return
	}
	c := map[string]any{}
	changed := false
	if a := cur.Content().Get("alias"); a.Type == gjson.String {
		if a.Str == string(alias) {
			changed = true
		} else {
			c["alias"] = a.Str
		}
	}
	if alt := cur.Content().Get("alt_aliases"); alt.IsArray() {
		kept := []string{}
		for _, x := range alt.Array() {
			if x.Type == gjson.String && x.Str == string(alias) {
				changed = true
				continue
			}
			kept = append(kept, x.String())
		}
		if len(kept) > 0 {
			c["alt_aliases"] = kept
		}
	}
	if !changed || !s.canManageAliases(user, r) {
		return
	}
	content, err := events.MarshalCanonical(c)
	if err != nil {
		return
	}
	if _, err := s.Send(ctx, Sender{User: user}, r.id, SendRequest{Type: spec.MRoomCanonicalAlias, StateKey: strPtr(""), Content: content}); err != nil {
		s.log.Debug().Err(err).Msg("could not update the canonical alias after deleting an alias")
	}
}

// LocalAliases lists the room's aliases on this server, for its members,
// for anyone if the room is world-readable, and for server admins.
func (s *Service) LocalAliases(ctx context.Context, by Caller, room spec.RoomID) ([]string, error) {
	r := s.room(room)
	if r == nil || (!by.ServerAdmin && r.cur.Load().membership(by.User) != spec.Join && !r.worldReadableNow()) {
		return nil, errNotInRoom(room)
	}
	rows, err := s.db.Query(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, string(room))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// checkCanonicalAlias validates an m.room.canonical_alias before it is sent:
// every alias must be well formed (M_INVALID_PARAM), and every alias the
// event adds must point to this room (M_BAD_ALIAS). Aliases the current event
// already names are not checked again, so that a room can drop or reorder
// aliases after one of them was deleted.
func (s *Service) checkCanonicalAlias(ctx context.Context, r *liveRoom, c gjson.Result) error {
	known := map[string]bool{}
	if cur := r.cur.Load().get(spec.MRoomCanonicalAlias, ""); cur != nil {
		if a := cur.Content().Get("alias"); a.Type == gjson.String {
			known[a.Str] = true
		}
		for _, x := range cur.Content().Get("alt_aliases").Array() {
			if x.Type == gjson.String {
				known[x.Str] = true
			}
		}
	}
	check := func(v string) error {
		alias, err := spec.ParseRoomAlias(v)
		if err != nil {
			return spec.InvalidParam("%q is not a valid room alias", v)
		}
		if known[v] {
			return nil
		}
		id, err := s.ResolveAlias(ctx, alias)
		if err != nil {
			return err
		}
		if id != r.id {
			return spec.NewError(spec.ErrBadAlias, "the alias %s does not point to this room", alias)
		}
		return nil
	}
	if a := c.Get("alias"); a.Exists() && a.Type != gjson.Null {
		if a.Type != gjson.String {
			return spec.BadJSON("alias must be a string")
		}
		if a.Str != "" {
			if err := check(a.Str); err != nil {
				return err
			}
		}
	}
	if alt := c.Get("alt_aliases"); alt.Exists() && alt.Type != gjson.Null {
		if !alt.IsArray() {
			return spec.BadJSON("alt_aliases must be an array of room aliases")
		}
		for _, x := range alt.Array() {
			if x.Type != gjson.String {
				return spec.BadJSON("alt_aliases must be an array of room aliases")
			}
			if err := check(x.Str); err != nil {
				return err
			}
		}
	}
	return nil
}

// Published reports whether the room is in the published room directory.
func (s *Service) Published(ctx context.Context, room spec.RoomID) (bool, error) {
	var id string
	err := s.db.QueryRow(ctx, `SELECT room_id FROM published_rooms WHERE room_id = $1`, string(room)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// SetPublished publishes or unpublishes a room: a server admin, or a member
// with the level to send m.room.canonical_alias, may.
func (s *Service) SetPublished(ctx context.Context, by Caller, room spec.RoomID, public bool) error {
	r := s.room(room)
	if r == nil {
		return spec.NotFound("room not found")
	}
	if !by.ServerAdmin && !s.canManageAliases(by.User, r) {
		return spec.Forbidden("you need the power level to change the room's aliases to publish it")
	}
	return s.db.Write(ctx, func(tx *storage.Tx) error { return setPublished(tx, room, public) })
}

// RoomInfo is what the server tells about a room without joining it: the
// public room directory's chunk, and the room summary's extra fields.
type RoomInfo struct {
	RoomID           spec.RoomID `json:"room_id"`
	CanonicalAlias   string      `json:"canonical_alias,omitempty"`
	Name             string      `json:"name,omitempty"`
	NumJoinedMembers int         `json:"num_joined_members"`
	Topic            string      `json:"topic,omitempty"`
	WorldReadable    bool        `json:"world_readable"`
	GuestCanJoin     bool        `json:"guest_can_join"`
	AvatarURL        string      `json:"avatar_url,omitempty"`
	JoinRule         string      `json:"join_rule,omitempty"`
	RoomType         string      `json:"room_type,omitempty"`
	// Room summary and hierarchy only.
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
}

// describeRoom builds a room's RoomInfo from its current state in memory.
func describeRoom(r *liveRoom) RoomInfo {
	snap := r.cur.Load()
	str := func(typ, path string) string {
		if ev := snap.get(typ, ""); ev != nil {
			if v := ev.Content().Get(path); v.Type == gjson.String {
				return v.Str
			}
		}
		return ""
	}
	info := RoomInfo{
		RoomID:           r.id,
		CanonicalAlias:   str(spec.MRoomCanonicalAlias, "alias"),
		Name:             str(spec.MRoomName, "name"),
		NumJoinedMembers: len(snap.joined()),
		Topic:            plainTopic(snap.get(spec.MRoomTopic, "")),
		WorldReadable:    str(spec.MRoomHistoryVisibility, "history_visibility") == "world_readable",
		GuestCanJoin:     str(spec.MRoomGuestAccess, "guest_access") == "can_join",
		AvatarURL:        str(spec.MRoomAvatar, "url"),
		JoinRule:         str(spec.MRoomJoinRules, "join_rule"),
		RoomType:         str(spec.MRoomCreate, "type"),
		Encryption:       str(spec.MRoomEncryption, "algorithm"),
		RoomVersion:      string(r.version),
	}
	if info.JoinRule == "restricted" || info.JoinRule == "knock_restricted" {
		if jr := snap.get(spec.MRoomJoinRules, ""); jr != nil {
			for _, a := range jr.Content().Get("allow").Array() {
				if a.Get("type").String() == "m.room_membership" && a.Get("room_id").Type == gjson.String {
					info.AllowedRoomIDs = append(info.AllowedRoomIDs, a.Get("room_id").Str)
				}
			}
		}
	}
	return info
}

// plainTopic is the room topic as plain text: the text/plain representation
// in m.topic if there is one, else the topic property.
func plainTopic(ev *events.PDU) string {
	if ev == nil {
		return ""
	}
	c := ev.Content()
	for _, t := range c.Get(`m\.topic.m\.text`).Array() {
		if mt := t.Get("mimetype"); (!mt.Exists() || mt.Str == "text/plain") && t.Get("body").Type == gjson.String {
			return t.Get("body").Str
		}
	}
	if t := c.Get("topic"); t.Type == gjson.String {
		return t.Str
	}
	return ""
}

// PublicRoomsQuery filters and pages the published room directory.
type PublicRoomsQuery struct {
	Limit      int
	Since      string
	SearchTerm string
	// RoomTypes keeps rooms of these types; "" stands for rooms without a
	// type (null in the request). Nil keeps every room.
	RoomTypes []string
}

// PublicRoomsPage is one page of the directory.
type PublicRoomsPage struct {
	Chunk     []RoomInfo
	Next      string
	Prev      string
	Estimate  int
	HasFilter bool
}

// publicToken is the directory's pagination token: "p<offset>".
func publicToken(offset int) string { return "p" + strconv.Itoa(offset) }

func parsePublicToken(s string) (int, error) {
	if len(s) < 2 || s[0] != 'p' {
		return 0, spec.InvalidParam("unknown pagination token")
	}
	n, err := strconv.Atoi(s[1:])
	if err != nil || n < 0 {
		return 0, spec.InvalidParam("unknown pagination token")
	}
	return n, nil
}

// PublicRooms lists the published rooms, the most joined first (then by
// room ID, a stable order for pagination).
func (s *Service) PublicRooms(ctx context.Context, q PublicRoomsQuery) (*PublicRoomsPage, error) {
	offset := 0
	if q.Since != "" {
		n, err := parsePublicToken(q.Since)
		if err != nil {
			return nil, err
		}
		offset = n
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, 500)
	ids, err := storage.Strings[spec.RoomID](s.db.Query(ctx, `SELECT room_id FROM published_rooms`))
	if err != nil {
		return nil, err
	}
	term := strings.ToLower(strings.TrimSpace(q.SearchTerm))
	var all []RoomInfo
	for _, id := range ids {
		r := s.room(id)
		if r == nil {
			continue
		}
		info := describeRoom(r)
		if term != "" && !matchesTerm(info, term) {
			continue
		}
		if q.RoomTypes != nil && !contains(q.RoomTypes, info.RoomType) {
			continue
		}
		// The directory chunk has no room summary fields.
		info.AllowedRoomIDs, info.Encryption, info.RoomVersion = nil, "", ""
		all = append(all, info)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].NumJoinedMembers != all[j].NumJoinedMembers {
			return all[i].NumJoinedMembers > all[j].NumJoinedMembers
		}
		return all[i].RoomID < all[j].RoomID
	})
	page := &PublicRoomsPage{Estimate: len(all), Chunk: []RoomInfo{}}
	if offset < len(all) {
		end := min(offset+q.Limit, len(all))
		page.Chunk = all[offset:end]
		if end < len(all) {
			page.Next = publicToken(end)
		}
	}
	if offset > 0 {
		page.Prev = publicToken(max(offset-q.Limit, 0))
	}
	return page, nil
}

// matchesTerm is the directory's generic search: a case-insensitive
// substring of the name, topic, canonical alias or room ID.
func matchesTerm(info RoomInfo, term string) bool {
	for _, f := range []string{info.Name, info.Topic, info.CanonicalAlias, string(info.RoomID)} {
		if strings.Contains(strings.ToLower(f), term) {
			return true
		}
	}
	return false
}

// PUT /_matrix/client/v3/directory/room/{roomAlias}: map an alias on this
// server to a room the caller is joined to.
func (h *handlers) putAlias(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	alias, err := parseAliasParam(c)
	if err != nil {
		return err
	}
	var body struct {
		RoomID *string `json:"room_id"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	if body.RoomID == nil {
		return spec.MissingParam("room_id is required")
	}
	room, err := spec.ParseRoomID(*body.RoomID)
	if err != nil {
		return spec.InvalidParam("room_id: %v", err)
	}
	if err := h.s.CreateAlias(c.Request.Context(), dev.UserID, alias, room); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// GET /_matrix/client/v3/directory/room/{roomAlias}: resolve an alias (no
// access token needed).
func (h *handlers) getAlias(c *gin.Context) error {
	alias, err := parseAliasParam(c)
	if err != nil {
		return err
	}
	id, servers, err := h.s.LookupAlias(c.Request.Context(), alias)
	if err != nil {
		return err
	}
	if id == "" {
		return spec.NotFound("room alias %s not found", alias)
	}
	if servers == nil {
		servers = []spec.ServerName{}
	}
	c.JSON(http.StatusOK, gin.H{"room_id": id, "servers": servers})
	return nil
}

// DELETE /_matrix/client/v3/directory/room/{roomAlias}: remove an alias
// (its creator, a room moderator or a server admin).
func (h *handlers) deleteAlias(c *gin.Context) error {
	alias, err := parseAliasParam(c)
	if err != nil {
		return err
	}
	if err := h.s.DeleteAlias(c.Request.Context(), callerOf(c), alias); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// GET /_matrix/client/v3/rooms/{roomId}/aliases: the room's local aliases.
func (h *handlers) roomAliases(c *gin.Context) error {
	room, err := roomIDParam(c)
	if err != nil {
		return err
	}
	list, err := h.s.LocalAliases(c.Request.Context(), callerOf(c), room)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"aliases": list})
	return nil
}

// GET /_matrix/client/v3/directory/list/room/{roomId}: whether the room is
// published (no access token needed).
func (h *handlers) getDirectoryVisibility(c *gin.Context) error {
	room, err := roomIDParam(c)
	if err != nil {
		return err
	}
	if h.s.room(room) == nil {
		return spec.NotFound("room not found")
	}
	pub, err := h.s.Published(c.Request.Context(), room)
	if err != nil {
		return err
	}
	vis := "private"
	if pub {
		vis = "public"
	}
	c.JSON(http.StatusOK, gin.H{"visibility": vis})
	return nil
}

// PUT /_matrix/client/v3/directory/list/room/{roomId}: publish or unpublish.
func (h *handlers) putDirectoryVisibility(c *gin.Context) error {
	room, err := roomIDParam(c)
	if err != nil {
		return err
	}
	var body struct {
		Visibility *string `json:"visibility"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	public := true
	if body.Visibility != nil {
		switch *body.Visibility {
		case "public":
		case "private":
			public = false
		default:
			return spec.InvalidParam("visibility must be public or private")
		}
	}
	if err := h.s.SetPublished(c.Request.Context(), callerOf(c), room, public); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// checkServerParam refuses directories of other servers: without federation
// this server knows only its own.
func (h *handlers) checkServerParam(c *gin.Context) error {
	if srv := c.Query("server"); srv != "" && spec.ServerName(srv) != h.s.server {
		return spec.InvalidParam("this server can only list its own published rooms")
	}
	return nil
}

func (h *handlers) answerPublicRooms(c *gin.Context, q PublicRoomsQuery) error {
	page, err := h.s.PublicRooms(c.Request.Context(), q)
	if err != nil {
		return err
	}
	resp := gin.H{"chunk": page.Chunk, "total_room_count_estimate": page.Estimate}
	if page.Next != "" {
		resp["next_batch"] = page.Next
	}
	if page.Prev != "" {
		resp["prev_batch"] = page.Prev
	}
	c.JSON(http.StatusOK, resp)
	return nil
}

// GET /_matrix/client/v3/publicRooms: the published room directory (no
// access token needed).
func (h *handlers) getPublicRooms(c *gin.Context) error {
	if err := h.checkServerParam(c); err != nil {
		return err
	}
	limit, err := limitParam(c, 100)
	if err != nil {
		return err
	}
	return h.answerPublicRooms(c, PublicRoomsQuery{Limit: limit, Since: c.Query("since")})
}

// POST /_matrix/client/v3/publicRooms: the directory with a filter.
func (h *handlers) postPublicRooms(c *gin.Context) error {
	if err := h.checkServerParam(c); err != nil {
		return err
	}
	var body struct {
		Limit  *int   `json:"limit"`
		Since  string `json:"since"`
		Filter *struct {
			GenericSearchTerm string    `json:"generic_search_term"`
			RoomTypes         []*string `json:"room_types"`
		} `json:"filter"`
		IncludeAllNetworks   bool   `json:"include_all_networks"`
		ThirdPartyInstanceID string `json:"third_party_instance_id"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	q := PublicRoomsQuery{Since: body.Since}
	if body.Limit != nil {
		if *body.Limit < 0 {
			return spec.InvalidParam("limit must not be negative")
		}
		q.Limit = *body.Limit
	}
	if body.Filter != nil {
		q.SearchTerm = body.Filter.GenericSearchTerm
		if body.Filter.RoomTypes != nil {
			q.RoomTypes = []string{}
			for _, t := range body.Filter.RoomTypes {
				if t == nil {
					q.RoomTypes = append(q.RoomTypes, "")
				} else {
					q.RoomTypes = append(q.RoomTypes, *t)
				}
			}
		}
	}
	if body.ThirdPartyInstanceID != "" {
		// No application service networks: a named one has no rooms.
		c.JSON(http.StatusOK, gin.H{"chunk": []RoomInfo{}, "total_room_count_estimate": 0})
		return nil
	}
	return h.answerPublicRooms(c, q)
}
