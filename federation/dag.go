package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
)

// The DAG over federation: other servers ask this one for the events and
// state they lack (get_missing_events, backfill, state, event_auth), and
// this one asks the server a PDU came from (origin). rooms decides what is
// answered and what enters a room; this file speaks HTTP, and bounds how
// often one server may ask (walkLimit).

// GET /_matrix/federation/v1/state/{roomId}?event_id=: the state before
// the event and its auth chain, for a server in the room.
func (s *Service) state(c *gin.Context) error {
	room, err := s.roomOfMember(c)
	if err != nil {
		return err
	}
	state, chain, err := s.rooms.StateBefore(c.Request.Context(), room, spec.EventID(c.Query("event_id")))
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"pdus": pduJSON(state), "auth_chain": pduJSON(chain)})
	return nil
}

// GET /_matrix/federation/v1/state_ids/{roomId}?event_id=: the same, by ID.
func (s *Service) stateIDs(c *gin.Context) error {
	room, err := s.roomOfMember(c)
	if err != nil {
		return err
	}
	state, chain, err := s.rooms.StateBefore(c.Request.Context(), room, spec.EventID(c.Query("event_id")))
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"pdu_ids": pduIDs(state), "auth_chain_ids": pduIDs(chain)})
	return nil
}

// GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
func (s *Service) eventAuth(c *gin.Context) error {
	room, err := s.roomOfMember(c)
	if err != nil {
		return err
	}
	chain, err := s.rooms.EventAuth(c.Request.Context(), room, spec.EventID(param(c, "eventId")))
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"auth_chain": pduJSON(chain)})
	return nil
}

// POST /_matrix/federation/v1/get_missing_events/{roomId}
func (s *Service) getMissingEvents(c *gin.Context) error {
	room, err := s.roomOfMember(c)
	if err != nil {
		return err
	}
	var req struct {
		Limit    *int           `json:"limit"`
		MinDepth *int64         `json:"min_depth"`
		Earliest []spec.EventID `json:"earliest_events"`
		Latest   []spec.EventID `json:"latest_events"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if len(req.Latest) == 0 || len(req.Latest) > maxNamed || len(req.Earliest) > maxNamed {
		return spec.BadJSON("latest_events must name 1 to %d events, earliest_events at most %d", maxNamed, maxNamed)
	}
	limit, minDepth := 10, int64(0)
	if req.Limit != nil {
		limit = *req.Limit
	}
	if req.MinDepth != nil {
		minDepth = *req.MinDepth
	}
	evs, err := s.rooms.MissingEvents(c.Request.Context(), spec.ServerName(Origin(c)), room, req.Earliest, req.Latest, limit, minDepth)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"events": raws(evs)})
	return nil
}

// GET /_matrix/federation/v1/backfill/{roomId}?v=…&limit=
func (s *Service) backfill(c *gin.Context) error {
	room, err := s.roomOfMember(c)
	if err != nil {
		return err
	}
	var from []spec.EventID
	for _, v := range c.QueryArray("v") {
		from = append(from, spec.EventID(v))
	}
	limit, err := strconv.Atoi(c.Query("limit"))
	if err != nil || limit <= 0 {
		return spec.InvalidParam("limit must be a positive integer")
	}
	if len(from) == 0 || len(from) > maxNamed {
		return spec.InvalidParam("v must name 1 to %d events", maxNamed)
	}
	evs, err := s.rooms.Backfill(c.Request.Context(), spec.ServerName(Origin(c)), room, from, limit)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"origin": s.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": raws(evs)})
	return nil
}

// maxNamed bounds the events one request may start from.
const maxNamed = 20

// roomOfMember is the request's room, which the origin must have a member
// in; it also takes one of the origin's walk tokens.
func (s *Service) roomOfMember(c *gin.Context) (spec.RoomID, error) {
	room, err := spec.ParseRoomID(param(c, "roomId"))
	if err != nil {
		return "", spec.InvalidParam("room ID: %v", err)
	}
	origin := Origin(c)
	if wait, ok := s.walks.take(origin, time.Now()); !ok {
		s.log.Info().Str("origin", origin).Str("path", c.FullPath()).Msg("federation: refused a request over the rate limit")
		c.Header("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		return "", spec.LimitExceeded(wait.Milliseconds() + 1)
	}
	if !s.inRoom(room, origin) {
		return "", spec.Forbidden("%s has no member in the room", origin)
	}
	return room, nil
}

func pduJSON(pdus []*events.PDU) []json.RawMessage {
	out := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		out[i] = p.JSON()
	}
	return out
}

func pduIDs(pdus []*events.PDU) []spec.EventID {
	out := make([]spec.EventID, len(pdus))
	for i, p := range pdus {
		out[i] = p.EventID()
	}
	return out
}

// walkLimit is a token bucket per origin for the requests that walk the
// DAG: each is bounded, and so is how many one server makes.
type walkLimit struct {
	mu      sync.Mutex
	buckets map[string]*walkBucket
}

type walkBucket struct {
	tokens float64
	last   time.Time
}

const (
	walkBurst = 30 // requests at once
	walkRate  = 10 // requests a second after
)

func (l *walkLimit) take(origin string, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil || len(l.buckets) > 10000 {
		l.buckets = map[string]*walkBucket{} // forgetting is only generous
	}
	b := l.buckets[origin]
	if b == nil {
		b = &walkBucket{tokens: walkBurst, last: now}
		l.buckets[origin] = b
	}
	b.tokens = min(walkBurst, b.tokens+now.Sub(b.last).Seconds()*walkRate)
	b.last = now
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / walkRate * float64(time.Second)), false
	}
	b.tokens--
	return 0, true
}

// origin is the server a PDU came from, as rooms asks it for what this
// server lacks (rooms.Origin).
type origin struct {
	p   *Peers
	srv spec.ServerName
}

func (s *Service) origin(srv spec.ServerName) rooms.Origin { return &origin{p: s.Peers, srv: srv} }

func (o *origin) Event(ctx context.Context, id spec.EventID) ([]byte, error) {
	return o.p.Event(ctx, o.srv, id)
}

// Event asks srv for one event (/event; rooms.Backfiller).
func (p *Peers) Event(ctx context.Context, srv spec.ServerName, id spec.EventID) ([]byte, error) {
	body, err := p.request(ctx, http.MethodGet, srv, "/_matrix/federation/v1/event/"+url.PathEscape(string(id)), nil)
	if err != nil {
		return nil, err
	}
	var resp struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || len(resp.PDUs) != 1 {
		return nil, fmt.Errorf("/event of %s: not one PDU", srv)
	}
	return resp.PDUs[0], nil
}

func (o *origin) MissingEvents(ctx context.Context, room spec.RoomID, earliest, latest []spec.EventID, limit int, minDepth int64) ([][]byte, error) {
	req, _ := json.Marshal(map[string]any{"earliest_events": nonEmptyIDs(earliest), "latest_events": nonEmptyIDs(latest), "limit": limit, "min_depth": minDepth})
	body, err := o.p.request(ctx, http.MethodPost, o.srv, "/_matrix/federation/v1/get_missing_events/"+url.PathEscape(string(room)), req)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("get_missing_events of %s: %w", o.srv, err)
	}
	return bytesOf(resp.Events), nil
}

func (o *origin) StateIDs(ctx context.Context, room spec.RoomID, event spec.EventID) (state, authChain []spec.EventID, err error) {
	body, err := o.p.request(ctx, http.MethodGet, o.srv, "/_matrix/federation/v1/state_ids/"+url.PathEscape(string(room))+"?event_id="+url.QueryEscape(string(event)), nil)
	if err != nil {
		return nil, nil, err
	}
	var resp struct {
		State []spec.EventID `json:"pdu_ids"`
		Chain []spec.EventID `json:"auth_chain_ids"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, nil, fmt.Errorf("state_ids of %s: %w", o.srv, err)
	}
	return resp.State, resp.Chain, nil
}

// Backfill asks srv for the events from and before the given ones
// (rooms.Backfiller).
func (p *Peers) Backfill(ctx context.Context, srv spec.ServerName, room spec.RoomID, from []spec.EventID, limit int) ([][]byte, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	for _, id := range from {
		q.Add("v", string(id))
	}
	body, err := p.request(ctx, http.MethodGet, srv, "/_matrix/federation/v1/backfill/"+url.PathEscape(string(room))+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	var resp struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("backfill of %s: %w", srv, err)
	}
	return bytesOf(resp.PDUs), nil
}

// nonEmptyIDs makes a nil list an empty one, for JSON's [].
func nonEmptyIDs(ids []spec.EventID) []spec.EventID {
	if ids == nil {
		return []spec.EventID{}
	}
	return ids
}

func bytesOf(list []json.RawMessage) [][]byte {
	out := make([][]byte, len(list))
	for i, r := range list {
		out[i] = r
	}
	return out
}
