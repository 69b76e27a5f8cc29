package schedule

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// maxContent is the largest content a delayed event may have: that of any
// event (the event built from it must fit in a PDU).
const maxContent = 64 << 10

// Routes mounts the MSC4140 endpoints (unstable prefix). Scheduling also
// happens through /send and /state with the delay parameter, which the
// rooms package hands to ServeDelayed.
func (s *Service) Routes(r *gin.Engine, requireAuth gin.HandlerFunc) {
	limit := s.limit
	if limit == nil {
		limit = func(c *gin.Context) { c.Next() }
	}
	u := r.Group("/_matrix/client/unstable/org.matrix.msc4140")
	u.GET("/delayed_events", requireAuth, limit, s.list)
	u.GET("/delayed_events/:delayId", requireAuth, limit, s.getOne)
	u.POST("/delayed_events/:delayId", limit, s.actionInBody)
	u.POST("/delayed_events/:delayId/:action", limit, s.actionInPath)
	u.PUT("/rooms/:roomId/delayed_event/:eventType/:txnId", requireAuth, s.putDelayedEvent)
}

// ServeDelayed answers PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
// and PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
// with ?org.matrix.msc4140.delay=MS: the event is scheduled, the answer is
// its delay ID. A retried transaction answers the same delay ID without
// reading the body.
func (s *Service) ServeDelayed(c *gin.Context, d rooms.DelayedSend) {
	delay, err := s.parseDelay(d.Delay)
	if err != nil {
		c.Error(err)
		return
	}
	if s.answerRetry(c, d.From, d.TxnID) {
		return
	}
	content, err := events.ReadContent(c.Request.Body, maxContent)
	if err != nil {
		c.Error(err)
		return
	}
	s.scheduleAndAnswer(c, d, delay, string(content))
}

// answerRetry answers a transaction that already scheduled an event.
func (s *Service) answerRetry(c *gin.Context, from rooms.Sender, txn string) bool {
	if txn == "" {
		return false
	}
	id, found, err := s.byTxn(c.Request.Context(), from.User, from.Device, txn)
	if err != nil {
		c.Error(err)
		return true
	}
	if found {
		c.JSON(http.StatusOK, gin.H{"delay_id": id})
	}
	return found
}

func (s *Service) scheduleAndAnswer(c *gin.Context, d rooms.DelayedSend, delay int64, content string) {
	ev := &delayedEvent{User: d.From.User, Device: d.From.Device, TxnID: d.TxnID, Room: d.Room, Type: d.Type,
		StateKey: d.StateKey, Content: content, DelayMS: delay}
	if err := s.schedule(c.Request.Context(), ev); err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"delay_id": ev.DelayID})
}

// PUT /_matrix/client/unstable/org.matrix.msc4140/rooms/{roomId}/delayed_event/{eventType}/{txnId}:
// the MSC's own scheduling endpoint; the body is {delay, state_key?, content}.
func (s *Service) putDelayedEvent(c *gin.Context) {
	dev := auth.DeviceFrom(c)
	room, err := spec.ParseRoomID(c.Param("roomId"))
	if err != nil {
		c.Error(spec.InvalidParam("room ID: %v", err))
		return
	}
	typ := c.Param("eventType")
	if typ == "" || len(typ) > 255 {
		c.Error(spec.InvalidParam("the event type must be 1 to 255 bytes"))
		return
	}
	from := rooms.Sender{User: dev.UserID, Device: dev.DeviceID}
	if s.answerRetry(c, from, c.Param("txnId")) {
		return
	}
	body, err := events.ReadContent(c.Request.Body, maxContent+1024)
	if err != nil {
		c.Error(err)
		return
	}
	var req struct {
		Delay    *int64          `json:"delay"`
		StateKey *string         `json:"state_key"`
		Content  json.RawMessage `json:"content"`
	}
	if err := api.DecodeJSON(body, &req); err != nil {
		c.Error(err)
		return
	}
	if req.Delay == nil || len(req.Content) == 0 {
		c.Error(spec.MissingParam("delay and content are required"))
		return
	}
	if len(req.Content) == 0 || req.Content[0] != '{' {
		c.Error(spec.BadJSON("content must be a JSON object"))
		return
	}
	if len(req.Content) > maxContent {
		c.Error(spec.TooLarge("the content is over %d bytes", maxContent))
		return
	}
	delay, err := s.parseDelay(jsonNumber(*req.Delay))
	if err != nil {
		c.Error(err)
		return
	}
	s.scheduleAndAnswer(c, rooms.DelayedSend{From: from, Room: room, Type: typ, StateKey: req.StateKey, TxnID: c.Param("txnId")},
		delay, string(req.Content))
}

func jsonNumber(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// The management actions (MSC4140, "Managing scheduled delayed events").
const (
	actionCancel  = "cancel"
	actionRestart = "restart"
	actionSend    = "send"
)

// POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}/{action}:
// without an access token, as the delay ID is the capability; an unknown
// action is an unknown endpoint.
func (s *Service) actionInPath(c *gin.Context) {
	action := c.Param("action")
	if !slices.Contains([]string{actionCancel, actionRestart, actionSend}, action) {
		c.Error(spec.Unrecognized("unknown delayed event action"))
		return
	}
	s.act(c, action)
}

// POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}
// with {"action": …}: the MSC's earlier form, which clients still send.
func (s *Service) actionInBody(c *gin.Context) {
	body, err := events.ReadContent(c.Request.Body, 1024)
	if err != nil {
		c.Error(err)
		return
	}
	var req struct {
		Action *string `json:"action"`
	}
	if err := api.DecodeJSON(body, &req); err != nil {
		c.Error(err)
		return
	}
	if req.Action == nil {
		c.Error(spec.MissingParam("action is required"))
		return
	}
	if !slices.Contains([]string{actionCancel, actionRestart, actionSend}, *req.Action) {
		c.Error(spec.InvalidParam("action must be cancel, restart or send"))
		return
	}
	s.act(c, *req.Action)
}

func (s *Service) act(c *gin.Context, action string) {
	id := c.Param("delayId")
	ctx := c.Request.Context()
	var err error
	switch action {
	case actionCancel:
		err = s.cancel(ctx, id)
	case actionRestart:
		err = s.restart(ctx, id)
	default:
		err = s.sendNow(ctx, id)
	}
	if err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

// GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events: the
// caller's scheduled delayed events, the next to be sent first. Finalised
// events are not kept (the room has the sent ones), so status=finalised
// lists none.
func (s *Service) list(c *gin.Context) {
	statuses := c.QueryArray("status")
	for _, st := range statuses {
		if st != "scheduled" && st != "finalised" {
			c.Error(spec.InvalidParam("status must be scheduled or finalised"))
			return
		}
	}
	out := []gin.H{}
	if len(statuses) > 0 && !slices.Contains(statuses, "scheduled") {
		c.JSON(http.StatusOK, gin.H{"delayed_events": out})
		return
	}
	all, err := s.ofUser(c.Request.Context(), auth.DeviceFrom(c).UserID)
	if err != nil {
		c.Error(err)
		return
	}
	ids := c.QueryArray("delay_id")
	for _, d := range all {
		if len(ids) == 0 || slices.Contains(ids, d.DelayID) {
			out = append(out, d.wire())
		}
	}
	c.JSON(http.StatusOK, gin.H{"delayed_events": out})
}

// GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}:
// one of the caller's scheduled delayed events.
func (s *Service) getOne(c *gin.Context) {
	d, err := s.load(c.Request.Context(), c.Param("delayId"))
	if err != nil {
		c.Error(err)
		return
	}
	if d == nil || d.User != auth.DeviceFrom(c).UserID {
		c.Error(errNoSuchDelay)
		return
	}
	c.JSON(http.StatusOK, d.wire())
}

// wire is a delayed event as the MSC's lookups show it.
func (d *delayedEvent) wire() gin.H {
	h := gin.H{
		"delay_id": d.DelayID, "room_id": d.Room, "type": d.Type, "delay": d.DelayMS,
		"running_since": d.RunningSince, "content": json.RawMessage(d.Content),
	}
	if d.StateKey != nil {
		h["state_key"] = *d.StateKey
	}
	return h
}
