package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testClockAt sets the server's clock (testClock) to start plus a moved
// offset for the test, and returns the function that moves it.
func testClockAt(t *testing.T) func(time.Duration) {
	start := time.Now()
	var offset atomic.Int64
	testClock = func() time.Time { return start.Add(time.Duration(offset.Load())) }
	t.Cleanup(func() { testClock = nil })
	return func(d time.Duration) { offset.Add(int64(d)) }
}

// TestMediaRetention: with media_retention_local_unaccessed and
// media_retention_max_age set, a pass (run through the admin API, with
// the clock moved, not waited for) deletes the media not downloaded for
// the period and the media older than the maximum age, with their files;
// downloads record the access at most once an hour; quarantined media
// stays; orphaned files go; a dry run says the same and changes nothing;
// each pass is in the audit log.
func TestMediaRetention(t *testing.T) {
	advance := testClockAt(t)
	app, srv, boss := newAdminTestApp(t, func(c *Config) {
		c.MediaRetentionUnaccessed = "720h"
		c.MediaRetentionMaxAge = "8760h"
	})
	alice := registerUser(t, srv.URL, "alice")
	upload := func(body string) string {
		mxc := between(mustRequest(t, "POST", srv.URL+"/_matrix/media/v3/upload?filename=x.txt", alice, body), `"content_uri":"`, `"`)
		return strings.TrimPrefix(mxc, "mxc://localhost/")
	}
	download := func(id string) int {
		code, _ := request(t, "GET", srv.URL+"/_matrix/client/v1/media/download/localhost/"+id, alice, "")
		return code
	}
	stored := func(id string) bool {
		var n int
		app.db.QueryRow(context.Background(), `SELECT count(*) FROM media WHERE media_id = $1`, id).Scan(&n)
		return n == 1
	}
	lastAccess := func(id string) int64 {
		var ts *int64
		app.db.QueryRow(context.Background(), `SELECT last_access_ts FROM media WHERE media_id = $1`, id).Scan(&ts)
		if ts == nil {
			return 0
		}
		return *ts
	}
	read, unread, quarantined := upload("read regularly"), upload("never read "+strings.Repeat("x", 1<<20)), upload("under investigation")
	mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/media/quarantine/localhost/"+quarantined, boss, `{}`)
	orphan := filepath.Join(app.cfg.DataDir, "media", "blobs", "ab", "ab"+strings.Repeat("0", 62))
	if err := os.WriteFile(orphan, []byte("a file no row names"), 0o600); err != nil {
		t.Fatal(err)
	}

	// A download records the access; another within the hour does not
	// write again.
	advance(500 * time.Hour)
	if download(read) != 200 {
		t.Fatal("download")
	}
	first := lastAccess(read)
	advance(30 * time.Minute)
	download(read)
	if first == 0 || lastAccess(read) != first {
		t.Fatalf("last access %d, then %d: not recorded once an hour", first, lastAccess(read))
	}
	if info := mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/media/localhost/"+read, boss, ""); !strings.Contains(info, fmt.Sprintf(`"last_access_ts":%d`, first)) {
		t.Fatalf("the admin API does not show the last access %d: %s", first, info)
	}
	advance(2 * time.Hour)
	download(read)
	if lastAccess(read) <= first {
		t.Fatal("a download two hours later did not record the access")
	}

	// 800h after the uploads: the unread one is past 720h, the read one
	// was read 300h ago.
	advance(300 * time.Hour)
	state := stripAudit(dbState(t, app))
	var dry MediaSweepAnswer
	json.Unmarshal([]byte(mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/chatalot/media/retention?dry_run=true", boss, "")), &dry)
	if !dry.DryRun || dry.Expired.Media != 1 || dry.OrphanFiles != 1 || dry.Deleted[0] != unread {
		t.Fatalf("dry run: %+v", dry)
	}
	if got := stripAudit(dbState(t, app)); got != state {
		t.Fatalf("the dry run changed the database:\n%s\n%s", state, got)
	}
	if _, err := os.Stat(orphan); err != nil {
		t.Fatal("the dry run removed the orphaned file")
	}
	var done MediaSweepAnswer
	raw := mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/chatalot/media/retention", boss, "")
	json.Unmarshal([]byte(raw), &done)
	t.Logf("media retention pass: %s", raw)
	if done.Expired.Media != 1 || done.Expired.Files != 1 || done.OrphanFiles != 1 || done.Freed == 0 {
		t.Fatalf("pass: %s", raw)
	}
	if download(unread) != 404 || stored(unread) || download(read) != 200 || !stored(quarantined) {
		t.Fatalf("after the pass: unread %d (stored %v), read %d, quarantined stored %v",
			download(unread), stored(unread), download(read), stored(quarantined))
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatal("the orphaned file is still there")
	}

	// Past the maximum age even media read every day goes; quarantined
	// media still stays.
	for i := 0; i < 340; i++ { // 8160h more: past 8760h since the upload
		advance(24 * time.Hour)
		download(read)
	}
	mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/chatalot/media/retention", boss, "")
	if stored(read) || !stored(quarantined) {
		t.Fatalf("past the maximum age: read stored %v, quarantined stored %v", stored(read), stored(quarantined))
	}
	audit := mustRequest(t, "GET", srv.URL+"/_synapse/admin/v1/chatalot/audit_log?limit=100", boss, "")
	for _, a := range []string{`"media_retention"`, `"media_retention_dry_run"`} {
		if !strings.Contains(audit, a) {
			t.Errorf("audit log has no %s", a)
		}
	}
}

// MediaSweepAnswer is the answer of a media retention pass.
type MediaSweepAnswer struct {
	DryRun  bool `json:"dry_run"`
	Expired struct {
		Media, Files int
		Bytes        int64
	}
	OrphanFiles int      `json:"orphan_files"`
	Freed       int64    `json:"freed_bytes"`
	Deleted     []string `json:"deleted_media"`
}

// TestMediaDeleteBefore: Synapse's POST /_synapse/admin/v1/media/delete
// deletes the media not read since before_ts, but the avatars of active
// accounts (keep_profiles, by default) and quarantined media; a dry run
// deletes nothing.
func TestMediaDeleteBefore(t *testing.T) {
	advance := testClockAt(t)
	_, srv, boss := newAdminTestApp(t)
	alice := registerUser(t, srv.URL, "alice")
	upload := func(body string) string {
		return between(mustRequest(t, "POST", srv.URL+"/_matrix/media/v3/upload?filename=x.txt", alice, body), `"content_uri":"`, `"`)
	}
	plain, avatar := upload("plain"), upload("avatar")
	mustRequest(t, "PUT", srv.URL+"/_matrix/client/v3/profile/@alice:localhost/avatar_url", alice, `{"avatar_url":"`+avatar+`"}`)
	advance(time.Hour)
	before := fmt.Sprint(testClock().UnixMilli())
	dry := mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/media/delete?dry_run=true&before_ts="+before, boss, "")
	if !strings.Contains(dry, `"total":1`) || !strings.Contains(dry, `"dry_run":true`) {
		t.Fatalf("dry run: %s", dry)
	}
	out := mustRequest(t, "POST", srv.URL+"/_synapse/admin/v1/media/delete?before_ts="+before, boss, "")
	if !strings.Contains(out, strings.TrimPrefix(plain, "mxc://localhost/")) || !strings.Contains(out, `"total":1`) {
		t.Fatalf("delete: %s", out)
	}
	if code, _ := request(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(avatar, "mxc://"), alice, ""); code != 200 {
		t.Fatalf("the avatar was deleted: %d", code)
	}
	if code, _ := request(t, "POST", srv.URL+"/_synapse/admin/v1/purge_media_cache?before_ts="+before, boss, ""); code != 200 {
		t.Fatalf("purge_media_cache: %d", code)
	}
}

// TestMediaRetentionRunsOnSchedule: the pass runs by itself every
// media_retention_interval.
func TestMediaRetentionRunsOnSchedule(t *testing.T) {
	advance := testClockAt(t)
	app, srv, _ := newAdminTestApp(t, func(c *Config) {
		c.MediaRetentionUnaccessed = "24h"
		c.MediaRetentionInterval = "50ms"
	})
	alice := registerUser(t, srv.URL, "alice")
	id := strings.TrimPrefix(between(mustRequest(t, "POST", srv.URL+"/_matrix/media/v3/upload?filename=x.txt", alice, "soon gone"), `"content_uri":"`, `"`), "mxc://localhost/")
	advance(25 * time.Hour)
	waitUntil(t, func() bool {
		var n int
		app.db.QueryRow(context.Background(), `SELECT count(*) FROM media WHERE media_id = $1`, id).Scan(&n)
		return n == 0
	})
}
