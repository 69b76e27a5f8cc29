package auth

import (
	"fmt"
	"strings"
	"testing"
)

// TestBadInput sends every body field of every endpoint with a wrong JSON
// type, and the usual malformed bodies; each must get its Matrix error and
// never a 500 or a partial write.
func TestBadInput(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.SharedSecret = "secret" })
	tok, dev := ts.register("alice", "password1")
	me := "@alice:test.local"
	type endpoint struct {
		method, path string
		token        string
		fields       map[string]any // a valid body
	}
	endpoints := []endpoint{
		{"POST", v3 + "/register", "", map[string]any{"username": "x", "password": "password1", "device_id": "D", "initial_device_display_name": "n", "inhibit_login": false, "refresh_token": false, "auth": map[string]any{}}},
		{"POST", v3 + "/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "password1", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "device_id": "D", "initial_device_display_name": "n", "refresh_token": false, "token": "t", "medium": "email", "address": "a"}},
		{"POST", v3 + "/refresh", "", map[string]any{"refresh_token": "x"}},
		{"POST", v3 + "/account/password", tok, map[string]any{"new_password": "password2", "logout_devices": true, "auth": map[string]any{}}},
		{"POST", v3 + "/account/deactivate", tok, map[string]any{"erase": true, "id_server": "x", "auth": map[string]any{}}},
		{"PUT", v3 + "/devices/" + dev, tok, map[string]any{"display_name": "n"}},
		{"DELETE", v3 + "/devices/" + dev, tok, map[string]any{"auth": map[string]any{}}},
		{"POST", v3 + "/delete_devices", tok, map[string]any{"devices": []string{"A"}, "auth": map[string]any{}}},
		{"POST", "/_matrix/client/v1/login/get_token", tok, map[string]any{"auth": map[string]any{}}},
		{"PUT", v3 + "/profile/" + me + "/displayname", tok, map[string]any{"displayname": "n"}},
		{"PUT", v3 + "/profile/" + me + "/avatar_url", tok, map[string]any{"avatar_url": "mxc://a/b"}},
		{"PUT", v3 + "/user/" + me + "/rooms/!r:test.local/tags/u.t", tok, map[string]any{"order": 0.5}},
		{"POST", v3 + "/account/3pid/delete", tok, map[string]any{"medium": "email", "address": "a"}},
		{"POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": "n", "username": "u", "displayname": "d", "password": "p", "admin": false, "user_type": "x", "mac": "m"}},
	}
	// Values of a wrong type for each kind of field.
	wrong := func(valid any) []any {
		switch valid.(type) {
		case string:
			return []any{5, true, []any{"x"}, map[string]any{}}
		case bool:
			return []any{"true", 1, []any{}}
		case float64:
			return []any{"0.5", []any{}}
		case []string:
			return []any{"A", 5, map[string]any{}, []any{5}}
		case map[string]any:
			return []any{"x", 5, []any{}}
		}
		return nil
	}
	for _, ep := range endpoints {
		for field, valid := range ep.fields {
			for _, bad := range wrong(valid) {
				body := map[string]any{}
				for k, v := range ep.fields {
					body[k] = v
				}
				body[field] = bad
				name := fmt.Sprintf("%s %s %s=%v", ep.method, ep.path, field, bad)
				t.Run(name, func(t *testing.T) {
					before := ts.countUsers()
					r := ts.do(ep.method, ep.path, ep.token, body)
					if r.Status != 400 || (r.errcode() != "M_BAD_JSON" && r.errcode() != "M_NOT_JSON") {
						t.Fatalf("got %d %s: %s", r.Status, r.errcode(), r.Raw)
					}
					if ts.countUsers() != before {
						t.Fatal("partial write")
					}
				})
			}
		}
		for _, raw := range []string{"{", "[]", `"x"`, "5", "null", "{\"a\":}", "\xff"} {
			t.Run(ep.method+" "+ep.path+" body "+raw, func(t *testing.T) {
				r := ts.do(ep.method, ep.path, ep.token, raw)
				if r.Status != 400 || (r.errcode() != "M_BAD_JSON" && r.errcode() != "M_NOT_JSON") {
					t.Fatalf("got %d %s: %s", r.Status, r.errcode(), r.Raw)
				}
			})
		}
	}

	// Names and passwords.
	for _, tc := range []struct {
		name     string
		username string
		password string
		code     string
	}{
		{"over-long username", strings.Repeat("a", 250), "password1", "M_INVALID_USERNAME"},
		{"huge username", strings.Repeat("a", 100000), "password1", "M_INVALID_USERNAME"},
		{"space", "al ice", "password1", "M_INVALID_USERNAME"},
		{"colon", "al:ice", "password1", "M_INVALID_USERNAME"},
		{"at sign", "@alice", "password1", "M_INVALID_USERNAME"},
		{"non-ascii", "alicé", "password1", "M_INVALID_USERNAME"},
		{"nul", "ali\x00ce", "password1", "M_INVALID_USERNAME"},
		{"empty", "", "password1", ""}, // generated
		{"short password", "newuser", "pass", "M_WEAK_PASSWORD"},
		{"over-long password", "newuser", strings.Repeat("p", 513), "M_WEAK_PASSWORD"},
	} {
		t.Run("register "+tc.name, func(t *testing.T) {
			r := ts.do("POST", v3+"/register", "", map[string]any{"username": tc.username, "password": tc.password})
			if tc.code == "" {
				r.must(t, 401)
				return
			}
			r.mustErr(t, 400, tc.code)
		})
	}
	// Oversized body.
	big := `{"username":"x","password":"` + strings.Repeat("p", 2<<20) + `"}`
	ts.do("POST", v3+"/register", "", big).mustErr(t, 413, "M_TOO_LARGE")
	ts.do("POST", v3+"/account/password", tok, big).mustErr(t, 413, "M_TOO_LARGE")
	// Wrong password in UIA: 401 with M_FORBIDDEN; on login: 403.
	ts.uia("POST", v3+"/account/password", tok, map[string]any{"new_password": "password2"}, "alice", "wrongpass").mustErr(t, 401, "M_FORBIDDEN")
	ts.login("alice", "wrongpass").mustErr(t, 403, "M_FORBIDDEN")
	// Auth dict of the wrong shape.
	ts.do("POST", v3+"/account/password", tok, map[string]any{"new_password": "password2", "auth": map[string]any{"type": 5}}).mustErr(t, 400, "M_BAD_JSON")
	ts.do("POST", v3+"/account/password", tok, map[string]any{"new_password": "password2", "auth": map[string]any{"type": "m.login.password", "identifier": "alice"}}).mustErr(t, 400, "M_BAD_JSON")
	if n := ts.countUsers(); n != 1 {
		t.Fatalf("%d users", n)
	}
}
