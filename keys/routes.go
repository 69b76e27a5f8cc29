package keys

import (
	"github.com/chatalot/chatalot/api"
	"github.com/gin-gonic/gin"
)

// Routes mounts every endpoint of the package behind requireAuth (the
// middleware that sets auth.DeviceFrom). Each route's body cap is set here:
// key uploads, to-device messages and backups each have their own, and a
// larger body gets M_TOO_LARGE.
func (s *Service) Routes(r *gin.Engine, requireAuth gin.HandlerFunc) {
	keysLimit := api.BodyLimit(s.cfg.MaxKeyUploadBytes)
	{
		g := api.ClientAPI(r, requireAuth) // v3, and r0 for the r0 API's endpoints
		g.POST("/keys/upload", keysLimit, api.Handle(s.handleUpload))
		g.POST("/keys/query", keysLimit, api.Handle(s.handleQuery))
		g.POST("/keys/claim", keysLimit, api.Handle(s.handleClaim))
		g.GET("/keys/changes", api.Handle(s.handleChanges))
		g.POST("/keys/device_signing/upload", keysLimit, api.Handle(s.handleDeviceSigningUpload))
		g.POST("/keys/signatures/upload", keysLimit, api.Handle(s.handleSignaturesUpload))

		g.PUT("/sendToDevice/:eventType/:txnId", api.BodyLimit(s.cfg.MaxToDeviceBytes), api.Handle(s.handleSendToDevice))

		g.POST("/room_keys/version", keysLimit, api.Handle(s.handleCreateBackup))
		g.GET("/room_keys/version", api.Handle(s.handleGetBackup))
		g.GET("/room_keys/version/:version", api.Handle(s.handleGetBackup))
		g.PUT("/room_keys/version/:version", keysLimit, api.Handle(s.handleUpdateBackup))
		g.DELETE("/room_keys/version/:version", api.Handle(s.handleDeleteBackup))
		backupLimit := api.BodyLimit(s.cfg.MaxBackupUploadBytes)
		for _, p := range []string{"/room_keys/keys", "/room_keys/keys/:roomId", "/room_keys/keys/:roomId/:sessionId"} {
			g.PUT(p, backupLimit, api.Handle(s.handlePutBackupKeys))
			g.GET(p, api.Handle(s.handleGetBackupKeys))
			g.DELETE(p, api.Handle(s.handleDeleteBackupKeys))
		}
	}
	d := r.Group("/_matrix/client/unstable/org.matrix.msc3814.v1", requireAuth)
	d.PUT("/dehydrated_device", keysLimit, api.Handle(s.handlePutDehydrated))
	d.GET("/dehydrated_device", api.Handle(s.handleGetDehydrated))
	d.DELETE("/dehydrated_device", api.Handle(s.handleDeleteDehydrated))
	d.POST("/dehydrated_device/:deviceId/events", keysLimit, api.Handle(s.handleDehydratedEvents))
}
