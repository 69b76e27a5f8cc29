package media

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAdminOperations(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	a := e.upload(alice, []byte("first"), "text/plain", "one.txt")
	b := e.upload(alice, pngBytes(t, 400, 400), "image/png", "two.png")
	pending, _, err := e.svc.Create(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	other := e.upload(bob, []byte("bob's"), "text/plain", "")
	if r := e.do("GET", thumbPath(b, 96, 96, "crop"), alice, nil, nil); r.status != 200 {
		t.Fatal(r.status)
	}

	list, err := e.svc.ListUserMedia(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("%d media listed, want 3", len(list))
	}
	byID := map[string]Info{}
	for _, i := range list {
		byID[i.MediaID] = i
	}
	if i := byID[a]; i.Filename != "one.txt" || i.Size != 5 || i.Pending || i.ContentType != "text/plain" || i.URI() != "mxc://media.test/"+a {
		t.Errorf("info of a: %+v", i)
	}
	if i := byID[pending]; !i.Pending || !i.UploadedAt.IsZero() {
		t.Errorf("info of the pending ID: %+v", i)
	}

	// Quarantine hides media from download and thumbnail, and can be undone.
	if err := e.svc.Quarantine(ctx, testServer, b, true); err != nil {
		t.Fatal(err)
	}
	if r := e.download(alice, b); r.status != 404 {
		t.Fatalf("quarantined download: %d", r.status)
	}
	if r := e.do("GET", thumbPath(b, 96, 96, "crop"), alice, nil, nil); r.status != 404 {
		t.Fatalf("quarantined thumbnail: %d", r.status)
	}
	if info, _ := e.svc.Get(ctx, testServer, b); !info.Quarantined {
		t.Error("Get does not say quarantined")
	}
	if err := e.svc.Quarantine(ctx, testServer, b, false); err != nil {
		t.Fatal(err)
	}
	if r := e.download(alice, b); r.status != 200 {
		t.Fatalf("released download: %d", r.status)
	}
	if err := e.svc.Quarantine(ctx, testServer, "NoSuchMedia", true); err == nil || !strings.Contains(err.Error(), "M_NOT_FOUND") {
		t.Errorf("quarantine of unknown media: %v", err)
	}
	if err := e.svc.Delete(ctx, testServer, "NoSuchMedia"); err == nil || !strings.Contains(err.Error(), "M_NOT_FOUND") {
		t.Errorf("delete of unknown media: %v", err)
	}

	n, err := e.svc.DeleteUserMedia(ctx, alice)
	if err != nil || n != 3 {
		t.Fatalf("DeleteUserMedia: %d %v", n, err)
	}
	if r := e.download(alice, a); r.status != 404 {
		t.Fatalf("deleted media: %d", r.status)
	}
	if n := len(e.files("blobs")); n != 1 {
		t.Fatalf("%d blobs left, want bob's only", n)
	}
	if r := e.download(alice, other); r.status != 200 {
		t.Fatalf("another user's media: %d", r.status)
	}
	if list, _ := e.svc.ListUserMedia(ctx, alice); len(list) != 0 {
		t.Fatalf("listed after delete: %v", list)
	}
}

func TestTURNServer(t *testing.T) {
	e := newEnv(t, Config{})
	if r := e.do("GET", "/_matrix/client/v3/voip/turnServer", alice, nil, nil); r.status != 200 || string(r.body) != "{}" {
		t.Fatalf("unconfigured: %d %s", r.status, r.body)
	}

	uris := []string{"turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"}
	e = newEnv(t, Config{TURN: TURNConfig{URIs: uris, Secret: "s3cret", TTL: 2 * time.Hour}})
	r := e.do("GET", "/_matrix/client/v3/voip/turnServer", alice, nil, nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	m := r.json(t)
	user, _ := m["username"].(string)
	expiry, who, ok := strings.Cut(user, ":")
	if !ok || who != alice {
		t.Fatalf("username %q", user)
	}
	if exp, _ := strconv.ParseInt(expiry, 10, 64); exp != e.now.Add(2*time.Hour).Unix() {
		t.Errorf("expiry %s", expiry)
	}
	mac := hmac.New(sha1.New, []byte("s3cret"))
	mac.Write([]byte(user))
	if m["password"] != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
		t.Errorf("password %v is not the coturn HMAC", m["password"])
	}
	if m["ttl"] != float64(7200) {
		t.Errorf("ttl %v", m["ttl"])
	}
	got, _ := m["uris"].([]any)
	if len(got) != 2 || got[0] != uris[0] || got[1] != uris[1] {
		t.Errorf("uris %v", m["uris"])
	}
}
