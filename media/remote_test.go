package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatalot/chatalot/spec"
)

const originServer = spec.ServerName("origin.test")

// fakeFederation reaches the origin's federation routes over HTTP, as
// federation.Peers would over TLS with a signature; it counts the
// requests and can play the origin being down.
type fakeFederation struct {
	origin *env
	gets   atomic.Int32
	down   atomic.Bool
	// redirect, when set, is a TLS server whose URLs GetURL may fetch.
	redirect *httptest.Server
}

func (f *fakeFederation) Get(ctx context.Context, server spec.ServerName, path string) (*http.Response, error) {
	if server != originServer {
		return nil, fmt.Errorf("no route to %s", server)
	}
	f.gets.Add(1)
	if f.down.Load() {
		return nil, errors.New("connection refused")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.origin.srv.URL+path, nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}

func (f *fakeFederation) GetURL(ctx context.Context, rawURL string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	return f.redirect.Client().Do(req)
}

// federatedPair is an origin server and a server fetching from it.
func federatedPair(t *testing.T, cfg Config) (origin, local *env, fed *fakeFederation) {
	origin = newServerEnv(t, Config{}, originServer, nil)
	fed = &fakeFederation{origin: origin}
	local = newServerEnv(t, cfg, testServer, fed)
	return origin, local, fed
}

func remotePath(kind, id string) string {
	return "/_matrix/client/v1/media/" + kind + "/" + string(originServer) + "/" + id
}

// TestRemoteMediaDownload: a client of local asks for the origin's media;
// local fetches it once over federation (the multipart answer), serves it
// with the origin's type and name, and serves it again, and its
// thumbnails, from its copy with the origin down.
func TestRemoteMediaDownload(t *testing.T) {
	origin, local, fed := federatedPair(t, Config{})
	img := pngBytes(t, 400, 300)
	id := origin.upload("@alice:origin.test", img, "image/png", "cat.png")

	r := local.do("GET", remotePath("download", id), "@bob:media.test", nil, nil)
	if r.status != 200 || !bytes.Equal(r.body, img) {
		t.Fatalf("first download: %d %q", r.status, r.body[:min(len(r.body), 200)])
	}
	if ct := r.header.Get("Content-Type"); ct != "image/png" {
		t.Errorf("Content-Type %q", ct)
	}
	if cd := r.header.Get("Content-Disposition"); !strings.Contains(cd, `filename="cat.png"`) {
		t.Errorf("Content-Disposition %q", cd)
	}
	if n := fed.gets.Load(); n != 1 {
		t.Fatalf("%d federation requests, want 1", n)
	}

	fed.down.Store(true)
	r = local.do("GET", remotePath("download", id)+"/other.png", "@bob:media.test", nil, nil)
	if r.status != 200 || !bytes.Equal(r.body, img) {
		t.Fatalf("download from the cache: %d %s", r.status, r.body)
	}
	r = local.do("GET", remotePath("thumbnail", id)+"?width=64&height=64&method=crop", "@bob:media.test", nil, nil)
	if r.status != 200 || r.header.Get("Content-Type") != "image/png" {
		t.Fatalf("thumbnail from the cache: %d %s", r.status, r.body)
	}
	if n := fed.gets.Load(); n != 1 {
		t.Errorf("%d federation requests after cached reads, want 1", n)
	}

	// Unknown media of the origin is 404; so is an unreachable origin's
	// unknown media, but with 502 (it could not be asked).
	r = local.do("GET", remotePath("download", "nosuchmedia"), "@bob:media.test", nil, nil)
	if r.status != http.StatusBadGateway {
		t.Errorf("origin down, uncached media: %d %s, want 502", r.status, r.body)
	}
	fed.down.Store(false)
	r = local.do("GET", remotePath("download", "nosuchmedia"), "@bob:media.test", nil, nil)
	if r.status != 404 || r.errcode() != "M_NOT_FOUND" {
		t.Errorf("unknown remote media: %d %s", r.status, r.body)
	}

	// The local server never hands on its copy of a third server's
	// media over federation: it is the origin's to serve.
	r = local.do("GET", "/_matrix/federation/v1/media/download/"+id, "", nil, nil)
	if r.status != 404 {
		t.Errorf("a cached copy was served over federation: %d", r.status)
	}
	// Quarantine of the copy hides it.
	if err := local.svc.Quarantine(context.Background(), originServer, id, true); err != nil {
		t.Fatal(err)
	}
	if r := local.do("GET", remotePath("download", id), "@bob:media.test", nil, nil); r.status != 404 {
		t.Errorf("quarantined copy served: %d", r.status)
	}
}

// TestFederationMediaEndpoints: the origin's answers to other servers.
func TestFederationMediaEndpoints(t *testing.T) {
	origin := newServerEnv(t, Config{}, originServer, nil)
	data := []byte("plain text, as uploaded")
	id := origin.upload("@alice:origin.test", data, "text/plain", "notes.txt")

	r := origin.do("GET", "/_matrix/federation/v1/media/download/"+id, "", nil, nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "multipart/mixed; boundary=") {
		t.Fatalf("download: %d %q", r.status, r.header.Get("Content-Type"))
	}
	content, meta, err := (&Service{}).readMultipart(context.Background(), &http.Response{Header: r.header, Body: io.NopCloser(bytes.NewReader(r.body))})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(content)
	if !bytes.Equal(got, data) || meta.ContentType != "text/plain" || meta.Filename != "notes.txt" {
		t.Errorf("parts: %q %+v", got, meta)
	}
	if !strings.Contains(string(r.body), "Content-Type: application/json\r\n\r\n{}\r\n") {
		t.Errorf("first part is not an empty JSON object:\n%s", r.body)
	}

	img := origin.upload("@alice:origin.test", pngBytes(t, 300, 300), "image/png", "")
	r = origin.do("GET", "/_matrix/federation/v1/media/thumbnail/"+img+"?width=32&height=32&method=crop", "", nil, nil)
	if r.status != 200 || !strings.Contains(string(r.body), "Content-Type: image/png") {
		t.Errorf("thumbnail: %d", r.status)
	}
	for _, c := range []struct {
		name, path string
		status     int
		errcode    string
	}{
		{"unknown", "/_matrix/federation/v1/media/download/nosuch", 404, "M_NOT_FOUND"},
		{"bad ID", "/_matrix/federation/v1/media/download/no%20such", 400, "M_INVALID_PARAM"},
		{"thumbnail without size", "/_matrix/federation/v1/media/thumbnail/" + img, 400, "M_MISSING_PARAM"},
	} {
		if r := origin.do("GET", c.path, "", nil, nil); r.status != c.status || r.errcode() != c.errcode {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	if err := origin.svc.Quarantine(context.Background(), originServer, id, true); err != nil {
		t.Fatal(err)
	}
	if r := origin.do("GET", "/_matrix/federation/v1/media/download/"+id, "", nil, nil); r.status != 404 {
		t.Errorf("quarantined media served over federation: %d", r.status)
	}
}

// TestRemoteMediaTooLarge: media over the fetching server's limit is
// refused with 502 M_TOO_LARGE, and nothing of it is kept; a thumbnail of
// it is the origin's own, served and not kept.
func TestRemoteMediaTooLarge(t *testing.T) {
	origin, local, fed := federatedPair(t, Config{MaxUploadBytes: 1000})
	id := origin.upload("@alice:origin.test", bytes.Repeat([]byte("x"), 5000), "application/octet-stream", "")
	r := local.do("GET", remotePath("download", id), "@bob:media.test", nil, nil)
	if r.status != http.StatusBadGateway || r.errcode() != "M_TOO_LARGE" || !strings.Contains(string(r.body), "1000 bytes") {
		t.Fatalf("oversized remote media: %d %s", r.status, r.body)
	}
	img := origin.upload("@alice:origin.test", pngBytes(t, 400, 300), "image/png", "")
	r = local.do("GET", remotePath("thumbnail", img)+"?width=32&height=32&method=crop", "@bob:media.test", nil, nil)
	if r.status != 200 || r.header.Get("Content-Type") != "image/png" || len(r.body) > 1000 {
		t.Fatalf("thumbnail of an oversized remote image: %d %q, %d bytes", r.status, r.header.Get("Content-Type"), len(r.body))
	}
	if n := fed.gets.Load(); n != 3 { // the download, the image's original, its thumbnail
		t.Errorf("%d federation requests, want 3", n)
	}
	if n := local.count(`SELECT COUNT(*) FROM media`); n != 0 {
		t.Errorf("%d rows kept", n)
	}
	if f := local.files("blobs"); len(f) != 0 {
		t.Errorf("files kept: %v", f)
	}
	if f := local.files("tmp"); len(f) != 0 {
		t.Errorf("staging files kept: %v", f)
	}
}

// TestRemoteMediaLocation: an origin that answers with a Location part
// has its media fetched from there.
func TestRemoteMediaLocation(t *testing.T) {
	data := []byte("stored elsewhere")
	cdn := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Disposition", `attachment; filename="far.txt"`)
		_, _ = w.Write(data)
	}))
	defer cdn.Close()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "multipart/mixed; boundary=XYZ")
		fmt.Fprintf(w, "--XYZ\r\nContent-Type: application/json\r\n\r\n{}\r\n--XYZ\r\nLocation: %s/blob\r\n\r\n\r\n--XYZ--\r\n", cdn.URL)
	}))
	defer origin.Close()
	fed := &fakeFederation{origin: &env{srv: origin}, redirect: cdn}
	local := newServerEnv(t, Config{}, testServer, fed)
	r := local.do("GET", remotePath("download", "abc"), "@bob:media.test", nil, nil)
	if r.status != 200 || !bytes.Equal(r.body, data) || !strings.Contains(r.header.Get("Content-Disposition"), "far.txt") {
		t.Fatalf("download through Location: %d %q %q", r.status, r.body, r.header.Get("Content-Disposition"))
	}
}

// TestRemoteMediaExpiry: media_retention_remote_unaccessed expires the
// copies nobody read for that long (rows and files), and not this
// server's own media; a later request fetches the media again.
// PurgeRemoteCache (purge_media_cache) does the same by hand.
func TestRemoteMediaExpiry(t *testing.T) {
	origin, local, fed := federatedPair(t, Config{})
	data := []byte("remote bytes to expire")
	id := origin.upload("@alice:origin.test", data, "text/plain", "")
	own := local.upload("@bob:media.test", []byte("local bytes"), "text/plain", "")
	if r := local.do("GET", remotePath("download", id), "@bob:media.test", nil, nil); r.status != 200 {
		t.Fatalf("download: %d %s", r.status, r.body)
	}
	policy := RetentionPolicy{RemoteUnaccessed: 48 * time.Hour}
	if d, err := local.svc.Expire(context.Background(), policy, false, nil); err != nil || d.Media != 0 {
		t.Fatalf("fresh copy expired: %+v %v", d, err)
	}
	local.now = local.now.Add(72 * time.Hour)
	d, err := local.svc.Expire(context.Background(), policy, true, nil)
	if err != nil || d.Media != 1 || d.Files != 1 {
		t.Fatalf("dry run: %+v %v", d, err)
	}
	if local.count(`SELECT COUNT(*) FROM media WHERE server_name = $1`, string(originServer)) != 1 {
		t.Fatal("the dry run deleted")
	}
	d, err = local.svc.Expire(context.Background(), policy, false, nil)
	if err != nil || d.Media != 1 || d.Files != 1 || d.Bytes != int64(len(data)) {
		t.Fatalf("expiry: %+v %v", d, err)
	}
	if n := local.count(`SELECT COUNT(*) FROM media WHERE server_name = $1`, string(originServer)); n != 0 {
		t.Errorf("%d remote rows left", n)
	}
	if r := local.download("@bob:media.test", own); r.status != 200 {
		t.Errorf("local media expired by the remote policy: %d", r.status)
	}
	if f := local.files("blobs"); len(f) != 1 {
		t.Errorf("files left: %v (want the local upload's only)", f)
	}
	if r := local.do("GET", remotePath("download", id), "@bob:media.test", nil, nil); r.status != 200 || fed.gets.Load() != 2 {
		t.Fatalf("fetch again: %d, %d requests", r.status, fed.gets.Load())
	}
	// By hand: copies not read since a time.
	d, err = local.svc.PurgeRemoteCache(context.Background(), local.now.Add(time.Second), false)
	if err != nil || d.Media != 1 {
		t.Fatalf("purge: %+v %v", d, err)
	}
	if n := local.count(`SELECT COUNT(*) FROM media`); n != 1 {
		t.Errorf("%d rows after the purge, want the local upload's", n)
	}
}

// TestRemoteMediaNotYetUploaded: media the origin created but has not
// received yet is 504 M_NOT_YET_UPLOADED, as the origin says, and nothing
// is kept.
func TestRemoteMediaNotYetUploaded(t *testing.T) {
	origin, local, _ := federatedPair(t, Config{})
	r := origin.do("POST", "/_matrix/media/v1/create", "@alice:origin.test", nil, nil)
	uri, _ := r.json(t)["content_uri"].(string)
	id := strings.TrimPrefix(uri, "mxc://"+string(originServer)+"/")
	r = local.do("GET", remotePath("download", id)+"?timeout_ms=0", "@bob:media.test", nil, nil)
	if r.status != http.StatusGatewayTimeout || r.errcode() != "M_NOT_YET_UPLOADED" {
		t.Fatalf("pending remote media: %d %s", r.status, r.body)
	}
	if n := local.count(`SELECT COUNT(*) FROM media`); n != 0 {
		t.Errorf("%d rows kept", n)
	}
}

// TestRemoteMediaLegacyFallback: an origin that does not know the
// federation media endpoint (404 M_UNRECOGNIZED) is asked at the
// deprecated one, with allow_remote=false.
func TestRemoteMediaLegacyFallback(t *testing.T) {
	data := []byte("from an older server")
	var legacyQuery string
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_matrix/federation/") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`)
			return
		}
		if r.URL.Path != "/_matrix/media/v3/download/"+string(originServer)+"/old" {
			http.NotFound(w, r)
			return
		}
		legacyQuery = r.URL.RawQuery
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(data)
	}))
	defer origin.Close()
	local := newServerEnv(t, Config{}, testServer, &fakeFederation{origin: &env{srv: origin}})
	r := local.do("GET", remotePath("download", "old"), "@bob:media.test", nil, nil)
	if r.status != 200 || !bytes.Equal(r.body, data) {
		t.Fatalf("legacy fallback: %d %s", r.status, r.body)
	}
	if !strings.Contains(legacyQuery, "allow_remote=false") {
		t.Errorf("legacy request query %q lacks allow_remote=false", legacyQuery)
	}
}

// TestRemoteMediaQuarantine: a quarantined cached copy is refused to
// clients (download and thumbnail, 404 as local quarantine) without the
// origin being asked again, and the purge of the cache keeps it (the copy
// stays, flagged, for whoever looks into the report); released, it is
// served from the copy again.
func TestRemoteMediaQuarantine(t *testing.T) {
	origin, local, fed := federatedPair(t, Config{})
	ctx := context.Background()
	img := pngBytes(t, 200, 200)
	id := origin.upload("@alice:origin.test", img, "image/png", "cat.png")
	if r := local.do("GET", remotePath("download", id), "@bob:media.test", nil, nil); r.status != 200 {
		t.Fatalf("download: %d %s", r.status, r.body)
	}
	info, err := local.svc.Get(ctx, originServer, id)
	if err != nil || info.Uploader != "" || info.ServerName != originServer || info.Size != int64(len(img)) {
		t.Fatalf("info of the copy: %+v %v", info, err)
	}
	if err := local.svc.Quarantine(ctx, originServer, id, true); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{remotePath("download", id), remotePath("thumbnail", id) + "?width=32&height=32&method=scale"} {
		if r := local.do("GET", p, "@bob:media.test", nil, nil); r.status != 404 || r.errcode() != "M_NOT_FOUND" {
			t.Errorf("quarantined copy, GET %s: %d %s", p, r.status, r.body)
		}
	}
	if n := fed.gets.Load(); n != 1 {
		t.Errorf("%d federation requests, want 1: a quarantined copy is not fetched again", n)
	}
	if d, err := local.svc.PurgeRemoteCache(ctx, local.now.Add(time.Hour), false); err != nil || d.Media != 0 {
		t.Errorf("purge of a quarantined copy: %+v %v", d, err)
	}
	if err := local.svc.Quarantine(ctx, originServer, "notcached", true); err == nil || !strings.Contains(err.Error(), "M_NOT_FOUND") {
		t.Errorf("quarantine of uncached remote media: %v", err)
	}
	fed.down.Store(true)
	if err := local.svc.Quarantine(ctx, originServer, id, false); err != nil {
		t.Fatal(err)
	}
	if r := local.do("GET", remotePath("download", id), "@bob:media.test", nil, nil); r.status != 200 || !bytes.Equal(r.body, img) {
		t.Errorf("released copy: %d", r.status)
	}
}
