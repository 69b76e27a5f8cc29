package server

import (
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
)

// TestIndexPage: the page at "/" names the server and its URL, escaped.
func TestIndexPage(t *testing.T) {
	gin.SetMode(gin.TestMode)
	r := gin.New()
	New(Deps{ServerName: "chat.example.org", BaseURL: `https://chat.example.org/?a=<b>&c="d"`}).Routes(r)
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	body := w.Body.String()
	for _, want := range []string{
		"<title>Chatalot on chat.example.org</title>",
		"<code>https://chat.example.org/?a=&lt;b&gt;&amp;c=&#34;d&#34;</code>",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "{{") || strings.Contains(body, "<b>") {
		t.Errorf("placeholder or unescaped text left:\n%s", body)
	}
}

func newKeyServer(t *testing.T) http.Handler {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := api.NewRouter(api.Options{Log: zerolog.Nop()})
	New(Deps{ServerName: "hs1", Version: "1.2.3",
		Key: events.SigningKey{ServerName: "hs1", KeyID: "ed25519:k", Private: priv}}).Routes(r)
	return r
}

func serve(r http.Handler, method, path, body string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(body)))
	return w
}

// The federation version and the notary key query answer on their spec
// methods, so a wrong method is 405 M_UNRECOGNIZED, not 404.
func TestFederationVersionAndKeyQuery(t *testing.T) {
	r := newKeyServer(t)
	if w := serve(r, "GET", "/_matrix/federation/v1/version", ""); w.Code != 200 ||
		gjson.Get(w.Body.String(), "server.name").Str != "Chatalot" || gjson.Get(w.Body.String(), "server.version").Str != "1.2.3" {
		t.Fatalf("version: %d %s", w.Code, w.Body)
	}
	for _, c := range []struct{ method, path string }{
		{"PUT", "/_matrix/federation/v1/version"},
		{"PUT", "/_matrix/key/v2/query"},
		{"DELETE", "/_matrix/key/v2/query/hs1"},
	} {
		w := serve(r, c.method, c.path, "")
		if w.Code != http.StatusMethodNotAllowed || gjson.Get(w.Body.String(), "errcode").Str != "M_UNRECOGNIZED" {
			t.Errorf("%s %s: %d %s", c.method, c.path, w.Code, w.Body)
		}
	}
	// Without federation (no Notary) it vouches for its own keys only; other servers: empty list.
	w := serve(r, "POST", "/_matrix/key/v2/query", `{"server_keys":{"hs1":{},"elsewhere.example":{}}}`)
	keys := gjson.Get(w.Body.String(), "server_keys")
	if w.Code != 200 || len(keys.Array()) != 1 || keys.Get("0.server_name").Str != "hs1" ||
		!keys.Get("0.signatures.hs1.ed25519:k").Exists() {
		t.Fatalf("batch query: %d %s", w.Code, w.Body)
	}
	w = serve(r, "GET", "/_matrix/key/v2/query/elsewhere.example", "")
	if w.Code != 200 || w.Body.String() != `{"server_keys":[]}` {
		t.Fatalf("query for another server: %d %s", w.Code, w.Body)
	}
	if w := serve(r, "GET", "/_matrix/key/v2/query/hs1", ""); w.Code != 200 || len(gjson.Get(w.Body.String(), "server_keys").Array()) != 1 {
		t.Fatalf("query for itself: %d %s", w.Code, w.Body)
	}
	if w := serve(r, "POST", "/_matrix/key/v2/query", `{}`); w.Code != 400 || gjson.Get(w.Body.String(), "errcode").Str != "M_MISSING_PARAM" {
		t.Fatalf("no server_keys: %d %s", w.Code, w.Body)
	}
}
