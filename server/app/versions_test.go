package app_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/oauth"
	"github.com/chatalot/chatalot/server/app"
	"github.com/chatalot/chatalot/spec"
)

// A probe is one request that answers only if a feature is implemented.
type probe struct {
	method, path string
	body         any
	want         int // status
}

// TestAdvertisedFeaturesAnswer: /versions advertises only what the code
// implements. Every unstable feature it lists, and every spec version, has
// a probe here (a feature without one fails the test), and each probe's
// endpoint answers.
func TestAdvertisedFeaturesAnswer(t *testing.T) {
	// With the OAuth 2.0 API on, so that what it adds is advertised too.
	s := servertest.New(t, "", func(c *app.Config) { o := oauth.DefaultConfig(); c.OAuth = &o })
	alice := spec.UserID("@alice:test")
	room := mustOK(t, s, alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{})["room_id"].(string)
	ev := mustOK(t, s, alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/t1",
		map[string]any{"msgtype": "m.text", "body": "root"})["event_id"].(string)
	rooms := "/_matrix/client/v3/rooms/" + url.PathEscape(room)

	features := map[string][]probe{
		// The configured encryption policy (servertest: optional) is
		// told as it is; the policy itself is rooms' (its tests).
		"org.chatalot.encryption_policy.optional": {{"GET", "/_matrix/client/v3/capabilities", nil, 200}},
		"org.matrix.msc4222":                      {{"GET", "/_matrix/client/v3/sync?timeout=0&use_state_after=true", nil, 200}},
		"org.matrix.msc3814":                      {{"GET", "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", nil, 404}}, // none yet: M_NOT_FOUND
		"org.matrix.msc4140":                      {{"GET", "/_matrix/client/unstable/org.matrix.msc4140/delayed_events", nil, 200}},
		"org.matrix.msc4306":                      {{"PUT", "/_matrix/client/unstable/io.element.msc4306/rooms/" + url.PathEscape(room) + "/thread/" + url.PathEscape(ev) + "/subscription", map[string]any{}, 200}},
		"org.matrix.msc3391": {
			{"PUT", "/_matrix/client/v3/user/" + url.PathEscape(string(alice)) + "/account_data/org.example.gone", map[string]any{"a": 1}, 200},
			{"DELETE", "/_matrix/client/unstable/org.matrix.msc3391/user/" + url.PathEscape(string(alice)) + "/account_data/org.example.gone", nil, 200},
		},
		"org.matrix.msc3874": {{"GET", rooms + "/messages?dir=b&filter=" + url.QueryEscape(`{"org.matrix.msc3874.rel_types":["m.thread"]}`), nil, 200}},
		// Device-local notification settings go with the device: see
		// TestLocalNotificationSettingsGoWithTheDevice.
		"org.matrix.simplified_msc3575": {{"POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0", map[string]any{"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 9}}}}}, 200}},
		oauth.FeatureRendezvous:         {{"GET", "/_matrix/client/unstable/io.element.msc4388/rendezvous", nil, 200}},
		"org.matrix.msc3890":            {{"GET", "/_matrix/client/v3/user/" + url.PathEscape(string(alice)) + "/account_data/org.matrix.msc3890.local_notification_settings.GONE", nil, 404}},
	}
	// Each version's probe is an endpoint that version added.
	versions := map[string]probe{
		"v1.1":  {"POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{}, 200},
		"v1.2":  {"GET", "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/hierarchy", nil, 200},
		"v1.3":  {"GET", "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/relations/" + url.PathEscape(ev), nil, 200},
		"v1.4":  {"GET", "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/threads", nil, 200},
		"v1.5":  {"GET", "/_matrix/client/v3/pushrules/", nil, 200},
		"v1.6":  {"GET", "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/timestamp_to_event?dir=b&ts=9999999999999", nil, 200},
		"v1.7":  {"POST", "/_matrix/media/v1/create", nil, 200},
		"v1.8":  {"POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "11"}, 200},
		"v1.9":  {"GET", "/_matrix/client/v3/account/whoami", nil, 200}, // no endpoint of its own
		"v1.10": {"GET", "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/relations/" + url.PathEscape(ev) + "?recurse=true", nil, 200},
		"v1.11": {"GET", "/_matrix/client/v1/media/config", nil, 200},
	}

	_, v := s.Do("", "GET", "/_matrix/client/versions", nil)
	advertised, _ := v["unstable_features"].(map[string]any)
	list, _ := v["versions"].([]any)
	if len(advertised) == 0 || len(list) == 0 {
		t.Fatalf("/versions: %v", v)
	}
	for name, on := range advertised {
		if on != true {
			continue
		}
		probes, ok := features[name]
		if !ok {
			t.Errorf("/versions advertises %s, which this test has no probe for", name)
			continue
		}
		for _, p := range probes {
			check(t, s, alice, name, p)
		}
	}
	for _, x := range list {
		name, _ := x.(string)
		p, ok := versions[name]
		if !ok {
			t.Errorf("/versions advertises %s, which this test has no probe for", name)
			continue
		}
		check(t, s, alice, name, p)
	}
}

// TestLocalNotificationSettingsGoWithTheDevice: MSC3890's account data of a
// device is deleted with the device (here by its logout).
func TestLocalNotificationSettingsGoWithTheDevice(t *testing.T) {
	s := servertest.New(t, "")
	code, out := s.Do("", "POST", "/_matrix/client/v3/register", map[string]any{
		"username": "bob", "password": servertest.Password, "device_id": "PHONE", "auth": map[string]string{"type": "m.login.dummy"},
	})
	if code != http.StatusOK {
		t.Fatalf("register: %d %v", code, out)
	}
	phone := out["access_token"].(string)
	desk := s.Token("@bob:test") // logs in on DEV
	path := "/_matrix/client/v3/user/" + url.PathEscape("@bob:test") + "/account_data/org.matrix.msc3890.local_notification_settings.PHONE"
	if code, out := s.Do(phone, "PUT", path, map[string]any{"is_silenced": true}); code != http.StatusOK {
		t.Fatalf("put: %d %v", code, out)
	}
	if code, out := s.Do(phone, "POST", "/_matrix/client/v3/logout", map[string]any{}); code != http.StatusOK {
		t.Fatalf("logout: %d %v", code, out)
	}
	if code, out := s.Do(desk, "GET", path, nil); code != http.StatusNotFound {
		t.Fatalf("the settings of a logged-out device: %d %v, want 404", code, out)
	}
}

func check(t *testing.T, s *servertest.Server, user spec.UserID, name string, p probe) {
	t.Helper()
	if code, out := s.As(user, p.method, p.path, p.body); code != p.want {
		t.Errorf("%s: %s %s: %d %v, want %d", name, p.method, p.path, code, out, p.want)
	}
}

func mustOK(t *testing.T, s *servertest.Server, user spec.UserID, method, path string, body any) map[string]any {
	t.Helper()
	code, out := s.As(user, method, path, body)
	if code != http.StatusOK {
		t.Fatalf("%s %s: %d %v", method, path, code, out)
	}
	return out
}
