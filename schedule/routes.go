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
	u.GET("/delayed_events", requireAuth, limit, api.Handle(s.list))
	u.GET("/delayed_events/:delayId", requireAuth, limit, api.Handle(s.getOne))
	u.POST("/delayed_events/:delayId", limit, api.Handle(s.actionInBody))
	u.POST("/delayed_events/:delayId/:action", limit, api.Handle(s.actionInPath))
	u.PUT("/rooms/:roomId/delayed_event/:eventType/:txnId", requireAuth, api.Handle(s.putDelayedEvent))
}

// ServeDelayed answers PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
// and PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
// with ?org.matrix.msc4140.delay=MS: the event is scheduled, the answer is
// its delay ID. A retried transaction answers the same delay ID without
// reading the body.
func (s *Service) ServeDelayed(c *gin.Context, d rooms.DelayedSend) error {
	delay, err := s.parseDelay(d.Delay)
	if err != nil {
		return err
	}
	if answered, err := s.answerRetry(c, d.From, d.TxnID); answered || err != nil {
		return err
	}
	content, err := events.ReadContent(c.Request.Body, maxContent)
	if err != nil {
		return err
	}
	return s.scheduleAndAnswer(c, d, delay, string(content))
}

// answerRetry answers a transaction that already scheduled an event, and
// reports whether it did.
func (s *Service) answerRetry(c *gin.Context, from rooms.Sender, txn string) (bool, error) {
	if txn == "" {
		return false, nil
	}
	id, found, err := s.byTxn(c.Request.Context(), from.User, from.Device, txn)
	if err != nil {
		return false, err
	}
	if found {
		c.JSON(http.StatusOK, gin.H{"delay_id": id})
	}
	return found, nil
}

func (s *Service) scheduleAndAnswer(c *gin.Context, d rooms.DelayedSend, delay int64, content string) error {
	ev := &delayedEvent{User: d.From.User, Device: d.From.Device, TxnID: d.TxnID, Room: d.Room, Type: d.Type,
		StateKey: d.StateKey, Content: content, DelayMS: delay}
	if err := s.schedule(c.Request.Context(), ev); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"delay_id": ev.DelayID})
	return nil
}

// PUT /_matrix/client/unstable/org.matrix.msc4140/rooms/{roomId}/delayed_event/{eventType}/{txnId}:
// the MSC's own scheduling endpoint; the body is {delay, state_key?, content}.
func (s *Service) putDelayedEvent(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	room, err := spec.ParseRoomID(c.Param("roomId"))
	if err != nil {
		return spec.InvalidParam("room ID: %v", err)
	}
	typ := c.Param("eventType")
	if typ == "" || len(typ) > 255 {
		return spec.InvalidParam("the event type must be 1 to 255 bytes")
	}
	from := rooms.Sender{User: dev.UserID, Device: dev.DeviceID}
	if answered, err := s.answerRetry(c, from, c.Param("txnId")); answered || err != nil {
		return err
	}
	body, err := events.ReadContent(c.Request.Body, maxContent+1024)
	if err != nil {
		return err
	}
	var req struct {
		Delay    *int64          `json:"delay"`
		StateKey *string         `json:"state_key"`
		Content  json.RawMessage `json:"content"`
	}
	if err := api.DecodeJSON(body, &req); err != nil {
		return err
	}
	if req.Delay == nil || len(req.Content) == 0 {
		return spec.MissingParam("delay and content are required")
	}
	if len(req.Content) == 0 || req.Content[0] != '{' {
		return spec.BadJSON("content must be a JSON object")
	}
	if len(req.Content) > maxContent {
		return spec.TooLarge("the content is over %d bytes", maxContent)
	}
	delay, err := s.parseDelay(jsonNumber(*req.Delay))
	if err != nil {
		return err
	}
	return s.scheduleAndAnswer(c, rooms.DelayedSend{From: from, Room: room, Type: typ, StateKey: req.StateKey, TxnID: c.Param("txnId")},
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
func (s *Service) actionInPath(c *gin.Context) error {
	action := c.Param("action")
	if !slices.Contains([]string{actionCancel, actionRestart, actionSend}, action) {
		return spec.Unrecognized("unknown delayed event action")
	}
	return s.act(c, action)
}

// POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}
// with {"action": …}: the MSC's earlier form, which clients still send.
func (s *Service) actionInBody(c *gin.Context) error {
	body, err := events.ReadContent(c.Request.Body, 1024)
	if err != nil {
		return err
	}
	var req struct {
		Action *string `json:"action"`
	}
	if err := api.DecodeJSON(body, &req); err != nil {
		return err
	}
	if req.Action == nil {
		return spec.MissingParam("action is required")
	}
	if !slices.Contains([]string{actionCancel, actionRestart, actionSend}, *req.Action) {
		return spec.InvalidParam("action must be cancel, restart or send")
	}
	return s.act(c, *req.Action)
}

func (s *Service) act(c *gin.Context, action string) error {
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
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events: the
// caller's scheduled delayed events, the next to be sent first. Finalised
// events are not kept (the room has the sent ones), so status=finalised
// lists none.
func (s *Service) list(c *gin.Context) error {
	statuses := c.QueryArray("status")
	for _, st := range statuses {
		if st != "scheduled" && st != "finalised" {
			return spec.InvalidParam("status must be scheduled or finalised")
		}
	}
	out := []gin.H{}
	if len(statuses) > 0 && !slices.Contains(statuses, "scheduled") {
		c.JSON(http.StatusOK, gin.H{"delayed_events": out})
		return nil
	}
	all, err := s.ofUser(c.Request.Context(), auth.DeviceFrom(c).UserID)
	if err != nil {
		return err
	}
	ids := c.QueryArray("delay_id")
	for _, d := range all {
		if len(ids) == 0 || slices.Contains(ids, d.DelayID) {
			out = append(out, d.wire())
		}
	}
	c.JSON(http.StatusOK, gin.H{"delayed_events": out})
	return nil
}

// GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}:
// one of the caller's scheduled delayed events.
func (s *Service) getOne(c *gin.Context) error {
	d, err := s.load(c.Request.Context(), c.Param("delayId"))
	if err != nil {
		return err
	}
	if d == nil || d.User != auth.DeviceFrom(c).UserID {
		return errNoSuchDelay
	}
	c.JSON(http.StatusOK, d.wire())
	return nil
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
