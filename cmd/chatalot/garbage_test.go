package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
)

// newTestApp wires the whole server in-process on a temporary data
// directory, with open registration and no rate limits.
func newTestApp(t *testing.T) (*App, *httptest.Server) {
	t.Helper()
	cfg := defaults()
	cfg.DataDir = t.TempDir()
	cfg.Registration = "open"
	cfg.RateLimits = "off"
	cfg.Encryption = "optional"
	app, err := openApp(cfg, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app.Router())
	t.Cleanup(func() {
		app.BeginShutdown()
		srv.Close()
		app.Close()
	})
	return app, srv
}

func registerUser(t *testing.T, base, name string) string {
	t.Helper()
	body := `{"username":"` + name + `","password":"correct horse battery staple","auth":{"type":"m.login.dummy"}}`
	resp, err := http.Post(base+"/_matrix/client/v3/register", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		t.Fatalf("register: %d", resp.StatusCode)
	}
	return out.AccessToken
}

// paramValues gives, for every path parameter name the router uses, the
// values the garbage matrix tries: a well-formed unknown identifier, a
// 256-byte one, NUL bytes and invalid UTF-8. A route whose parameter is not
// listed here fails the test, so new routes cannot escape the matrix.
var paramValues = map[string][]string{
	"roomId":        {"!unknown:localhost", "!" + strings.Repeat("a", 255) + ":localhost"},
	"roomIdOrAlias": {"!unknown:localhost", "#unknown:localhost"},
	"roomAlias":     {"#unknown:localhost", "#" + strings.Repeat("a", 255) + ":localhost"},
	"eventId":       {"$unknown", "$" + strings.Repeat("a", 255)},
	"userId":        {"@nobody:localhost", "@" + strings.Repeat("a", 255) + ":localhost"},
	"deviceId":      {"NODEVICE", strings.Repeat("D", 256)},
	"eventType":     {"m.room.message", strings.Repeat("t", 256)},
	"stateKey":      {"", "@nobody:localhost"},
	"txnId":         {"txn1", strings.Repeat("x", 256)},
	"filterId":      {"0", "999999999999999999999"},
	"serverName":    {"localhost", "bad server name"},
	"mediaId":       {"unknownmedia", strings.Repeat("m", 256)},
	"fileName":      {"f.txt", "a%2Fb"},
	"receiptType":   {"m.read", "m.unknown"},
	"relType":       {"m.annotation", strings.Repeat("r", 256)},
	"version":       {"1", "notanumber"},
	"sessionId":     {"s", strings.Repeat("s", 256)},
	"token":         {"nosuchtoken", strings.Repeat("k", 256)},
	"keyID":         {"ed25519:x", "x"},
	"kind":          {"override", "nosuchkind"},
	"ruleId":        {".m.rule.master", strings.Repeat("z", 256)},
	"scope":         {"global", "nosuchscope"},
	"attr":          {"enabled", "nosuchattr"},
	"loginType":     {"m.login.password", "x"},
	"reportId":      {"1", "x"},
	"id":            {"1", "x"},
	"type":          {"m.direct", strings.Repeat("t", 256)},
	"purgeId":       {"x", strings.Repeat("p", 256)},
	"deleteId":      {"x", strings.Repeat("p", 256)},
	"action":        {"x", "y"},
	"keyName":       {"displayname", strings.Repeat("k", 256)},
	"tag":           {"u.work", strings.Repeat("g", 256)},
	"delayId":       {"syd_unknown", strings.Repeat("d", 256)},
}

// escaped percent-encodes values for a path ("#" would end the path).
func escaped(values []string) []string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = url.PathEscape(v)
	}
	return out
}

// garbageSuffixes are appended to every identifier to make it malformed.
var garbageSuffixes = []string{"%00", "%FF%FE"}

func garbageBodies() map[string][]byte {
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	return map[string][]byte{
		"empty":          nil,
		"not json":       []byte("this is not json"),
		"array":          []byte(`[1,2,3]`),
		"string":         []byte(`"just a string"`),
		"null":           []byte(`null`),
		"wrong types":    []byte(`{"user_id":1,"room_id":[],"body":{},"type":7,"content":"x","auth":"x","password":12,"username":true,"device_id":[1],"displayname":{},"timeout":"soon","limit":"ten","one_time_keys":[],"device_keys":"k","filter":5,"messages":[],"visibility":3,"preset":[],"invite":"bob","initial_state":{},"reason":9}`),
		"missing fields": []byte(`{}`),
		"1MiB string":    []byte(`{"body":"` + strings.Repeat("x", 1<<20) + `"}`),
		"invalid utf-8":  []byte("{\"body\":\"\xff\xfe\xfd\"}"),
		"nul bytes":      []byte("{\"body\":\"a\x00b\",\"user_id\":\"@a\\u0000:localhost\"}"),
		"2^53":           []byte(`{"n":9007199254740993,"timeout":9007199254740993,"limit":9007199254740993}`),
		"float":          []byte(`{"n":1.5,"timeout":0.5,"limit":2.5}`),
		"deep nesting":   []byte(deep),
		"unknown ids":    []byte(`{"user_id":"@nobody:localhost","room_id":"!unknown:localhost","event_id":"$unknown","device_id":"NODEVICE"}`),
		"huge ids":       []byte(`{"user_id":"@` + strings.Repeat("a", 256) + `:localhost","room_id":"!` + strings.Repeat("a", 256) + `:localhost"}`),
		"truncated":      []byte(`{"user_id":"@nobody:local`),
		"duplicate keys": []byte(`{"a":1,"a":2}`),
		"empty object":   []byte(`{"":{}}`),
		"long array":     []byte(`{"invite":[` + strings.Repeat(`"@x:localhost",`, 5000) + `"@y:localhost"]}`),
	}
}

// fill replaces each :param and *param of a route template.
func fill(t *testing.T, template string, pick func(name string, values []string) string) string {
	parts := strings.Split(template, "/")
	for i, p := range parts {
		if p == "" || (p[0] != ':' && p[0] != '*') {
			continue
		}
		name := p[1:]
		values, ok := paramValues[name]
		if !ok {
			t.Fatalf("route %s: no garbage entry for parameter %q; add it to paramValues", template, name)
		}
		parts[i] = pick(name, escaped(values))
	}
	return strings.Join(parts, "/")
}

// TestGarbageOnEveryRoute sends malformed requests to every route the server
// has and requires that none is answered with a 5xx, and that every error
// is a JSON Matrix error.
func TestGarbageOnEveryRoute(t *testing.T) {
	app, srv := newTestApp(t)
	token := registerUser(t, srv.URL, "garbage")
	routes := app.Router().(*gin.Engine).Routes()
	if len(routes) < 50 {
		t.Fatalf("only %d routes: is the router wired?", len(routes))
	}
	client := &http.Client{}
	requests, failures := 0, 0
	send := func(method, path string, body []byte, auth bool) {
		requests++
		req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		if err != nil {
			return // a path the client library itself refuses to send
		}
		req.Header.Set("Content-Type", "application/json")
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", method, path, err)
			failures++
			return
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			failures++
			if failures < 30 {
				t.Errorf("%s %s: %d %s", method, trimPath(path), resp.StatusCode, raw)
			}
			return
		}
		if resp.StatusCode >= 400 {
			var e struct {
				Errcode string          `json:"errcode"`
				Flows   json.RawMessage `json:"flows"`
			}
			// A 401 with flows is the first step of user-interactive auth,
			// which the spec sends without an errcode.
			uia := resp.StatusCode == 401 && json.Unmarshal(raw, &e) == nil && e.Flows != nil
			if !uia && (!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || json.Unmarshal(raw, &e) != nil || !strings.HasPrefix(e.Errcode, "M_")) {
				failures++
				if failures < 30 {
					t.Errorf("%s %s: %d is not a JSON Matrix error: %.200s", method, trimPath(path), resp.StatusCode, raw)
				}
			}
		}
	}
	bodies := garbageBodies()
	for _, rt := range routes {
		if rt.Path == "/_matrix/client/v3/logout" || rt.Path == "/_matrix/client/v3/logout/all" ||
			rt.Path == "/_matrix/client/r0/logout" || rt.Path == "/_matrix/client/r0/logout/all" {
			continue // these end the test's session; the authorisation suite covers them
		}
		good := fill(t, rt.Path, func(_ string, v []string) string { return v[0] })
		for _, body := range bodies {
			send(rt.Method, good, body, true)
		}
		for i := 0; i < 2; i++ {
			for _, suffix := range append([]string{""}, garbageSuffixes...) {
				p := fill(t, rt.Path, func(_ string, v []string) string { return v[i%len(v)] + suffix })
				if p == good {
					continue
				}
				send(rt.Method, p, bodies["unknown ids"], true)
			}
		}
		send(rt.Method, good, bodies["missing fields"], false)
	}
	t.Logf("%d routes, %d requests, %d failures", len(routes), requests, failures)
	// The server is still serving.
	resp, err := http.Get(srv.URL + "/_matrix/client/versions")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the server stopped answering: %v", err)
	}
	resp.Body.Close()
}

func trimPath(p string) string {
	if len(p) > 120 {
		return p[:120] + "…"
	}
	return p
}
