package media

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"net/http"
	"sync"
	"testing"
)

func thumbPath(id string, w, h int, method string) string {
	return fmt.Sprintf("/_matrix/client/v1/media/thumbnail/media.test/%s?width=%d&height=%d&method=%s", id, w, h, method)
}

func decodeDims(t testing.TB, b []byte) (int, int, string) {
	t.Helper()
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("thumbnail does not decode: %v", err)
	}
	return cfg.Width, cfg.Height, format
}

func TestThumbnails(t *testing.T) {
	e := newEnv(t, Config{})
	sources := map[string][]byte{
		"png 1000x500":  pngBytes(t, 1000, 500),
		"jpeg 640x480":  jpegBytes(t, 640, 480),
		"jpeg 50x40":    jpegBytes(t, 50, 40),
		"gif 300x300":   gifBytes(t, 300, 300),
		"gif 20x20":     gifBytes(t, 20, 20),
		"webp 600x400":  readTestdata(t, "lossy-600x400.webp"),
		"webp 400x301a": readTestdata(t, "alpha-400x301.webp"),
		"png 50x200":    pngBytes(t, 50, 200),
	}
	ids := map[string]string{}
	for name, b := range sources {
		ids[name] = e.upload(alice, b, "application/octet-stream", "") // the declared type does not matter
	}
	cases := []struct {
		source        string
		w, h          int
		method        string
		animated      bool
		wantW, wantH  int
		wantType      string
		wantIdentical bool // the original is returned
	}{
		// scale fits within the smallest standard box that covers the request
		{"png 1000x500", 320, 240, "scale", false, 320, 160, "image/png", false},
		{"png 1000x500", 100, 100, "scale", false, 320, 160, "image/png", false},
		{"png 1000x500", 800, 600, "scale", false, 800, 400, "image/png", false},
		{"png 1000x500", 96, 96, "crop", false, 96, 96, "image/png", false},
		{"png 1000x500", 32, 32, "crop", false, 32, 32, "image/png", false},
		{"png 1000x500", 400, 100, "crop", false, 400, 100, "image/png", false},
		{"jpeg 640x480", 320, 240, "scale", false, 320, 240, "image/jpeg", false},
		{"jpeg 640x480", 96, 96, "crop", false, 96, 96, "image/jpeg", false},
		{"jpeg 640x480", 640, 480, "scale", false, 640, 480, "image/jpeg", true},
		{"jpeg 640x480", 1000, 1000, "scale", false, 640, 480, "image/jpeg", true},
		{"jpeg 50x40", 96, 96, "crop", false, 50, 40, "image/jpeg", true},
		{"gif 300x300", 96, 96, "crop", false, 96, 96, "image/png", false},
		{"gif 300x300", 320, 240, "scale", false, 240, 240, "image/png", false},
		{"gif 20x20", 32, 32, "crop", false, 20, 20, "image/png", false}, // first frame only: animation not asked for
		{"gif 20x20", 32, 32, "crop", true, 20, 20, "image/gif", true},   // asked for: the animated original
		{"webp 600x400", 320, 240, "scale", false, 320, 213, "image/jpeg", false},
		{"webp 600x400", 96, 96, "crop", false, 96, 96, "image/jpeg", false},
		{"webp 400x301a", 320, 240, "scale", false, 319, 240, "image/png", false},
		{"png 50x200", 96, 96, "crop", false, 50, 96, "image/png", false}, // never enlarged
		{"png 50x200", 320, 240, "scale", false, 50, 200, "image/png", false},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s %dx%d %s animated=%v", c.source, c.w, c.h, c.method, c.animated), func(t *testing.T) {
			p := thumbPath(ids[c.source], c.w, c.h, c.method)
			if c.animated {
				p += "&animated=true"
			}
			r := e.do("GET", p, bob, nil, nil)
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			if got := r.header.Get("Content-Type"); got != c.wantType {
				t.Errorf("Content-Type %q, want %q", got, c.wantType)
			}
			w, h, _ := decodeDims(t, r.body)
			if w != c.wantW || h != c.wantH {
				t.Errorf("%dx%d, want %dx%d", w, h, c.wantW, c.wantH)
			}
			if identical := bytes.Equal(r.body, sources[c.source]); identical != c.wantIdentical {
				t.Errorf("original returned: %v, want %v", identical, c.wantIdentical)
			}
			if cd := r.header.Get("Content-Disposition"); cd != `inline; filename="thumbnail.`+extensionOf[c.wantType]+`"` {
				t.Errorf("Content-Disposition %q", cd)
			}
			if r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Content-Security-Policy") == "" {
				t.Errorf("serving headers missing: %v", r.header)
			}
		})
	}
}

func TestThumbnailMadeOnce(t *testing.T) {
	e := newEnv(t, Config{})
	src := pngBytes(t, 900, 900)
	a := e.upload(alice, src, "image/png", "")
	b := e.upload(bob, src, "image/png", "") // same bytes: same thumbnails
	var wg sync.WaitGroup
	etags := make([]string, 10)
	for i := range etags {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := a
			if i%2 == 1 {
				id = b
			}
			r := e.do("GET", thumbPath(id, 90, 70, "scale"), alice, nil, nil) // 320x240 box
			if r.status != 200 {
				t.Errorf("%d %s", r.status, r.body)
			}
			etags[i] = r.header.Get("ETag")
		}()
	}
	wg.Wait()
	for _, et := range etags {
		if et != etags[0] {
			t.Fatalf("different thumbnails: %v", etags)
		}
	}
	// Another request that maps to the same box is served from the cache.
	e.do("GET", thumbPath(a, 300, 200, "scale"), alice, nil, nil)
	if n := e.count(`SELECT COUNT(*) FROM media_thumbnails`); n != 1 {
		t.Fatalf("%d thumbnails stored, want 1", n)
	}
	// Thumbnails go with the last upload of their source.
	ctx := context.Background()
	e.svc.Delete(ctx, testServer, a)
	if n := e.count(`SELECT COUNT(*) FROM media_thumbnails`); n != 1 {
		t.Fatal("thumbnail removed while its source is still uploaded")
	}
	e.svc.Delete(ctx, testServer, b)
	if n := e.count(`SELECT COUNT(*) FROM media_thumbnails`); n != 0 {
		t.Fatal("thumbnail kept after its source was deleted")
	}
	if f := e.files("blobs"); len(f) != 0 {
		t.Fatalf("blobs left: %v", f)
	}
}

func TestThumbnailParams(t *testing.T) {
	e := newEnv(t, Config{})
	id := e.upload(alice, pngBytes(t, 100, 100), "image/png", "")
	base := "/_matrix/client/v1/media/thumbnail/media.test/" + id
	for _, c := range []struct {
		query   string
		status  int
		errcode string
	}{
		{"?height=32", 400, "M_MISSING_PARAM"},
		{"?width=32", 400, "M_MISSING_PARAM"},
		{"?width=-1&height=32", 400, "M_INVALID_PARAM"},
		{"?width=0&height=32", 400, "M_INVALID_PARAM"},
		{"?width=1.5&height=32", 400, "M_INVALID_PARAM"},
		{"?width=32&height=32&method=stretch", 400, "M_INVALID_PARAM"},
		{"?width=32&height=32&animated=maybe", 400, "M_INVALID_PARAM"},
		{"?width=99999999&height=99999999", 200, ""},
	} {
		r := e.do("GET", base+c.query, alice, nil, nil)
		if r.status != c.status || r.errcode() != c.errcode {
			t.Errorf("%s: %d %s", c.query, r.status, r.body)
		}
	}
}

// pngChunk appends one PNG chunk.
func pngChunk(b *bytes.Buffer, kind string, data []byte) {
	binary.Write(b, binary.BigEndian, uint32(len(data)))
	b.WriteString(kind)
	b.Write(data)
	crc := crc32.NewIEEE()
	crc.Write([]byte(kind))
	crc.Write(data)
	binary.Write(b, binary.BigEndian, crc.Sum32())
}

// pngBomb is a real decompression bomb: a valid grayscale PNG of w×h whose
// rows are all zero, a few hundred kilobytes on disk for w×h bytes decoded.
func pngBomb(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 8, 0 // 8-bit grayscale
	pngChunk(&b, "IHDR", ihdr)
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	row := make([]byte, 1+w)
	for y := 0; y < h; y++ {
		zw.Write(row)
	}
	zw.Close()
	pngChunk(&b, "IDAT", z.Bytes())
	pngChunk(&b, "IEND", nil)
	return b.Bytes()
}

// headerOnly images declare a huge size in their header and have no
// pixels worth the name: only the declared size can be checked.
func pngHeaderOnly(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6
	pngChunk(&b, "IHDR", ihdr)
	pngChunk(&b, "IDAT", []byte{0x78, 0x9c, 0x03, 0x00})
	pngChunk(&b, "IEND", nil)
	return b.Bytes()
}

func gifHeaderOnly(w, h uint16) []byte {
	b := []byte("GIF89a")
	b = binary.LittleEndian.AppendUint16(b, w)
	b = binary.LittleEndian.AppendUint16(b, h)
	b = append(b, 0, 0, 0, ';')
	return b
}

func jpegHeaderOnly(w, h uint16) []byte {
	b := []byte{0xFF, 0xD8}
	// A DQT table so that DecodeConfig reaches the SOF0 header.
	dqt := append([]byte{0xFF, 0xDB, 0x00, 0x43, 0x00}, bytes.Repeat([]byte{1}, 64)...)
	b = append(b, dqt...)
	sof := []byte{0xFF, 0xC0, 0x00, 0x0B, 0x08}
	sof = binary.BigEndian.AppendUint16(sof, h)
	sof = binary.BigEndian.AppendUint16(sof, w)
	sof = append(sof, 0x01, 0x01, 0x11, 0x00)
	b = append(b, sof...)
	return append(b, 0xFF, 0xDA, 0x00, 0x02) // start of scan: the header ends here
}

func webpHeaderOnly(w, h uint32) []byte {
	// RIFF/WEBP with a VP8X header declaring the canvas.
	vp8x := make([]byte, 10)
	vp8x[4], vp8x[5], vp8x[6] = byte(w-1), byte((w-1)>>8), byte((w-1)>>16)
	vp8x[7], vp8x[8], vp8x[9] = byte(h-1), byte((h-1)>>8), byte((h-1)>>16)
	var body bytes.Buffer
	body.WriteString("WEBP")
	body.WriteString("VP8X")
	binary.Write(&body, binary.LittleEndian, uint32(len(vp8x)))
	body.Write(vp8x)
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(body.Len()))
	b.Write(body.Bytes())
	return b.Bytes()
}

func TestThumbnailHostileImages(t *testing.T) {
	e := newEnv(t, Config{MaxThumbnailPixels: 4_000_000})
	valid := pngBytes(t, 200, 200)
	cases := []struct {
		name    string
		data    []byte
		status  int
		errcode string
	}{
		{"png bomb 8000x8000", pngBomb(t, 8000, 8000), 413, "M_TOO_LARGE"},
		{"png header 100000x100000", pngHeaderOnly(100000, 100000), 413, "M_TOO_LARGE"},
		// The PNG decoder itself refuses a size this absurd as invalid.
		{"png header 2^31-1 square", pngHeaderOnly(1<<31-1, 1<<31-1), 400, "M_UNKNOWN"},
		{"gif header 65535x65535", gifHeaderOnly(65535, 65535), 413, "M_TOO_LARGE"},
		{"jpeg header 65535x65535", jpegHeaderOnly(65535, 65535), 413, "M_TOO_LARGE"},
		{"webp header 16384x16384", webpHeaderOnly(1<<14, 1<<14), 413, "M_TOO_LARGE"},
		{"truncated png", valid[:len(valid)/2], 400, "M_UNKNOWN"},
		{"png with a corrupt body", append(append([]byte{}, valid[:60]...), bytes.Repeat([]byte{0xAA}, 500)...), 400, "M_UNKNOWN"},
		{"random bytes", randomBytes(t, 5000), 400, "M_UNKNOWN"},
		{"empty", nil, 400, "M_UNKNOWN"},
		{"html", []byte("<html><script>alert(1)</script></html>"), 400, "M_UNKNOWN"},
		{"bmp (not accepted)", append([]byte("BM"), make([]byte, 60)...), 400, "M_UNKNOWN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := e.upload(alice, c.data, "image/png", "")
			r := e.do("GET", thumbPath(id, 96, 96, "crop"), alice, nil, nil)
			if r.status != c.status || r.errcode() != c.errcode {
				t.Fatalf("%d %s, want %d %s", r.status, r.body, c.status, c.errcode)
			}
		})
	}
	// The server still serves.
	id := e.upload(alice, valid, "image/png", "")
	if r := e.do("GET", thumbPath(id, 96, 96, "crop"), alice, nil, nil); r.status != 200 {
		t.Fatalf("after hostile images: %d %s", r.status, r.body)
	}
}

func TestThumbnailSizes(t *testing.T) {
	for _, c := range []struct {
		w, h, wantW, wantH int
		method             string
	}{
		{1, 1, 32, 32, "crop"},
		{32, 32, 32, 32, "crop"},
		{33, 33, 96, 96, "crop"},
		{100, 100, 128, 128, "crop"},
		{100, 50, 100, 50, "crop"},
		{1, 1, 320, 240, "scale"},
		{320, 240, 320, 240, "scale"},
		{321, 240, 640, 480, "scale"},
		{800, 600, 800, 600, "scale"},
		{801, 600, 832, 640, "scale"},
		{5000, 5000, maxThumbnailSide, maxThumbnailSide, "scale"},
	} {
		if w, h := box(c.w, c.h, c.method); w != c.wantW || h != c.wantH {
			t.Errorf("box(%d, %d, %s) = %dx%d, want %dx%d", c.w, c.h, c.method, w, h, c.wantW, c.wantH)
		}
	}
}

var _ = http.StatusOK
