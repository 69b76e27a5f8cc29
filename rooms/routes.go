package rooms

import (
	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/gin-gonic/gin"
)

// Routes mounts every path the rooms package serves; requireAuth is the
// auth middleware. Client paths are under v3, and under r0 for the
// endpoints the r0 API had (api.ClientAPI). delayer schedules the sends
// that carry MSC4140's delay (nil: the parameter is ignored, as an unknown
// query parameter is); it is given here, not to New, because the scheduler
// sends through rooms and so is built after it.
func (s *Service) Routes(r *gin.Engine, requireAuth gin.HandlerFunc, delayer Delayer) {
	h := &handlers{s: s, delayer: delayer}
	limit := func(class string) gin.HandlerFunc {
		if s.limit == nil {
			return func(c *gin.Context) { c.Next() }
		}
		return s.limit(class)
	}
	send, rooms, membership, reports := limit(auth.RateSend), limit(auth.RateRooms), limit(auth.RateMembership), limit(auth.RateReports)
	c := api.ClientAPI(r, requireAuth)
	c.POST("/createRoom", rooms, h.createRoom)
	c.POST("/join/:roomIdOrAlias", membership, h.joinByIDOrAlias)
	c.POST("/knock/:roomIdOrAlias", membership, h.knock)
	c.GET("/joined_rooms", h.joinedRooms)

	rm := c.Group("/rooms/:roomId")
	rm.POST("/join", membership, h.join)
	rm.POST("/invite", membership, h.invite)
	rm.POST("/leave", membership, h.leave)
	rm.POST("/forget", membership, h.forget)
	rm.POST("/kick", membership, h.kick)
	rm.POST("/ban", membership, h.ban)
	rm.POST("/unban", membership, h.unban)
	rm.PUT("/send/:eventType/:txnId", send, h.send)
	rm.PUT("/state/:eventType", send, h.putState)
	rm.PUT("/state/:eventType/*stateKey", send, h.putState)
	rm.GET("/state", h.getAllState)
	rm.GET("/state/:eventType", h.getState)
	rm.GET("/state/:eventType/*stateKey", h.getState)
	rm.GET("/members", h.members)
	rm.GET("/joined_members", h.joinedMembers)
	rm.GET("/messages", h.messages)
	rm.GET("/context/:eventId", h.context)
	rm.GET("/event/:eventId", h.event)
	rm.PUT("/redact/:eventId/:txnId", send, h.redact)

	// Relations, threads, aliases and the directory, upgrades, reports,
	// spaces and search (relations.go … search.go).
	rm.GET("/aliases", h.roomAliases)
	rm.POST("/upgrade", rooms, h.upgrade)
	rm.POST("/report", reports, h.reportRoom)
	rm.POST("/report/:eventId", reports, h.reportEvent)
	c.POST("/users/:userId/report", reports, h.reportUser)
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
