package rooms

import (
	"encoding/json"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
)

type handlers struct {
	s       *Service
	delayer Delayer // routes.go
}

func roomIDParam(c *gin.Context) (spec.RoomID, error) {
	id, err := spec.ParseRoomID(c.Param("roomId"))
	if err != nil {
		return "", spec.InvalidParam("room ID: %v", err)
	}
	return id, nil
}

func eventIDParam(c *gin.Context) (spec.EventID, error) {
	id, err := spec.ParseEventID(c.Param("eventId"))
	if err != nil {
		return "", spec.InvalidParam("event ID: %v", err)
	}
	return id, nil
}

// roomEventParams are the room and event IDs of a path with {roomId} and
// {eventId}.
func roomEventParams(c *gin.Context) (spec.RoomID, spec.EventID, error) {
	room, err := roomIDParam(c)
	if err != nil {
		return "", "", err
	}
	ev, err := eventIDParam(c)
	return room, ev, err
}

func clientState(pdus []*events.PDU) []json.RawMessage {
	out := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		out[i] = events.ClientEvent(p, nil)
	}
	return out
}

// POST /_matrix/client/v3/createRoom
func (h *handlers) createRoom(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	var req CreateRequest
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	id, _, err := h.s.CreateRoom(c.Request.Context(), dev.UserID, req)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"room_id": id})
	return nil
}

type membershipBody struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

func readMembershipBody(c *gin.Context) (*membershipBody, error) {
	var body membershipBody
	if err := api.ReadJSON(c, &body); err != nil {
		return nil, err
	}
	return &body, nil
}

// target is the user the body's user_id names, which must be given.
func (b *membershipBody) target() (spec.UserID, error) {
	if b.UserID == "" {
		return "", spec.MissingParam("user_id is required")
	}
	u, err := spec.ParseUserID(b.UserID)
	if err != nil {
		return "", spec.InvalidParam("user_id: %v", err)
	}
	return u, nil
}

// resolveRoom turns a room ID or alias into a room ID, with the servers
// to join it through: the client's (via, server_name), then for an alias
// those its directory answered.
func (h *handlers) resolveRoom(c *gin.Context, idOrAlias string) (spec.RoomID, []spec.ServerName, error) {
	via := viaServers(c)
	if strings.HasPrefix(idOrAlias, "#") {
		alias, err := spec.ParseRoomAlias(idOrAlias)
		if err != nil {
			return "", nil, spec.InvalidParam("room alias: %v", err)
		}
		id, servers, err := h.s.LookupAlias(c.Request.Context(), alias)
		if err != nil {
			return "", nil, err
		}
		if id == "" {
			return "", nil, spec.NotFound("room alias %s is not known", alias)
		}
		return id, append(via, servers...), nil
	}
	id, err := spec.ParseRoomID(idOrAlias)
	if err != nil {
		return "", nil, spec.InvalidParam("room ID or alias: %v", err)
	}
	return id, via, nil
}

// doJoin joins the caller to the room. Keys of the body other than reason
// are kept in the member event's content, as clients that set a per-room
// profile at join expect (the body's schema leaves them open).
func (h *handlers) doJoin(c *gin.Context, id spec.RoomID, via []spec.ServerName) error {
	dev := auth.DeviceFrom(c)
	var body map[string]json.RawMessage
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	var reason string
	if raw, ok := body["reason"]; ok {
		if err := json.Unmarshal(raw, &reason); err != nil {
			return spec.BadJSON("reason must be a string")
		}
		delete(body, "reason")
	}
	// A room this server does not know is joined through the servers the
	// client names, when federation is on (remote.go).
	remote := body
	if reason != "" {
		remote = maps.Clone(body)
		if remote == nil {
			remote = map[string]json.RawMessage{}
		}
		remote["reason"], _ = json.Marshal(reason)
	}
	if joined, err := h.s.joinRemote(c.Request.Context(), dev.UserID, id, via, remote); joined || err != nil {
		if err != nil {
			return err
		}
		c.JSON(http.StatusOK, gin.H{"room_id": id})
		return nil
	}
	ch := MembershipChange{Target: dev.UserID, Membership: spec.Join, Reason: reason, Content: body}
	if _, err := h.s.Change(c.Request.Context(), Sender{User: dev.UserID, Device: dev.DeviceID}, id, ch); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"room_id": id})
	return nil
}

// POST /_matrix/client/v3/join/{roomIdOrAlias}
func (h *handlers) joinByIDOrAlias(c *gin.Context) error {
	id, via, err := h.resolveRoom(c, c.Param("roomIdOrAlias"))
	if err != nil {
		return err
	}
	return h.doJoin(c, id, via)
}

// POST /_matrix/client/v3/rooms/{roomId}/join
func (h *handlers) join(c *gin.Context) error {
	id, err := roomIDParam(c)
	if err != nil {
		return err
	}
	return h.doJoin(c, id, viaServers(c))
}

// POST /_matrix/client/v3/knock/{roomIdOrAlias}
func (h *handlers) knock(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	id, via, err := h.resolveRoom(c, c.Param("roomIdOrAlias"))
	if err != nil {
		return err
	}
	body, err := readMembershipBody(c)
	if err != nil {
		return err
	}
	// A room this server does not hold is knocked on through the servers
	// named (remote_members.go).
	if remote, err := h.s.KnockRemote(c.Request.Context(), dev.UserID, id, via, body.Reason); remote || err != nil {
		if err != nil {
			return err
		}
		c.JSON(http.StatusOK, gin.H{"room_id": id})
		return nil
	}
	if _, err := h.s.Change(c.Request.Context(), Sender{User: dev.UserID}, id, MembershipChange{Target: dev.UserID, Membership: spec.Knock, Reason: body.Reason}); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"room_id": id})
	return nil
}

// changeMembership makes the membership change ch in the room of the path,
// with the body's reason. A change without a target is of another user's
// membership (invite, kick, ban, unban), named by the body's user_id.
func (h *handlers) changeMembership(c *gin.Context, ch MembershipChange) error {
	dev := auth.DeviceFrom(c)
	id, err := roomIDParam(c)
	if err != nil {
		return err
	}
	body, err := readMembershipBody(c)
	if err != nil {
		return err
	}
	if ch.Target == "" {
		if ch.Target, err = body.target(); err != nil {
			return err
		}
	}
	ch.Reason = body.Reason
	if _, err := h.s.Change(c.Request.Context(), Sender{User: dev.UserID}, id, ch); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// POST /_matrix/client/v3/rooms/{roomId}/invite
func (h *handlers) invite(c *gin.Context) error {
	return h.changeMembership(c, MembershipChange{Membership: spec.Invite})
}

// POST /_matrix/client/v3/rooms/{roomId}/leave
func (h *handlers) leave(c *gin.Context) error {
	return h.changeMembership(c, MembershipChange{Target: auth.DeviceFrom(c).UserID, Membership: spec.Leave})
}

// POST /_matrix/client/v3/rooms/{roomId}/kick
func (h *handlers) kick(c *gin.Context) error {
	return h.changeMembership(c, MembershipChange{Membership: spec.Leave})
}

// POST /_matrix/client/v3/rooms/{roomId}/ban
func (h *handlers) ban(c *gin.Context) error {
	return h.changeMembership(c, MembershipChange{Membership: spec.Ban})
}

// POST /_matrix/client/v3/rooms/{roomId}/unban
func (h *handlers) unban(c *gin.Context) error {
	return h.changeMembership(c, MembershipChange{Membership: spec.Leave, Unban: true})
}

// POST /_matrix/client/v3/rooms/{roomId}/forget
func (h *handlers) forget(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	id, err := roomIDParam(c)
	if err != nil {
		return err
	}
	if err := h.s.Forget(c.Request.Context(), dev.UserID, id); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// GET /_matrix/client/v3/joined_rooms
func (h *handlers) joinedRooms(c *gin.Context) error {
	c.JSON(http.StatusOK, gin.H{"joined_rooms": h.s.JoinedRooms(auth.DeviceFrom(c).UserID)})
	return nil
}

// validEventType refuses empty and overlong event types, and types that
// are not UTF-8 or hold control characters (a NUL can make a client show
// "m.room.message\x00" as the m.room.message the policy refuses).
func validEventType(t string) error {
	if t == "" || len(t) > 255 {
		return spec.InvalidParam("the event type must be 1 to 255 bytes")
	}
	if !utf8.ValidString(t) {
		return spec.InvalidParam("the event type must be UTF-8")
	}
	for _, r := range t {
		if unicode.IsControl(r) {
			return spec.InvalidParam("the event type must not contain control characters")
		}
	}
	return nil
}

// PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
func (h *handlers) send(c *gin.Context) error {
	return h.sendFromPath(c, SendRequest{TxnID: c.Param("txnId")})
}

func stateKeyParam(c *gin.Context) string {
	return strings.TrimPrefix(c.Param("stateKey"), "/")
}

// PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
func (h *handlers) putState(c *gin.Context) error {
	key := stateKeyParam(c)
	return h.sendFromPath(c, SendRequest{StateKey: &key})
}

// sendFromPath sends the event named by the room and event type in the path
// and the request body (or schedules it, for a delayed event); req carries
// the transaction ID or state key.
func (h *handlers) sendFromPath(c *gin.Context, req SendRequest) error {
	dev := auth.DeviceFrom(c)
	id, err := roomIDParam(c)
	if err != nil {
		return err
	}
	req.Type = c.Param("eventType")
	if err := validEventType(req.Type); err != nil {
		return err
	}
	from := Sender{User: dev.UserID, Device: dev.DeviceID}
	if delayed, err := h.delayed(c, DelayedSend{From: from, Room: id, Type: req.Type, StateKey: req.StateKey, TxnID: req.TxnID}); delayed {
		return err
	}
	req.Content, err = events.ReadContent(c.Request.Body, maxPDUSize)
	if err != nil {
		return err
	}
	eid, err := h.s.Send(c.Request.Context(), from, id, req)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"event_id": eid})
	return nil
}

// delayed hands a request with MSC4140's delay parameter to the scheduler
// and reports whether it did, with the scheduler's error.
func (h *handlers) delayed(c *gin.Context, d DelayedSend) (bool, error) {
	delay, ok := c.GetQuery(DelayParam)
	if !ok || h.delayer == nil {
		return false, nil
	}
	d.Delay = delay
	return true, h.delayer.ServeDelayed(c, d)
}

// GET /_matrix/client/v3/rooms/{roomId}/state
func (h *handlers) getAllState(c *gin.Context) error {
	id, err := roomIDParam(c)
	if err != nil {
		return err
	}
	state, err := h.s.State(c.Request.Context(), auth.DeviceFrom(c).UserID, id)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, clientState(state))
	return nil
}

// GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}:
// the content, or with format=event the whole event.
func (h *handlers) getState(c *gin.Context) error {
	id, err := roomIDParam(c)
	if err != nil {
		return err
	}
	ev, err := h.s.StateEvent(c.Request.Context(), auth.DeviceFrom(c).UserID, id, c.Param("eventType"), stateKeyParam(c))
	if err != nil {
		return err
	}
	if c.Query("format") == "event" {
		c.Data(http.StatusOK, "application/json", events.ClientEvent(ev, nil))
		return nil
	}
	c.Data(http.StatusOK, "application/json", []byte(ev.Content().Raw))
	return nil
}

// GET /_matrix/client/v3/rooms/{roomId}/members
func (h *handlers) members(c *gin.Context) error {
	id, err := roomIDParam(c)
	if err != nil {
		return err
	}
	var at *Token
	if s := c.Query("at"); s != "" {
		t, err := ParseToken(s)
		if err != nil {
			return err
		}
		at = &t
	}
	for _, q := range []string{"membership", "not_membership"} {
		switch c.Query(q) {
		case "", spec.Join, spec.Invite, spec.Leave, spec.Ban, spec.Knock:
		default:
			return spec.InvalidParam("%s must be join, invite, leave, ban or knock", q)
		}
	}
	evs, err := h.s.Members(c.Request.Context(), auth.DeviceFrom(c).UserID, id, MembersRequest{At: at, Membership: c.Query("membership"), NotMembership: c.Query("not_membership")})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"chunk": clientState(evs)})
	return nil
}

// GET /_matrix/client/v3/rooms/{roomId}/joined_members
func (h *handlers) joinedMembers(c *gin.Context) error {
	id, err := roomIDParam(c)
	if err != nil {
		return err
	}
	evs, err := h.s.JoinedMembersOf(auth.DeviceFrom(c).UserID, id)
	if err != nil {
		return err
	}
	// Both keys are always there, null when the member event has none, as
	// clients (and the suite) read them; a string otherwise, as the spec's
	// RoomMember gives.
	joined := map[string]any{}
	for _, ev := range evs {
		sk, _ := ev.StateKey()
		joined[sk] = map[string]any{
			"display_name": stringOrNil(ev.Content().Get("displayname")),
			"avatar_url":   stringOrNil(ev.Content().Get("avatar_url")),
		}
	}
	c.JSON(http.StatusOK, gin.H{"joined": joined})
	return nil
}

// stringOrNil is a JSON string's value, or nil for anything else.
func stringOrNil(v gjson.Result) any {
	if v.Type == gjson.String {
		return v.String()
	}
	return nil
}

// parseFilterParam reads the filter query parameter (a JSON RoomEventFilter).
func parseFilterParam(c *gin.Context) (*RoomEventFilter, error) {
	raw := c.Query("filter")
	if raw == "" {
		return nil, nil
	}
	var f RoomEventFilter
	if err := api.DecodeJSON([]byte(raw), &f); err != nil {
		return nil, spec.InvalidParam("filter: %v", err)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

func limitParam(c *gin.Context, def int) (int, error) {
	s := c.Query("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, spec.InvalidParam("limit must be a non-negative integer")
	}
	return n, nil
}

// GET /_matrix/client/v3/rooms/{roomId}/messages. Whether the user may read
// the room is answered first: a room they may not read (never joined,
// forgotten) is a 403 whatever the parameters, then dir (required) and the
// rest are checked.
func (h *handlers) messages(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	id, err := roomIDParam(c)
	if err != nil {
		return err
	}
	if _, err := h.s.readAccess(dev.UserID, id); err != nil {
		return err
	}
	var from, to *Token
	for _, p := range []struct {
		name string
		dst  **Token
	}{{"from", &from}, {"to", &to}} {
		if s := c.Query(p.name); s != "" {
			t, err := ParseToken(s)
			if err != nil {
				return err
			}
			*p.dst = &t
		}
	}
	dir := c.Query("dir")
	if dir != "b" && dir != "f" {
		return spec.InvalidParam("dir must be b or f")
	}
	limit, err := limitParam(c, 10)
	if err != nil {
		return err
	}
	f, err := parseFilterParam(c)
	if err != nil {
		return err
	}
	page, err := h.s.Messages(c.Request.Context(), dev.UserID, id, MessagesRequest{From: from, To: to, Backwards: dir == "b", Limit: limit, Filter: f})
	if err != nil {
		return err
	}
	chunk, err := h.renderFor(c, page.Events) // with bundled aggregations (relations.go)
	if err != nil {
		return err
	}
	c.Data(http.StatusOK, "application/json", page.appendJSON(make([]byte, 0, rawSize(chunk)+64), chunk))
	return nil
}

// appendJSON writes a /messages answer by hand, as sync/encode.go does:
// the events are already canonical JSON, and encoding/json would scan each
// of them again.
func (p *Page) appendJSON(b []byte, chunk []json.RawMessage) []byte {
	b = append(b, `{"chunk":`...)
	b = appendRawList(b, chunk)
	b = append(b, `,"start":"`...)
	b = append(b, p.Start.String()...)
	if p.HasEnd {
		b = append(b, `","end":"`...)
		b = append(b, p.End.String()...)
	}
	b = append(b, '"')
	if len(p.State) > 0 {
		b = append(b, `,"state":`...)
		b = appendRawList(b, clientState(p.State))
	}
	return append(b, '}')
}

// rawSize is the length of a JSON array of the values, to size a buffer.
func rawSize(list []json.RawMessage) int {
	n := len(list) + 2
	for _, v := range list {
		n += len(v)
	}
	return n
}

// appendRawList appends a JSON array of JSON values.
func appendRawList(b []byte, list []json.RawMessage) []byte {
	b = append(b, '[')
	for i, v := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, v...)
	}
	return append(b, ']')
}

// GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
func (h *handlers) context(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	id, eid, err := roomEventParams(c)
	if err != nil {
		return err
	}
	limit, err := limitParam(c, 10)
	if err != nil {
		return err
	}
	f, err := parseFilterParam(c)
	if err != nil {
		return err
	}
	res, err := h.s.Context(c.Request.Context(), dev.UserID, id, eid, limit, f)
	if err != nil {
		return err
	}
	// With bundled aggregations (relations.go).
	all := append(append([]*Event{res.Event}, res.Before...), res.After...)
	rendered, err := h.renderFor(c, all)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{
		"event":         rendered[0],
		"events_before": rendered[1 : 1+len(res.Before)],
		"events_after":  rendered[1+len(res.Before):],
		"start":         res.Start.String(),
		"end":           res.End.String(),
		"state":         clientState(res.State),
	})
	return nil
}

// GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
func (h *handlers) event(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	id, eid, err := roomEventParams(c)
	if err != nil {
		return err
	}
	ev, err := h.s.Event(c.Request.Context(), dev.UserID, id, eid)
	if err != nil {
		return err
	}
	rendered, err := h.renderFor(c, []*Event{ev}) // with bundled aggregations (relations.go)
	if err != nil {
		return err
	}
	c.Data(http.StatusOK, "application/json", rendered[0])
	return nil
}

// PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
func (h *handlers) redact(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	id, eid, err := roomEventParams(c)
	if err != nil {
		return err
	}
	var body struct {
		Reason string `json:"reason"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	rid, err := h.s.Redact(c.Request.Context(), Sender{User: dev.UserID, Device: dev.DeviceID}, id, RedactRequest{Target: eid, TxnID: c.Param("txnId"), Reason: body.Reason})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"event_id": rid})
	return nil
}

// viaServers are the servers a join names: server_name (deprecated) and
// via query parameters.
func viaServers(c *gin.Context) []spec.ServerName {
	var out []spec.ServerName
	for _, key := range []string{"via", "server_name"} {
		for _, v := range c.QueryArray(key) {
			if n, err := spec.ParseServerName(v); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}
