package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
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
