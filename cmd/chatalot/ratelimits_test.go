package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// newLimitedApp is newTestApp with rate limits on, each class set by
// rates (rate_limit_CLASS = value); the others keep their defaults.
func newLimitedApp(t *testing.T, rates map[string]string) *httptest.Server {
	t.Helper()
	cfg := defaults()
	cfg.DataDir = t.TempDir()
	cfg.Registration = "open"
	cfg.Encryption = "optional"
	cfg.RateLimitRegister = "100/1h"
	for _, f := range fields() {
		if v, ok := rates[strings.TrimPrefix(f.Tag.Get("toml"), "rate_limit_")]; ok && strings.HasPrefix(f.Tag.Get("toml"), "rate_limit_") {
			if err := setField(&cfg, f, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ps := cfg.Validate(); len(ps) > 0 {
		t.Fatal(ps)
	}
	app, err := openApp(cfg, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app.Router())
	t.Cleanup(func() {
		app.BeginShutdown()
		srv.Close()
		app.Close()
	})
	return srv
}

// wantLimited fails unless the answer is the spec's 429 M_LIMIT_EXCEEDED
// with retry_after_ms.
func wantLimited(t *testing.T, what string, code int, raw string) {
	t.Helper()
	var out struct {
		Errcode      string `json:"errcode"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	}
	_ = json.Unmarshal([]byte(raw), &out)
	if code != 429 || out.Errcode != "M_LIMIT_EXCEEDED" || out.RetryAfterMS <= 0 {
		t.Fatalf("%s: %d %s, want 429 M_LIMIT_EXCEEDED with retry_after_ms", what, code, raw)
	}
}

// burst sends req until it is limited, and fails unless that happens
// after exactly allowed successes.
func burst(t *testing.T, what string, allowed int, req func(i int) (int, string)) {
	t.Helper()
	for i := 0; i < allowed; i++ {
		if code, raw := req(i); code != 200 {
			t.Fatalf("%s %d of %d allowed: %d %s", what, i+1, allowed, code, raw)
		}
	}
	code, raw := req(allowed)
	wantLimited(t, what, code, raw)
}

// TestEveryWriteIsRateLimited attacks with the floods the red team used
// (issue 19, item 2): rooms, invites, profile changes fanned out over many
// rooms, reports, account data, to-device messages and any other write are
// each limited per user with 429 M_LIMIT_EXCEEDED and retry_after_ms, and a
// profile change pays for the member events it makes.
func TestEveryWriteIsRateLimited(t *testing.T) {
	srv := newLimitedApp(t, map[string]string{
		"rooms": "6/1h", "membership": "4/1h", "profile": "5/1h", "reports": "2/1h",
		"account_data": "3/1h", "to_device": "10/1h", "writes": "60/1h",
	})
	v3 := srv.URL + "/_matrix/client/v3"
	alice := registerUser(t, srv.URL, "alice")
	bob := registerUser(t, srv.URL, "bob")

	var rooms []string
	burst(t, "createRoom", 6, func(i int) (int, string) {
		code, raw := request(t, "POST", v3+"/createRoom", alice, `{}`)
		rooms = append(rooms, between(raw, `"room_id":"`, `"`))
		return code, raw
	})

	// Six joined rooms: one profile change is six member events, more than
	// the bucket of five holds. It is allowed from a full bucket, and the
	// next waits for the debt to be paid.
	if code, raw := request(t, "PUT", v3+"/profile/@alice:localhost/displayname", alice, `{"displayname":"A"}`); code != 200 {
		t.Fatalf("profile change: %d %s", code, raw)
	}
	code, raw := request(t, "PUT", v3+"/profile/@alice:localhost/displayname", alice, `{"displayname":"B"}`)
	wantLimited(t, "a second profile change in six rooms", code, raw)
	// Bob, in no room, changes his five times.
	burst(t, "profile changes in no room", 5, func(i int) (int, string) {
		return request(t, "PUT", v3+"/profile/@bob:localhost/displayname", bob, fmt.Sprintf(`{"displayname":"B%d"}`, i))
	})

	burst(t, "invite", 4, func(i int) (int, string) {
		return request(t, "POST", v3+"/rooms/"+rooms[i]+"/invite", alice, `{"user_id":"@bob:localhost"}`)
	})
	burst(t, "report", 2, func(i int) (int, string) {
		return request(t, "POST", v3+"/users/@bob:localhost/report", alice, `{"reason":"spam"}`)
	})
	big := strings.Repeat("x", 60000)
	burst(t, "account data", 3, func(i int) (int, string) {
		return request(t, "PUT", fmt.Sprintf("%s/user/@alice:localhost/account_data/org.example.%d", v3, i), alice, `{"pad":"`+big+`"}`)
	})
	// To-device messages cost one per recipient device: 4 + 4 fit in 10,
	// a third of 4 does not.
	toDevice := `{"messages":{"@bob:localhost":{"A":{},"B":{},"C":{},"D":{}}}}`
	burst(t, "to-device", 2, func(i int) (int, string) {
		return request(t, "PUT", fmt.Sprintf("%s/sendToDevice/m.test/t%d", v3, i), alice, toDevice)
	})

	// Everything else that stores something falls under the backstop:
	// carol has made no write and may make 60 filters, not 61.
	carol := registerUser(t, srv.URL, "carol")
	burst(t, "filters", 60, func(i int) (int, string) {
		return request(t, "POST", v3+"/user/@carol:localhost/filter", carol, `{}`)
	})
	// Reads are not writes.
	if code, raw := request(t, "GET", v3+"/account/whoami", carol, ""); code != 200 {
		t.Fatalf("a read after the write limit: %d %s", code, raw)
	}
}

// TestRateLimitsOffTurnsEveryLimitOff: rate_limits = off (test deployments,
// the Matrix suite) lifts the new limits as well.
func TestRateLimitsOffTurnsEveryLimitOff(t *testing.T) {
	_, srv := newTestApp(t) // rate_limits = off
	alice := registerUser(t, srv.URL, "alice")
	for i := 0; i < 15; i++ {
		if code, raw := request(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", alice, `{}`); code != 200 {
			t.Fatalf("createRoom %d with limits off: %d %s", i, code, raw)
		}
	}
}
