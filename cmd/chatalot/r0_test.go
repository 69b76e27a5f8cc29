package main

import (
	"strings"
	"testing"

	"github.com/chatalot/chatalot/api"
	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
)

// r0Prefixes maps each r0 prefix to its v3 prefix.
var r0Prefixes = map[string]string{"/_matrix/client/r0": "/_matrix/client/v3", "/_matrix/media/r0": "/_matrix/media/v3"}

// TestR0RoutesAreTheV3Handlers: every r0-era client endpoint the server
// serves under v3 is also served under r0, by the same handler; nothing
// newer is; and walking every r0 route over HTTP gives the answer its v3
// twin gives.
func TestR0RoutesAreTheV3Handlers(t *testing.T) {
	app, srv := newTestApp(t)
	routes := app.Router().(*gin.Engine).Routes()
	handler := map[string]string{}
	for _, rt := range routes {
		handler[route(rt)] = rt.Handler
	}
	var r0 []gin.RouteInfo
	for _, rt := range routes {
		for r0p, v3p := range r0Prefixes {
			if rel, ok := strings.CutPrefix(rt.Path, r0p); ok {
				r0 = append(r0, rt)
				twin := rt.Method + " " + v3p + rel
				if h, ok := handler[twin]; !ok || h != rt.Handler {
					t.Errorf("%s is not served by its v3 twin's handler (%s)", route(rt), h)
				}
				if r0p == "/_matrix/client/r0" && !api.IsR0ClientEndpoint(rt.Method, rel) {
					t.Errorf("%s is served under r0 but the r0 API did not have it", route(rt))
				}
			}
			if rel, ok := strings.CutPrefix(rt.Path, "/_matrix/client/v3"); ok && r0p == "/_matrix/client/r0" &&
				api.IsR0ClientEndpoint(rt.Method, rel) {
				if _, ok := handler[rt.Method+" "+r0p+rel]; !ok {
					t.Errorf("%s existed in r0 but is not served there", route(rt))
				}
			}
		}
	}
	if len(r0) < 90 {
		t.Fatalf("only %d r0 routes", len(r0))
	}

	// The walk: no token, then a user's token. Logging out would end the
	// walk, so those two are compared without a token only.
	token := registerUser(t, srv.URL, "rzero")
	for _, rt := range r0 {
		r0Path := fill(t, rt.Path, func(_ string, v []string) string { return v[0] })
		v3Path := r0Path
		for r0p, v3p := range r0Prefixes {
			if rel, ok := strings.CutPrefix(r0Path, r0p); ok {
				v3Path = v3p + rel
			}
		}
		tokens := []string{"", token}
		if strings.HasSuffix(rt.Path, "/logout") || strings.HasSuffix(rt.Path, "/logout/all") {
			tokens = tokens[:1]
		}
		for _, tok := range tokens {
			v3Code, v3Raw := request(t, rt.Method, srv.URL+v3Path, tok, "{}")
			r0Code, r0Raw := request(t, rt.Method, srv.URL+r0Path, tok, "{}")
			if r0Code != v3Code || gjson.Get(r0Raw, "errcode").Str != gjson.Get(v3Raw, "errcode").Str {
				t.Errorf("%s %s (token %v): r0 %d %.120s, v3 %d %.120s", rt.Method, r0Path, tok != "", r0Code, r0Raw, v3Code, v3Raw)
			}
			// (URL previews are refused on purpose, under every version.)
			if r0Code == 404 && gjson.Get(r0Raw, "errcode").Str == "M_UNRECOGNIZED" && !strings.HasSuffix(rt.Path, "/preview_url") {
				t.Errorf("%s %s is not routed", rt.Method, r0Path)
			}
		}
	}

	// Endpoints added in v1.1 or later are v3 only.
	for _, c := range []struct{ method, path string }{
		{"POST", "/_matrix/client/r0/knock/%21room:localhost"},
		{"POST", "/_matrix/client/r0/refresh"},
		{"GET", "/_matrix/client/r0/room_keys/version"},
		{"POST", "/_matrix/client/r0/keys/device_signing/upload"},
		{"DELETE", "/_matrix/client/r0/profile/@rzero:localhost/displayname"},
		{"GET", "/_matrix/client/r0/profile/@rzero:localhost/m.tz"},
		{"PUT", "/_matrix/media/r0/upload/localhost/abc"},
	} {
		code, raw := request(t, c.method, srv.URL+c.path, token, "{}")
		if code != 404 || gjson.Get(raw, "errcode").Str != "M_UNRECOGNIZED" {
			t.Errorf("%s %s: %d %.120s, want 404 M_UNRECOGNIZED", c.method, c.path, code, raw)
		}
	}
}
