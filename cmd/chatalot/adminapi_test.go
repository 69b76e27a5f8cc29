package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"
)

// TestAdminAPISetting: admin_api keeps /_synapse/admin where it says,
// whatever the reverse proxy forwards: loopback serves it to requests made
// on this machine and refuses what a proxy relayed (X-Forwarded-For…); off
// refuses it everywhere; on serves it everywhere. The rest of the API is
// the same in every mode.
func TestAdminAPISetting(t *testing.T) {
	const admin = "/_synapse/admin/v1/server_version"
	cases := []struct {
		mode, path, header string
		want               int
	}{
		{"loopback", admin, "", http.StatusUnauthorized}, // reached the admin API, which wants a token
		{"loopback", admin, "X-Forwarded-For", http.StatusNotFound},
		{"loopback", admin, "Forwarded", http.StatusNotFound},
		{"loopback", admin, "X-Real-Ip", http.StatusNotFound},
		{"loopback", "/_synapse/admin/v1/register", "X-Forwarded-For", http.StatusNotFound},
		{"loopback", "/_matrix/client/versions", "X-Forwarded-For", http.StatusOK},
		{"off", admin, "", http.StatusNotFound},
		{"off", "/_matrix/client/versions", "", http.StatusOK},
		{"on", admin, "X-Forwarded-For", http.StatusUnauthorized},
	}
	for _, mode := range adminAPIModes {
		cfg := defaults()
		cfg.DataDir = t.TempDir()
		cfg.AdminAPI = mode
		if problems := cfg.Validate(); len(problems) > 0 {
			t.Fatal(problems)
		}
		app, err := openApp(cfg, zerolog.New(io.Discard))
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(app.Handler())
		for _, c := range cases {
			if c.mode != mode {
				continue
			}
			req, _ := http.NewRequest("GET", srv.URL+c.path, nil)
			if c.header != "" {
				req.Header.Set(c.header, "203.0.113.9")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct{ Errcode string }
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != c.want || c.want == http.StatusNotFound && body.Errcode != "M_UNRECOGNIZED" {
				t.Errorf("admin_api %s: GET %s with %q: %d %s, want %d", mode, c.path, c.header, resp.StatusCode, body.Errcode, c.want)
			}
		}
		srv.Close()
		app.BeginShutdown()
		app.Close()
	}
	bad := defaults()
	bad.AdminAPI = "public"
	if len(bad.Validate()) != 1 || bad.Validate()[0].Key != "admin_api" {
		t.Fatalf("admin_api = public: %v", bad.Validate())
	}
}
