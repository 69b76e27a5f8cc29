package rooms

import (
	"github.com/chatalot/chatalot/api"
	"github.com/gin-gonic/gin"
)

// Routes mounts every path the rooms package serves; requireAuth is the
// auth middleware. Client paths are under v3, and under r0 for the
// endpoints the r0 API had (api.ClientAPI).
func (s *Service) Routes(r *gin.Engine, requireAuth gin.HandlerFunc) {
	h := &handlers{s: s}
	c := api.ClientAPI(r, requireAuth)
	c.POST("/createRoom", h.createRoom)
	c.POST("/join/:roomIdOrAlias", h.joinByIDOrAlias)
	c.POST("/knock/:roomIdOrAlias", h.knock)
	c.GET("/joined_rooms", h.joinedRooms)

	rm := c.Group("/rooms/:roomId")
	rm.POST("/join", h.join)
	rm.POST("/invite", h.invite)
	rm.POST("/leave", h.leave)
	rm.POST("/forget", h.forget)
	rm.POST("/kick", h.kick)
	rm.POST("/ban", h.ban)
	rm.POST("/unban", h.unban)
	limit := s.sendLimit
	if limit == nil {
		limit = func(c *gin.Context) { c.Next() }
	}
	rm.PUT("/send/:eventType/:txnId", limit, h.send)
	rm.PUT("/state/:eventType", limit, h.putState)
	rm.PUT("/state/:eventType/*stateKey", limit, h.putState)
	rm.GET("/state", h.getAllState)
	rm.GET("/state/:eventType", h.getState)
	rm.GET("/state/:eventType/*stateKey", h.getState)
	rm.GET("/members", h.members)
	rm.GET("/joined_members", h.joinedMembers)
	rm.GET("/messages", h.messages)
	rm.GET("/context/:eventId", h.context)
	rm.GET("/event/:eventId", h.event)
	rm.PUT("/redact/:eventId/:txnId", limit, h.redact)

	// Relations, threads, aliases and the directory, upgrades, reports,
	// spaces and search (relations.go … search.go).
	rm.GET("/aliases", h.roomAliases)
	rm.POST("/upgrade", h.upgrade)
	rm.POST("/report", h.reportRoom)
	rm.POST("/report/:eventId", h.reportEvent)
	c.POST("/users/:userId/report", h.reportUser)
	c.PUT("/directory/room/:roomAlias", h.putAlias)
	c.DELETE("/directory/room/:roomAlias", h.deleteAlias)
	c.PUT("/directory/list/room/:roomId", h.putDirectoryVisibility)
	c.POST("/publicRooms", h.postPublicRooms)
	c.POST("/search", h.search)
	// Without an access token.
	public := api.ClientAPI(r)
	public.GET("/directory/room/:roomAlias", h.getAlias)
	public.GET("/directory/list/room/:roomId", h.getDirectoryVisibility)
	public.GET("/publicRooms", h.getPublicRooms)
	r.GET("/_matrix/client/v1/room_summary/:roomIdOrAlias", optionalAuth(requireAuth), h.roomSummary)

	v1 := r.Group("/_matrix/client/v1/rooms/:roomId", requireAuth)
	v1.GET("/relations/:eventId", h.relations)
	v1.GET("/relations/:eventId/:relType", h.relations)
	v1.GET("/relations/:eventId/:relType/:eventType", h.relations)
	v1.GET("/threads", h.threads)
	v1.GET("/hierarchy", h.hierarchy)
	v1.GET("/timestamp_to_event", h.timestampToEvent)
}

// SetSendLimit sets the rate limit of sending events (auth's per-user
// limiter); call it before Routes.
func (s *Service) SetSendLimit(h gin.HandlerFunc) { s.sendLimit = h }
