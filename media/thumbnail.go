package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"strconv"
	"time"

	_ "image/gif" // decoders the thumbnailer accepts; nothing else is decoded
	_ "image/jpeg"
	_ "image/png"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/disintegration/imaging"
	"github.com/gin-gonic/gin"
	_ "golang.org/x/image/webp"
)

// GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}: a JPEG or
// PNG no larger than needed for width×height by method, made once per
// source and size and then served from disk.
func (s *Service) handleThumbnail(c *gin.Context) error {
	server, mediaID, err := parseMediaPath(c)
	if err != nil {
		return err
	}
	req, err := parseThumbnailRequest(c)
	if err != nil {
		return err
	}
	r, err := s.awaitRequested(c, server, mediaID)
	if server != s.serverName && tooLarge(err) {
		return s.serveRemoteThumbnail(c, server, mediaID, req)
	}
	if err != nil {
		return err
	}
	res, err := s.thumbnail(c.Request.Context(), r.sha256.String, req)
	if err != nil {
		return err
	}
	return s.serveBlob(c, servedBlob{
		sha256:      res.sha256,
		contentType: res.contentType,
		disposition: `inline; filename="thumbnail.` + extensionOf[res.contentType] + `"`,
		modified:    time.UnixMilli(r.uploadedTS),
	})
}

var extensionOf = map[string]string{"image/jpeg": "jpg", "image/png": "png", "image/apng": "png", "image/gif": "gif", "image/webp": "webp"}

// thumbnailRequest is what a client asked for.
type thumbnailRequest struct {
	width, height int
	method        string // crop or scale
	animated      bool
}

// maxThumbnailSide caps a requested side: past it a client gets the largest
// thumbnail the server makes, not a copy of a huge image.
const maxThumbnailSide = 2048

func parseThumbnailRequest(c *gin.Context) (thumbnailRequest, error) {
	var t thumbnailRequest
	dim := func(name string) (int, error) {
		v, ok := c.GetQuery(name)
		if !ok {
			return 0, spec.MissingParam("%s is required", name)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return 0, spec.InvalidParam("%s must be a positive integer", name)
		}
		return min(n, maxThumbnailSide), nil
	}
	var err error
	if t.width, err = dim("width"); err != nil {
		return t, err
	}
	if t.height, err = dim("height"); err != nil {
		return t, err
	}
	t.method = c.DefaultQuery("method", "scale")
	if t.method != "crop" && t.method != "scale" {
		return t, spec.InvalidParam("method must be crop or scale")
	}
	if v, ok := c.GetQuery("animated"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return t, spec.InvalidParam("animated must be true or false")
		}
		t.animated = b
	}
	return t, nil
}

// box is the size a request is served at: the smallest of the spec's
// standard sizes that covers it when there is one, so that clients asking
// for slightly different sizes share one cached thumbnail and the cache
// cannot be made to grow without bound; otherwise a size rounded up to a
// multiple of 64 (crop keeps non-square requests exact: their aspect is the
// point of asking).
func box(w, h int, method string) (int, int) {
	if method == "crop" {
		if w == h {
			for _, side := range []int{32, 96} {
				if w <= side {
					return side, side
				}
			}
			side := min(roundUp(w, 64), maxThumbnailSide)
			return side, side
		}
		return w, h
	}
	for _, std := range [][2]int{{320, 240}, {640, 480}, {800, 600}} {
		if w <= std[0] && h <= std[1] {
			return std[0], std[1]
		}
	}
	return min(roundUp(w, 64), maxThumbnailSide), min(roundUp(h, 64), maxThumbnailSide)
}

func roundUp(n, m int) int { return (n + m - 1) / m * m }

// thumbResult is what to serve: a blob and its type.
type thumbResult struct {
	sha256      string
	contentType string
}

var (
	errCannotThumbnail     = spec.NewError(spec.ErrUnknown, "cannot generate a thumbnail for this content")
	errTooLargeToThumbnail = spec.TooLarge("the image is too large to thumbnail")
	errSourceGone          = errors.New("the source media was deleted")
)

// thumbnailFormats are the decoders a thumbnail may come from. Others the
// image package may know (a library can register BMP or TIFF) are refused.
var thumbnailFormats = map[string]string{"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}

// thumbnail returns the thumbnail of the blob source for req, from the cache
// or made now. Concurrent requests for the same one share its making.
func (s *Service) thumbnail(ctx context.Context, source string, req thumbnailRequest) (thumbResult, error) {
	bw, bh := box(req.width, req.height, req.method)
	// The cache holds still images only. A request for animation first
	// has to learn whether the original itself is the answer.
	if !req.animated {
		if t, err := s.getThumbnail(ctx, source, bw, bh, req.method); err != nil || t != nil {
			return cached(t, err)
		}
	}
	key := fmt.Sprintf("%s/%dx%d/%s/%t", source, bw, bh, req.method, req.animated)
	return s.thumbs.do(ctx, key, func() (thumbResult, error) {
		// The making is shared, so it must not stop when the first
		// requester goes away; it is bounded by its own deadline.
		work, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if !req.animated {
			if t, err := s.getThumbnail(work, source, bw, bh, req.method); err != nil || t != nil {
				return cached(t, err)
			}
		}
		select {
		case s.thumbSlots <- struct{}{}:
		case <-work.Done():
			return thumbResult{}, work.Err()
		}
		defer func() { <-s.thumbSlots }()
		return s.makeThumbnail(work, source, bw, bh, req)
	})
}

// makeThumbnail decodes the source, if it is an image of an accepted format
// whose declared size is within the limit, scales or crops it, and stores
// the result. The declared size is read from the header alone (DecodeConfig)
// before any pixel is decoded: a few hundred bytes can declare an image of
// gigabytes (a decompression bomb), and it is refused with 413.
func (s *Service) makeThumbnail(ctx context.Context, source string, bw, bh int, req thumbnailRequest) (res thumbResult, err error) {
	f, err := s.openBlob(source)
	if err != nil {
		return thumbResult{}, err
	}
	defer f.Close()
	defer func() {
		// Image decoders parse hostile bytes; a panic in one must cost
		// this thumbnail, not the server.
		if p := recover(); p != nil {
			s.log.Warn().Str("sha256", source).Interface("panic", p).Msg("media: image decoder panicked")
			res, err = thumbResult{}, errCannotThumbnail
		}
	}()
	cfg, format, err := image.DecodeConfig(f)
	if err != nil {
		return thumbResult{}, errCannotThumbnail
	}
	sourceType, ok := thumbnailFormats[format]
	if !ok || cfg.Width <= 0 || cfg.Height <= 0 {
		return thumbResult{}, errCannotThumbnail
	}
	if int64(cfg.Width)*int64(cfg.Height) > s.cfg.MaxThumbnailPixels {
		return thumbResult{}, errTooLargeToThumbnail
	}
	if cfg.Width <= bw && cfg.Height <= bh && (format == "jpeg" || req.animated) {
		// Already small enough: the spec prefers the original. A GIF,
		// PNG or WebP may be animated, which is allowed only when asked for;
		// otherwise it is re-encoded below as its first frame.
		return thumbResult{sha256: source, contentType: sourceType}, nil
	}
	if req.animated {
		if t, err := s.getThumbnail(ctx, source, bw, bh, req.method); err != nil || t != nil {
			return cached(t, err)
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return thumbResult{}, err
	}
	img, err := imaging.Decode(f, imaging.AutoOrientation(true))
	if err != nil {
		return thumbResult{}, errCannotThumbnail
	}
	var out image.Image
	if req.method == "crop" {
		out = crop(img, bw, bh)
	} else {
		out = resize(img, bw, bh)
	}
	var buf bytes.Buffer
	contentType := "image/png"
	if format == "jpeg" || (format == "webp" && opaque(out)) {
		contentType = "image/jpeg"
		err = jpeg.Encode(&buf, out, &jpeg.Options{Quality: 85})
	} else {
		err = (&png.Encoder{CompressionLevel: png.DefaultCompression}).Encode(&buf, out)
	}
	if err != nil {
		return thumbResult{}, fmt.Errorf("media: encode thumbnail: %w", err)
	}
	st, err := s.blobs.stage(&buf)
	if err != nil {
		return thumbResult{}, err
	}
	ob := out.Bounds()
	err = s.commitBlob(ctx, st, func(tx *storage.Tx, now int64) error {
		// The source may have been deleted while this thumbnail was made;
		// its thumbnails are then not kept.
		var n int
		if err := tx.QueryRow(`SELECT COUNT(*) FROM media WHERE sha256 = $1`, source).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errSourceGone
		}
		_, err := tx.Exec(`INSERT INTO media_thumbnails (source_sha256, width, height, method, sha256, size, content_type, thumb_width, thumb_height, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
			source, bw, bh, req.method, st.sha256, st.size, contentType, ob.Dx(), ob.Dy(), now)
		return err
	})
	if errors.Is(err, errSourceGone) {
		return thumbResult{}, errUnknownMedia
	}
	if err != nil {
		return thumbResult{}, err
	}
	return thumbResult{sha256: st.sha256, contentType: contentType}, nil
}

func cached(t *thumbRow, err error) (thumbResult, error) {
	if err != nil {
		return thumbResult{}, err
	}
	return thumbResult{sha256: t.sha256, contentType: t.contentType}, nil
}

// resize is "scale": the image shrunk, keeping its aspect, to fit within
// bw×bh. Never enlarged.
func resize(img image.Image, bw, bh int) image.Image {
	sw, sh := img.Bounds().Dx(), img.Bounds().Dy()
	if sw <= bw && sh <= bh {
		return img
	}
	var w, h int
	if int64(bw)*int64(sh) <= int64(bh)*int64(sw) { // width is the tighter bound
		w, h = bw, max(1, int((int64(sh)*int64(bw)+int64(sw)/2)/int64(sw)))
	} else {
		w, h = max(1, int((int64(sw)*int64(bh)+int64(sh)/2)/int64(sh))), bh
	}
	return imaging.Resize(img, w, h, imaging.CatmullRom)
}

// crop is "crop": the image shrunk, keeping its aspect, until it just covers
// bw×bh, then cut to bw×bh around its centre. Never enlarged: a source
// smaller than the box on a side keeps that side.
func crop(img image.Image, bw, bh int) image.Image {
	sw, sh := img.Bounds().Dx(), img.Bounds().Dy()
	w, h := sw, sh
	if sw > bw && sh > bh {
		if int64(bw)*int64(sh) >= int64(bh)*int64(sw) { // width decides the scale
			w, h = bw, int((int64(sh)*int64(bw)+int64(sw)-1)/int64(sw))
		} else {
			w, h = int((int64(sw)*int64(bh)+int64(sh)-1)/int64(sh)), bh
		}
		img = imaging.Resize(img, w, h, imaging.CatmullRom)
	}
	return imaging.CropCenter(img, min(w, bw), min(h, bh))
}

// opaque reports whether an image has no transparent pixel, so that it can
// be a JPEG.
func opaque(img image.Image) bool {
	if o, ok := img.(interface{ Opaque() bool }); ok {
		return o.Opaque()
	}
	return false
}
