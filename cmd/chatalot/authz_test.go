package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

// publicRoutes answer without an access token, as the spec says.
var publicRoutes = map[string]bool{
	"GET /":                                                               true,
	"GET /health":                                                         true,
	"GET /_matrix/client/versions":                                        true,
	"GET /.well-known/matrix/client":                                      true,
	"GET /.well-known/matrix/support":                                     true,
	"GET /_matrix/key/v2/server":                                          true,
	"GET /_matrix/key/v2/server/:keyID":                                   true,
	"GET /_matrix/key/v2/query/:serverName":                               true,
	"POST /_matrix/key/v2/query":                                          true,
	"GET /_matrix/federation/v1/version":                                  true,
	"GET /_matrix/client/v3/login":                                        true,
	"POST /_matrix/client/v3/login":                                       true,
	"GET /_matrix/client/r0/login":                                        true,
	"POST /_matrix/client/r0/login":                                       true,
	"POST /_matrix/client/v3/register":                                    true,
	"POST /_matrix/client/r0/register":                                    true,
	"GET /_matrix/client/v3/register/available":                           true,
	"GET /_matrix/client/r0/register/available":                           true,
	"GET /_matrix/client/v1/register/m.login.registration_token/validity": true,
	"POST /_matrix/client/r0/refresh":                                     true,
	"POST /_matrix/client/v3/refresh":                                     true,
	"POST /_matrix/client/v1/refresh":                                     true,
	"GET /_matrix/federation/v1/openid/userinfo":                          true,
	"GET /_synapse/admin/v1/register":                                     true,
	"POST /_synapse/admin/v1/register":                                    true,
	"GET /_matrix/client/v3/publicRooms":                                  true,
	"GET /_matrix/client/r0/publicRooms":                                  true,
	"GET /_matrix/client/v3/directory/room/:roomAlias":                    true,
	"GET /_matrix/client/v3/directory/list/room/:roomId":                  true,
	"GET /_matrix/client/r0/directory/room/:roomAlias":                    true,
	"GET /_matrix/client/r0/directory/list/room/:roomId":                  true,
	"GET /_matrix/media/r0/download/:serverName/:mediaId":                 true,
	"GET /_matrix/media/r0/download/:serverName/:mediaId/:fileName":       true,
	"GET /_matrix/media/r0/thumbnail/:serverName/:mediaId":                true,
	"GET /_matrix/client/v1/room_summary/:roomIdOrAlias":                  true,
	"GET /_matrix/media/v3/config":                                        true,
	"GET /_matrix/media/v3/download/:serverName/:mediaId":                 true,
	"GET /_matrix/media/v3/download/:serverName/:mediaId/:fileName":       true,
	"GET /_matrix/media/v3/thumbnail/:serverName/:mediaId":                true,
	"GET /_matrix/media/v3/preview_url":                                   true,
	"GET /_matrix/client/v3/login/sso/redirect":                           true,
	"GET /metrics": true,
	// MSC4140: the delay ID is the capability (it may be handed to a
	// call's SFU), so managing a delayed event needs no token.
	"POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/:delayId":         true,
	"POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/:delayId/:action": true,
}

func route(rt gin.RouteInfo) string { return rt.Method + " " + rt.Path }

// isPublic reports whether the spec lets a route answer without a token:
// the listed ones and every requestToken endpoint (3PID validation, which
// Chatalot refuses anyway).
func isPublic(rt gin.RouteInfo) bool {
	return publicRoutes[route(rt)] || strings.HasSuffix(rt.Path, "/requestToken")
}

// TestEveryRouteNeedsAToken checks, for every route not public by the
// spec, that a missing, unknown, logged-out or deactivated user's token gets
// the spec's 401.
func TestEveryRouteNeedsAToken(t *testing.T) {
	app, srv := newTestApp(t)
	loggedOut := registerUser(t, srv.URL, "loggedout")
	if code := post(t, srv.URL+"/_matrix/client/v3/logout", loggedOut, "{}"); code != 200 {
		t.Fatalf("logout: %d", code)
	}
	deactivated := registerUser(t, srv.URL, "deactivated")
	body := `{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"deactivated"},"password":"correct horse battery staple"}}`
	if code := post(t, srv.URL+"/_matrix/client/v3/account/deactivate", deactivated, body); code != 200 {
		t.Fatalf("deactivate: %d", code)
	}
	tokens := map[string]string{"no token": "", "unknown token": "syt_not_a_real_token", "logged-out token": loggedOut, "deactivated user": deactivated}
	wantCode := map[string]string{"no token": "M_MISSING_TOKEN", "unknown token": "M_UNKNOWN_TOKEN", "logged-out token": "M_UNKNOWN_TOKEN", "deactivated user": "M_UNKNOWN_TOKEN"}
	checked := 0
	for _, rt := range app.Router().(*gin.Engine).Routes() {
		if isPublic(rt) {
			continue
		}
		path := fill(t, rt.Path, func(_ string, v []string) string { return v[0] })
		for name, tok := range tokens {
			code, raw := request(t, rt.Method, srv.URL+path, tok, "{}")
			if code != 401 || !strings.Contains(raw, wantCode[name]) {
				t.Errorf("%s with %s: %d %.150s, want 401 %s", route(rt), name, code, raw, wantCode[name])
			}
		}
		checked++
	}
	t.Logf("%d authenticated routes checked", checked)
}

// TestNonMemberGetsNoRoomContent sends a non-member's request to every
// room-scoped route of a room full of canary strings; no answer may contain
// one.
func TestNonMemberGetsNoRoomContent(t *testing.T) {
	app, srv := newTestApp(t)
	owner := registerUser(t, srv.URL, "owner")
	outsider := registerUser(t, srv.URL, "outsider")
	const canary = "CANARY-7f3a9"
	code, raw := request(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", owner,
		`{"preset":"private_chat","name":"`+canary+` name","topic":"`+canary+` topic","room_alias_name":"canaryroom"}`)
	if code != 200 {
		t.Fatalf("createRoom: %d %s", code, raw)
	}
	roomID := between(raw, `"room_id":"`, `"`)
	code, raw = request(t, "PUT", srv.URL+"/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/1", owner, `{"msgtype":"m.text","body":"`+canary+` body"}`)
	if code != 200 {
		t.Fatalf("send: %d %s", code, raw)
	}
	eventID := between(raw, `"event_id":"`, `"`)
	checked := 0
	for _, rt := range app.Router().(*gin.Engine).Routes() {
		if !strings.Contains(rt.Path, ":roomId") && !strings.Contains(rt.Path, ":roomIdOrAlias") {
			continue
		}
		path := fill(t, rt.Path, func(name string, v []string) string {
			switch name {
			case "roomId", "roomIdOrAlias":
				return roomID
			case "eventId":
				return eventID
			}
			return v[0]
		})
		_, raw := request(t, rt.Method, srv.URL+path, outsider, "{}")
		if strings.Contains(raw, canary) {
			t.Errorf("%s leaks room content to a non-member: %.200s", route(rt), raw)
		}
		checked++
	}
	// Search, sync and the directory are not room-scoped by path.
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/_matrix/client/v3/search", `{"search_categories":{"room_events":{"search_term":"` + canary + `"}}}`},
		{"GET", "/_matrix/client/v3/sync", ""},
		{"GET", "/_matrix/client/v3/publicRooms", ""},
		{"GET", "/_matrix/client/v3/directory/room/%23canaryroom:localhost", ""},
	} {
		_, raw := request(t, r.method, srv.URL+r.path, outsider, r.body)
		if strings.Contains(raw, canary) {
			t.Errorf("%s %s leaks room content to a non-member: %.200s", r.method, r.path, raw)
		}
	}
	if checked < 20 {
		t.Fatalf("only %d room-scoped routes found", checked)
	}
}

func request(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func post(t *testing.T, url, token, body string) int {
	code, _ := request(t, "POST", url, token, body)
	return code
}

func between(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	s = s[i+len(start):]
	if j := strings.Index(s, end); j >= 0 {
		return s[:j]
	}
	return s
}
