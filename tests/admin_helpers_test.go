package tests

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// Helpers of the admin tests (admin_*_test.go).

const admPassword = "correct horse battery staple"

// admEnv is a running server with a server admin ("boss", created by the
// CLI before the first start, as the README tells a new admin to).
type admEnv struct {
	t     *testing.T
	s     *harness.Server
	token string // the admin's access token
}

func admStart(t *testing.T, args ...string) *admEnv {
	t.Helper()
	dir := t.TempDir()
	out, err := harness.Run(t, admPassword+"\n", "admin", "create-user", "boss", "--admin", "--password-stdin", "--data-dir", dir)
	if err != nil {
		t.Fatalf("create the first admin: %v\n%s", err, out)
	}
	s := harness.Start(t, harness.WithDataDir(dir), harness.WithArgs(args...))
	e := &admEnv{t: t, s: s}
	e.token = e.login("boss", admPassword)
	return e
}

// url builds a URL of the server: each %s of format is replaced by the
// next arg, path-escaped.
func (e *admEnv) url(format string, args ...string) string {
	parts := strings.Split(format, "%s")
	var b strings.Builder
	b.WriteString(e.s.URL)
	for i, p := range parts {
		b.WriteString(p)
		if i < len(args) {
			b.WriteString(url.PathEscape(args[i]))
		}
	}
	return b.String()
}

// do sends a request: body is nil, a string (sent as is) or a value
// (JSON-encoded). It returns the status and the decoded JSON object.
func (e *admEnv) do(method, u, token string, body any) (int, map[string]any) {
	e.t.Helper()
	code, raw := admRaw(e.t, method, u, token, body)
	out := map[string]any{}
	_ = json.Unmarshal(raw, &out)
	return code, out
}

func admRaw(t *testing.T, method, u, token string, body any) (int, []byte) {
	t.Helper()
	code, _, raw := doRequest(t, method, u, token, body)
	return code, raw
}

// want checks a request's status (and errcode, when not empty) and returns
// the body.
func (e *admEnv) want(method, u, token string, body any, status int, errcode string) map[string]any {
	e.t.Helper()
	code, out := e.do(method, u, token, body)
	if code != status || (errcode != "" && out["errcode"] != errcode) {
		e.t.Fatalf("%s %s: %d %v, want %d %s", method, u, code, out, status, errcode)
	}
	return out
}

// admin is want with the admin's token.
func (e *admEnv) admin(method, u string, body any, status int) map[string]any {
	e.t.Helper()
	return e.want(method, u, e.token, body, status, "")
}

func (e *admEnv) register(name string) string {
	e.t.Helper()
	out := e.want("POST", e.s.URL+"/_matrix/client/v3/register", "", map[string]any{
		"username": name, "password": admPassword, "auth": map[string]string{"type": "m.login.dummy"}}, 200, "")
	return out["access_token"].(string)
}

func (e *admEnv) loginCode(name, password string) (int, map[string]any) {
	e.t.Helper()
	return e.do("POST", e.s.URL+"/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": name}, "password": password})
}

func (e *admEnv) login(name, password string) string {
	e.t.Helper()
	code, out := e.loginCode(name, password)
	if code != 200 {
		e.t.Fatalf("login %s: %d %v", name, code, out)
	}
	return out["access_token"].(string)
}

func (e *admEnv) createRoom(token string, body map[string]any) string {
	e.t.Helper()
	out := e.want("POST", e.s.URL+"/_matrix/client/v3/createRoom", token, body, 200, "")
	return out["room_id"].(string)
}

func (e *admEnv) send(token, room, body string) string {
	e.t.Helper()
	out := e.want("PUT", e.url("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", room, admTxn()), token,
		map[string]any{"msgtype": "m.text", "body": body}, 200, "")
	return out["event_id"].(string)
}

func (e *admEnv) joinedRooms(token string) []any {
	e.t.Helper()
	out := e.want("GET", e.s.URL+"/_matrix/client/v3/joined_rooms", token, nil, 200, "")
	return out["joined_rooms"].([]any)
}

func (e *admEnv) whoami(token string) (user, device string) {
	e.t.Helper()
	out := e.want("GET", e.s.URL+"/_matrix/client/v3/account/whoami", token, nil, 200, "")
	return out["user_id"].(string), out["device_id"].(string)
}

// upload stores a small file as the token's user and returns its media ID.
func (e *admEnv) upload(token, content string) string {
	e.t.Helper()
	code, raw := admRaw(e.t, "POST", e.s.URL+"/_matrix/media/v3/upload?filename=a.txt", token, content)
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(raw, &out); code != 200 || err != nil {
		e.t.Fatalf("upload: %d %s", code, raw)
	}
	return strings.TrimPrefix(out.ContentURI, "mxc://localhost/")
}

func (e *admEnv) download(token, mediaID string) int {
	e.t.Helper()
	code, _ := admRaw(e.t, "GET", e.url("/_matrix/client/v1/media/download/localhost/%s", mediaID), token, nil)
	return code
}

// audit returns the audit log, oldest first.
func (e *admEnv) audit() []map[string]any {
	e.t.Helper()
	out := e.admin("GET", e.s.URL+"/_synapse/admin/v1/chatalot/audit_log?dir=f&limit=1000", nil, 200)
	var list []map[string]any
	for _, x := range out["entries"].([]any) {
		list = append(list, x.(map[string]any))
	}
	return list
}

// auditActions lists the actions of the audit log, oldest first.
func (e *admEnv) auditActions() []string {
	var actions []string
	for _, x := range e.audit() {
		actions = append(actions, x["action"].(string))
	}
	return actions
}

// admWait polls cond until it holds or d passes.
func admWait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var admTxnN atomic.Int64

func admTxn() string { return "adm" + strconv.FormatInt(admTxnN.Add(1), 10) }

func admContains(list []any, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func strconvF(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// registerWithToken registers name with an invite code through the
// m.login.registration_token stage; it returns the final answer.
func (e *admEnv) registerWithToken(name, token string) (int, map[string]any) {
	e.t.Helper()
	u := e.s.URL + "/_matrix/client/v3/register"
	code, out := e.do("POST", u, "", map[string]any{"username": name, "password": admPassword})
	session, _ := out["session"].(string)
	if code != 401 || session == "" {
		e.t.Fatalf("register %s, first stage: %d %v", name, code, out)
	}
	return e.do("POST", u, "", map[string]any{"username": name, "password": admPassword,
		"auth": map[string]any{"type": "m.login.registration_token", "token": token, "session": session}})
}

// deleteRoom deletes a room with the v2 API and waits for the outcome.
func (e *admEnv) deleteRoom(room string, body map[string]any) map[string]any {
	e.t.Helper()
	out := e.admin("DELETE", e.url("/_synapse/admin/v2/rooms/%s", room), body, 200)
	id := out["delete_id"].(string)
	var status map[string]any
	admWait(e.t, 20*time.Second, "the room deletion", func() bool {
		status = e.admin("GET", e.url("/_synapse/admin/v2/rooms/delete_status/%s", id), nil, 200)
		return status["status"] == "complete" || status["status"] == "failed"
	})
	if status["status"] != "complete" {
		e.t.Fatalf("deletion: %v", status)
	}
	return status
}
