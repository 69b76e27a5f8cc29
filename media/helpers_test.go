package media

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/chatalot/chatalot/auth/authtest"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

const testServer = spec.ServerName("media.test")

// env is one service on a real SQLite database in a temporary directory,
// mounted on the real router behind a stand-in for the auth middleware.
type env struct {
	t    testing.TB
	svc  *Service
	db   *storage.DB
	dir  string
	srv  *httptest.Server
	now  time.Time
	logs *lockedBuffer
}

// lockedBuffer collects the logs of concurrent requests.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	return newServerEnv(t, cfg, testServer, nil)
}

// newServerEnv is newEnv for a server of another name, fetching remote
// media through fed (nil: federation off), with its federation media
// routes mounted (unsigned: the X-Matrix check is federation's).
func newServerEnv(t testing.TB, cfg Config, name spec.ServerName, fed Federation) *env {
	t.Helper()
	root := t.TempDir()
	db, err := storage.Open(pgtest.Location(t, root, "test.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(context.Background(), Schema); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, dir: filepath.Join(root, "media"), now: time.Now(), logs: &lockedBuffer{}}
	log := zerolog.New(e.logs)
	svc, err := New(Deps{DB: db, Dir: e.dir, ServerName: name, Config: cfg, Log: log, Now: func() time.Time { return e.now }, Federation: fed})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	r := api.NewRouter(api.Options{Log: log})
	svc.Routes(r, authtest.Middleware)
	svc.FederationRoutes(r.Group("/_matrix/federation"))
	e.srv = httptest.NewServer(r)
	t.Cleanup(func() {
		e.srv.Close()
		db.Close()
	})
	return e
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not JSON: %v: %q", err, r.body)
	}
	return m
}

func (r resp) errcode() string {
	var m struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(r.body, &m)
	return m.Errcode
}

// do sends a request as user ("" for none).
func (e *env) do(method, path, user string, body io.Reader, header map[string]string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+user)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// upload posts data and returns the media ID.
func (e *env) upload(user string, data []byte, contentType, filename string) string {
	e.t.Helper()
	path := "/_matrix/media/v3/upload"
	if filename != "" {
		path += "?filename=" + urlQueryEscape(filename)
	}
	r := e.do("POST", path, user, bytes.NewReader(data), map[string]string{"Content-Type": contentType})
	if r.status != http.StatusOK {
		e.t.Fatalf("upload: %d %s", r.status, r.body)
	}
	uri, _ := r.json(e.t)["content_uri"].(string)
	id, ok := strings.CutPrefix(uri, "mxc://"+string(e.svc.serverName)+"/")
	if !ok || !validMediaID(id) {
		e.t.Fatalf("upload: content_uri %q", uri)
	}
	return id
}

func (e *env) download(user, id string) resp {
	e.t.Helper()
	return e.do("GET", "/_matrix/client/v1/media/download/"+string(testServer)+"/"+id, user, nil, nil)
}

// files lists the regular files under a directory of the media store.
func (e *env) files(sub string) []string {
	e.t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(e.dir, sub), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func urlQueryEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
		}
	}
	return b.String()
}

// Test images, made in code.

func gradient(w, h int, alpha bool) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			a := uint8(255)
			if alpha && (x+y)%2 == 0 {
				a = 128
			}
			img.SetNRGBA(x, y, color.NRGBA{uint8(x * 255 / max(1, w-1)), uint8(y * 255 / max(1, h-1)), 90, a})
		}
	}
	return img
}

func pngBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	// Not the encoder settings the thumbnailer uses, so that a re-encoded
	// image is never mistaken for the original.
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&b, gradient(w, h, true)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func jpegBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, gradient(w, h, false), &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// gifBytes makes a two-frame animated GIF.
func gifBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	pal := color.Palette{color.Black, color.White, color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}}
	frames := make([]*image.Paletted, 2)
	for i := range frames {
		p := image.NewPaletted(image.Rect(0, 0, w, h), pal)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				p.SetColorIndex(x, y, uint8((x/8+y/8+i)%4))
			}
		}
		frames[i] = p
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, &gif.GIF{Image: frames, Delay: []int{10, 10}}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
