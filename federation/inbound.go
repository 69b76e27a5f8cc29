package federation

import (
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
)

// Routes mounts the inbound federation API: every request must be signed by
// a server this one talks to (Allowed).
func (s *Service) Routes(r *gin.Engine) {
	f := r.Group("/_matrix/federation", api.BodyLimit(maxRequestBody), RequireServerAuth(string(s.name), s.keys), s.allowOrigin)
	f.PUT("/v1/send/:txnId", api.Handle(s.send))
	f.GET("/v1/make_join/:roomId/:userId", api.Handle(s.makeJoin))
	f.PUT("/v2/send_join/:roomId/:eventId", api.Handle(s.sendJoin))
	f.GET("/v1/state_ids/:roomId", api.Handle(s.stateIDs))
	f.GET("/v1/state/:roomId", api.Handle(s.state))
	f.GET("/v1/event_auth/:roomId/:eventId", api.Handle(s.eventAuth))
	f.GET("/v1/event/:eventId", api.Handle(s.event))
	f.POST("/v1/user/keys/query", api.Handle(s.userKeysQuery))
	f.POST("/v1/user/keys/claim", api.Handle(s.userKeysClaim))
	f.GET("/v1/user/devices/:userId", api.Handle(s.userDevices))
	f.POST("/v1/get_missing_events/:roomId", api.Handle(s.getMissingEvents))
	f.GET("/v1/backfill/:roomId", api.Handle(s.backfill))
	if s.media != nil {
		s.media.FederationRoutes(f) // /v1/media/download and /v1/media/thumbnail
	}
	s.memberRoutes(f)
}

// allowOrigin refuses servers outside the allow-list or on the deny-list,
// and tells the origin's sender that it is reachable again.
func (s *Service) allowOrigin(c *gin.Context) {
	origin := spec.ServerName(Origin(c))
	if !s.Allowed(origin) {
		abort(c, spec.Forbidden("federation with %s is not allowed", origin))
		return
	}
	s.destinationIsBack(origin)
	c.Next()
}

func param(c *gin.Context, name string) string {
	v, err := url.PathUnescape(c.Param(name))
	if err != nil {
		return c.Param(name)
	}
	return v
}

// PUT /_matrix/federation/v1/send/{txnId}: a transaction of PDUs and EDUs.
// Each PDU goes through rooms' checks (ReceivePDU); then each EDU goes to
// its handler (receiveEDUs, edu.go).
func (s *Service) send(c *gin.Context) error {
	var txn struct {
		Origin string            `json:"origin"`
		PDUs   []json.RawMessage `json:"pdus"`
		EDUs   []json.RawMessage `json:"edus"`
	}
	if err := api.ReadJSON(c, &txn); err != nil {
		return err
	}
	origin := Origin(c)
	if txn.Origin != "" && txn.Origin != origin {
		return spec.Forbidden("the transaction's origin is not the server that signed the request")
	}
	if len(txn.PDUs) > maxPDUs || len(txn.EDUs) > maxEDUs {
		return spec.BadJSON("a transaction holds at most %d PDUs and %d EDUs", maxPDUs, maxEDUs)
	}
	results := map[string]any{}
	ctx := c.Request.Context()
	for _, raw := range txn.PDUs {
		room := spec.RoomID(gjson.GetBytes(raw, "room_id").String())
		s.awaitJoin(ctx, room)
		id, err := s.rooms.ReceivePDU(ctx, raw, room, s.keys, s.origin(spec.ServerName(origin)))
		if id == "" {
			// Without the room's version the event has no ID to answer for.
			s.log.Info().Str("origin", origin).Str("room_id", string(room)).Err(err).Msg("federation: dropped a PDU")
			continue
		}
		if err != nil {
			s.log.Info().Str("origin", origin).Str("event_id", string(id)).Err(err).Msg("federation: refused a PDU")
			results[string(id)] = map[string]string{"error": err.Error()}
			continue
		}
		results[string(id)] = map[string]any{}
	}
	s.receiveEDUs(ctx, spec.ServerName(origin), txn.EDUs)
	c.JSON(http.StatusOK, gin.H{"pdus": results})
	return nil
}

// GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=…
func (s *Service) makeJoin(c *gin.Context) error {
	room, err := spec.ParseRoomID(param(c, "roomId"))
	if err != nil {
		return spec.InvalidParam("room ID: %v", err)
	}
	user, err := spec.ParseUserID(param(c, "userId"))
	if err != nil {
		return spec.InvalidParam("user ID: %v", err)
	}
	if string(user.Server()) != Origin(c) {
		return spec.Forbidden("a server asks to join its own users only")
	}
	vers := []spec.RoomVersion{"1"}
	for _, v := range c.QueryArray("ver") {
		vers = append(vers, spec.RoomVersion(v))
	}
	tmpl, v, err := s.rooms.MakeJoin(c.Request.Context(), room, user, vers)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"event": json.RawMessage(tmpl), "room_version": v})
	return nil
}

// PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}
func (s *Service) sendJoin(c *gin.Context) error {
	room, err := spec.ParseRoomID(param(c, "roomId"))
	if err != nil {
		return spec.InvalidParam("room ID: %v", err)
	}
	body, err := api.ReadBody(c, 0)
	if err != nil {
		return err
	}
	origin, eventID := spec.ServerName(Origin(c)), spec.EventID(param(c, "eventId"))
	state, chain, err := s.rooms.SendJoin(c.Request.Context(), origin, room, eventID, body, s.keys)
	if err != nil {
		return err
	}
	// The join as stored: in a restricted room it carries this server's
	// signature too, which the joining server needs.
	event := json.RawMessage(body)
	if stored, err := s.rooms.EventForServer(c.Request.Context(), origin, eventID); err == nil {
		event = stored
	}
	c.JSON(http.StatusOK, gin.H{"origin": s.name, "state": raws(state), "auth_chain": raws(chain),
		"event": event, "members_omitted": false})
	return nil
}

func raws(list [][]byte) []json.RawMessage {
	out := make([]json.RawMessage, len(list))
	for i, b := range list {
		out[i] = b
	}
	return out
}

func (s *Service) inRoom(room spec.RoomID, origin string) bool {
	for _, srv := range s.rooms.ServersInRoom(room) {
		if string(srv) == origin {
			return true
		}
	}
	return false
}

// GET /_matrix/federation/v1/event/{eventId}
func (s *Service) event(c *gin.Context) error {
	raw, err := s.rooms.EventForServer(c.Request.Context(), spec.ServerName(Origin(c)), spec.EventID(param(c, "eventId")))
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"origin": s.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{raw}})
	return nil
}
