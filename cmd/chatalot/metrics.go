package main

import (
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
)

// Metrics without telemetry: when `metrics` is on, GET /metrics answers in
// the Prometheus text format (version 0.0.4) to whoever may scrape it, and
// the server itself never sends anything anywhere.
//
// What is exported is counts and latencies only. Requests are labelled by
// method, route template (gin's "/_matrix/client/v3/rooms/:roomId/send/…",
// never the path that was asked) and status class (2xx, 4xx…); nothing
// carries a user ID, room ID, event ID, device, token or address.
//
// Who may scrape: metrics are served either on their own listener
// (metrics_listen, loopback unless metrics_token is set) or, with
// metrics_listen empty, at /metrics on the main listener, which then always
// requires the bearer token: the main listener is usually what the reverse
// proxy exposes.

// durationBuckets are the histogram's upper bounds in seconds; long-polling
// /sync lands in the last ones.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}

type routeKey struct{ method, route, class string }

type routeStats struct {
	count   uint64
	sum     float64
	buckets []uint64 // per bound of durationBuckets, not cumulative
}

// metrics holds every number /metrics reports.
type metrics struct {
	start    time.Time
	token    string
	position func() int64
	dbPath   string
	routes   *routeMatcher

	mu    sync.Mutex
	stats map[routeKey]*routeStats

	inFlight   atomic.Int64
	longPolls  atomic.Int64
	syncs      atomic.Int64
	eventsSent atomic.Int64
}

func newMetrics(a *App) *metrics {
	return &metrics{
		start:    time.Now(),
		token:    a.cfg.MetricsToken,
		position: a.db.Position,
		dbPath:   pathsOf(a.cfg.DataDir).db,
		routes:   newRouteMatcher(a.router),
		stats:    map[routeKey]*routeStats{},
	}
}

// Handler is the server's HTTP handler: the router behind the admin_api
// gate, measured when metrics are on, with /metrics in front of it when
// they are served on the main listener.
func (a *App) Handler() http.Handler {
	h := adminAPIGate(a.cfg.AdminAPI, a.router) // adminapi.go
	m := a.metrics
	if m == nil {
		return h
	}
	onMain := a.cfg.MetricsListen == ""
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if onMain && r.URL.Path == "/metrics" {
			m.ServeHTTP(w, r)
			return
		}
		m.measure(h, w, r)
	})
}

// serveMetrics serves /metrics on its own listener when one is configured;
// the function it returns stops it.
func (a *App) serveMetrics(ln net.Listener) func(context.Context) {
	if a.metrics == nil || ln == nil {
		return func(context.Context) {}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", a.metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	a.log.Info().Str("metrics_listen", ln.Addr().String()).Bool("token", a.metrics.token != "").Msg("metrics served")
	return func(ctx context.Context) { _ = srv.Shutdown(ctx) }
}

// measure serves one request and records it.
func (m *metrics) measure(next http.Handler, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	m.inFlight.Add(1)
	poll := isSyncPath(r.URL.Path) && r.URL.Query().Get("timeout") != "" && r.URL.Query().Get("timeout") != "0"
	if poll {
		m.longPolls.Add(1)
	}
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		if poll {
			m.longPolls.Add(-1)
		}
		m.inFlight.Add(-1)
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		m.record(r.Method, m.routes.match(r), status, time.Since(start))
	}()
	next.ServeHTTP(sw, r)
}

func (m *metrics) record(method, route string, status int, d time.Duration) {
	switch method {
	case http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodOptions, http.MethodHead:
	default:
		method = "OTHER" // methods are client input: keep the label set bounded
	}
	class := strconv.Itoa(status/100) + "xx"
	if status >= 200 && status < 300 {
		if isSyncRoute(route) {
			m.syncs.Add(1)
		}
		if isEventSend(method, route) {
			m.eventsSent.Add(1)
		}
	}
	secs := d.Seconds()
	k := routeKey{method, route, class}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats[k]
	if s == nil {
		s = &routeStats{buckets: make([]uint64, len(durationBuckets))}
		m.stats[k] = s
	}
	s.count++
	s.sum += secs
	for i, b := range durationBuckets {
		if secs <= b {
			s.buckets[i]++
			break
		}
	}
}

func isSyncPath(p string) bool {
	return p == "/_matrix/client/v3/sync" || p == "/_matrix/client/r0/sync"
}

func isSyncRoute(route string) bool { return isSyncPath(route) }

// isEventSend reports whether a route sends an event into a room: send,
// state and redact.
func isEventSend(method, route string) bool {
	if method != http.MethodPut || !strings.Contains(route, "/rooms/:") {
		return false
	}
	return strings.Contains(route, "/send/") || strings.Contains(route, "/state/") || strings.Contains(route, "/redact/")
}

// ServeHTTP answers GET /metrics.
func (m *metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if m.token != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(m.token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "metrics need the bearer token configured as metrics_token", http.StatusUnauthorized)
			return
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	m.write(w)
}

// write renders every metric in the Prometheus text format.
func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	keys := make([]routeKey, 0, len(m.stats))
	snap := make(map[routeKey]routeStats, len(m.stats))
	for k, s := range m.stats {
		keys = append(keys, k)
		c := *s
		c.buckets = append([]uint64(nil), s.buckets...)
		snap[k] = c
	}
	m.mu.Unlock()
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.route != b.route {
			return a.route < b.route
		}
		if a.method != b.method {
			return a.method < b.method
		}
		return a.class < b.class
	})
	labels := func(k routeKey) string {
		return fmt.Sprintf(`method="%s",route="%s",status="%s"`, escapeLabel(k.method), escapeLabel(k.route), k.class)
	}

	header(w, "chatalot_http_requests_total", "counter", "HTTP requests answered, by method, route template and status class.")
	for _, k := range keys {
		fmt.Fprintf(w, "chatalot_http_requests_total{%s} %d\n", labels(k), snap[k].count)
	}
	header(w, "chatalot_http_request_duration_seconds", "histogram", "Time to answer HTTP requests (long-polling /sync included), by method, route template and status class.")
	for _, k := range keys {
		s := snap[k]
		var cum uint64
		for i, b := range durationBuckets {
			cum += s.buckets[i]
			fmt.Fprintf(w, "chatalot_http_request_duration_seconds_bucket{%s,le=\"%s\"} %d\n", labels(k), formatFloat(b), cum)
		}
		fmt.Fprintf(w, "chatalot_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", labels(k), s.count)
		fmt.Fprintf(w, "chatalot_http_request_duration_seconds_sum{%s} %s\n", labels(k), formatFloat(s.sum))
		fmt.Fprintf(w, "chatalot_http_request_duration_seconds_count{%s} %d\n", labels(k), s.count)
	}
	gauge := func(name, typ, help string, v int64) {
		header(w, name, typ, help)
		fmt.Fprintf(w, "%s %d\n", name, v)
	}
	gauge("chatalot_http_requests_in_flight", "gauge", "HTTP requests being answered now.", m.inFlight.Load())
	gauge("chatalot_events_sent_total", "counter", "Events sent into rooms by clients (send, state and redact requests answered 2xx).", m.eventsSent.Load())
	gauge("chatalot_syncs_total", "counter", "/sync requests answered 2xx.", m.syncs.Load())
	gauge("chatalot_sync_long_polls_active", "gauge", "/sync requests with a timeout waiting for news now.", m.longPolls.Load())
	gauge("chatalot_stream_position", "counter", "The global stream position: how many changes clients have been sent through /sync since the server was created.", m.position())
	var dbBytes int64
	for _, p := range []string{m.dbPath, m.dbPath + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			dbBytes += fi.Size()
		}
	}
	gauge("chatalot_database_bytes", "gauge", "Size of the database file and its write-ahead log.", dbBytes)

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gauge("go_goroutines", "gauge", "Goroutines that currently exist.", int64(runtime.NumGoroutine()))
	gauge("go_memstats_heap_alloc_bytes", "gauge", "Bytes of allocated heap objects.", int64(ms.HeapAlloc))
	gauge("go_memstats_sys_bytes", "gauge", "Bytes of memory obtained from the OS.", int64(ms.Sys))
	header(w, "process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch in seconds.")
	fmt.Fprintf(w, "process_start_time_seconds %d\n", m.start.Unix())
	header(w, "chatalot_build_info", "gauge", "Always 1; the version is a label.")
	fmt.Fprintf(w, "chatalot_build_info{version=\"%s\",go_version=\"%s\"} 1\n", escapeLabel(version), escapeLabel(runtime.Version()))
}

func header(w io.Writer, name, typ, help string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// escapeLabel escapes a label value as the text format requires.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// statusWriter remembers the status code a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// routeMatcher finds a request's route template. The server's router is a
// gin engine built by the domain packages; a second engine holding the same
// routes (gin.Engine.Routes) with a handler that only notes c.FullPath()
// answers "which template is this?" with gin's own matching, without any
// hook inside the real router. Unmatched requests are "(unmatched)": the
// raw path never becomes a label.
type routeMatcher struct{ e *gin.Engine }

type matchKey struct{}

func newRouteMatcher(h http.Handler) *routeMatcher {
	real, ok := h.(*gin.Engine)
	if !ok {
		return &routeMatcher{}
	}
	e := gin.New()
	e.UseRawPath, e.UnescapePathValues = real.UseRawPath, real.UnescapePathValues
	e.RemoveExtraSlash = real.RemoveExtraSlash
	e.RedirectTrailingSlash, e.RedirectFixedPath = false, false
	note := func(c *gin.Context) {
		if p, ok := c.Request.Context().Value(matchKey{}).(*string); ok {
			*p = c.FullPath()
		}
	}
	for _, ri := range real.Routes() {
		e.Handle(ri.Method, ri.Path, note)
	}
	return &routeMatcher{e: e}
}

func (m *routeMatcher) match(r *http.Request) string {
	route := ""
	if m.e != nil {
		m.e.ServeHTTP(discardWriter{h: http.Header{}}, r.WithContext(context.WithValue(r.Context(), matchKey{}, &route)))
	}
	if route == "" {
		return "(unmatched)"
	}
	return route
}

type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d discardWriter) WriteHeader(int)             {}

// validateMetrics checks the metrics settings: scraping is limited to this
// machine or to holders of the token.
func (c *Config) validateMetrics(add func(key, format string, args ...any)) {
	if c.MetricsToken != "" && len(c.MetricsToken) < 16 {
		add("metrics_token", "use at least 16 characters")
	}
	if !c.Metrics {
		return
	}
	if c.MetricsListen == "" {
		if c.MetricsToken == "" {
			add("metrics_token", "metrics on the main listener (metrics_listen empty) need a token")
		}
		return
	}
	host, port, err := net.SplitHostPort(c.MetricsListen)
	if err != nil {
		add("metrics_listen", "%q is not HOST:PORT", c.MetricsListen)
		return
	}
	if c.MetricsListen == c.Listen && port != "0" {
		add("metrics_listen", "must differ from listen (leave it empty to serve /metrics on the main listener, with metrics_token)")
	}
	if !isLoopback(host) && c.MetricsToken == "" {
		add("metrics_listen", "%q is not a loopback address: keep metrics on 127.0.0.1 or [::1], or set metrics_token", c.MetricsListen)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
