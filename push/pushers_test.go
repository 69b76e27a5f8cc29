package push_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/push"
	"github.com/chatalot/chatalot/spec"
)

const pushersPath = "/_matrix/client/v3/pushers"

func httpPusher(url string) map[string]any {
	return map[string]any{
		"kind": "http", "app_id": "org.example.app", "pushkey": "key-1",
		"app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
		"data": map[string]any{"url": url, "format": "event_id_only", "custom": "kept"},
	}
}

// absent, as a value given to with, removes the key.
type absentT struct{}

var absent = absentT{}

// with returns a copy of m with keys set (nil is JSON null) or removed.
func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == absent {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func pushersOf(ts *testServer, user string) []any {
	return ts.must(user, "GET", pushersPath, nil)["pushers"].([]any)
}

func TestPusherCRUD(t *testing.T) {
	ts := newTestServer(t, withPrivateGateways())
	gw := "http://127.0.0.1:1/_matrix/push/v1/notify"
	if got := pushersOf(ts, alice); len(got) != 0 {
		t.Fatalf("pushers before any: %v", got)
	}
	ts.must(alice, "POST", pushersPath+"/set", httpPusher(gw))
	got := pushersOf(ts, alice)
	if len(got) != 1 || path(got[0], "pushkey") != "key-1" || path(got[0], "kind") != "http" ||
		path(got[0], "data", "url") != gw || path(got[0], "data", "custom") != "kept" || path(got[0], "lang") != "en" {
		t.Fatalf("pushers: %v", got)
	}
	// Setting it again updates it.
	ts.must(alice, "POST", pushersPath+"/set", with(httpPusher(gw), "device_display_name", "Tablet"))
	if got := pushersOf(ts, alice); len(got) != 1 || path(got[0], "device_display_name") != "Tablet" {
		t.Fatalf("after update: %v", got)
	}
	// Another user taking the same app and pushkey removes alice's
	// pusher, unless append is true.
	ts.must(bob, "POST", pushersPath+"/set", with(httpPusher(gw), "append", true))
	if len(pushersOf(ts, alice)) != 1 || len(pushersOf(ts, bob)) != 1 {
		t.Fatal("append removed a pusher")
	}
	ts.must(carol, "POST", pushersPath+"/set", httpPusher(gw))
	if len(pushersOf(ts, alice)) != 0 || len(pushersOf(ts, bob)) != 0 || len(pushersOf(ts, carol)) != 1 {
		t.Fatal("without append, the other users' pushers with this pushkey stayed")
	}
	// kind null deletes.
	ts.must(carol, "POST", pushersPath+"/set", map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "key-1"})
	if got := pushersOf(ts, carol); len(got) != 0 {
		t.Fatalf("after delete: %v", got)
	}
	// Deleting what is not there is fine.
	ts.must(carol, "POST", pushersPath+"/set", map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "key-1"})

}

func TestPushersSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	ts := startTestServer(t, dir, withPrivateGateways())
	gw := "http://127.0.0.1:1/_matrix/push/v1/notify"
	ts.must(alice, "POST", pushersPath+"/set", httpPusher(gw))
	ts.close()
	ts = startTestServer(t, dir, withPrivateGateways())
	if got := pushersOf(ts, alice); len(got) != 1 || path(got[0], "data", "url") != gw {
		t.Fatalf("after a restart: %v", got)
	}
}

func TestMalformedPushers(t *testing.T) {
	ts := newTestServer(t, withPrivateGateways())
	gw := "http://127.0.0.1:1/_matrix/push/v1/notify"
	long := make([]byte, 513)
	for i := range long {
		long[i] = 'k'
	}
	cases := []struct {
		name string
		body any
		code spec.ErrCode
	}{
		{"missing kind", with(httpPusher(gw), "kind", absent), spec.ErrMissingParam},
		{"missing app_id", with(httpPusher(gw), "app_id", absent), spec.ErrMissingParam},
		{"missing pushkey", with(httpPusher(gw), "pushkey", absent), spec.ErrMissingParam},
		{"missing lang", with(httpPusher(gw), "lang", absent), spec.ErrMissingParam},
		{"missing data", with(httpPusher(gw), "data", absent), spec.ErrMissingParam},
		{"missing display names", with(httpPusher(gw), "app_display_name", absent, "device_display_name", absent), spec.ErrMissingParam},
		{"empty pushkey", with(httpPusher(gw), "pushkey", ""), spec.ErrInvalidParam},
		{"app_id null", with(httpPusher(gw), "app_id", nil), spec.ErrBadJSON},
		{"email pushers", with(httpPusher(gw), "kind", "email"), spec.ErrInvalidParam},
		{"kind not a string", with(httpPusher(gw), "kind", 3), spec.ErrBadJSON},
		{"app_id too long", with(httpPusher(gw), "app_id", "a234567890123456789012345678901234567890123456789012345678901234x"), spec.ErrInvalidParam},
		{"pushkey too long", with(httpPusher(gw), "pushkey", string(long)), spec.ErrInvalidParam},
		{"data not an object", with(httpPusher(gw), "data", "x"), spec.ErrBadJSON},
		{"no url", with(httpPusher(gw), "data", map[string]any{"format": "event_id_only"}), spec.ErrMissingParam},
		{"url not a string", with(httpPusher(gw), "data", map[string]any{"url": 3}), spec.ErrBadJSON},
		{"url not absolute", with(httpPusher(gw), "data", map[string]any{"url": "/_matrix/push/v1/notify"}), spec.ErrInvalidParam},
		{"url wrong path", with(httpPusher(gw), "data", map[string]any{"url": "http://127.0.0.1:1/notify"}), spec.ErrInvalidParam},
		{"url with credentials", with(httpPusher(gw), "data", map[string]any{"url": "http://u:p@127.0.0.1:1/_matrix/push/v1/notify"}), spec.ErrInvalidParam},
		{"url not http", with(httpPusher(gw), "data", map[string]any{"url": "ftp://127.0.0.1/_matrix/push/v1/notify"}), spec.ErrInvalidParam},
		{"unknown format", with(httpPusher(gw), "data", map[string]any{"url": gw, "format": "full"}), spec.ErrInvalidParam},
		{"append not a boolean", with(httpPusher(gw), "append", "yes"), spec.ErrBadJSON},
		{"not JSON", "{", spec.ErrNotJSON},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, out := ts.do(alice, "POST", pushersPath+"/set", c.body)
			if got != 400 || out["errcode"] != string(c.code) {
				t.Fatalf("got %d %v, want 400 %s", got, out, c.code)
			}
		})
	}
	if got := pushersOf(ts, alice); len(got) != 0 {
		t.Fatalf("a refused pusher was stored: %v", got)
	}
}

// TestGatewaySSRF: by default a pusher cannot point the server at its own
// network.
func TestGatewaySSRF(t *testing.T) {
	ts := newTestServer(t)
	for _, u := range []string{
		"https://127.0.0.1/_matrix/push/v1/notify",
		"https://127.1.2.3:8443/_matrix/push/v1/notify",
		"https://localhost/_matrix/push/v1/notify",
		"https://10.0.0.1/_matrix/push/v1/notify",
		"https://172.16.5.4/_matrix/push/v1/notify",
		"https://192.168.1.1/_matrix/push/v1/notify",
		"https://169.254.169.254/_matrix/push/v1/notify",
		"https://100.64.0.1/_matrix/push/v1/notify",
		"https://0.0.0.0/_matrix/push/v1/notify",
		"https://[::1]/_matrix/push/v1/notify",
		"https://[fe80::1]/_matrix/push/v1/notify",
		"https://[fd00::1]/_matrix/push/v1/notify",
		"https://[::ffff:127.0.0.1]/_matrix/push/v1/notify",
		"http://203.0.114.1/_matrix/push/v1/notify", // plain http
	} {
		got, out := ts.do(alice, "POST", pushersPath+"/set", httpPusher(u))
		if got != 400 || out["errcode"] != string(spec.ErrInvalidParam) {
			t.Errorf("%s: got %d %v", u, got, out)
		}
	}
	if got := pushersOf(ts, alice); len(got) != 0 {
		t.Fatalf("a private gateway was stored: %v", got)
	}
	for _, u := range []string{"https://bad_host!/_matrix/push/v1/notify", "https://a..b/_matrix/push/v1/notify", "https://x.localhost./_matrix/push/v1/notify"} {
		if got, out := ts.do(alice, "POST", pushersPath+"/set", httpPusher(u)); got != 400 || out["errcode"] != string(spec.ErrInvalidParam) {
			t.Errorf("%s: got %d %v", u, got, out)
		}
	}
	// A public address literal is accepted (nothing is sent until there is
	// something to push), and so is a name, unresolved: it is checked at
	// each connection instead, whatever it resolves to then.
	ts.must(alice, "POST", pushersPath+"/set", httpPusher("https://203.0.114.1/_matrix/push/v1/notify"))
	ts.must(alice, "POST", pushersPath+"/set", with(httpPusher("https://dummy.url/_matrix/push/v1/notify"), "pushkey", "key-2"))
	if got := pushersOf(ts, alice); len(got) != 2 {
		t.Fatalf("pushers after setting two: %v", got)
	}

	// A name that resolves to a private address is refused when the
	// gateway client connects, before a byte is sent.
	gw := newFakeGateway(t)
	_, port, _ := strings.Cut(strings.TrimPrefix(gw.srv.URL, "http://"), ":")
	resp, err := ts.push.GatewayClientForTest().Post("http://localhost:"+port+push.NotifyPath, "application/json", strings.NewReader("{}"))
	if err == nil {
		resp.Body.Close()
		t.Fatal("the gateway client connected to localhost")
	}
	if !strings.Contains(err.Error(), "not public") {
		t.Fatalf("dial error %v, want the address check", err)
	}
	gw.mu.Lock()
	tries := gw.tries
	gw.mu.Unlock()
	if tries != 0 {
		t.Fatalf("the private gateway received %d requests", tries)
	}

	// The dial-time check refuses what resolution could not see coming.
	for _, a := range []string{"127.0.0.1:443", "[::1]:443", "10.1.1.1:80", "169.254.169.254:80"} {
		if err := push.DialControl("tcp", a, nil); err == nil {
			t.Errorf("dial to %s allowed", a)
		}
	}
	if err := push.DialControl("tcp", "203.0.114.1:443", nil); err != nil {
		t.Errorf("dial to a public address refused: %v", err)
	}
	if push.PublicAddr(netip.MustParseAddr("8.8.8.8")) != true || push.PublicAddr(netip.MustParseAddr("2001:db8::1")) {
		t.Error("publicAddr misclassifies")
	}
}

// fakeGateway is a push gateway on 127.0.0.1 that records what it receives;
// fail makes it answer 503, reject makes it reject every pushkey.
type fakeGateway struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []map[string]any
	tries  int
	fail   bool
	reject bool
	seen   chan struct{}
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{seen: make(chan struct{}, 1000)}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		g.tries++
		fail, reject := g.fail, g.reject
		if !fail && r.URL.Path == push.NotifyPath {
			var body map[string]any
			_ = json.Unmarshal(raw, &body)
			g.got = append(g.got, body)
		}
		g.mu.Unlock()
		g.seen <- struct{}{}
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		rejected := []string{}
		if reject {
			var body struct {
				Notification struct {
					Devices []struct {
						Pushkey string `json:"pushkey"`
					} `json:"devices"`
				} `json:"notification"`
			}
			_ = json.Unmarshal(raw, &body)
			for _, d := range body.Notification.Devices {
				rejected = append(rejected, d.Pushkey)
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) url() string { return g.srv.URL + push.NotifyPath }

// received returns what the gateway accepted so far.
func (g *fakeGateway) received() []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.got...)
}

// wait waits until cond holds on what the gateway saw.
func (g *fakeGateway) wait(t *testing.T, what string, cond func(got []map[string]any, tries int) bool) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		g.mu.Lock()
		ok := cond(g.got, g.tries)
		g.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-g.seen:
		case <-deadline:
			g.mu.Lock()
			defer g.mu.Unlock()
			t.Fatalf("gateway: timed out waiting for %s; got %v after %d tries", what, g.got, g.tries)
		}
	}
}

func TestGatewayDelivery(t *testing.T) {
	ts := newTestServer(t, withPrivateGateways(), withRetry(20*time.Millisecond, time.Minute))
	g := newFakeGateway(t)
	room := ts.room(alice, bob, carol)
	ts.must(bob, "POST", pushersPath+"/set", httpPusher(g.url()))
	id := ts.text(alice, room, "secret words")
	g.wait(t, "the notification", func(got []map[string]any, _ int) bool { return len(got) == 1 })
	n := g.received()[0]["notification"].(map[string]any)
	if n["event_id"] != id || n["room_id"] != room || path(n, "counts", "unread") != 1.0 {
		t.Fatalf("notification: %v", n)
	}
	// event_id_only: nothing about the content or the sender.
	for _, k := range []string{"content", "sender", "sender_display_name", "room_name", "type", "room_alias"} {
		if _, ok := n[k]; ok {
			t.Errorf("event_id_only notification has %s: %v", k, n)
		}
	}
	dev := n["devices"].([]any)[0].(map[string]any)
	if dev["app_id"] != "org.example.app" || dev["pushkey"] != "key-1" || path(dev, "data", "custom") != "kept" ||
		path(dev, "data", "format") != "event_id_only" || path(dev, "data", "url") != nil {
		t.Fatalf("device: %v", dev)
	}
	// Not notified: nothing pushed (a notice, the user's own message).
	ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.notice", "body": "bot"})
	ts.text(bob, room, "mine")
	mention := ts.send(alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hey", "m.mentions": map[string]any{"user_ids": []string{bob}}})
	g.wait(t, "the mention", func(got []map[string]any, _ int) bool { return len(got) == 2 })
	n = g.received()[1]["notification"].(map[string]any)
	if n["event_id"] != mention || n["prio"] != "high" || path(n, "devices") == nil {
		t.Fatalf("mention: %v", n)
	}
	tweaks := n["devices"].([]any)[0].(map[string]any)["tweaks"].(map[string]any)
	if tweaks["highlight"] != true || tweaks["sound"] != "default" {
		t.Fatalf("tweaks: %v", tweaks)
	}

	// A gateway that fails is retried with backoff until it answers.
	g.mu.Lock()
	g.fail = true
	tries := g.tries
	g.mu.Unlock()
	late := ts.text(alice, room, "while down")
	g.wait(t, "retries", func(_ []map[string]any, n int) bool { return n >= tries+3 })
	g.mu.Lock()
	g.fail = false
	g.mu.Unlock()
	g.wait(t, "the late notification", func(got []map[string]any, _ int) bool {
		return len(got) == 3 && path(got[2], "notification", "event_id") == late
	})

	// A gateway that rejects the pushkey makes the server drop the pusher.
	g.mu.Lock()
	g.reject = true
	g.mu.Unlock()
	ts.text(alice, room, "rejected")
	deadline := time.Now().Add(15 * time.Second)
	for len(pushersOf(ts, bob)) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the rejected pusher stayed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGatewayFullFormat(t *testing.T) {
	ts := newTestServer(t, withPrivateGateways(), withFullFormat())
	g := newFakeGateway(t)
	room := ts.room(alice, bob, carol)
	// A pusher that asks for event_id_only still gets only that.
	ts.must(bob, "POST", pushersPath+"/set", httpPusher(g.url()))
	// One that does not ask gets the full format, because the admin allows it.
	ts.must(carol, "POST", pushersPath+"/set", with(httpPusher(g.url()), "pushkey", "key-2", "data", map[string]any{"url": g.url()}))
	ts.text(alice, room, "hello there")
	g.wait(t, "two notifications", func(got []map[string]any, _ int) bool { return len(got) == 2 })
	for _, body := range g.received() {
		n := body["notification"].(map[string]any)
		key := path(n["devices"].([]any)[0], "pushkey")
		switch key {
		case "key-1":
			if _, ok := n["content"]; ok {
				t.Errorf("event_id_only pusher got content: %v", n)
			}
		case "key-2":
			if path(n, "content", "body") != "hello there" || n["sender"] != alice || n["type"] != "m.room.message" {
				t.Errorf("full format: %v", n)
			}
		default:
			t.Errorf("unknown pushkey %v", key)
		}
	}
}
