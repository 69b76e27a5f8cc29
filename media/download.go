package media

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]:
// the bytes as uploaded, waiting up to timeout_ms for media still pending.
func (s *Service) handleDownload(c *gin.Context) error {
	server, mediaID, err := parseMediaPath(c)
	if err != nil {
		return err
	}
	r, err := s.awaitRequested(c, server, mediaID)
	if err != nil {
		return err
	}
	name := r.filename
	if p, ok := c.Params.Get("fileName"); ok {
		name = p
	}
	return s.serveBlob(c, servedBlob{
		sha256:      r.sha256.String,
		contentType: r.contentType,
		disposition: contentDisposition(dispositionFor(r.contentType), name),
		modified:    time.UnixMilli(r.uploadedTS),
	})
}

// awaitRequested waits for the media as long as the request's timeout_ms
// allows; another server's is fetched from it the first time (remote.go).
func (s *Service) awaitRequested(c *gin.Context, server spec.ServerName, mediaID string) (*record, error) {
	timeout, err := parseTimeout(c)
	if err != nil {
		return nil, err
	}
	var r *record
	if server == s.serverName {
		r, err = s.awaitMedia(c.Request.Context(), server, mediaID, timeout)
	} else {
		// The legacy endpoints' allow_remote=false: only what is cached.
		r, err = s.remoteMedia(c.Request.Context(), server, mediaID, timeout, c.Query("allow_remote") != "false")
	}
	if err == nil {
		s.touch(c.Request.Context(), r)
	}
	return r, err
}

// servedBlob is a stored blob and what its response says about it.
type servedBlob struct {
	sha256      string
	contentType string
	disposition string // the Content-Disposition header
	modified    time.Time
}

// serveBlob answers with the blob's bytes. http.ServeContent answers Range
// and If-None-Match requests too.
func (s *Service) serveBlob(c *gin.Context, b servedBlob) error {
	f, err := s.openBlob(b.sha256)
	if err != nil {
		return err
	}
	defer f.Close()
	h := c.Writer.Header()
	setServingHeaders(h)
	h.Set("Content-Type", b.contentType)
	h.Set("Content-Disposition", b.disposition)
	h.Set("ETag", `"`+b.sha256+`"`)
	http.ServeContent(c.Writer, c.Request, "", b.modified, f)
	return nil
}

// GET /_matrix/media/v3/download/… and /_matrix/media/v3/thumbnail/…: the
// deprecated unauthenticated endpoints, frozen unless the admin set
// Config.ServeUnauthenticated (then download and thumbnail answer them). Every piece of Chatalot
// media is uploaded after authenticated media existed, so none is served
// here; the answer is the same whether the ID exists or not, so that the
// endpoint tells an anonymous caller nothing.
func (s *Service) handleFrozen(c *gin.Context) error {
	return spec.NotFound("unauthenticated media access is frozen: use the authenticated /_matrix/client/v1/media endpoints")
}

// GET /_matrix/client/v1/media/config (and the deprecated
// /_matrix/media/v3/config): the upload limit. URL previews are not
// offered; the namespaced key says so to clients that look.
func (s *Service) handleConfig(c *gin.Context) error {
	c.JSON(http.StatusOK, gin.H{"m.upload.size": s.cfg.MaxUploadBytes, URLPreviewsKey: false})
	return nil
}

// URLPreviewsKey is the namespaced key that /media/config and the
// capabilities use to say whether URL previews are offered.
const URLPreviewsKey = "org.chatalot.url_previews"

// GET /_matrix/client/v1/media/preview_url (and /_matrix/media/v3/…): not
// offered. Fetching URLs that users read would tell third parties what they
// read, defeat end-to-end encryption's purpose, and let the server be used
// to reach internal addresses (SSRF). The answer is the spec's error for an
// endpoint a server does not implement.
func (s *Service) handlePreviewURL(c *gin.Context) error {
	return spec.Unrecognized("URL previews are not offered by this server")
}

// parseMediaPath reads {serverName} and {mediaId} and checks them against
// the spec's grammar before anything else sees them: a valid server name,
// and a media ID of A-Z a-z 0-9 _ - only.
func parseMediaPath(c *gin.Context) (spec.ServerName, string, error) {
	server, err := spec.ParseServerName(c.Param("serverName"))
	if err != nil {
		return "", "", spec.InvalidParam("invalid server name in the media URI")
	}
	mediaID := c.Param("mediaId")
	if !validMediaID(mediaID) {
		return "", "", spec.InvalidParam("invalid media ID")
	}
	return server, mediaID, nil
}

func validMediaID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Waiting for pending media: the spec's default, and the most a client may
// ask for.
const (
	defaultTimeout = 20 * time.Second
	maxTimeout     = 60 * time.Second
)

func parseTimeout(c *gin.Context) (time.Duration, error) {
	v, ok := c.GetQuery("timeout_ms")
	if !ok {
		return defaultTimeout, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, spec.InvalidParam("timeout_ms must be a non-negative integer")
	}
	d := time.Duration(ms) * time.Millisecond
	if ms > maxTimeout.Milliseconds() {
		d = maxTimeout
	}
	return d, nil
}

var errUnknownMedia = spec.NotFound("unknown media")

// awaitMedia returns this server's uploaded media, waiting up to timeout if
// it is still pending; unknown, expired and quarantined media are all 404.
func (s *Service) awaitMedia(ctx context.Context, server spec.ServerName, mediaID string, timeout time.Duration) (*record, error) {
	var timer <-chan time.Time
	for {
		woken := s.uploaded.wait()
		r, err := s.getMedia(ctx, server, mediaID)
		if err != nil {
			return nil, err
		}
		switch {
		case r == nil, r.quarantined:
			return nil, errUnknownMedia
		case !r.pending():
			return r, nil
		case r.expiresTS.Int64 < s.now().UnixMilli():
			return nil, errUnknownMedia
		}
		if timer == nil {
			t := time.NewTimer(timeout)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-woken:
		case <-timer:
			return nil, spec.NewError(spec.ErrNotYetUploaded, "the media has not been uploaded yet")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// openBlob opens the bytes a row names. A row whose blob is missing is a
// fault of the server (the disk was tampered with); the client sees 404.
func (s *Service) openBlob(hash string) (*os.File, error) {
	f, err := s.blobs.open(hash)
	if errors.Is(err, os.ErrNotExist) {
		s.log.Error().Str("sha256", hash).Msg("media: a stored blob is missing")
		return nil, errUnknownMedia
	}
	return f, err
}
