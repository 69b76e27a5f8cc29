package admin

import (
	"github.com/chatalot/chatalot/api"
	"github.com/gin-gonic/gin"
)

// Routes mounts every path the admin package serves. requireAuth is the
// auth middleware (401 without a valid token); requireAdmin then answers
// 403 M_FORBIDDEN to anyone who is not a server admin, before any lookup.
//
// Chatalot's own additions live under /_synapse/admin/v1/chatalot/, a
// prefix Synapse does not use.
func (s *Service) Routes(r *gin.Engine, requireAuth gin.HandlerFunc) {
	r.GET("/.well-known/matrix/support", s.support)

	a := r.Group("/_synapse/admin", requireAuth, requireAdmin)
	a.GET("/v1/server_version", s.serverVersion)
	a.GET("/v1/chatalot/audit_log", s.auditLog)

	// Accounts.
	a.GET("/v2/users", s.listUsers)
	a.GET("/v2/users/:userId", s.getUser)
	a.PUT("/v2/users/:userId", s.putUser)
	a.GET("/v1/users/:userId/admin", s.getAdmin)
	a.PUT("/v1/users/:userId/admin", s.putAdmin)
	a.POST("/v1/deactivate/:userId", s.deactivate)
	a.POST("/v1/reset_password/:userId", s.resetPassword)
	a.PUT("/v1/suspend/:userId", s.putSuspendSynapse)
	a.GET("/v1/users/:userId/joined_rooms", s.joinedRooms)
	a.GET("/v1/users/:userId/memberships", s.memberships)
	a.GET("/v2/users/:userId/devices", s.listDevices)
	a.POST("/v2/users/:userId/delete_devices", s.deleteDevicesHandler)
	a.GET("/v2/users/:userId/devices/:deviceId", s.getDevice)
	a.DELETE("/v2/users/:userId/devices/:deviceId", s.deleteDevice)
	a.GET("/v1/whois/:userId", s.whois)
	a.GET("/v1/users/:userId/media", s.listUserMedia)
	a.DELETE("/v1/users/:userId/media", s.deleteUserMedia)

	// Invite codes.
	a.GET("/v1/registration_tokens", s.listTokens)
	a.POST("/v1/registration_tokens/new", s.newToken)
	a.GET("/v1/registration_tokens/:token", s.getToken)
	a.PUT("/v1/registration_tokens/:token", s.putToken)
	a.DELETE("/v1/registration_tokens/:token", s.deleteToken)

	// Rooms.
	a.GET("/v1/rooms", s.listRooms)
	a.GET("/v1/rooms/:roomId", s.roomDetails)
	a.GET("/v1/rooms/:roomId/members", s.roomMembers)
	a.GET("/v1/rooms/:roomId/state", s.roomState)
	a.GET("/v1/rooms/:roomId/block", s.getBlock)
	a.PUT("/v1/rooms/:roomId/block", s.putBlock)
	a.DELETE("/v1/rooms/:roomId", s.deleteRoomV1)
	a.DELETE("/v2/rooms/:roomId", s.deleteRoomV2)
	a.GET("/v2/rooms/:roomId/delete_status", s.deleteStatusByRoom)
	a.GET("/v2/rooms/delete_status/:deleteId", s.deleteStatusByID)
	a.POST("/v1/purge_history/:roomId", s.purgeHistory)
	a.POST("/v1/purge_history/:roomId/:eventId", s.purgeHistory)
	a.GET("/v1/purge_history_status/:purgeId", s.purgeStatus)

	// Reports.
	a.GET("/v1/event_reports", s.listReports)
	a.GET("/v1/event_reports/:reportId", s.getReport)
	a.DELETE("/v1/event_reports/:reportId", s.deleteReport)

	// Media.
	a.POST("/v1/media/quarantine/:serverName/:mediaId", s.quarantine)
	a.POST("/v1/media/unquarantine/:serverName/:mediaId", s.unquarantine)
	a.GET("/v1/media/:serverName/:mediaId", s.getMedia)
	a.DELETE("/v1/media/:serverName/:mediaId", s.deleteMedia)

	// Server notices.
	a.POST("/v1/send_server_notice", s.sendNotice)
	a.PUT("/v1/send_server_notice/:txnId", s.sendNotice)

	// The client-server API's account moderation (v1.18) and whois.
	// Reading your own lock status needs no admin rights (getLock).
	r.GET("/_matrix/client/v1/admin/lock/:userId", requireAuth, s.getLock)
	m := r.Group("/_matrix/client/v1/admin", requireAuth, requireAdmin)
	m.PUT("/lock/:userId", s.putLock)
	m.GET("/suspend/:userId", s.getSuspend)
	m.PUT("/suspend/:userId", s.putSuspend)
	api.ClientAPI(r, requireAuth).GET("/admin/whois/:userId", s.whoisClient) // v3 and r0
}

// Hooks wires the admin policies into auth and rooms; call it before
// serving.
func (s *Service) Hooks() {
	s.auth.SetAccessPolicy(s)
	if s.rooms != nil {
		s.rooms.SetMembershipGuard(s.guardMembership)
	}
}
