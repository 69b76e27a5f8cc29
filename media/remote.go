package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Remote media (Server-Server API, "Content Repository"): a client asks
// this server for mxc://other/ID, and this server downloads it from other
// over federation, once. The bytes are then kept like an upload (a row of
// media under the origin's server name, with no uploader, naming a blob),
// so later requests, thumbnails and quarantine work as for local media,
// and media retention's RemoteUnaccessed expires what nobody reads.

// Federation is what media needs from federation (federation.Peers) to
// fetch other servers' media; nil in Deps with federation off.
type Federation interface {
	// Get makes a signed (X-Matrix) GET of path on server and returns the
	// response whatever its status; the caller closes its body.
	Get(ctx context.Context, server spec.ServerName, path string) (*http.Response, error)
	// GetURL makes an unsigned GET of an https URL a remote server
	// redirected to (the Location part of a multipart answer).
	GetURL(ctx context.Context, rawURL string) (*http.Response, error)
}

// Defaults for remote media.
const (
	// DefaultRemoteFetchTimeout bounds one download from another server,
	// from the request to the last byte.
	DefaultRemoteFetchTimeout = 2 * time.Minute
	// maxMetadataPart bounds the JSON part of a multipart answer (the spec
	// says it is an empty object today).
	maxMetadataPart = 64 << 10
)

var errFederationOff = spec.NotFound("remote media is not available: this server does not federate")

// remoteMedia returns the cached copy of another server's media, fetching
// it first if there is none. Concurrent requests for the same media share
// one fetch. With allowRemote false (the legacy endpoints' allow_remote),
// only the cache answers.
func (s *Service) remoteMedia(ctx context.Context, server spec.ServerName, mediaID string, timeout time.Duration, allowRemote bool) (*record, error) {
	if s.fed == nil {
		return nil, errFederationOff
	}
	r, err := s.getMedia(ctx, server, mediaID)
	if err != nil {
		return nil, err
	}
	if r != nil {
		if r.quarantined || r.pending() {
			return nil, errUnknownMedia
		}
		return r, nil
	}
	if !allowRemote {
		return nil, errUnknownMedia
	}
	key := string(server) + "/" + mediaID
	_, err = s.fetches.do(ctx, key, func() (struct{}, error) {
		// The fetch is shared, so it must not stop when the first
		// requester goes away; it has its own deadline.
		work, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RemoteFetchTimeout)
		defer cancel()
		return struct{}{}, s.fetchRemote(work, server, mediaID, timeout)
	})
	if err != nil {
		return nil, err
	}
	r, err = s.getMedia(ctx, server, mediaID)
	if err != nil {
		return nil, err
	}
	if r == nil || r.quarantined || r.pending() {
		return nil, errUnknownMedia // deleted or quarantined meanwhile
	}
	return r, nil
}

// fetchRemote downloads the media from its server and stores it: the
// authenticated federation endpoint first, and the deprecated
// unauthenticated one (allow_remote=false) only if the remote does not know
// the first, as the spec says.
func (s *Service) fetchRemote(ctx context.Context, server spec.ServerName, mediaID string, timeout time.Duration) error {
	q := "?timeout_ms=" + strconv.FormatInt(timeout.Milliseconds(), 10)
	resp, err := s.fed.Get(ctx, server, "/_matrix/federation/v1/media/download/"+url.PathEscape(mediaID)+q)
	if err != nil {
		return s.unreachable(server, err)
	}
	defer func() { resp.Body.Close() }() // readMultipart may wrap it with a redirect's body
	var content io.Reader
	var meta UploadMeta
	var code spec.ErrCode
	if resp.StatusCode != http.StatusOK {
		code = remoteErrcode(resp)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		content, meta, err = s.readMultipart(ctx, resp)
		if err != nil {
			s.log.Info().Str("origin", string(server)).Err(err).Msg("media: a remote server's media answer is malformed")
			return spec.NewError(spec.ErrUnknown, "%s sent a malformed media response", server).WithStatus(http.StatusBadGateway)
		}
	case resp.StatusCode == http.StatusNotFound && code == spec.ErrUnrecognized:
		legacy, err := s.fed.Get(ctx, server, "/_matrix/media/v3/download/"+url.PathEscape(string(server))+"/"+url.PathEscape(mediaID)+q+"&allow_remote=false")
		if err != nil {
			return s.unreachable(server, err)
		}
		defer legacy.Body.Close()
		if legacy.StatusCode != http.StatusOK {
			return remoteFailure(server, legacy.StatusCode, remoteErrcode(legacy))
		}
		content, meta = legacy.Body, metaFromHeaders(legacy.Header)
	default:
		return remoteFailure(server, resp.StatusCode, code)
	}
	return s.storeRemote(ctx, server, mediaID, meta, content)
}

// storeRemote stages content within the size limit and records it as the
// cached copy of mxc://server/mediaID.
func (s *Service) storeRemote(ctx context.Context, server spec.ServerName, mediaID string, meta UploadMeta, content io.Reader) error {
	meta = meta.normalize()
	if len(meta.Filename) > maxFilenameBytes {
		meta.Filename = ""
	}
	st, err := s.stageRemote(server, content)
	if err != nil {
		return err
	}
	return s.commitBlob(ctx, st, func(tx *storage.Tx, now int64) error {
		_, err := tx.Exec(`INSERT INTO media (server_name, media_id, uploader, created_ts, sha256, size, content_type, filename, uploaded_ts)
			VALUES ($1, $2, '', $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
			string(server), mediaID, now, st.sha256, st.size, meta.ContentType, nullIfEmpty(meta.Filename), now)
		return err
	})
}

// stageRemote receives a remote's content into a staged file, within the
// size limit for remote media.
func (s *Service) stageRemote(server spec.ServerName, content io.Reader) (*staged, error) {
	br := &bodyReader{r: content, max: s.cfg.MaxRemoteBytes, quotaLeft: -1}
	st, err := s.blobs.stage(br)
	if err != nil {
		switch {
		case errors.Is(br.err, errTooLarge):
			return nil, spec.TooLarge("the remote media is larger than this server accepts (%d bytes)", s.cfg.MaxRemoteBytes).WithStatus(http.StatusBadGateway)
		case br.err != nil:
			return nil, spec.NewError(spec.ErrUnknown, "the download from %s did not complete", server).WithStatus(http.StatusBadGateway)
		}
		return nil, err
	}
	return st, nil
}

// tooLarge reports whether err says the media is too large to fetch.
func tooLarge(err error) bool {
	var se *spec.Error
	return errors.As(err, &se) && se.Code == spec.ErrTooLarge
}

// thumbnailTypes are the types the spec says a remote's thumbnail should
// have; anything else is not served as one.
var thumbnailTypes = map[string]bool{"image/png": true, "image/apng": true, "image/jpeg": true, "image/gif": true, "image/webp": true}

// serveRemoteThumbnail answers a thumbnail of another server's media whose
// original is too large to fetch here: the origin's own thumbnail, asked
// over federation, received within the size limit into a temporary file,
// served, and not kept (the original is not here for it to belong to).
func (s *Service) serveRemoteThumbnail(c *gin.Context, server spec.ServerName, mediaID string, req thumbnailRequest) error {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.RemoteFetchTimeout)
	defer cancel()
	q := url.Values{"width": {strconv.Itoa(req.width)}, "height": {strconv.Itoa(req.height)}, "method": {req.method}}
	if req.animated {
		q.Set("animated", "true")
	}
	resp, err := s.fed.Get(ctx, server, "/_matrix/federation/v1/media/thumbnail/"+url.PathEscape(mediaID)+"?"+q.Encode())
	if err != nil {
		return s.unreachable(server, err)
	}
	defer func() { resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return remoteFailure(server, resp.StatusCode, remoteErrcode(resp))
	}
	content, meta, err := s.readMultipart(ctx, resp)
	if err != nil {
		s.log.Info().Str("origin", string(server)).Err(err).Msg("media: a remote server's thumbnail answer is malformed")
		return spec.NewError(spec.ErrUnknown, "%s sent a malformed thumbnail response", server).WithStatus(http.StatusBadGateway)
	}
	mt, _, _ := mime.ParseMediaType(meta.ContentType)
	if !thumbnailTypes[mt] {
		return spec.NewError(spec.ErrUnknown, "%s sent a thumbnail that is not an image", server).WithStatus(http.StatusBadGateway)
	}
	st, err := s.stageRemote(server, content)
	if err != nil {
		return err
	}
	defer s.blobs.discard(st)
	f, err := os.Open(st.tmpPath)
	if err != nil {
		return err
	}
	defer f.Close()
	h := c.Writer.Header()
	setServingHeaders(h)
	h.Set("Content-Type", mt)
	h.Set("Content-Disposition", `inline; filename="thumbnail.`+extensionOf[mt]+`"`)
	http.ServeContent(c.Writer, c.Request, "", time.Time{}, f)
	return nil
}

// readMultipart reads the federation answer: a JSON part (ignored but for
// its size), then either the content or a Location to fetch it from.
func (s *Service) readMultipart(ctx context.Context, resp *http.Response) (io.Reader, UploadMeta, error) {
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, UploadMeta{}, fmt.Errorf("content type %q is not multipart/mixed with a boundary", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	first, err := mr.NextPart()
	if err != nil {
		return nil, UploadMeta{}, fmt.Errorf("metadata part: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(first, maxMetadataPart+1))
	if err != nil || len(raw) > maxMetadataPart || !json.Valid(raw) {
		return nil, UploadMeta{}, errors.New("metadata part is not a JSON object within the limit")
	}
	second, err := mr.NextPart()
	if err != nil {
		return nil, UploadMeta{}, fmt.Errorf("content part: %w", err)
	}
	if loc := second.Header.Get("Location"); loc != "" {
		u, err := url.Parse(loc)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, UploadMeta{}, errors.New("the Location is not an https URL")
		}
		redirected, err := s.fed.GetURL(ctx, u.String())
		if err != nil {
			return nil, UploadMeta{}, fmt.Errorf("Location: %w", err)
		}
		// Closed with the outer response's body by the caller.
		resp.Body = closeBoth{resp.Body, redirected.Body}
		if redirected.StatusCode != http.StatusOK {
			return nil, UploadMeta{}, fmt.Errorf("Location answered %d", redirected.StatusCode)
		}
		return redirected.Body, metaFromHeaders(redirected.Header), nil
	}
	return second, metaFromHeaders(http.Header(second.Header)), nil
}

type closeBoth struct {
	io.ReadCloser
	other io.Closer
}

func (c closeBoth) Close() error {
	c.other.Close()
	return c.ReadCloser.Close()
}

// metaFromHeaders is the content type and file name a remote gave.
func metaFromHeaders(h http.Header) UploadMeta {
	m := UploadMeta{ContentType: h.Get("Content-Type")}
	if _, params, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil {
		m.Filename = params["filename"] // mime decodes filename* into it too
	}
	return m
}

// remoteErrcode is the errcode of a remote's JSON error, if it sent one.
func remoteErrcode(resp *http.Response) spec.ErrCode {
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return ""
	}
	var e struct {
		Errcode spec.ErrCode `json:"errcode"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxMetadataPart))
	_ = json.Unmarshal(b, &e)
	return e.Errcode
}

// remoteFailure turns a remote's refusal into the client's answer: unknown
// media is 404, media not uploaded yet 504 M_NOT_YET_UPLOADED, media too
// large for the remote 502 M_TOO_LARGE, anything else 502.
func remoteFailure(server spec.ServerName, status int, code spec.ErrCode) error {
	switch {
	case status == http.StatusNotFound:
		return errUnknownMedia
	case code == spec.ErrNotYetUploaded:
		return spec.NewError(spec.ErrNotYetUploaded, "the media has not been uploaded to %s yet", server).WithStatus(http.StatusGatewayTimeout)
	case code == spec.ErrTooLarge:
		return spec.TooLarge("%s will not serve media this large", server).WithStatus(http.StatusBadGateway)
	}
	return spec.NewError(spec.ErrUnknown, "%s answered the media request with status %d", server, status).WithStatus(http.StatusBadGateway)
}

// unreachable is the answer when the remote could not be asked at all.
func (s *Service) unreachable(server spec.ServerName, err error) error {
	var se *spec.Error
	if errors.As(err, &se) {
		return se // federation refused it (deny list)
	}
	s.log.Info().Str("origin", string(server)).Err(err).Msg("media: cannot fetch remote media")
	return spec.NewError(spec.ErrUnknown, "cannot fetch the media from %s", server).WithStatus(http.StatusBadGateway)
}
