package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
)

func newTestRouter(t *testing.T, logIP bool) (*gin.Engine, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	r := NewRouter(Options{Log: zerolog.New(&logs), MaxBodyBytes: 100, LogIPAddresses: logIP})
	r.GET("/panic", func(c *gin.Context) { panic("boom") })
	r.GET("/fail", Handle(func(c *gin.Context) error { return errors.New("disk on fire") }))
	r.GET("/forbidden", Handle(func(c *gin.Context) error { return spec.Forbidden("no") }))
	r.GET("/guarded", Middleware(func(c *gin.Context) error {
		if c.Query("pass") == "" {
			return spec.Forbidden("no pass")
		}
		return nil
	}), func(c *gin.Context) { c.JSON(200, gin.H{"through": true}) })
	r.POST("/json", Handle(func(c *gin.Context) error {
		var v struct {
			N int `json:"n"`
		}
		if err := ReadJSON(c, &v); err != nil {
			return err
		}
		c.JSON(200, v)
		return nil
	}))
	r.POST("/canonical", Handle(func(c *gin.Context) error {
		body, err := ReadCanonical(c, 50)
		if err != nil {
			return err
		}
		c.Data(200, "application/json", body)
		return nil
	}))
	r.POST("/big", BodyLimit(1000), Handle(func(c *gin.Context) error {
		var v map[string]any
		if err := ReadJSON(c, &v); err != nil {
			return err
		}
		c.JSON(200, gin.H{})
		return nil
	}))
	return r, &logs
}

func call(r http.Handler, method, path, body string) (*httptest.ResponseRecorder, map[string]any) {
	w := httptest.NewRecorder()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = "203.0.113.7:1234"
	r.ServeHTTP(w, req)
	var m map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &m)
	return w, m
}

func TestErrorsRenderAsMatrixErrors(t *testing.T) {
	r, logs := newTestRouter(t, false)
	cases := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", "/panic", "", 500, "M_UNKNOWN"},
		{"GET", "/fail", "", 500, "M_UNKNOWN"},
		{"GET", "/forbidden", "", 403, "M_FORBIDDEN"},
		{"GET", "/nowhere", "", 404, "M_UNRECOGNIZED"},
		{"GET", "/guarded", "", 403, "M_FORBIDDEN"},
		{"GET", "/guarded?pass=1", "", 200, ""},
		{"DELETE", "/forbidden", "", 405, "M_UNRECOGNIZED"},
		{"POST", "/json", `{"n":`, 400, "M_NOT_JSON"},
		{"POST", "/json", `[1,2]`, 400, "M_BAD_JSON"},
		{"POST", "/json", "{\"s\":\"a\x81\"}", 400, "M_NOT_JSON"}, // invalid UTF-8
		{"POST", "/json", `{"n":1}`, 200, ""},
		{"POST", "/json", `{"n":"one"}`, 400, "M_BAD_JSON"},
		{"POST", "/json", `{"n":"` + strings.Repeat("x", 200) + `"}`, 413, "M_TOO_LARGE"},
		{"POST", "/canonical", `{"b":1, "a":2}`, 200, ""},
		{"POST", "/canonical", ``, 200, ""},
		{"POST", "/canonical", `{"a":1,"a":2}`, 400, "M_BAD_JSON"}, // duplicate key
		{"POST", "/canonical", `{"a":1.5}`, 400, "M_BAD_JSON"},     // no canonical form
		{"POST", "/canonical", "{\"s\":\"a\x81\"}", 400, "M_NOT_JSON"},
		{"POST", "/canonical", `[1]`, 400, "M_BAD_JSON"},
		{"POST", "/canonical", `{"n":"` + strings.Repeat("x", 60) + `"}`, 413, "M_TOO_LARGE"},
		{"POST", "/big", `{"n":"` + strings.Repeat("x", 200) + `"}`, 200, ""},
		{"POST", "/big", `{"n":"` + strings.Repeat("x", 2000) + `"}`, 413, "M_TOO_LARGE"},
	}
	for _, c := range cases {
		w, body := call(r, c.method, c.path, c.body)
		if w.Code != c.status || (c.code != "" && body["errcode"] != c.code) {
			t.Errorf("%s %s: %d %v, want %d %s", c.method, c.path, w.Code, body, c.status, c.code)
		}
		if w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: content type %q", c.method, c.path, w.Header().Get("Content-Type"))
		}
		if w.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s %s: no CORS header", c.method, c.path)
		}
	}
	// The 500s carry an error ID that is also in the log line.
	w, body := call(r, "GET", "/panic", "")
	msg, _ := body["error"].(string)
	i := strings.Index(msg, "error ID ")
	if w.Code != 500 || i < 0 {
		t.Fatalf("panic answer %v", body)
	}
	id := strings.TrimSuffix(msg[i+len("error ID "):], ")")
	if !strings.Contains(logs.String(), id) {
		t.Fatal("the error ID is not in the log")
	}
	if strings.Contains(logs.String(), "203.0.113.7") {
		t.Fatal("a client IP address was logged with IP logging off")
	}
	if !strings.Contains(logs.String(), `"route":"/forbidden"`) || !strings.Contains(logs.String(), `"duration"`) {
		t.Fatalf("access log lacks route or duration: %s", logs.String())
	}
}

// Only gin's JSON type is rewritten: other media types go out as set.
func TestOtherContentTypesUntouched(t *testing.T) {
	r := NewRouter(Options{Log: zerolog.Nop()})
	r.GET("/text", func(c *gin.Context) { c.String(200, "hi") })
	r.GET("/png", func(c *gin.Context) { c.Data(200, "image/png", []byte{1}) })
	for path, want := range map[string]string{"/text": "text/plain; charset=utf-8", "/png": "image/png"} {
		w, _ := call(r, "GET", path, "")
		if got := w.Header().Get("Content-Type"); got != want {
			t.Errorf("%s: content type %q, want %q", path, got, want)
		}
	}
}

func TestIPLoggingWhenEnabled(t *testing.T) {
	r, logs := newTestRouter(t, true)
	call(r, "GET", "/forbidden", "")
	if !strings.Contains(logs.String(), "203.0.113.7") {
		t.Fatal("IP logging on, but no address in the log")
	}
}

func TestPreflight(t *testing.T) {
	r, _ := newTestRouter(t, false)
	w, _ := call(r, "OPTIONS", "/panic", "")
	if w.Code != 204 || !strings.Contains(w.Header().Get("Access-Control-Allow-Methods"), "PUT") {
		t.Fatalf("preflight: %d %v", w.Code, w.Header())
	}
}

func TestPathParametersKeepPlusAndSlash(t *testing.T) {
	r := NewRouter(Options{Log: zerolog.Nop()})
	r.GET("/p/:id", func(c *gin.Context) { c.String(200, c.Param("id")) })
	for raw, want := range map[string]string{
		"/p/%40a%2Bb%3Ax":  "@a+b:x",
		"/p/a+b":           "a+b",
		"/p/%24ev%2Fslash": "$ev/slash",
		"/p/a%252eb":       "a%2eb",
	} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest("GET", raw, nil))
		if w.Body.String() != want {
			t.Errorf("%s: got %q, want %q", raw, w.Body.String(), want)
		}
	}
}
