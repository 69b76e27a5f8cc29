package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Helpers of the operations tests (backups, upgrades, metrics, logs,
// deployment files): plain HTTP, so that what is checked is the wire.

// opsDo sends a request with an optional access token and JSON body and
// returns the status and the body.
func opsDo(t testing.TB, method, rawURL, token string, body any) (int, []byte) {
	t.Helper()
	code, _, out := doRequest(t, method, rawURL, token, body)
	return code, out
}

// opsJSON is opsDo that requires a 200 and decodes the answer into v.
func opsJSON(t testing.TB, method, rawURL, token string, body, v any) {
	t.Helper()
	code, out := opsDo(t, method, rawURL, token, body)
	if code != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, rawURL, code, out)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			t.Fatalf("%s %s: %v in %s", method, rawURL, err, out)
		}
	}
}

// opsUser is a registered account.
type opsUser struct {
	ID, Token, Device, Password string
}

// opsRegister registers name with open registration.
func opsRegister(t testing.TB, base, name string) opsUser {
	t.Helper()
	u := opsUser{Password: "correct horse battery staple " + name}
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	opsJSON(t, "POST", base+"/_matrix/client/v3/register", "", map[string]any{
		"username": name, "password": u.Password, "auth": map[string]string{"type": "m.login.dummy"},
	}, &out)
	u.ID, u.Token, u.Device = out.UserID, out.AccessToken, out.DeviceID
	return u
}

// opsCreateRoom creates an unencrypted room (the harness's encryption
// policy is optional) and returns its ID.
func opsCreateRoom(t testing.TB, base, token string, name string) string {
	t.Helper()
	var out struct {
		RoomID string `json:"room_id"`
	}
	opsJSON(t, "POST", base+"/_matrix/client/v3/createRoom", token, map[string]any{"preset": "private_chat", "name": name}, &out)
	return out.RoomID
}

// opsSend sends an m.room.message and returns its event ID.
func opsSend(t testing.TB, base, token, roomID, txn, body string) (string, error) {
	var r io.Reader = strings.NewReader(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))
	req, _ := http.NewRequest("PUT", base+"/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn, r)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		EventID string `json:"event_id"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &out) != nil || out.EventID == "" {
		return "", fmt.Errorf("send: %d %s", resp.StatusCode, raw)
	}
	return out.EventID, nil
}

// opsMessages reads a room's whole timeline (newest first, paginating
// backwards) and returns the bodies of its m.room.message events.
func opsMessages(t testing.TB, base, token, roomID string) []string {
	t.Helper()
	var bodies []string
	from := ""
	for page := 0; page < 1000; page++ {
		u := base + "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/messages?dir=b&limit=100"
		if from != "" {
			u += "&from=" + url.QueryEscape(from)
		}
		var out struct {
			Chunk []struct {
				Type    string `json:"type"`
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			} `json:"chunk"`
			End string `json:"end"`
		}
		opsJSON(t, "GET", u, token, nil, &out)
		for _, e := range out.Chunk {
			if e.Type == "m.room.message" {
				bodies = append(bodies, e.Content.Body)
			}
		}
		if out.End == "" || len(out.Chunk) == 0 {
			return bodies
		}
		from = out.End
	}
	t.Fatal("/messages did not end after 1000 pages")
	return nil
}

// opsUpload uploads bytes and returns the mxc:// URI.
func opsUpload(t testing.TB, base, token string, data []byte) string {
	t.Helper()
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	opsJSON(t, "POST", base+"/_matrix/media/v3/upload?filename=f.bin", token, data, &out)
	return out.ContentURI
}

// opsDownload fetches an mxc:// URI through the authenticated endpoint.
func opsDownload(t testing.TB, base, token, mxc string) (int, []byte) {
	t.Helper()
	return opsDo(t, "GET", base+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(mxc, "mxc://"), token, nil)
}

// opsCopyDir copies a directory tree (a data directory or a fixture).
func opsCopyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// opsTool finds a deployment tool, or skips the test saying why. In CI
// (CI set) a missing tool fails instead: .ci/run installs them, and a
// skipped check would hide a missing install step.
func opsTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed (Debian package %s); .ci/run should install it", name, debianPackage)
	}
	t.Skipf("%s is not installed (apt-get install %s); skipping its syntax check", name, debianPackage)
	return ""
}

// opsRepoRoot is the repository's top folder.
func opsRepoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd) // tests run in tests/
}
