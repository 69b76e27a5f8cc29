package federation_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/federation"
	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/server/app"
	"github.com/chatalot/chatalot/spec"
)

// keyServer is a fake remote that serves its keys, valid for an hour,
// under its IP-literal server name 127.0.0.1:port (reached without SRV
// or well-known), over httptest's TLS certificate.
type keyServer struct {
	name string
	key  events.SigningKey
	srv  *httptest.Server
	hits atomic.Int32
}

func newKeyServer(t *testing.T) *keyServer {
	k := &keyServer{}
	k.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/key/v2/server" {
			http.NotFound(w, r)
			return
		}
		k.hits.Add(1)
		raw, _ := json.Marshal(map[string]any{
			"server_name":     k.name,
			"verify_keys":     map[string]any{k.key.KeyID: map[string]string{"key": base64.RawStdEncoding.EncodeToString(k.key.Private.Public().(ed25519.PublicKey))}},
			"old_verify_keys": map[string]any{},
			"valid_until_ts":  time.Now().Add(time.Hour).UnixMilli(),
		})
		signed, err := events.SignJSON(raw, k.key)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(signed)
	}))
	t.Cleanup(k.srv.Close)
	k.name = k.srv.Listener.Addr().String()
	k.key = newKey(t, k.name)
	return k
}

func TestNotaryAnswersKeyQueries(t *testing.T) {
	remote, denied := newKeyServer(t), newKeyServer(t)
	// httptest's certificate is self-signed and the same for every server.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: remote.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	s := servertest.New(t, "", func(c *app.Config) {
		c.Federation = &federation.Config{CAFile: caFile, Deny: []spec.ServerName{spec.ServerName(denied.name)}}
	})

	// A third party learns the notary's key the ordinary way, then checks
	// both signatures on what the notary relays.
	code, own := s.DoRaw("", "GET", "/_matrix/key/v2/server", nil)
	if code != 200 {
		t.Fatalf("own keys: %d %s", code, own)
	}
	for id, k := range gjson.GetBytes(own, "verify_keys").Map() {
		pub, err := base64.RawStdEncoding.DecodeString(k.Get("key").String())
		if err != nil {
			t.Fatal(err)
		}
		notaryPub := pub
		check := func(what string, body []byte, want int) {
			t.Helper()
			keys := gjson.GetBytes(body, "server_keys").Array()
			if len(keys) != want {
				t.Fatalf("%s: %d key objects, want %d: %s", what, len(keys), want, body)
			}
			for _, k := range keys {
				obj := []byte(k.Raw)
				if gjson.GetBytes(obj, "server_name").String() != remote.name {
					t.Fatalf("%s: keys of %s", what, gjson.GetBytes(obj, "server_name"))
				}
				if !verifies(obj, remote.name, remote.key) {
					t.Fatalf("%s: the remote's own signature does not verify: %s", what, obj)
				}
				if events.VerifyJSON(obj, string(servertest.ServerName), id, ed25519.PublicKey(notaryPub)) != nil {
					t.Fatalf("%s: the notary's signature does not verify: %s", what, obj)
				}
			}
		}

		code, body := s.DoRaw("", "POST", "/_matrix/key/v2/query", map[string]any{"server_keys": map[string]any{remote.name: map[string]any{}}})
		if code != 200 {
			t.Fatalf("query: %d %s", code, body)
		}
		check("batch", body, 1)
		if remote.hits.Load() != 1 {
			t.Fatalf("the remote was asked %d times, want 1", remote.hits.Load())
		}
		// Still valid: answered from what the notary holds.
		code, body = s.DoRaw("", "GET", "/_matrix/key/v2/query/"+url.PathEscape(remote.name), nil)
		if code != 200 || remote.hits.Load() != 1 {
			t.Fatalf("cached query: %d (remote asked %d times) %s", code, remote.hits.Load(), body)
		}
		check("cached", body, 1)
		// Asked to be valid past what it holds: fetched again.
		later := time.Now().Add(2 * time.Hour).UnixMilli()
		code, body = s.DoRaw("", "GET", fmt.Sprintf("/_matrix/key/v2/query/%s?minimum_valid_until_ts=%d", url.PathEscape(remote.name), later), nil)
		if code != 200 || remote.hits.Load() != 2 {
			t.Fatalf("refetching query: %d (remote asked %d times) %s", code, remote.hits.Load(), body)
		}
		check("refetched", body, 1)
	}

	// Its own name: its own keys.
	code, body := s.DoRaw("", "POST", "/_matrix/key/v2/query", map[string]any{"server_keys": map[string]any{string(servertest.ServerName): map[string]any{}}})
	if code != 200 || gjson.GetBytes(body, "server_keys.0.server_name").String() != string(servertest.ServerName) {
		t.Fatalf("own name: %d %s", code, body)
	}
	// A denied server is not asked; an unreachable one is left out.
	code, body = s.DoRaw("", "POST", "/_matrix/key/v2/query", map[string]any{"server_keys": map[string]any{denied.name: map[string]any{}, "127.0.0.1:1": map[string]any{}}})
	if code != 200 || len(gjson.GetBytes(body, "server_keys").Array()) != 0 || denied.hits.Load() != 0 {
		t.Fatalf("denied and unreachable: %d (denied asked %d times) %s", code, denied.hits.Load(), body)
	}

	for _, bad := range []struct {
		method, path string
		body         any
		errcode      string
	}{
		{"POST", "/_matrix/key/v2/query", servertest.Raw(`{"server_keys":`), "M_NOT_JSON"},
		{"POST", "/_matrix/key/v2/query", map[string]any{}, "M_MISSING_PARAM"},
		{"POST", "/_matrix/key/v2/query", map[string]any{"server_keys": map[string]any{"not a name!": map[string]any{}}}, "M_INVALID_PARAM"},
		{"GET", "/_matrix/key/v2/query/" + url.PathEscape(remote.name) + "?minimum_valid_until_ts=soon", nil, "M_INVALID_PARAM"},
	} {
		code, body := s.DoRaw("", bad.method, bad.path, bad.body)
		var e struct{ Errcode string }
		_ = json.Unmarshal(body, &e)
		if code != 400 || e.Errcode != bad.errcode {
			t.Errorf("%s %s %v: %d %s, want 400 %s", bad.method, bad.path, bad.body, code, body, bad.errcode)
		}
	}
}

// verifies reports whether obj carries a valid signature of server by key.
func verifies(obj []byte, server string, key events.SigningKey) bool {
	return events.VerifyJSON(obj, server, key.KeyID, key.Private.Public().(ed25519.PublicKey)) == nil
}
