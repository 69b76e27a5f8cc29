package auth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/rs/zerolog"
)

func TestLimiterBuckets(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLimiter(true, map[string]Rate{"x": {Count: 2, Per: time.Minute}})
	l.now = func() time.Time { return now }
	if ok, _ := l.take("x", "a"); !ok {
		t.Fatal(1)
	}
	if ok, _ := l.take("x", "a"); !ok {
		t.Fatal(2)
	}
	ok, wait := l.take("x", "a")
	if ok || wait < 29*time.Second || wait > 31*time.Second {
		t.Fatalf("third: %v %v", ok, wait)
	}
	if ok, _ := l.take("x", "b"); !ok {
		t.Fatal("other key")
	}
	now = now.Add(30 * time.Second)
	if ok, _ := l.take("x", "a"); !ok {
		t.Fatal("refill")
	}
	if ok, _ := l.take("unknown-class", "a"); !ok {
		t.Fatal("unknown class limited")
	}
	// Full buckets are swept, so memory tracks active clients only.
	for i := 0; i < 5000; i++ {
		l.take("x", fmt.Sprint("ip", i))
		now = now.Add(time.Second)
	}
	if len(l.buckets) > 2*minSweep {
		t.Fatalf("%d buckets kept", len(l.buckets))
	}
	if off := NewLimiter(false, DefaultRates()); !off.Enabled() {
		for i := 0; i < 100; i++ {
			if ok, _ := off.take(RateLogin, "a"); !ok {
				t.Fatal("disabled limiter limited")
			}
		}
	}
}

func TestParseRate(t *testing.T) {
	r, err := ParseRate("10/1m")
	if err != nil || r.Count != 10 || r.Per != time.Minute || r.String() != "10/1m0s" {
		t.Fatal(r, err)
	}
	for _, bad := range []string{"", "10", "0/1m", "x/1m", "10/x", "10/-1s"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRateLimits(t *testing.T) {
	ts := newTestServer(t, withRateLimits(map[string]Rate{
		RateLogin:         {Count: 3, Per: time.Hour},
		RateLoginFailures: {Count: 2, Per: time.Hour},
		RateRegister:      {Count: 4, Per: time.Hour},
		RateSend:          {Count: 2, Per: time.Hour},
	}))
	ctx := context.Background()
	ts.svc.CreateUser(ctx, "alice", "password1", false)
	ts.svc.CreateUser(ctx, "bob", "password1", false)
	ts.svc.CreateUser(ctx, "root", "password1", true)
	login := func(ip, user, pw string) resp {
		return ts.doFrom(ip, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": user, "password": pw})
	}
	// Per address: every attempt counts.
	tok := login("198.51.100.1:1", "alice", "password1").must(t, 200).str("access_token")
	login("198.51.100.1:1", "bob", "password1").must(t, 200)
	rootTok := login("198.51.100.1:1", "root", "password1").must(t, 200).str("access_token")
	r := login("198.51.100.1:1", "bob", "password1").mustErr(t, 429, "M_LIMIT_EXCEEDED")
	if ms, _ := r.Body["retry_after_ms"].(float64); ms <= 0 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("retry info: %s %v", r.Raw, r.Header)
	}
	// IPv6 clients share a bucket per /64.
	login("[2001:db8::1]:1", "bob", "password1").must(t, 200)
	login("[2001:db8::2]:1", "bob", "password1").must(t, 200)
	login("[2001:db8::3]:1", "bob", "password1").must(t, 200)
	login("[2001:db8::4]:1", "bob", "password1").mustErr(t, 429, "M_LIMIT_EXCEEDED")
	// Per account and address: an attacker guessing bob's password is
	// stopped, even with the right one, and bob, from his own address, is
	// not locked out by it (issue 19, item 8).
	login("192.0.2.10:1", "bob", "wrong-password").mustErr(t, 403, "M_FORBIDDEN")
	login("192.0.2.10:1", "bob", "wrong-password").mustErr(t, 403, "M_FORBIDDEN")
	login("192.0.2.10:1", "bob", "password1").mustErr(t, 429, "M_LIMIT_EXCEEDED")
	login("192.0.2.11:1", "bob", "password1").must(t, 200)
	login("192.0.2.12:1", "alice", "password1").must(t, 200)
	// Per user on authenticated routes; admins are exempt.
	ts.do("POST", "/_test/send", tok, nil).must(t, 200)
	ts.do("POST", "/_test/send", tok, nil).must(t, 200)
	ts.do("POST", "/_test/send", tok, nil).mustErr(t, 429, "M_LIMIT_EXCEEDED")
	for i := 0; i < 10; i++ {
		ts.do("POST", "/_test/send", rootTok, nil).must(t, 200)
	}
	// Registration per address (validity checks count too).
	for i := 0; i < 4; i++ {
		ts.doFrom("192.0.2.50:1", "GET", v3+"/register/available?username=free", "", nil).must(t, 200)
	}
	ts.doFrom("192.0.2.50:1", "POST", v3+"/register", "", map[string]any{}).mustErr(t, 429, "M_LIMIT_EXCEEDED")
}

// TestForwardedFor attacks the login and registration limits through
// X-Forwarded-For (issue 19, item 4): a client behind a loopback TCP
// forwarder that is not a configured proxy cannot pick the address its
// limits count under; behind a configured proxy, clients are told apart by
// the address the proxy appended, and a forged first entry does not help.
func TestForwardedFor(t *testing.T) {
	ts := newTestServer(t, withRateLimits(map[string]Rate{RateRegister: {Count: 1, Per: time.Hour}}))
	avail := func(ts *testServer, remote, xff string) int {
		return ts.doFromHeader(remote, xff, "GET", v3+"/register/available?username=free").Status
	}
	// trusted_proxies empty (the default): a loopback peer is no proxy.
	if avail(ts, "127.0.0.1:5", "203.0.113.1") != 200 || avail(ts, "127.0.0.1:5", "203.0.113.2") != 429 {
		t.Fatal("X-Forwarded-For from a loopback peer was believed without trusted_proxies")
	}
	if avail(ts, "198.51.100.7:5", "203.0.113.3") != 200 || avail(ts, "198.51.100.7:5", "203.0.113.4") != 429 {
		t.Fatal("X-Forwarded-For from a remote peer was believed")
	}

	// trusted_proxies = 127.0.0.1: that proxy's appended entry counts.
	proxied := *ts
	proxied.router = api.NewRouter(api.Options{Log: zerolog.Nop(), TrustedProxies: []string{"127.0.0.1"}})
	ts.svc.Routes(proxied.router)
	if avail(&proxied, "127.0.0.1:5", "203.0.113.11") != 200 || avail(&proxied, "127.0.0.1:5", "203.0.113.12") != 200 {
		t.Fatal("clients behind a trusted proxy share a bucket")
	}
	if avail(&proxied, "127.0.0.1:5", "10.0.0.1, 203.0.113.11") != 429 {
		t.Fatal("a forged first entry escaped the limit")
	}
	if avail(&proxied, "127.0.0.2:5", "203.0.113.13") != 200 || avail(&proxied, "127.0.0.2:5", "203.0.113.14") != 429 {
		t.Fatal("X-Forwarded-For from a loopback address that is not the proxy was believed")
	}
}
