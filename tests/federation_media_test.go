package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// TestFederationMedia: alice uploads on hs1; bob downloads it through hs2
// (authenticated v1), which fetches it over federation once and then
// serves its copy, with hs1 stopped too. Media over hs2's limit is refused
// with 502 M_TOO_LARGE. The admin API describes, quarantines and releases
// the copy (and refuses to delete it); its purge_media_cache removes it
// (dry run first, audit entries both times), and so does
// media_retention_remote_unaccessed on its timer: afterwards, with hs1
// down, hs2 no longer has the media.
func TestFederationMedia(t *testing.T) {
	pki := harness.NewPKI(t)
	hs1, name1 := startFederated(t, pki)
	port := harness.FreePort(t)
	name2 := fmt.Sprintf("localhost:%d", port)
	// hs2 has a server admin, made by the CLI before the first start.
	dir := t.TempDir()
	if out, err := harness.Run(t, admPassword+"\n", "admin", "create-user", "boss", "--admin", "--password-stdin",
		"--data-dir", dir, "--server-name", name2, "--federation"); err != nil {
		t.Fatalf("create the admin: %v\n%s", err, out)
	}
	hs2 := harness.Start(t, harness.WithDataDir(dir), harness.WithArgs("--server-name", name2, "--federation",
		"--federation-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--federation-tls-cert", pki.CertFile, "--federation-tls-key", pki.KeyFile,
		"--federation-ca-file", pki.CAFile, "--max-upload-bytes", "100000"))
	b := &admEnv{t: t, s: hs2}
	b.token = b.login("boss", admPassword)
	alice := registerForTest(t, hs1.URL, "alice")
	bob := b.register("bob")

	upload := func(data []byte, filename string) string {
		t.Helper()
		code, _, raw := doRequest(t, "POST", hs1.URL+"/_matrix/media/v3/upload?filename="+filename, alice, data)
		if code != 200 {
			t.Fatalf("upload: %d %s", code, raw)
		}
		var out struct {
			ContentURI string `json:"content_uri"`
		}
		_ = json.Unmarshal(raw, &out)
		id, ok := strings.CutPrefix(out.ContentURI, "mxc://"+name1+"/")
		if !ok {
			t.Fatalf("content_uri %q", out.ContentURI)
		}
		return id
	}
	small := bytes.Repeat([]byte("federated media "), 100)
	smallID := upload(small, "notes.txt")
	bigID := upload(bytes.Repeat([]byte("x"), 200_000), "big.bin")

	download := func(id string) (int, http.Header, []byte) {
		t.Helper()
		return doRequest(t, "GET", hs2.URL+"/_matrix/client/v1/media/download/"+name1+"/"+id, bob, nil)
	}
	code, h, raw := download(smallID)
	if code != 200 || !bytes.Equal(raw, small) {
		t.Fatalf("bob downloads alice's media through hs2: %d %.200s\nhs2:\n%s", code, raw, hs2.Logs())
	}
	if h.Get("Content-Type") != "application/octet-stream" || !strings.Contains(h.Get("Content-Disposition"), "notes.txt") {
		t.Errorf("headers: %q %q", h.Get("Content-Type"), h.Get("Content-Disposition"))
	}
	code, _, raw = download(bigID)
	if code != http.StatusBadGateway || !strings.Contains(string(raw), "M_TOO_LARGE") || !strings.Contains(string(raw), "100000 bytes") {
		t.Errorf("oversized remote media: %d %s", code, raw)
	}
	// Without a token, the authenticated endpoint refuses; the legacy one
	// is frozen for remote media as for local.
	if code, _, _ := doRequest(t, "GET", hs2.URL+"/_matrix/client/v1/media/download/"+name1+"/"+smallID, "", nil); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, _, _ := doRequest(t, "GET", hs2.URL+"/_matrix/media/v3/download/"+name1+"/"+smallID, "", nil); code != 404 {
		t.Errorf("legacy download of remote media: %d, want 404 (frozen)", code)
	}

	// The federation endpoint itself wants an X-Matrix signature.
	if code, _, raw := doRequest(t, "GET", hs1.URL+"/_matrix/federation/v1/media/download/"+smallID, "", nil); code != 401 {
		t.Errorf("unsigned federation download: %d %s", code, raw)
	}

	// hs1 goes away: hs2 serves its copy.
	hs1.Stop()
	if code, _, raw := download(smallID); code != 200 || !bytes.Equal(raw, small) {
		t.Fatalf("from hs2's cache with hs1 stopped: %d %.200s", code, raw)
	}

	// The admin API manages the copy as Synapse's does: info (the origin,
	// no uploader), quarantine (refused to bob, and hs2 does not ask hs1
	// again: 404, not the 502 of an unreachable origin), release; delete is
	// for local media only.
	copyPath := "/_synapse/admin/v1/media/" + name1 + "/" + smallID
	info := b.admin("GET", hs2.URL+copyPath, nil, 200)["media_info"].(map[string]any)
	if info["media_origin"] != name1 || info["user_id"] != nil || info["media_length"] != float64(len(small)) || info["quarantined_by"] != nil {
		t.Fatalf("info of the copy: %v", info)
	}
	b.admin("POST", hs2.URL+"/_synapse/admin/v1/media/quarantine/"+name1+"/"+smallID, map[string]any{}, 200)
	if code, _, raw := download(smallID); code != 404 || !strings.Contains(string(raw), "M_NOT_FOUND") {
		t.Fatalf("quarantined copy: %d %s", code, raw)
	}
	info = b.admin("GET", hs2.URL+copyPath, nil, 200)["media_info"].(map[string]any)
	if info["quarantined_by"] != "@boss:"+name2 {
		t.Errorf("quarantined_by: %v", info["quarantined_by"])
	}
	b.want("DELETE", hs2.URL+copyPath, b.token, nil, 400, "M_UNKNOWN")
	b.admin("POST", hs2.URL+"/_synapse/admin/v1/media/unquarantine/"+name1+"/"+smallID, map[string]any{}, 200)
	if code, _, raw := download(smallID); code != 200 || !bytes.Equal(raw, small) {
		t.Fatalf("released copy: %d %.200s", code, raw)
	}
	var quarantines int
	for _, a := range b.audit() {
		if a["target"] == "mxc://"+name1+"/"+smallID && (a["action"] == "quarantine_media" || a["action"] == "unquarantine_media") {
			quarantines++
		}
	}
	if quarantines != 2 {
		t.Errorf("%d audit entries of the copy's quarantine and release, want 2", quarantines)
	}

	// purge_media_cache: a dry run counts and keeps, the real one removes.
	before := strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10)
	out := b.admin("POST", hs2.URL+"/_synapse/admin/v1/purge_media_cache?dry_run=true&before_ts="+before, map[string]any{}, 200)
	if out["deleted"] != float64(1) || out["dry_run"] != true {
		t.Fatalf("dry run: %v", out)
	}
	if code, _, _ := download(smallID); code != 200 {
		t.Fatalf("the dry run removed the copy: %d", code)
	}
	out = b.admin("POST", hs2.URL+"/_synapse/admin/v1/purge_media_cache?before_ts="+before, map[string]any{}, 200)
	if out["deleted"] != float64(1) || out["files"] != float64(1) {
		t.Fatalf("purge: %v", out)
	}
	if code, _, raw := download(smallID); code != http.StatusBadGateway {
		t.Fatalf("after the purge, with hs1 down: %d %s (want 502: the copy is gone)", code, raw)
	}
	actions := strings.Join(b.auditActions(), ",")
	if !strings.Contains(actions, "purge_media_cache_dry_run") || !strings.Contains(actions, "purge_media_cache") {
		t.Errorf("audit log: %s", actions)
	}

	// media_retention_remote_unaccessed: hs2 restarted with copies kept
	// 2 s; with hs1 back, bob's download fetches it again, and the timer
	// removes the copy once unread for that long.
	hs2.Stop()
	hs2.Args = append(hs2.Args, "--media-retention-remote-unaccessed", "2s", "--media-retention-interval", "1s")
	hs2.Launch()
	hs1.Launch()
	if code, _, raw := download(smallID); code != 200 || !bytes.Equal(raw, small) {
		t.Fatalf("fetched again: %d %.200s", code, raw)
	}
	waitFor(t, 30*time.Second, "the media retention pass to expire the copy", func() bool {
		for _, a := range b.audit() {
			if a["action"] == "media_retention" {
				return true
			}
		}
		time.Sleep(200 * time.Millisecond)
		return false
	})
	hs1.Stop()
	if code, _, raw := download(smallID); code != http.StatusBadGateway {
		t.Fatalf("after expiry, with hs1 down: %d %s (want 502: the copy is gone)", code, raw)
	}
}
