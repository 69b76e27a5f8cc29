package rooms

import "github.com/gin-gonic/gin"

// Routes mounts every path the rooms package serves; requireAuth is the
// auth middleware.
func (s *Service) Routes(r *gin.Engine, requireAuth gin.HandlerFunc) {
	h := &handlers{s: s}
	c := r.Group("/_matrix/client/v3", requireAuth)
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
	rm.PUT("/send/:eventType/:txnId", h.send)
	rm.PUT("/state/:eventType", h.putState)
	rm.PUT("/state/:eventType/*stateKey", h.putState)
	rm.GET("/state", h.getAllState)
	rm.GET("/state/:eventType", h.getState)
	rm.GET("/state/:eventType/*stateKey", h.getState)
	rm.GET("/members", h.members)
	rm.GET("/joined_members", h.joinedMembers)
	rm.GET("/messages", h.messages)
	rm.GET("/context/:eventId", h.context)
	rm.GET("/event/:eventId", h.event)
	rm.PUT("/redact/:eventId/:txnId", h.redact)
}
