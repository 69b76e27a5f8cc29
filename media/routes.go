package media

import (
	"github.com/chatalot/chatalot/api"
	"github.com/gin-gonic/gin"
)

// Routes mounts every path of the content repository and of VoIP.
// Handlers pass c.Request.Context(), never the *gin.Context itself, to
// anything that may outlive them (database/sql watches a query's context from
// a goroutine of its own, and gin reuses a Context once the handler returns).
// requireAuth is the auth middleware: it answers 401 itself and sets the
// caller that handlers read with auth.DeviceFrom.
func (s *Service) Routes(r *gin.Engine, requireAuth gin.HandlerFunc) {
	upload := api.BodyLimit(s.cfg.MaxUploadBytes)

	// Uploads: still under /_matrix/media in the current spec.
	// v3, and r0 for the r0 API's endpoints (upload, download, thumbnail,
	// config, preview_url).
	m := api.MediaAPI(r)
	m.POST("/upload", requireAuth, upload, api.Handle(s.handleUpload))
	r.POST("/_matrix/media/v1/create", requireAuth, api.Handle(s.handleCreate))
	m.PUT("/upload/:serverName/:mediaId", requireAuth, upload, api.Handle(s.handleUploadTo))

	// Authenticated media (v1.11).
	r.GET("/_matrix/client/v1/media/config", requireAuth, api.Handle(s.handleConfig))
	r.GET("/_matrix/client/v1/media/download/:serverName/:mediaId", requireAuth, api.Handle(s.handleDownload))
	r.GET("/_matrix/client/v1/media/download/:serverName/:mediaId/:fileName", requireAuth, api.Handle(s.handleDownload))
	r.GET("/_matrix/client/v1/media/thumbnail/:serverName/:mediaId", requireAuth, api.Handle(s.handleThumbnail))
	r.GET("/_matrix/client/v1/media/preview_url", requireAuth, api.Handle(s.handlePreviewURL))

	// Deprecated endpoints: config stays behind auth as it always was; the
	// unauthenticated download and thumbnail are frozen unless the admin
	// chose to serve them (old clients that cannot send a token).
	m.GET("/config", requireAuth, api.Handle(s.handleConfig))
	download, thumbnail := s.handleFrozen, s.handleFrozen
	if s.cfg.ServeUnauthenticated {
		download, thumbnail = s.handleDownload, s.handleThumbnail
	}
	m.GET("/download/:serverName/:mediaId", api.Handle(download))
	m.GET("/download/:serverName/:mediaId/:fileName", api.Handle(download))
	m.GET("/thumbnail/:serverName/:mediaId", api.Handle(thumbnail))
	m.GET("/preview_url", requireAuth, api.Handle(s.handlePreviewURL))

	api.ClientAPI(r, requireAuth).GET("/voip/turnServer", api.Handle(s.handleTURNServer))
}

// Capabilities are the entries media adds to /capabilities: URL previews
// are not offered.
func (s *Service) Capabilities() map[string]any {
	return map[string]any{URLPreviewsKey: map[string]bool{"enabled": false}}
}
