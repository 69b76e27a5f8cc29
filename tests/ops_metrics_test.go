package tests

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// opsScrape fetches /metrics with an optional bearer token.
func opsScrape(t *testing.T, rawURL, token string) (int, string) {
	t.Helper()
	code, body := opsDo(t, "GET", rawURL, token, nil)
	return code, string(body)
}

// opsMetricsAddr is the address the metrics listener logged.
func opsMetricsAddr(t *testing.T, s *harness.Server) string {
	t.Helper()
	for _, line := range strings.Split(s.Logs(), "\n") {
		var m struct {
			Message string `json:"message"`
			Listen  string `json:"metrics_listen"`
		}
		if json.Unmarshal([]byte(line), &m) == nil && m.Message == "metrics served" {
			return m.Listen
		}
	}
	t.Fatalf("no \"metrics served\" line in the log:\n%s", s.Logs())
	return ""
}

// TestOpsMetricsOffByDefault: no /metrics anywhere unless asked for.
func TestOpsMetricsOffByDefault(t *testing.T) {
	s := harness.Start(t)
	code, body := opsScrape(t, s.URL+"/metrics", "")
	if code != http.StatusNotFound || strings.Contains(body, "chatalot_") {
		t.Fatalf("/metrics with metrics off: %d %s", code, body)
	}
	if strings.Contains(s.Logs(), "metrics served") {
		t.Fatal("a metrics listener was started with metrics off")
	}
}

// TestOpsMetricsOnLoopback: the metrics listener on loopback counts
// requests, events, syncs and long-polls, and its output holds no
// identifier of any kind.
func TestOpsMetricsOnLoopback(t *testing.T) {
	s := harness.Start(t, harness.WithArgs("--metrics", "--metrics-listen", "127.0.0.1:0"))
	metricsURL := "http://" + opsMetricsAddr(t, s) + "/metrics"

	alice := opsRegister(t, s.URL, "alice-metrics")
	bob := opsRegister(t, s.URL, "bob-metrics")
	room := opsCreateRoom(t, s.URL, alice.Token, "a secret room name")
	var eventIDs []string
	for i := 0; i < 5; i++ {
		id, err := opsSend(t, s.URL, alice.Token, room, "m"+string(rune('0'+i)), "a private message")
		if err != nil {
			t.Fatal(err)
		}
		eventIDs = append(eventIDs, id)
	}
	mxc := opsUpload(t, s.URL, alice.Token, []byte("some media"))
	// Unmatched paths with identifiers in them must not become labels.
	opsDo(t, "GET", s.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/no-such-endpoint/"+alice.ID, alice.Token, nil)
	opsDo(t, "GET", s.URL+"/_matrix/client/v3/profile/"+url.PathEscape(bob.ID), alice.Token, nil)
	since := firstSync(t, s.URL, bob.Token)

	// A long-poll waiting for news shows up while it waits.
	polled := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", s.URL+"/_matrix/client/v3/sync?timeout=20000&since="+url.QueryEscape(since), nil)
		req.Header.Set("Authorization", "Bearer "+bob.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			polled <- 0
			return
		}
		resp.Body.Close()
		polled <- resp.StatusCode
	}()
	var out string
	waitFor(t, 20*time.Second, "the long-poll to be counted", func() bool {
		_, out = opsScrape(t, metricsURL, "")
		return strings.Contains(out, "\nchatalot_sync_long_polls_active 1\n")
	})
	opsJSON(t, "POST", s.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", alice.Token, map[string]string{"user_id": bob.ID}, nil)
	select {
	case code := <-polled:
		if code != 200 {
			t.Fatalf("long-poll: %d", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the long-poll did not return on the invite")
	}

	code, out := opsScrape(t, metricsURL, "")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, out)
	}
	for _, want := range []string{
		"# TYPE chatalot_http_requests_total counter",
		"# TYPE chatalot_http_request_duration_seconds histogram",
		`chatalot_http_requests_total{method="POST",route="/_matrix/client/v3/register",status="2xx"} 2`,
		`route="/_matrix/client/v3/rooms/:roomId/send/:eventType/:txnId",status="2xx",le="+Inf"} 5`,
		`method="GET",route="(unmatched)",status="4xx"`,
		"\nchatalot_events_sent_total 5\n",
		"\nchatalot_sync_long_polls_active 0\n",
		"\nchatalot_syncs_total 2\n",
		"chatalot_stream_position ",
		"chatalot_build_info{",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// No identifier of any kind: users, rooms, events, devices, media,
	// tokens, names, addresses.
	forbidden := []string{alice.ID, bob.ID, "alice-metrics", "bob-metrics", room, alice.Device, bob.Device,
		alice.Token, bob.Token, strings.TrimPrefix(mxc, "mxc://"), "a secret room name", "a private message", "127.0.0.1", "localhost", "!", "@"}
	forbidden = append(forbidden, eventIDs...)
	for _, f := range forbidden {
		if strings.Contains(out, f) {
			t.Errorf("/metrics contains %q", f)
		}
	}
	// Every sample line is a known metric with bounded labels.
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(line, "chatalot_") && !strings.HasPrefix(line, "go_") && !strings.HasPrefix(line, "process_") {
			t.Errorf("unexpected line %q", line)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", out)
	}
	// The main listener does not serve it.
	if code, _ := opsScrape(t, s.URL+"/metrics", ""); code != http.StatusNotFound {
		t.Fatalf("/metrics on the main listener: %d", code)
	}
}

// TestOpsMetricsWithToken: on the main listener, /metrics needs the token.
func TestOpsMetricsWithToken(t *testing.T) {
	const token = "scrape-token-0123456789"
	s := harness.Start(t, harness.WithArgs("--metrics", "--metrics-listen", "", "--metrics-token", token))
	for _, tok := range []string{"", "wrong-token-0123456789"} {
		if code, body := opsScrape(t, s.URL+"/metrics", tok); code != http.StatusUnauthorized || strings.Contains(body, "chatalot_") {
			t.Fatalf("/metrics with token %q: %d %s", tok, code, body)
		}
	}
	code, body := opsScrape(t, s.URL+"/metrics", token)
	if code != 200 || !strings.Contains(body, "chatalot_http_requests_total") {
		t.Fatalf("/metrics with the token: %d %s", code, body)
	}
	if strings.Contains(s.Logs(), token) {
		t.Fatal("the metrics token is in the log")
	}
}

// TestOpsMetricsConfigRefusals: exposing metrics beyond this machine
// without a token is a configuration error naming the key.
func TestOpsMetricsConfigRefusals(t *testing.T) {
	for _, c := range []struct {
		args []string
		key  string
	}{
		{[]string{"--metrics", "--metrics-listen", "0.0.0.0:9100"}, "metrics_listen"},
		{[]string{"--metrics", "--metrics-listen", "192.0.2.1:9100"}, "metrics_listen"},
		{[]string{"--metrics", "--metrics-listen", ""}, "metrics_token"},
		{[]string{"--metrics-token", "short"}, "metrics_token"},
	} {
		out, err := harness.Run(t, "", append([]string{"config", "check"}, c.args...)...)
		if err == nil || !strings.Contains(out, c.key+":") {
			t.Errorf("config check %v: %v %s (want a problem with %s)", c.args, err, out, c.key)
		}
	}
	// With a token the metrics may listen beyond loopback.
	if out, err := harness.Run(t, "", "config", "check", "--metrics", "--metrics-listen", "0.0.0.0:9100", "--metrics-token", "scrape-token-0123456789"); err != nil {
		t.Fatalf("metrics beyond loopback with a token: %v %s", err, out)
	}
	out, err := harness.Run(t, "", "config", "print", "--metrics-token", "scrape-token-0123456789")
	if err != nil || strings.Contains(out, "scrape-token") || !strings.Contains(out, "metrics_token") {
		t.Fatalf("config print must mask metrics_token: %v %s", err, out)
	}
}
