package media

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const alice, bob = "@alice:media.test", "@bob:media.test"

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUploadDownloadRoundTrip(t *testing.T) {
	e := newEnv(t, Config{})
	cases := []struct {
		name        string
		size        int
		contentType string
		wantType    string
	}{
		{"empty", 0, "text/plain", "text/plain"},
		{"one byte", 1, "application/octet-stream", "application/octet-stream"},
		{"small text with charset", 1000, "text/plain; charset=utf-8", "text/plain; charset=utf-8"},
		{"no content type", 4096, "", "application/octet-stream"},
		{"garbage content type", 4096, "not a type", "application/octet-stream"},
		{"multi-megabyte", 3<<20 + 17, "application/pdf", "application/pdf"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := randomBytes(t, c.size)
			id := e.upload(alice, data, c.contentType, "")
			r := e.download(bob, id) // any signed-in user may download
			if r.status != http.StatusOK {
				t.Fatalf("download: %d %s", r.status, r.body)
			}
			if !bytes.Equal(r.body, data) {
				t.Fatalf("downloaded %d bytes, not the %d uploaded", len(r.body), len(data))
			}
			if got := r.header.Get("Content-Type"); got != c.wantType {
				t.Errorf("Content-Type %q, want %q", got, c.wantType)
			}
			if got := r.header.Get("Content-Length"); got != fmt.Sprint(c.size) {
				t.Errorf("Content-Length %q, want %d", got, c.size)
			}
		})
	}
	// Nothing is left in the staging directory after complete uploads.
	if f := e.files("tmp"); len(f) != 0 {
		t.Errorf("leftover temporary files: %v", f)
	}
}

func TestDownloadRange(t *testing.T) {
	e := newEnv(t, Config{})
	data := randomBytes(t, 10000)
	id := e.upload(alice, data, "video/mp4", "")
	r := e.do("GET", "/_matrix/client/v1/media/download/media.test/"+id, alice, nil, map[string]string{"Range": "bytes=100-199"})
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, data[100:200]) {
		t.Fatalf("range: %d, %d bytes", r.status, len(r.body))
	}
	etag := r.header.Get("ETag")
	r = e.do("GET", "/_matrix/client/v1/media/download/media.test/"+id, alice, nil, map[string]string{"If-None-Match": etag})
	if r.status != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", r.status)
	}
}

func TestDeduplication(t *testing.T) {
	e := newEnv(t, Config{})
	data := randomBytes(t, 50000)
	a := e.upload(alice, data, "application/octet-stream", "a.bin")
	b := e.upload(bob, data, "image/png", "b.png")
	if a == b {
		t.Fatal("two uploads got one media ID")
	}
	if n := len(e.files("blobs")); n != 1 {
		t.Fatalf("%d blobs for two equal uploads, want 1", n)
	}
	// Each keeps its own metadata.
	if r := e.download(alice, b); r.header.Get("Content-Type") != "image/png" || !strings.Contains(r.header.Get("Content-Disposition"), "b.png") {
		t.Errorf("b: %v", r.header)
	}
	ctx := context.Background()
	if err := e.svc.Delete(ctx, testServer, a); err != nil {
		t.Fatal(err)
	}
	if n := len(e.files("blobs")); n != 1 {
		t.Fatalf("the shared blob went with the first delete")
	}
	if r := e.download(alice, b); r.status != 200 || !bytes.Equal(r.body, data) {
		t.Fatalf("b after deleting a: %d", r.status)
	}
	if err := e.svc.Delete(ctx, testServer, b); err != nil {
		t.Fatal(err)
	}
	if n := len(e.files("blobs")); n != 0 {
		t.Fatalf("%d blobs left after deleting every upload", n)
	}
}

func TestUploadSizeLimit(t *testing.T) {
	e := newEnv(t, Config{MaxUploadBytes: 1000})
	cases := []struct {
		name       string
		size       int
		chunked    bool
		wantStatus int
	}{
		{"at the limit", 1000, false, 200},
		{"over, with Content-Length", 1001, false, 413},
		{"over, chunked", 5000, true, 413},
		{"at the limit, chunked", 1000, true, 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(randomBytes(t, c.size))
			if c.chunked {
				body = io.MultiReader(body) // unknown length: sent chunked
			}
			r := e.do("POST", "/_matrix/media/v3/upload", alice, body, nil)
			if r.status != c.wantStatus {
				t.Fatalf("status %d, want %d: %s", r.status, c.wantStatus, r.body)
			}
			if c.wantStatus == 413 && r.errcode() != "M_TOO_LARGE" {
				t.Errorf("errcode %q", r.errcode())
			}
		})
	}
	if n := e.count(`SELECT COUNT(*) FROM media`); n != 2 {
		t.Errorf("%d media rows, want the 2 within the limit", n)
	}
	if f := e.files("tmp"); len(f) != 0 {
		t.Errorf("refused uploads left temporary files: %v", f)
	}
	if n := len(e.files("blobs")); n != 2 {
		t.Errorf("%d blobs, want 2", n)
	}
	cfg := e.do("GET", "/_matrix/client/v1/media/config", alice, nil, nil).json(t)
	if cfg["m.upload.size"] != float64(1000) {
		t.Errorf("config: %v", cfg)
	}
}

func TestQuota(t *testing.T) {
	e := newEnv(t, Config{QuotaBytes: 2500})
	e.upload(alice, randomBytes(t, 1000), "", "")
	e.upload(alice, randomBytes(t, 1000), "", "")
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(randomBytes(t, 1000))
		if chunked {
			body = io.MultiReader(body)
		}
		r := e.do("POST", "/_matrix/media/v3/upload", alice, body, nil)
		if r.status != http.StatusForbidden || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("over quota (chunked %v): %d %s", chunked, r.status, r.body)
		}
	}
	// What fits still goes in; another user has a quota of their own.
	e.upload(alice, randomBytes(t, 500), "", "")
	e.upload(bob, randomBytes(t, 2000), "", "")

	// Concurrent uploads cannot together pass the quota: the check that
	// counts is made in the writer.
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", e.srv.URL+"/_matrix/media/v3/upload", bytes.NewReader(make([]byte, 200)))
			req.Header.Set("Authorization", "Bearer @carol:media.test")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			res.Body.Close()
			if res.StatusCode == 200 {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if used, _ := e.svc.usage(context.Background(), "@carol:media.test"); used > 2500 || ok != 8 {
		// 8×200 fits: all must succeed, and the total stays under.
		t.Fatalf("carol: %d uploads succeeded, %d bytes used", ok, used)
	}
	e2 := newEnv(t, Config{QuotaBytes: 1000})
	ok = 0
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", e2.srv.URL+"/_matrix/media/v3/upload", bytes.NewReader(randomBytes(t, 300)))
			req.Header.Set("Authorization", "Bearer "+alice)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			res.Body.Close()
			if res.StatusCode == 200 {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if used, _ := e2.svc.usage(context.Background(), alice); used > 1000 || ok != 3 {
		t.Fatalf("racing uploads: %d succeeded, %d bytes used of 1000", ok, used)
	}
}

// errAfter is a body that fails after n bytes, as a client that goes away.
type errAfter struct {
	n   int
	err error
}

func (r *errAfter) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

func TestTruncatedUploadLeavesNothing(t *testing.T) {
	e := newEnv(t, Config{})
	t.Run("service", func(t *testing.T) {
		_, err := e.svc.Upload(context.Background(), alice, UploadMeta{}, &errAfter{n: 100000, err: io.ErrUnexpectedEOF})
		if err == nil {
			t.Fatal("a failed body was accepted")
		}
	})
	t.Run("client disconnects midway", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriter(conn)
		fmt.Fprintf(w, "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n", alice)
		w.Write(bytes.Repeat([]byte("y"), 300000))
		w.Flush()
		// The server has started receiving: a staging file exists.
		waitFor(t, 10*time.Second, "the upload to start", func() bool { return len(e.files("tmp")) == 1 })
		conn.Close()
		waitFor(t, 10*time.Second, "the staging file to be removed", func() bool { return len(e.files("tmp")) == 0 })
	})
	if n := e.count(`SELECT COUNT(*) FROM media`); n != 0 {
		t.Errorf("%d media rows after failed uploads", n)
	}
	if f := e.files("blobs"); len(f) != 0 {
		t.Errorf("blobs after failed uploads: %v", f)
	}
}

func TestLeftoverStagingFilesRemovedAtStart(t *testing.T) {
	e := newEnv(t, Config{})
	// As a crash mid-upload would leave it.
	if _, err := e.svc.blobs.stage(strings.NewReader("partial")); err != nil {
		t.Fatal(err)
	}
	if len(e.files("tmp")) != 1 {
		t.Fatal("no staging file")
	}
	if _, err := New(Deps{DB: e.db, Dir: e.dir, ServerName: testServer}); err != nil {
		t.Fatal(err)
	}
	if f := e.files("tmp"); len(f) != 0 {
		t.Fatalf("leftovers after start: %v", f)
	}
}

func TestOrphanBlobsRemovedAtStart(t *testing.T) {
	e := newEnv(t, Config{})
	kept := e.upload(alice, []byte("kept"), "text/plain", "")
	// As a crash between placing a blob and committing its row leaves it.
	st, err := e.svc.blobs.stage(strings.NewReader("orphan"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.blobs.place(st); err != nil {
		t.Fatal(err)
	}
	if n := len(e.files("blobs")); n != 2 {
		t.Fatalf("%d blobs before restart", n)
	}
	svc, err := New(Deps{DB: e.db, Dir: e.dir, ServerName: testServer})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(e.files("blobs")); n != 1 {
		t.Fatalf("%d blobs after restart, want the referenced one", n)
	}
	if _, err := svc.Get(context.Background(), testServer, kept); err != nil {
		t.Fatal(err)
	}
	if r := e.download(alice, kept); r.status != 200 || string(r.body) != "kept" {
		t.Fatalf("referenced blob: %d %q", r.status, r.body)
	}
}

func TestLapsedIDsDroppedAtStart(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	lapsing, _, _ := e.svc.Create(ctx, alice)
	e.now = e.now.Add(DefaultUnusedExpiry / 2)
	fresh, _, _ := e.svc.Create(ctx, alice)
	later := e.now.Add(DefaultUnusedExpiry/2 + time.Minute)
	if _, err := New(Deps{DB: e.db, Dir: e.dir, ServerName: testServer, Now: func() time.Time { return later }}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(ctx, testServer, lapsing); err == nil {
		t.Error("a lapsed ID survived the start")
	}
	if _, err := e.svc.Get(ctx, testServer, fresh); err != nil {
		t.Errorf("an ID still in time was dropped: %v", err)
	}
}

func TestCreateRefusedWhenQuotaIsFull(t *testing.T) {
	e := newEnv(t, Config{QuotaBytes: 100})
	e.upload(alice, make([]byte, 100), "", "")
	if r := e.do("POST", "/_matrix/media/v1/create", alice, nil, nil); r.status != 403 || r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("create with a full quota: %d %s", r.status, r.body)
	}
}

func TestAsyncUpload(t *testing.T) {
	e := newEnv(t, Config{MaxPendingUploads: 3})
	create := func(user string) (string, float64) {
		r := e.do("POST", "/_matrix/media/v1/create", user, nil, nil)
		if r.status != 200 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		m := r.json(t)
		uri := m["content_uri"].(string)
		id, ok := strings.CutPrefix(uri, "mxc://media.test/")
		if !ok || !validMediaID(id) {
			t.Fatalf("content_uri %q", uri)
		}
		exp, _ := m["unused_expires_at"].(float64)
		return id, exp
	}
	put := func(user, id string, data []byte) resp {
		return e.do("PUT", "/_matrix/media/v3/upload/media.test/"+id+"?filename=late.txt", user, bytes.NewReader(data), map[string]string{"Content-Type": "text/plain"})
	}
	id, exp := create(alice)
	if want := float64(e.now.Add(DefaultUnusedExpiry).UnixMilli()); exp != want {
		t.Errorf("unused_expires_at %v, want %v", exp, want)
	}

	// Not yet uploaded: 504 at once with timeout_ms=0.
	r := e.do("GET", "/_matrix/client/v1/media/download/media.test/"+id+"?timeout_ms=0", alice, nil, nil)
	if r.status != http.StatusGatewayTimeout || r.errcode() != "M_NOT_YET_UPLOADED" {
		t.Fatalf("pending download: %d %s", r.status, r.body)
	}

	// A download that waits gets the bytes once they arrive.
	data := randomBytes(t, 70000)
	got := make(chan resp, 1)
	go func() {
		got <- e.do("GET", "/_matrix/client/v1/media/download/media.test/"+id+"?timeout_ms=30000", bob, nil, nil)
	}()
	if r := put(bob, id, data); r.status != http.StatusForbidden {
		t.Fatalf("PUT by another user: %d %s", r.status, r.body)
	}
	if r := put(alice, id, data); r.status != 200 || string(r.body) != "{}" {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	select {
	case r := <-got:
		if r.status != 200 || !bytes.Equal(r.body, data) {
			t.Fatalf("waiting download: %d, %d bytes", r.status, len(r.body))
		}
		if cd := r.header.Get("Content-Disposition"); cd != `inline; filename="late.txt"` {
			t.Errorf("Content-Disposition %q", cd)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting download did not finish")
	}
	if r := put(alice, id, data); r.status != http.StatusConflict || r.errcode() != "M_CANNOT_OVERWRITE_MEDIA" {
		t.Fatalf("second PUT: %d %s", r.status, r.body)
	}
	if r := put(alice, "NoSuchMediaID", data); r.status != 404 || r.errcode() != "M_NOT_FOUND" {
		t.Fatalf("PUT to an unknown ID: %d %s", r.status, r.body)
	}
	if r := e.do("PUT", "/_matrix/media/v3/upload/other.example/"+id, alice, strings.NewReader("x"), nil); r.status != 404 {
		t.Fatalf("PUT to another server's ID: %d %s", r.status, r.body)
	}

	// Pending IDs per user are bounded.
	for i := 0; i < 3; i++ {
		create(alice)
	}
	if r := e.do("POST", "/_matrix/media/v1/create", alice, nil, nil); r.status != 429 || r.errcode() != "M_LIMIT_EXCEEDED" {
		t.Fatalf("create over the pending limit: %d %s", r.status, r.body)
	}
	create(bob)

	// IDs lapse: a PUT after unused_expires_at is 404, downloads too, and
	// lapsed IDs no longer count against the limit.
	lapsed, _ := create(bob)
	e.now = e.now.Add(DefaultUnusedExpiry + time.Minute)
	if r := put(bob, lapsed, data); r.status != 404 {
		t.Fatalf("PUT after expiry: %d %s", r.status, r.body)
	}
	if r := e.download(bob, lapsed); r.status != 404 {
		t.Fatalf("download after expiry: %d", r.status)
	}
	create(alice)
}

func TestRacingPutsOneWins(t *testing.T) {
	e := newEnv(t, Config{})
	id, _, err := e.svc.Create(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.svc.UploadTo(context.Background(), alice, testServer, id, UploadMeta{}, bytes.NewReader(randomBytes(t, 20000)))
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
		} else if !strings.Contains(err.Error(), "M_CANNOT_OVERWRITE_MEDIA") {
			t.Errorf("loser: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d PUTs won", won)
	}
	// The losers' bytes are not kept.
	if n := len(e.files("blobs")); n != 1 {
		t.Fatalf("%d blobs, want the winner's only", n)
	}
}

func TestUnauthenticatedRefused(t *testing.T) {
	e := newEnv(t, Config{})
	id := e.upload(alice, []byte("secret"), "text/plain", "")
	for _, c := range []struct{ method, path string }{
		{"POST", "/_matrix/media/v3/upload"},
		{"POST", "/_matrix/media/v1/create"},
		{"PUT", "/_matrix/media/v3/upload/media.test/" + id},
		{"GET", "/_matrix/client/v1/media/config"},
		{"GET", "/_matrix/media/v3/config"},
		{"GET", "/_matrix/client/v1/media/download/media.test/" + id},
		{"GET", "/_matrix/client/v1/media/download/media.test/" + id + "/x.txt"},
		{"GET", "/_matrix/client/v1/media/thumbnail/media.test/" + id + "?width=32&height=32"},
		{"GET", "/_matrix/client/v3/voip/turnServer"},
	} {
		r := e.do(c.method, c.path, "", strings.NewReader("x"), nil)
		if r.status != 401 || r.errcode() != "M_MISSING_TOKEN" {
			t.Errorf("%s %s without a token: %d %s", c.method, c.path, r.status, r.body)
		}
	}
}

func TestDownloadErrors(t *testing.T) {
	e := newEnv(t, Config{})
	id := e.upload(alice, []byte("hello"), "text/plain", "")
	cases := []struct {
		name, path string
		status     int
		errcode    string
	}{
		{"unknown media", "/_matrix/client/v1/media/download/media.test/NoSuchMedia", 404, "M_NOT_FOUND"},
		{"unknown thumbnail", "/_matrix/client/v1/media/thumbnail/media.test/NoSuchMedia?width=32&height=32", 404, "M_NOT_FOUND"},
		{"remote media", "/_matrix/client/v1/media/download/other.example/" + id, 404, "M_NOT_FOUND"},
		{"media ID with a dot", "/_matrix/client/v1/media/download/media.test/a.b", 400, "M_INVALID_PARAM"},
		{"encoded traversal", "/_matrix/client/v1/media/download/media.test/..%2F..%2Fetc", 400, "M_INVALID_PARAM"},
		{"bad server name", "/_matrix/client/v1/media/download/bad_server!/" + id, 400, "M_INVALID_PARAM"},
		{"bad timeout", "/_matrix/client/v1/media/download/media.test/" + id + "?timeout_ms=soon", 400, "M_INVALID_PARAM"},
		{"legacy download (frozen)", "/_matrix/media/v3/download/media.test/" + id, 404, "M_NOT_FOUND"},
		{"legacy download with name (frozen)", "/_matrix/media/v3/download/media.test/" + id + "/a.txt", 404, "M_NOT_FOUND"},
		{"legacy thumbnail (frozen)", "/_matrix/media/v3/thumbnail/media.test/" + id + "?width=32&height=32", 404, "M_NOT_FOUND"},
		{"preview_url", "/_matrix/client/v1/media/preview_url?url=https://example.org", 404, "M_UNRECOGNIZED"},
		{"legacy preview_url", "/_matrix/media/v3/preview_url?url=https://example.org", 404, "M_UNRECOGNIZED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, user := range []string{alice, ""} {
				if user == "" && (strings.HasPrefix(c.path, "/_matrix/client/v1/media/") || strings.Contains(c.path, "preview_url")) {
					continue // authenticated endpoints answer 401 first
				}
				r := e.do("GET", c.path, user, nil, nil)
				if r.status != c.status || r.errcode() != c.errcode {
					t.Errorf("as %q: %d %s, want %d %s", user, r.status, r.body, c.status, c.errcode)
				}
			}
		})
	}
	cfg := e.do("GET", "/_matrix/client/v1/media/config", alice, nil, nil).json(t)
	if cfg[URLPreviewsKey] != false {
		t.Errorf("config does not say URL previews are off: %v", cfg)
	}
}

func TestUploadMetaNormalize(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", octetStream},
		{"image/PNG", "image/png"},
		{"text/plain;charset=UTF-8", "text/plain; charset=UTF-8"},
		{"text/html\r\nSet-Cookie: a=b", octetStream},
		{"nonsense", octetStream},
		{"a/b; x=\"\x01\"", "a/b; x*=utf-8''%01"}, // ASCII only, whatever the parameter holds
		{strings.Repeat("a", 300) + "/b", octetStream},
	}
	for _, c := range cases {
		if got := normalizeContentType(c.in); got != c.want {
			t.Errorf("normalizeContentType(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	m := UploadMeta{Filename: "a\x00b\xffc"}.normalize()
	if m.Filename != "a\uFFFDb\uFFFDc" {
		t.Errorf("filename %q", m.Filename)
	}
}

var _ = errors.New

// With ServeUnauthenticated the deprecated /_matrix/media/v3 download and
// thumbnail serve without a token, as the authenticated endpoints do,
// including the wait for an asynchronous upload: 504 M_NOT_YET_UPLOADED
// once timeout_ms has passed.
func TestUnauthenticatedMediaWhenServed(t *testing.T) {
	e := newEnv(t, Config{ServeUnauthenticated: true})
	id := e.upload(alice, []byte("hello"), "text/plain", "")
	for _, path := range []string{"/_matrix/media/v3/download/media.test/" + id, "/_matrix/media/v3/download/media.test/" + id + "/a.txt"} {
		if r := e.do("GET", path, "", nil, nil); r.status != 200 || string(r.body) != "hello" {
			t.Errorf("GET %s: %d %s", path, r.status, r.body)
		}
	}
	img := e.upload(alice, pngBytes(t, 64, 64), "image/png", "")
	r := e.do("GET", "/_matrix/media/v3/thumbnail/media.test/"+img+"?width=32&height=32&method=scale", "", nil, nil)
	if r.status != 200 || r.header.Get("Content-Type") != "image/png" {
		t.Fatalf("thumbnail: %d %s %q", r.status, r.header.Get("Content-Type"), r.body)
	}
	if r := e.do("GET", "/_matrix/media/v3/download/media.test/NoSuchMedia", "", nil, nil); r.status != 404 || r.errcode() != "M_NOT_FOUND" {
		t.Fatalf("unknown media: %d %s", r.status, r.body)
	}

	created := e.do("POST", "/_matrix/media/v1/create", alice, nil, nil).json(t)
	pending := strings.TrimPrefix(created["content_uri"].(string), "mxc://media.test/")
	start := time.Now()
	r = e.do("GET", "/_matrix/media/v3/download/media.test/"+pending+"?timeout_ms=200", "", nil, nil)
	if r.status != http.StatusGatewayTimeout || r.errcode() != "M_NOT_YET_UPLOADED" {
		t.Fatalf("pending media: %d %s", r.status, r.body)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("answered after %v, before timeout_ms", waited)
	}
}
