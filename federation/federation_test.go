package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/events"
)

// pair starts a.test and b.test, each verifying the other's keys by
// fetching them over TLS from a CA made for the test.
func pair(t *testing.T) (a, b *testServer, n network, ca *testCA) {
	ca = newTestCA(t)
	a = newTestServer(t, ca, "a.test", ca.leaf(t, "a.test"))
	b = newTestServer(t, ca, "b.test", ca.leaf(t, "b.test"))
	n = network{"a.test": a, "b.test": b}
	a.keys = &KeyFetcher{HTTP: n.client(ca.pool)}
	b.keys = &KeyFetcher{HTTP: n.client(ca.pool)}
	return a, b, n, ca
}

// send makes a request from a to b's test route, signed as r says.
func send(t *testing.T, client *http.Client, from *testServer, r Request, body []byte) (int, string) {
	t.Helper()
	h, err := Sign(r, from.key)
	if err != nil {
		t.Fatal(err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequest(r.Method, "https://b.test"+r.URI, rd)
	req.Header.Set("Authorization", h)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

func TestSignedRequestVerifies(t *testing.T) {
	a, _, n, ca := pair(t)
	client := n.client(ca.pool)
	body := []byte(`{"pdus":[],"edus":[]}`)
	r := Request{Method: "PUT", URI: "/_matrix/federation/v1/test/send?x=1", Origin: "a.test", Destination: "b.test", Content: body}
	code, out := send(t, client, a, r, body)
	if code != 200 || !strings.Contains(out, `"origin":"a.test"`) {
		t.Fatalf("signed request: %d %s", code, out)
	}
	// Without a body too.
	r = Request{Method: "GET", URI: "/_matrix/federation/v1/test/x", Origin: "a.test", Destination: "b.test"}
	if code, out := send(t, client, a, r, nil); code != 200 {
		t.Fatalf("GET: %d %s", code, out)
	}
}

func TestBadRequestsRefused(t *testing.T) {
	a, _, n, ca := pair(t)
	client := n.client(ca.pool)
	body := []byte(`{"a":1}`)
	base := Request{Method: "PUT", URI: "/_matrix/federation/v1/test/y", Origin: "a.test", Destination: "b.test", Content: body}

	t.Run("tampered body", func(t *testing.T) {
		if code, out := send(t, client, a, base, []byte(`{"a":2}`)); code != 401 || !strings.Contains(out, "M_UNAUTHORIZED") {
			t.Fatalf("%d %s", code, out)
		}
	})
	t.Run("wrong destination", func(t *testing.T) {
		r := base
		r.Destination = "c.test"
		if code, out := send(t, client, a, r, body); code != 401 {
			t.Fatalf("%d %s", code, out)
		}
	})
	t.Run("wrong uri", func(t *testing.T) {
		r := base
		r.URI = "/_matrix/federation/v1/test/z"
		h, _ := Sign(r, a.key)
		req, _ := http.NewRequest("PUT", "https://b.test/_matrix/federation/v1/test/y", bytes.NewReader(body))
		req.Header.Set("Authorization", h)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("%d", resp.StatusCode)
		}
	})
	t.Run("unknown key", func(t *testing.T) {
		other := *a
		other.key.KeyID = "ed25519:nope"
		if code, out := send(t, client, &other, base, body); code != 401 {
			t.Fatalf("%d %s", code, out)
		}
	})
	t.Run("bad signature", func(t *testing.T) {
		other := *a
		_, other.key.Private, _ = ed25519.GenerateKey(rand.Reader)
		if code, out := send(t, client, &other, base, body); code != 401 {
			t.Fatalf("%d %s", code, out)
		}
	})
	t.Run("unknown origin", func(t *testing.T) {
		r := base
		r.Origin = "nowhere.test"
		if code, out := send(t, client, a, r, body); code != 401 {
			t.Fatalf("%d %s", code, out)
		}
	})
	t.Run("no header", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "https://b.test/_matrix/federation/v1/test/q", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("%d", resp.StatusCode)
		}
	})
}

func TestExpiredKeyRefused(t *testing.T) {
	a, b, n, ca := pair(t)
	a.valid = -time.Minute // a's keys are already out of date
	body := []byte(`{}`)
	r := Request{Method: "PUT", URI: "/_matrix/federation/v1/test/e", Origin: "a.test", Destination: "b.test", Content: body}
	if code, out := send(t, n.client(ca.pool), a, r, body); code != 401 {
		t.Fatalf("%d %s", code, out)
	}
	_ = b
}

func TestKeyFetchCachesUntilValidUntil(t *testing.T) {
	a, _, n, ca := pair(t)
	now := time.Now()
	f := &KeyFetcher{HTTP: n.client(ca.pool), now: func() time.Time { return now }}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := f.VerifyKey(ctx, "a.test", "ed25519:t1", now); err != nil {
			t.Fatal(err)
		}
	}
	if a.hits != 1 {
		t.Fatalf("key endpoint hit %d times, want 1", a.hits)
	}
	// Past valid_until_ts the key is fetched again.
	a.valid = 3 * time.Hour
	later := now.Add(2 * time.Hour)
	if _, err := f.VerifyKey(ctx, "a.test", "ed25519:t1", later); err != nil {
		t.Fatal(err)
	}
	if a.hits != 2 {
		t.Fatalf("key endpoint hit %d times after expiry, want 2", a.hits)
	}
}

func TestKeysMustBeSelfSigned(t *testing.T) {
	f := &KeyFetcher{}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	raw, _ := json.Marshal(map[string]any{
		"server_name":    "a.test",
		"verify_keys":    map[string]any{"ed25519:k": map[string]string{"key": b64(priv.Public().(ed25519.PublicKey))}},
		"valid_until_ts": time.Now().Add(time.Hour).UnixMilli(),
	})
	signed, _ := events.SignJSON(raw, events.SigningKey{ServerName: "a.test", KeyID: "ed25519:k", Private: other})
	if err := f.accept(context.Background(), "a.test", signed); err == nil {
		t.Fatal("keys signed by another key accepted")
	}
	good, _ := events.SignJSON(raw, events.SigningKey{ServerName: "a.test", KeyID: "ed25519:k", Private: priv})
	if err := f.accept(context.Background(), "b.test", good); err == nil {
		t.Fatal("keys for another server accepted")
	}
	if err := f.accept(context.Background(), "a.test", good); err != nil {
		t.Fatal(err)
	}
}

func TestUntrustedCertificateRefused(t *testing.T) {
	_, _, n, _ := pair(t)
	stranger := newTestCA(t)
	f := &KeyFetcher{HTTP: n.client(stranger.pool)}
	_, err := f.VerifyKey(context.Background(), "a.test", "ed25519:t1", time.Now())
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("key fetched from a server whose certificate is not trusted: %v", err)
	}
}

func TestWrongNameCertificateRefused(t *testing.T) {
	ca := newTestCA(t)
	a := newTestServer(t, ca, "a.test", ca.leaf(t, "other.test"))
	n := network{"a.test": a}
	f := &KeyFetcher{HTTP: n.client(ca.pool)}
	_, err := f.VerifyKey(context.Background(), "a.test", "ed25519:t1", time.Now())
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("certificate for another name accepted: %v", err)
	}
}

func TestParseAuthorization(t *testing.T) {
	cases := []struct {
		in   string
		ok   bool
		want Authorization
	}{
		{`X-Matrix origin="a.test",destination="b.test",key="ed25519:1",sig="c2ln"`, true, Authorization{"a.test", "b.test", "ed25519:1", "c2ln"}},
		{`x-matrix Origin=a.test , Key="ed25519:1", SIG = "c2ln"`, true, Authorization{"a.test", "", "ed25519:1", "c2ln"}},
		{`X-Matrix origin="a\"b",key="k",sig="s"`, true, Authorization{`a"b`, "", "k", "s"}},
		{`Bearer abc`, false, Authorization{}},
		{`X-Matrix origin="a.test",key="ed25519:1"`, false, Authorization{}},
		{`X-Matrix origin="a.test,key=k,sig=s`, false, Authorization{}},
		{`X-Matrix origin=a b,key=k,sig=s`, false, Authorization{}},
	}
	for _, c := range cases {
		got, ok := ParseAuthorization(c.in)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("%s: got %+v %v, want %+v %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestResolve(t *testing.T) {
	ca := newTestCA(t)
	wk := newTestServer(t, ca, "wk.test", ca.leaf(t, "wk.test", "wk2.test", "wk3.test", "wk4.test"))
	wk.wellKnown = "delegated.test"
	srvs := map[string][]*net.SRV{
		"_matrix-fed._tcp.srv.test":       {{Target: "host.srv.test.", Port: 1234}},
		"_matrix._tcp.legacy.test":        {{Target: "old.legacy.test.", Port: 4321}},
		"_matrix-fed._tcp.delegated.test": {{Target: "d.example.", Port: 9999}},
	}
	lookup := func(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
		if r, ok := srvs["_"+service+"._"+proto+"."+name]; ok {
			return "", r, nil
		}
		return "", nil, &net.DNSError{Err: "no such host", IsNotFound: true}
	}
	httpc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tlsConfigFor(ca).Config,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if strings.HasPrefix(addr, "wk.test:") {
				return (&net.Dialer{}).DialContext(ctx, network, wk.srv.Listener.Addr().String())
			}
			return nil, &net.DNSError{Err: "no such host", IsNotFound: true}
		},
	}}
	r := &Resolver{LookupSRV: lookup, HTTP: httpc}
	cases := []struct{ name, addr, host string }{
		{"1.2.3.4", "1.2.3.4:8448", "1.2.3.4"},
		{"1.2.3.4:80", "1.2.3.4:80", "1.2.3.4:80"},
		{"[::1]", "[::1]:8448", "[::1]"},
		{"[::1]:8000", "[::1]:8000", "[::1]:8000"},
		{"plain.test:8080", "plain.test:8080", "plain.test:8080"},
		{"plain.test", "plain.test:8448", "plain.test"},
		{"srv.test", "host.srv.test:1234", "srv.test"},
		{"legacy.test", "old.legacy.test:4321", "legacy.test"},
		{"wk.test", "d.example:9999", "delegated.test"},
	}
	for _, c := range cases {
		got, err := r.Resolve(context.Background(), c.name)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got.Addr != c.addr || got.Host != c.host {
			t.Errorf("%s: got %+v, want %s %s", c.name, got, c.addr, c.host)
		}
	}
	// The delegation is cached: a changed .well-known is not seen yet.
	wk.wellKnown = "elsewhere.test:1"
	if got, _ := r.Resolve(context.Background(), "wk.test"); got.Host != "delegated.test" {
		t.Errorf("well-known not cached: %+v", got)
	}
	// After max-age it is.
	r.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if got, _ := r.Resolve(context.Background(), "wk.test"); got.Host != "elsewhere.test:1" || got.Addr != "elsewhere.test:1" {
		t.Errorf("well-known not refetched: %+v", got)
	}
	for _, bad := range []string{"", "a:b", "[::1", "a:70000", ":80"} {
		if _, err := r.Resolve(context.Background(), bad); err == nil {
			t.Errorf("%q resolved", bad)
		}
	}
}

func TestCacheTTL(t *testing.T) {
	for cc, want := range map[string]time.Duration{
		"":                        24 * time.Hour,
		"max-age=60":              time.Minute,
		"public, max-age=9999999": 48 * time.Hour,
		"no-store":                0,
	} {
		if got := cacheTTL(cc); got != want {
			t.Errorf("%q: %v, want %v", cc, got, want)
		}
	}
}

func b64(k ed25519.PublicKey) string {
	return strings.TrimRight(base64Std(k), "=")
}
