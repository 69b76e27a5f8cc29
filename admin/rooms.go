package admin

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// roomJSON is a room as Synapse's room admin API lists it.
func roomJSON(a rooms.AdminRoom) gin.H {
	nullable := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	return gin.H{
		"room_id":              string(a.RoomID),
		"name":                 nullable(a.Name),
		"canonical_alias":      nullable(a.CanonicalAlias),
		"joined_members":       a.NumJoinedMembers,
		"joined_local_members": a.JoinedLocalMembers,
		"version":              a.RoomVersion,
		"creator":              string(a.Creator),
		"encryption":           nullable(a.Encryption),
		"federatable":          a.Federatable,
		"public":               a.Public,
		"join_rules":           nullable(a.JoinRule),
		"guest_access":         nullable(a.GuestAccess),
		"history_visibility":   nullable(a.HistoryVisibility),
		"state_events":         a.StateEvents,
		"room_type":            nullable(a.RoomType),
	}
}

// roomOrders are the order_by values of GET /v1/rooms. Counts sort largest
// first, text alphabetically, as Synapse does.
var roomOrders = map[string]func(a, b rooms.AdminRoom) int{
	"name":            func(a, b rooms.AdminRoom) int { return strings.Compare(a.Name, b.Name) },
	"canonical_alias": func(a, b rooms.AdminRoom) int { return strings.Compare(a.CanonicalAlias, b.CanonicalAlias) },
	"joined_members":  func(a, b rooms.AdminRoom) int { return -cmpInt(int64(a.NumJoinedMembers), int64(b.NumJoinedMembers)) },
	"joined_local_members": func(a, b rooms.AdminRoom) int {
		return -cmpInt(int64(a.JoinedLocalMembers), int64(b.JoinedLocalMembers))
	},
	"version":            func(a, b rooms.AdminRoom) int { return -strings.Compare(a.RoomVersion, b.RoomVersion) },
	"creator":            func(a, b rooms.AdminRoom) int { return strings.Compare(string(a.Creator), string(b.Creator)) },
	"encryption":         func(a, b rooms.AdminRoom) int { return strings.Compare(a.Encryption, b.Encryption) },
	"federatable":        func(a, b rooms.AdminRoom) int { return -cmpBool(a.Federatable, b.Federatable) },
	"public":             func(a, b rooms.AdminRoom) int { return -cmpBool(a.Public, b.Public) },
	"join_rules":         func(a, b rooms.AdminRoom) int { return strings.Compare(a.JoinRule, b.JoinRule) },
	"guest_access":       func(a, b rooms.AdminRoom) int { return strings.Compare(a.GuestAccess, b.GuestAccess) },
	"history_visibility": func(a, b rooms.AdminRoom) int { return strings.Compare(a.HistoryVisibility, b.HistoryVisibility) },
	"state_events":       func(a, b rooms.AdminRoom) int { return -cmpInt(int64(a.StateEvents), int64(b.StateEvents)) },
}

// RoomQuery filters and pages the room list.
type RoomQuery struct {
	From, Limit int
	OrderBy     string // a roomOrders key; "" for name
	Backwards   bool
	SearchTerm  string
	Public      *bool
	Empty       *bool
}

// Rooms lists the server's rooms (API and CLI); total counts every match.
func (s *Service) Rooms(ctx context.Context, q RoomQuery) ([]rooms.AdminRoom, int, error) {
	switch q.OrderBy {
	case "", "alphabetical":
		q.OrderBy = "name"
	case "size":
		q.OrderBy = "joined_members"
	}
	less, known := roomOrders[q.OrderBy]
	if !known {
		return nil, 0, spec.InvalidParam("unknown order_by %q", q.OrderBy)
	}
	all, err := s.rooms.AdminRooms(ctx)
	if err != nil {
		return nil, 0, err
	}
	var list []rooms.AdminRoom
	for _, r := range all {
		if q.SearchTerm != "" {
			aliasLocal := strings.TrimPrefix(r.CanonicalAlias, "#")
			if i := strings.IndexByte(aliasLocal, ':'); i >= 0 {
				aliasLocal = aliasLocal[:i]
			}
			if !lowerContains(r.Name, q.SearchTerm) && !lowerContains(aliasLocal, q.SearchTerm) && !strings.Contains(string(r.RoomID), q.SearchTerm) {
				continue
			}
		}
		if q.Public != nil && r.Public != *q.Public {
			continue
		}
		if q.Empty != nil && (r.NumJoinedMembers == 0) != *q.Empty {
			continue
		}
		list = append(list, r)
	}
	sort.SliceStable(list, func(i, j int) bool {
		c := less(list[i], list[j])
		if q.Backwards {
			c = -c
		}
		if c != 0 {
			return c < 0
		}
		return list[i].RoomID < list[j].RoomID
	})
	pg, _ := page(list, q.From, q.Limit)
	return pg, len(list), nil
}

// GET /_synapse/admin/v1/rooms: every room (from, limit, order_by, dir,
// search_term, public_rooms, empty_rooms).
func (s *Service) listRooms(c *gin.Context) error {
	from, limit, err := paging(c)
	if err != nil {
		return err
	}
	backwards, err := dirParam(c, "f")
	if err != nil {
		return err
	}
	public, err := boolParam(c, "public_rooms")
	if err != nil {
		return err
	}
	empty, err := boolParam(c, "empty_rooms")
	if err != nil {
		return err
	}
	list, total, err := s.Rooms(c.Request.Context(), RoomQuery{
		From: from, Limit: limit, OrderBy: c.Query("order_by"), Backwards: backwards,
		SearchTerm: c.Query("search_term"), Public: public, Empty: empty,
	})
	if err != nil {
		return err
	}
	out := make([]gin.H, len(list))
	for i, r := range list {
		out[i] = roomJSON(r)
	}
	resp := gin.H{"rooms": out, "offset": from, "total_rooms": total}
	if from+len(list) < total && limit > 0 {
		resp["next_batch"] = from + len(list)
	}
	if from > 0 {
		resp["prev_batch"] = max(0, from-limit)
	}
	c.JSON(http.StatusOK, resp)
	return nil
}

// knownRoom parses roomId and finds the room: 400 M_INVALID_PARAM for a
// malformed ID, 404 M_NOT_FOUND for a room the server does not know.
func (s *Service) knownRoom(c *gin.Context) (rooms.AdminRoom, error) {
	id, err := roomParam(c)
	if err != nil {
		return rooms.AdminRoom{}, err
	}
	r, found, err := s.rooms.AdminRoom(c.Request.Context(), id)
	if err != nil {
		return r, err
	}
	if !found {
		return r, spec.NotFound("room %s not found", id)
	}
	return r, nil
}

// GET /_synapse/admin/v1/rooms/{roomId}
func (s *Service) roomDetails(c *gin.Context) error {
	r, err := s.knownRoom(c)
	if err != nil {
		return err
	}
	out := roomJSON(r)
	out["topic"] = nilIfEmpty(r.Topic)
	out["avatar"] = nilIfEmpty(r.AvatarURL)
	devices := 0
	for u, m := range s.rooms.MembersOf(r.RoomID) {
		if m == spec.Join && u.Server() == s.server {
			if devs, err := s.auth.Devices(c.Request.Context(), u); err == nil {
				devices += len(devs)
			}
		}
	}
	out["joined_local_devices"] = devices
	out["forgotten"] = false
	s.mu.RLock()
	_, blocked := s.blocked[r.RoomID]
	s.mu.RUnlock()
	out["blocked"] = blocked
	c.JSON(http.StatusOK, out)
	return nil
}

func nilIfEmpty(v string) any {
	if v == "" {
		return nil
	}
	return v
}

// GET /_synapse/admin/v1/rooms/{roomId}/members: the joined members.
func (s *Service) roomMembers(c *gin.Context) error {
	r, err := s.knownRoom(c)
	if err != nil {
		return err
	}
	members := s.rooms.JoinedMembers(r.RoomID)
	sort.Slice(members, func(i, j int) bool { return members[i] < members[j] })
	if members == nil {
		members = []spec.UserID{}
	}
	c.JSON(http.StatusOK, gin.H{"members": members, "total": len(members)})
	return nil
}

// GET /_synapse/admin/v1/rooms/{roomId}/state?type=: the current state.
// State is what the server must read anyway (it is plaintext in Matrix);
// message content is never part of it.
func (s *Service) roomState(c *gin.Context) error {
	r, err := s.knownRoom(c)
	if err != nil {
		return err
	}
	typ, filter := c.GetQuery("type")
	out := []rawJSON{}
	for _, ev := range s.rooms.AdminState(r.RoomID) {
		if filter && ev.Type() != typ {
			continue
		}
		out = append(out, rawJSON(events.ClientEvent(ev, nil)))
	}
	c.JSON(http.StatusOK, gin.H{"state": out})
	return nil
}

// rawJSON is JSON already encoded.
type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }

// GET /_synapse/admin/v1/rooms/{roomId}/block: whether the room is blocked
// (and by whom); unknown rooms can be blocked too.
func (s *Service) getBlock(c *gin.Context) error {
	id, err := roomParam(c)
	if err != nil {
		return err
	}
	s.mu.RLock()
	by, blocked := s.blocked[id]
	s.mu.RUnlock()
	out := gin.H{"block": blocked}
	if blocked {
		out["user_id"] = string(by)
	}
	c.JSON(http.StatusOK, out)
	return nil
}

// PUT /_synapse/admin/v1/rooms/{roomId}/block {"block": bool}: nobody can
// join (or be invited to, or knock on) a blocked room; members stay.
func (s *Service) putBlock(c *gin.Context) error {
	id, err := roomParam(c)
	if err != nil {
		return err
	}
	var req struct {
		Block *bool `json:"block"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.Block == nil {
		return spec.MissingParam("block is required")
	}
	if err := s.SetBlocked(c.Request.Context(), actor(c), id, *req.Block); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"block": *req.Block})
	return nil
}

// SetBlocked blocks or unblocks a room.
func (s *Service) SetBlocked(ctx context.Context, who Actor, id spec.RoomID, block bool) error {
	action := "block_room"
	if !block {
		action = "unblock_room"
	}
	return s.record(ctx, who, action, string(id), nil, s.blockTx(who, id, block))
}

func (s *Service) blockTx(who Actor, id spec.RoomID, block bool) func(*storage.Tx) error {
	return func(tx *storage.Tx) error {
		if err := setBlocked(tx, id, who.String(), block, s.now().UnixMilli()); err != nil {
			return err
		}
		tx.AfterCommit(func() {
			s.mu.Lock()
			if block {
				if _, already := s.blocked[id]; !already {
					s.blocked[id] = spec.UserID(who.String())
				}
			} else {
				delete(s.blocked, id)
			}
			s.mu.Unlock()
		})
		return nil
	}
}

// Room deletions and history purges run in the background (Synapse's v2
// API); their status stays queryable in memory for a day after they end.

type shutdownResult struct {
	KickedUsers       []spec.UserID    `json:"kicked_users"`
	FailedToKickUsers []spec.UserID    `json:"failed_to_kick_users"`
	LocalAliases      []spec.RoomAlias `json:"local_aliases"`
	NewRoomID         *spec.RoomID     `json:"new_room_id"`
	// RemovedRows is Chatalot's addition: the rows the purge deleted,
	// per table (absent until the purge ran, or without purge).
	RemovedRows storage.Removed `json:"removed_rows,omitempty"`
}

type task struct {
	ID       string
	Kind     string // "delete" or "purge"
	Room     spec.RoomID
	Status   string // scheduled, active, complete, failed
	Error    string
	Shutdown shutdownResult
	Removed  storage.Removed // rows a history purge deleted
	by       Actor           // who asked, for the purge's audit row
	ended    time.Time
}

type taskList struct {
	mu     sync.Mutex
	byID   map[string]*task
	active map[spec.RoomID]bool
}

func newTaskList() *taskList {
	return &taskList{byID: map[string]*task{}, active: map[spec.RoomID]bool{}}
}

const taskRetention = 24 * time.Hour

// start registers a task on a room unless one is already running there.
func (l *taskList) start(room spec.RoomID, kind string) (*task, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active[room] {
		return nil, false
	}
	for id, t := range l.byID {
		if !t.ended.IsZero() && time.Since(t.ended) > taskRetention {
			delete(l.byID, id)
		}
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	t := &task{ID: base64.RawURLEncoding.EncodeToString(b), Kind: kind, Room: room, Status: "scheduled",
		Shutdown: shutdownResult{KickedUsers: []spec.UserID{}, FailedToKickUsers: []spec.UserID{}, LocalAliases: []spec.RoomAlias{}}}
	l.byID[t.ID] = t
	l.active[room] = true
	return t, true
}

// rename gives a task the ID it had before a restart.
func (l *taskList) rename(t *task, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.byID, t.ID)
	t.ID = id
	l.byID[id] = t
}

func (l *taskList) update(t *task, f func(*task)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(t)
	if t.Status == "complete" || t.Status == "failed" {
		t.ended = time.Now()
		delete(l.active, t.Room)
	}
}

func (l *taskList) json(t *task, withShutdown bool) gin.H {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := gin.H{"delete_id": t.ID, "room_id": string(t.Room), "status": t.Status}
	if withShutdown {
		sr := t.Shutdown // copied: the task may still append after the lock
		sr.KickedUsers = append([]spec.UserID{}, sr.KickedUsers...)
		sr.FailedToKickUsers = append([]spec.UserID{}, sr.FailedToKickUsers...)
		sr.LocalAliases = append([]spec.RoomAlias{}, sr.LocalAliases...)
		out["shutdown_room"] = sr
	} else {
		out = gin.H{"status": t.Status}
		if t.Removed != nil {
			out["removed_rows"] = t.Removed
		}
	}
	if t.Error != "" {
		out["error"] = t.Error
	}
	return out
}

func (l *taskList) get(id string) *task {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byID[id]
}

func (l *taskList) ofRoom(room spec.RoomID) []*task {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*task
	for _, t := range l.byID {
		if t.Room == room && t.Kind == "delete" {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// DeleteRoomRequest is the body of DELETE /_synapse/admin/v{1,2}/rooms/{roomId}.
type DeleteRoomRequest struct {
	NewRoomUserID *string `json:"new_room_user_id"`
	RoomName      *string `json:"room_name"`
	Message       *string `json:"message"`
	Block         *bool   `json:"block"`
	Purge         *bool   `json:"purge"`
	ForcePurge    *bool   `json:"force_purge"`
	// DryRun (Chatalot's; also ?dry_run=true) changes nothing and answers
	// what the deletion would do: the members it would remove, the aliases
	// it would move, and the rows the purge would delete per table.
	DryRun *bool `json:"dry_run"`
}

const (
	defaultShutdownRoomName = "Content Violation Notification"
	defaultShutdownMessage  = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
)

// prepareDelete checks a deletion request and, when accepted, blocks the
// room (if asked) and records the action, in one write, before any member
// is moved: nobody can rejoin while the members leave.
func (s *Service) prepareDelete(c *gin.Context, id spec.RoomID, req DeleteRoomRequest, async bool) (*task, *DeleteRoomRequest, error) {
	block := req.Block != nil && *req.Block
	if req.NewRoomUserID != nil {
		u, err := spec.ParseUserID(*req.NewRoomUserID)
		if err != nil || u.Server() != s.server {
			return nil, nil, spec.InvalidParam("new_room_user_id must be a user ID of this server")
		}
		if exists, err := s.auth.UserExists(c.Request.Context(), u); err != nil || !exists {
			return nil, nil, spec.InvalidParam("new_room_user_id %s is not an active account", u)
		}
	}
	known := s.rooms.Exists(id)
	if !known && (async || !block) {
		if async {
			return nil, nil, spec.NotFound("room %s not found", id)
		}
		return nil, nil, spec.InvalidParam("room %s is unknown; only block: true may be used on an unknown room", id)
	}
	t, started := s.tasks.start(id, "delete")
	if !started {
		return nil, nil, spec.InvalidParam("a deletion of room %s is already in progress", id)
	}
	t.by = actor(c)
	details := map[string]any{"delete_id": t.ID, "block": block, "purge": req.Purge == nil || *req.Purge,
		"force_purge": req.ForcePurge != nil && *req.ForcePurge, "new_room_user_id": req.NewRoomUserID}
	blockFn := func(*storage.Tx) error { return nil }
	if block {
		blockFn = s.blockTx(actor(c), id, true)
	}
	purge := known && (req.Purge == nil || *req.Purge)
	fn := func(tx *storage.Tx) error {
		if err := blockFn(tx); err != nil {
			return err
		}
		if !purge {
			return nil
		}
		// Kept until the purge commits: a crash in between is resumed.
		return addPendingPurge(tx, pendingPurge{Room: id, DeleteID: t.ID, Actor: actor(c).String(),
			Force: req.ForcePurge != nil && *req.ForcePurge}, s.now().UnixMilli())
	}
	if err := s.record(c.Request.Context(), actor(c), "delete_room", string(id), details, fn); err != nil {
		s.tasks.update(t, func(t *task) { t.Status, t.Error = "failed", err.Error() })
		return nil, nil, err
	}
	if !known {
		s.tasks.update(t, func(t *task) { t.Status = "complete" })
		return t, &req, nil
	}
	return t, &req, nil
}

// DELETE /_synapse/admin/v1/rooms/{roomId}: shuts the room down and
// answers when done.
func (s *Service) deleteRoomV1(c *gin.Context) error {
	id, body, err := readDeleteRequest(c)
	if err != nil {
		return err
	}
	if body.dryRun(c) {
		return s.dryRunDelete(c, id, body)
	}
	t, req, err := s.prepareDelete(c, id, body, false)
	if err != nil {
		return err
	}
	if t.Status != "complete" {
		s.shutdownRoom(context.WithoutCancel(c.Request.Context()), t, req)
	}
	if t.Status == "failed" {
		return spec.Internal("%s", t.Error)
	}
	c.JSON(http.StatusOK, t.Shutdown)
	return nil
}

// DELETE /_synapse/admin/v2/rooms/{roomId}: starts the shutdown in the
// background and answers its delete_id.
func (s *Service) deleteRoomV2(c *gin.Context) error {
	id, body, err := readDeleteRequest(c)
	if err != nil {
		return err
	}
	if body.dryRun(c) {
		return s.dryRunDelete(c, id, body)
	}
	t, req, err := s.prepareDelete(c, id, body, true)
	if err != nil {
		return err
	}
	go s.shutdownRoom(context.WithoutCancel(c.Request.Context()), t, req)
	c.JSON(http.StatusOK, gin.H{"delete_id": t.ID})
	return nil
}

// shutdownRoom makes every local member leave (invites are rejected too),
// optionally invites them to a new room with the admin's message, moves
// or deletes the local aliases, and purges the room. Chatalot invites the
// members to the new room rather than joining them: it never joins a user
// to a room on their behalf.
func (s *Service) shutdownRoom(ctx context.Context, t *task, req *DeleteRoomRequest) {
	s.tasks.update(t, func(t *task) { t.Status = "active" })
	fail := func(err error) {
		s.log.Warn().Err(err).Str("room_id", string(t.Room)).Msg("room deletion failed")
		s.tasks.update(t, func(t *task) { t.Status, t.Error = "failed", err.Error() })
	}
	var kicked, failed []spec.UserID
	members := s.rooms.MembersOf(t.Room)
	users := make([]spec.UserID, 0, len(members))
	for u := range members {
		users = append(users, u)
	}
	sort.Slice(users, func(i, j int) bool { return users[i] < users[j] })
	for _, u := range users {
		switch members[u] {
		case spec.Join, spec.Invite, spec.Knock:
		default:
			continue
		}
		if u.Server() != s.server {
			continue
		}
		if _, err := s.rooms.Change(ctx, rooms.Sender{User: u}, t.Room, rooms.MembershipChange{Target: u, Membership: spec.Leave}); err != nil {
			s.log.Warn().Err(err).Str("room_id", string(t.Room)).Str("user_id", string(u)).Msg("could not remove a member of a deleted room")
			failed = append(failed, u)
			continue
		}
		if members[u] == spec.Join {
			kicked = append(kicked, u)
		}
	}
	s.tasks.update(t, func(t *task) {
		t.Shutdown.KickedUsers = append(t.Shutdown.KickedUsers, kicked...)
		t.Shutdown.FailedToKickUsers = append(t.Shutdown.FailedToKickUsers, failed...)
	})
	newRoom := spec.RoomID("")
	if req.NewRoomUserID != nil {
		creator := spec.UserID(*req.NewRoomUserID)
		name, msg := defaultShutdownRoomName, defaultShutdownMessage
		if req.RoomName != nil {
			name = *req.RoomName
		}
		if req.Message != nil {
			msg = *req.Message
		}
		var invite []string
		for _, u := range kicked {
			if u != creator {
				invite = append(invite, string(u))
			}
		}
		id, _, err := s.rooms.CreateRoom(ctx, creator, rooms.CreateRequest{
			Preset: "private_chat", Name: &name, Invite: invite, Unencrypted: true,
			PowerLevelContentOverride: []byte(`{"users_default":-10}`),
		})
		if err != nil {
			fail(err)
			return
		}
		newRoom = id
		content, _ := events.MarshalCanonical(map[string]any{"msgtype": "m.text", "body": msg})
		if _, err := s.rooms.Send(ctx, rooms.Sender{User: creator}, id, rooms.SendRequest{Type: spec.MRoomMessage, Content: content}); err != nil {
			fail(err)
			return
		}
		s.tasks.update(t, func(t *task) { t.Shutdown.NewRoomID = &newRoom })
	}
	aliases, err := s.rooms.MoveAliases(ctx, t.Room, newRoom)
	if err != nil {
		fail(err)
		return
	}
	s.tasks.update(t, func(t *task) { t.Shutdown.LocalAliases = append(t.Shutdown.LocalAliases, aliases...) })
	if req.Purge == nil || *req.Purge {
		force := req.ForcePurge != nil && *req.ForcePurge
		for _, u := range s.rooms.JoinedMembers(t.Room) {
			if u.Server() == s.server && !force {
				fail(spec.InvalidParam("%s is still in the room; use force_purge to purge anyway", u))
				return
			}
		}
		removed, err := s.purgeRoom(ctx, t.by, t.Room, t.ID)
		if err != nil {
			fail(err)
			return
		}
		s.tasks.update(t, func(t *task) { t.Shutdown.RemovedRows = removed })
	}
	s.tasks.update(t, func(t *task) { t.Status = "complete" })
}

// GET /_synapse/admin/v2/rooms/{roomId}/delete_status
func (s *Service) deleteStatusByRoom(c *gin.Context) error {
	id, err := roomParam(c)
	if err != nil {
		return err
	}
	list := s.tasks.ofRoom(id)
	if len(list) == 0 {
		return spec.NotFound("no deletion of room %s is known", id)
	}
	out := make([]gin.H, len(list))
	for i, t := range list {
		out[i] = s.tasks.json(t, true)
	}
	c.JSON(http.StatusOK, gin.H{"results": out})
	return nil
}

// GET /_synapse/admin/v2/rooms/delete_status/{deleteId}
func (s *Service) deleteStatusByID(c *gin.Context) error {
	t := s.tasks.get(c.Param("deleteId"))
	if t == nil || t.Kind != "delete" {
		return spec.NotFound("no deletion with ID %s", c.Param("deleteId"))
	}
	c.JSON(http.StatusOK, s.tasks.json(t, true))
	return nil
}

// POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]
// {"delete_local_events", "purge_up_to_event_id", "purge_up_to_ts"}: deletes
// the room's message events before a point (state events stay). Every
// event on a Chatalot server is local, so without delete_local_events
// nothing is deleted, as in Synapse.
func (s *Service) purgeHistory(c *gin.Context) error {
	r, err := s.knownRoom(c)
	if err != nil {
		return err
	}
	var req struct {
		DeleteLocalEvents bool    `json:"delete_local_events"`
		PurgeUpToEventID  *string `json:"purge_up_to_event_id"`
		PurgeUpToTS       *int64  `json:"purge_up_to_ts"`
		// DryRun (Chatalot's; also ?dry_run=true) answers at once the
		// rows the purge would delete, per table, and deletes nothing.
		DryRun *bool `json:"dry_run"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if q, err := boolParam(c, "dry_run"); err != nil {
		return err
	} else if req.DryRun == nil {
		req.DryRun = q
	}
	ctx := c.Request.Context()
	eventID := c.Param("eventId")
	if eventID == "" && req.PurgeUpToEventID != nil {
		eventID = *req.PurgeUpToEventID
	}
	var before int64
	details := map[string]any{"delete_local_events": req.DeleteLocalEvents}
	switch {
	case eventID != "":
		ev, err := s.rooms.StoredEvent(ctx, spec.EventID(eventID))
		if err != nil {
			return err
		}
		if ev == nil || ev.PDU.RoomID() != r.RoomID {
			return spec.NotFound("event %s not found in room %s", eventID, r.RoomID)
		}
		before = ev.Position
		details["purge_up_to_event_id"] = eventID
	case req.PurgeUpToTS != nil:
		pos, found, err := s.rooms.FirstPositionAt(ctx, r.RoomID, *req.PurgeUpToTS)
		if err != nil {
			return err
		}
		before = pos
		if !found {
			before = 1 << 62 // everything but the latest event
		}
		details["purge_up_to_ts"] = *req.PurgeUpToTS
	default:
		return spec.MissingParam("purge_up_to_event_id or purge_up_to_ts is required")
	}
	if req.DryRun != nil && *req.DryRun {
		return s.dryRunPurgeHistory(c, r.RoomID, before, details)
	}
	t, started := s.tasks.start(r.RoomID, "purge")
	if !started {
		return spec.InvalidParam("a purge of room %s is already in progress", r.RoomID)
	}
	details["purge_id"] = t.ID
	if err := s.record(ctx, actor(c), "purge_history", string(r.RoomID), details, nil); err != nil {
		s.tasks.update(t, func(t *task) { t.Status, t.Error = "failed", err.Error() })
		return err
	}
	who := actor(c) // the gin context is not ours once the handler returns
	go func() {
		s.tasks.update(t, func(t *task) { t.Status = "active" })
		if req.DeleteLocalEvents {
			removed, err := s.purgeHistoryRows(context.WithoutCancel(ctx), who, r.RoomID, before, t.ID)
			if err != nil {
				s.tasks.update(t, func(t *task) { t.Status, t.Error = "failed", err.Error() })
				return
			}
			s.tasks.update(t, func(t *task) { t.Removed = removed })
		}
		s.tasks.update(t, func(t *task) { t.Status = "complete" })
	}()
	c.JSON(http.StatusOK, gin.H{"purge_id": t.ID})
	return nil
}

// GET /_synapse/admin/v1/purge_history_status/{purgeId}
func (s *Service) purgeStatus(c *gin.Context) error {
	t := s.tasks.get(c.Param("purgeId"))
	if t == nil || t.Kind != "purge" {
		return spec.NotFound("no purge with ID %s", c.Param("purgeId"))
	}
	c.JSON(http.StatusOK, s.tasks.json(t, false))
	return nil
}
