package media

import (
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// FederationRoutes mounts the content repository's federation endpoints on
// g, the group federation serves behind its X-Matrix check
// (/_matrix/federation). Only this server's own media is served: a cached
// copy of a third server's is never handed on (servers MUST download media
// from the server in its mxc:// URI).
func (s *Service) FederationRoutes(g gin.IRoutes) {
	g.GET("/v1/media/download/:mediaId", api.Handle(s.handleFederationDownload))
	g.GET("/v1/media/thumbnail/:mediaId", api.Handle(s.handleFederationThumbnail))
}

// localForFederation waits, as the request's timeout_ms allows, for this
// server's media of {mediaId}.
func (s *Service) localForFederation(c *gin.Context) (*record, error) {
	mediaID := c.Param("mediaId")
	if !validMediaID(mediaID) {
		return nil, spec.InvalidParam("invalid media ID")
	}
	return s.awaitRequested(c, s.serverName, mediaID)
}

// GET /_matrix/federation/v1/media/download/{mediaId}: this server's
// media as multipart/mixed, an empty JSON object then the bytes.
func (s *Service) handleFederationDownload(c *gin.Context) error {
	r, err := s.localForFederation(c)
	if err != nil {
		return err
	}
	return s.serveMultipart(c, r.sha256.String, r.contentType, contentDisposition(dispositionFor(r.contentType), r.filename))
}

// GET /_matrix/federation/v1/media/thumbnail/{mediaId}: a thumbnail of this
// server's media, made as for a local client, as multipart/mixed.
func (s *Service) handleFederationThumbnail(c *gin.Context) error {
	req, err := parseThumbnailRequest(c)
	if err != nil {
		return err
	}
	r, err := s.localForFederation(c)
	if err != nil {
		return err
	}
	res, err := s.thumbnail(c.Request.Context(), r.sha256.String, req)
	if err != nil {
		return err
	}
	return s.serveMultipart(c, res.sha256, res.contentType, `inline; filename="thumbnail.`+extensionOf[res.contentType]+`"`)
}

// serveMultipart writes the spec's two parts: the metadata ({}), then the
// blob with its type and disposition.
func (s *Service) serveMultipart(c *gin.Context, hash, contentType, disposition string) error {
	f, err := s.openBlob(hash)
	if err != nil {
		return err
	}
	defer f.Close()
	mw := multipart.NewWriter(c.Writer)
	c.Writer.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	c.Status(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err != nil {
		return nil // the remote went away; nothing more can be said
	}
	if _, err := io.WriteString(meta, "{}"); err != nil {
		return nil
	}
	part, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {contentType}, "Content-Disposition": {disposition}})
	if err != nil {
		return nil
	}
	if _, err := io.Copy(part, f); err != nil {
		return nil
	}
	_ = mw.Close()
	return nil
}
