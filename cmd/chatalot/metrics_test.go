package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

func TestValidateMetrics(t *testing.T) {
	const tok = "0123456789abcdef"
	for _, c := range []struct {
		name                 string
		on                   bool
		listen, token, wantK string
	}{
		{"off by default", false, "127.0.0.1:8009", "", ""},
		{"loopback v4", true, "127.0.0.1:8009", "", ""},
		{"loopback v6", true, "[::1]:8009", "", ""},
		{"localhost", true, "localhost:8009", "", ""},
		{"all interfaces", true, ":8009", "", "metrics_listen"},
		{"public", true, "192.0.2.7:8009", "", "metrics_listen"},
		{"public with token", true, "0.0.0.0:8009", tok, ""},
		{"main listener needs token", true, "", "", "metrics_token"},
		{"main listener with token", true, "", tok, ""},
		{"short token", false, "", "short", "metrics_token"},
		{"not host:port", true, "8009", "", "metrics_listen"},
		{"same as listen", true, "127.0.0.1:8008", "", "metrics_listen"},
	} {
		cfg := defaults()
		cfg.Metrics, cfg.MetricsListen, cfg.MetricsToken = c.on, c.listen, c.token
		ps := cfg.Validate()
		var keys []string
		for _, p := range ps {
			keys = append(keys, p.Key)
		}
		got := strings.Join(keys, ",")
		if got != c.wantK {
			t.Errorf("%s: problems %v, want %q", c.name, ps, c.wantK)
		}
	}
}

// TestMetricsLabels: route templates, never paths; bounded methods; the
// histogram's buckets are cumulative.
func TestMetricsLabels(t *testing.T) {
	r := gin.New()
	r.UseRawPath, r.UnescapePathValues = true, true
	r.PUT("/_matrix/client/v3/rooms/:roomId/send/:eventType/:txnId", func(c *gin.Context) { c.Status(200) })
	r.GET("/_matrix/client/v3/sync", func(c *gin.Context) { time.Sleep(20 * time.Millisecond); c.Status(200) })
	m := &metrics{position: func() int64 { return 7 }, routes: newRouteMatcher(r), stats: map[routeKey]*routeStats{}}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { m.measure(r, w, req) })
	for _, req := range []*http.Request{
		httptest.NewRequest("PUT", "/_matrix/client/v3/rooms/%21secret%3Aexample.org/send/m.room.message/t1", strings.NewReader("{}")),
		httptest.NewRequest("GET", "/_matrix/client/v3/sync?timeout=1", nil),
		httptest.NewRequest("GET", "/_matrix/client/v3/rooms/%21secret%3Aexample.org/nothing", nil),
		httptest.NewRequest("BREW", "/@someone:example.org", nil),
	} {
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	var b bytes.Buffer
	m.write(&b)
	out := b.String()
	for _, want := range []string{
		`chatalot_http_requests_total{method="PUT",route="/_matrix/client/v3/rooms/:roomId/send/:eventType/:txnId",status="2xx"} 1`,
		`chatalot_http_requests_total{method="GET",route="(unmatched)",status="4xx"} 1`,
		`chatalot_http_requests_total{method="OTHER",route="(unmatched)",status="4xx"} 1`,
		`chatalot_http_request_duration_seconds_bucket{method="GET",route="/_matrix/client/v3/sync",status="2xx",le="0.005"} 0`,
		`chatalot_http_request_duration_seconds_bucket{method="GET",route="/_matrix/client/v3/sync",status="2xx",le="120"} 1`,
		"\nchatalot_events_sent_total 1\n",
		"\nchatalot_syncs_total 1\n",
		"\nchatalot_stream_position 7\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q", want)
		}
	}
	for _, bad := range []string{"secret", "someone", "BREW", "example.org"} {
		if strings.Contains(out, bad) {
			t.Errorf("the output contains %q", bad)
		}
	}
	if escapeLabel("a\"b\\c\nd") != `a\"b\\c\nd` {
		t.Error("label escaping")
	}
	if t.Failed() {
		t.Log(out)
	}
}
