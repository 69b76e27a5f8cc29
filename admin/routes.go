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
	r.GET("/.well-known/matrix/support", api.Handle(s.support))

	a := r.Group("/_synapse/admin", requireAuth, requireAdmin)
	a.GET("/v1/server_version", api.Handle(s.serverVersion))
	a.GET("/v1/chatalot/audit_log", api.Handle(s.auditLog))
	a.GET("/v1/chatalot/database", api.Handle(s.databaseSpace))
	a.POST("/v1/chatalot/database/compact", api.Handle(s.compact))

	// Accounts.
	a.GET("/v2/users", api.Handle(s.listUsers))
	a.GET("/v2/users/:userId", api.Handle(s.getUser))
	a.PUT("/v2/users/:userId", api.Handle(s.putUser))
	a.GET("/v1/users/:userId/admin", api.Handle(s.getAdmin))
	a.PUT("/v1/users/:userId/admin", api.Handle(s.putAdmin))
	a.POST("/v1/deactivate/:userId", api.Handle(s.deactivate))
	a.POST("/v1/reset_password/:userId", api.Handle(s.resetPassword))
	a.PUT("/v1/suspend/:userId", api.Handle(s.putSuspendSynapse))
	a.GET("/v1/users/:userId/joined_rooms", api.Handle(s.joinedRooms))
	a.GET("/v1/users/:userId/memberships", api.Handle(s.memberships))
	a.GET("/v2/users/:userId/devices", api.Handle(s.listDevices))
	a.POST("/v2/users/:userId/delete_devices", api.Handle(s.deleteDevicesHandler))
	a.GET("/v2/users/:userId/devices/:deviceId", api.Handle(s.getDevice))
	a.DELETE("/v2/users/:userId/devices/:deviceId", api.Handle(s.deleteDevice))
	a.GET("/v1/whois/:userId", api.Handle(s.whois))
	a.GET("/v1/users/:userId/media", api.Handle(s.listUserMedia))
	a.DELETE("/v1/users/:userId/media", api.Handle(s.deleteUserMedia))

	// Invite codes.
	a.GET("/v1/registration_tokens", api.Handle(s.listTokens))
	a.POST("/v1/registration_tokens/new", api.Handle(s.newToken))
	a.GET("/v1/registration_tokens/:token", api.Handle(s.getToken))
	a.PUT("/v1/registration_tokens/:token", api.Handle(s.putToken))
	a.DELETE("/v1/registration_tokens/:token", api.Handle(s.deleteToken))

	// Rooms.
	a.GET("/v1/rooms", api.Handle(s.listRooms))
	a.GET("/v1/rooms/:roomId", api.Handle(s.roomDetails))
	a.GET("/v1/rooms/:roomId/members", api.Handle(s.roomMembers))
	a.GET("/v1/rooms/:roomId/state", api.Handle(s.roomState))
	a.GET("/v1/rooms/:roomId/block", api.Handle(s.getBlock))
	a.PUT("/v1/rooms/:roomId/block", api.Handle(s.putBlock))
	a.DELETE("/v1/rooms/:roomId", api.Handle(s.deleteRoomV1))
	a.DELETE("/v2/rooms/:roomId", api.Handle(s.deleteRoomV2))
	a.GET("/v2/rooms/:roomId/delete_status", api.Handle(s.deleteStatusByRoom))
	a.GET("/v2/rooms/delete_status/:deleteId", api.Handle(s.deleteStatusByID))
	a.POST("/v1/purge_history/:roomId", api.Handle(s.purgeHistory))
	a.POST("/v1/purge_history/:roomId/:eventId", api.Handle(s.purgeHistory))
	a.GET("/v1/purge_history_status/:purgeId", api.Handle(s.purgeStatus))

	// Reports.
	a.GET("/v1/event_reports", api.Handle(s.listReports))
	a.GET("/v1/event_reports/:reportId", api.Handle(s.getReport))
	a.DELETE("/v1/event_reports/:reportId", api.Handle(s.deleteReport))

	// Media.
	a.POST("/v1/media/quarantine/:serverName/:mediaId", api.Handle(s.quarantine))
	a.POST("/v1/media/unquarantine/:serverName/:mediaId", api.Handle(s.unquarantine))
	a.GET("/v1/media/:serverName/:mediaId", api.Handle(s.getMedia))
	a.DELETE("/v1/media/:serverName/:mediaId", api.Handle(s.deleteMedia))
	a.POST("/v1/media/delete", api.Handle(s.deleteOldMedia))
	a.POST("/v1/media/:serverName/delete", api.Handle(s.deleteOldMedia))
	a.POST("/v1/purge_media_cache", api.Handle(s.purgeMediaCache))
	a.POST("/v1/chatalot/media/retention", api.Handle(s.mediaRetentionNow))
	a.POST("/v1/chatalot/rooms/collect_forgotten", api.Handle(s.collectForgotten))

	// Server notices.
	a.POST("/v1/send_server_notice", api.Handle(s.sendNotice))
	a.PUT("/v1/send_server_notice/:txnId", api.Handle(s.sendNotice))

	// The client-server API's account moderation (v1.18) and whois.
	// Reading your own lock status needs no admin rights (getLock).
	r.GET("/_matrix/client/v1/admin/lock/:userId", requireAuth, api.Handle(s.getLock))
	m := r.Group("/_matrix/client/v1/admin", requireAuth, requireAdmin)
	m.PUT("/lock/:userId", api.Handle(s.putLock))
	m.GET("/suspend/:userId", api.Handle(s.getSuspend))
	m.PUT("/suspend/:userId", api.Handle(s.putSuspend))
	api.ClientAPI(r, requireAuth).GET("/admin/whois/:userId", api.Handle(s.whoisClient)) // v3 and r0
}
