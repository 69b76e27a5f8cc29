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
	c.POST("/createRoom", rooms, api.Handle(h.createRoom))
	c.POST("/join/:roomIdOrAlias", membership, api.Handle(h.joinByIDOrAlias))
	c.POST("/knock/:roomIdOrAlias", membership, api.Handle(h.knock))
	c.GET("/joined_rooms", api.Handle(h.joinedRooms))

	rm := c.Group("/rooms/:roomId")
	rm.POST("/join", membership, api.Handle(h.join))
	rm.POST("/invite", membership, api.Handle(h.invite))
	rm.POST("/leave", membership, api.Handle(h.leave))
	rm.POST("/forget", membership, api.Handle(h.forget))
	rm.POST("/kick", membership, api.Handle(h.kick))
	rm.POST("/ban", membership, api.Handle(h.ban))
	rm.POST("/unban", membership, api.Handle(h.unban))
	rm.PUT("/send/:eventType/:txnId", send, api.Handle(h.send))
	rm.PUT("/state/:eventType", send, api.Handle(h.putState))
	rm.PUT("/state/:eventType/*stateKey", send, api.Handle(h.putState))
	rm.GET("/state", api.Handle(h.getAllState))
	rm.GET("/state/:eventType", api.Handle(h.getState))
	rm.GET("/state/:eventType/*stateKey", api.Handle(h.getState))
	rm.GET("/members", api.Handle(h.members))
	rm.GET("/joined_members", api.Handle(h.joinedMembers))
	rm.GET("/messages", api.Handle(h.messages))
	rm.GET("/context/:eventId", api.Handle(h.context))
	rm.GET("/event/:eventId", api.Handle(h.event))
	rm.PUT("/redact/:eventId/:txnId", send, api.Handle(h.redact))

	// Relations, threads, aliases and the directory, upgrades, reports,
	// spaces and search (relations.go … search.go).
	rm.GET("/aliases", api.Handle(h.roomAliases))
	rm.POST("/upgrade", rooms, api.Handle(h.upgrade))
	rm.POST("/report", reports, api.Handle(h.reportRoom))
	rm.POST("/report/:eventId", reports, api.Handle(h.reportEvent))
	c.POST("/users/:userId/report", reports, api.Handle(h.reportUser))
	c.PUT("/directory/room/:roomAlias", api.Handle(h.putAlias))
	c.DELETE("/directory/room/:roomAlias", api.Handle(h.deleteAlias))
	c.PUT("/directory/list/room/:roomId", api.Handle(h.putDirectoryVisibility))
	c.POST("/publicRooms", api.Handle(h.postPublicRooms))
	c.POST("/search", api.Handle(h.search))
	// Without an access token.
	public := api.ClientAPI(r)
	public.GET("/directory/room/:roomAlias", api.Handle(h.getAlias))
	public.GET("/directory/list/room/:roomId", api.Handle(h.getDirectoryVisibility))
	public.GET("/publicRooms", api.Handle(h.getPublicRooms))
	r.GET("/_matrix/client/v1/room_summary/:roomIdOrAlias", optionalAuth(requireAuth), api.Handle(h.roomSummary))

	v1 := r.Group("/_matrix/client/v1/rooms/:roomId", requireAuth)
	v1.GET("/relations/:eventId", api.Handle(h.relations))
	v1.GET("/relations/:eventId/:relType", api.Handle(h.relations))
	v1.GET("/relations/:eventId/:relType/:eventType", api.Handle(h.relations))
	v1.GET("/threads", api.Handle(h.threads))
	v1.GET("/hierarchy", api.Handle(h.hierarchy))
	v1.GET("/timestamp_to_event", api.Handle(h.timestampToEvent))
}
