package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"
)

// pushGateway is a fake push gateway on 127.0.0.1. Its mode says how it
// answers: "up" records and accepts, "down" answers 503, "block" holds the
// request until released (then records and accepts).
type pushGateway struct {
	srv *httptest.Server

	mu       sync.Mutex
	mode     string
	release  chan struct{}
	blocked  int // requests being held now
	returned int // blocked requests that have since been answered
	failures int // requests answered 503
	got      []json.RawMessage
	raw      [][]byte
	changed  chan struct{}
}

func newPushGateway(t *testing.T) *pushGateway {
	g := &pushGateway{mode: "up", release: make(chan struct{}), changed: make(chan struct{}, 10000)}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		mode, release := g.mode, g.release
		switch mode {
		case "down":
			g.failures++
			g.mu.Unlock()
			g.signal()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		case "block":
			g.blocked++
			g.mu.Unlock()
			g.signal()
			<-release
			g.mu.Lock()
			g.blocked--
			g.returned++
		}
		if r.URL.Path == "/_matrix/push/v1/notify" {
			var n struct {
				Notification json.RawMessage `json:"notification"`
			}
			_ = json.Unmarshal(body, &n)
			g.got = append(g.got, n.Notification)
			g.raw = append(g.raw, body)
		}
		g.mu.Unlock()
		g.signal()
		_, _ = w.Write([]byte(`{"rejected":[]}`))
	}))
	t.Cleanup(func() {
		g.setMode("up")
		g.srv.Close()
	})
	return g
}

func (g *pushGateway) signal() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// setMode switches the mode; leaving "block" releases held requests.
func (g *pushGateway) setMode(m string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mode == "block" && m != "block" {
		close(g.release)
		g.release = make(chan struct{})
	}
	g.mode = m
}

// wait waits, up to a deadline, until cond holds (called with the lock held).
func (g *pushGateway) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		g.mu.Lock()
		ok := cond()
		g.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-g.changed:
		case <-deadline:
			g.mu.Lock()
			failures, blocked, received := g.failures, g.blocked, len(g.got)
			g.mu.Unlock()
			t.Fatalf("push gateway: timed out waiting for %s (failures %d, blocked %d, received %d)", what, failures, blocked, received)
		}
	}
}

// received reports whether a notification for the event arrived; lock held.
func (g *pushGateway) receivedLocked(eventID id.EventID) json.RawMessage {
	for _, n := range g.got {
		var head struct {
			EventID id.EventID `json:"event_id"`
		}
		_ = json.Unmarshal(n, &head)
		if head.EventID == eventID {
			return n
		}
	}
	return nil
}

// rawSync runs one /sync and returns the decoded body.
func rawSync(t *testing.T, base, token, since string) map[string]any {
	t.Helper()
	u := base + "/_matrix/client/v3/sync?timeout=0"
	if since != "" {
		u += "&since=" + url.QueryEscape(since)
	}
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("sync: %d %v", resp.StatusCode, err)
	}
	return out
}

func unreadCount(resp map[string]any, room id.RoomID) (float64, bool) {
	v, ok := dig(resp, "rooms", "join", string(room), "unread_notifications", "notification_count").(float64)
	return v, ok
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// TestPushEndToEnd drives push with mautrix-go against the real binary and
// a fake gateway on 127.0.0.1: the rules clients read, the event_id_only
// notifications, retries after the gateway was down, and sends that never
// wait for the gateway.
func TestPushEndToEnd(t *testing.T) {
	gw := newPushGateway(t)
	s := harness.Start(t, harness.WithArgs("--push-allow-private-gateways", "--push-retry-backoff", "50ms"))
	ctx := context.Background()
	alice := newClient(t, s.URL, "pushalice")
	bob := newClient(t, s.URL, "pushbob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{bob.UserID}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}

	// The rules are in bob's account data from his first sync, and
	// mautrix-go reads and evaluates them.
	first, err := bob.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0})
	if err != nil {
		t.Fatal(err)
	}
	var fromSync *pushrules.PushRuleset
	for _, ev := range first.AccountData.Events {
		if ev.Type.Type == "m.push_rules" {
			var c struct {
				Global *pushrules.PushRuleset `json:"global"`
			}
			if err := json.Unmarshal(ev.Content.VeryRaw, &c); err != nil {
				t.Fatalf("m.push_rules: %v", err)
			}
			fromSync = c.Global
		}
	}
	if fromSync == nil {
		t.Fatal("no m.push_rules in the first sync")
	}
	rules, err := bob.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mention := &event.Event{}
	if err := json.Unmarshal([]byte(fmt.Sprintf(`{"type":"m.room.message","sender":%q,"room_id":%q,"event_id":"$x","origin_server_ts":1,
		"content":{"msgtype":"m.text","body":"hi","m.mentions":{"user_ids":[%q]}}}`, alice.UserID, room.RoomID, bob.UserID)), mention); err != nil {
		t.Fatal(err)
	}
	for name, rs := range map[string]*pushrules.PushRuleset{"GET /pushrules": rules, "sync": fromSync} {
		if acts := rs.GetActions(pushRoom{members: 2}, mention); !acts.Should().Highlight || !acts.Should().Notify {
			t.Errorf("%s: mautrix-go does not see a mention as a highlight: %+v", name, acts)
		}
	}

	kind := mautrix.PusherKindHTTP
	if err := bob.SetPusher(ctx, &mautrix.Pusher{
		Kind: &kind, AppID: "org.example.chatalot.test", PushKey: "pushkey-bob", AppDisplayName: "Test", DeviceDisplayName: "Phone",
		Language: "en", Data: mautrix.PusherData{"url": gw.srv.URL + "/_matrix/push/v1/notify", "format": "event_id_only"},
	}); err != nil {
		t.Fatal(err)
	}

	// 1. A message reaches the gateway as event_id_only: IDs and counts.
	const secret = "the launch code is 0000"
	sent, err := alice.SendText(ctx, room.RoomID, secret)
	if err != nil {
		t.Fatal(err)
	}
	gw.wait(t, "the first notification", func() bool { return gw.receivedLocked(sent.EventID) != nil })
	gw.mu.Lock()
	note := gw.receivedLocked(sent.EventID)
	raw := bytes.Join(gw.raw, nil)
	gw.mu.Unlock()
	var n map[string]any
	_ = json.Unmarshal(note, &n)
	if n["room_id"] != string(room.RoomID) || dig(n, "counts", "unread") != 1.0 {
		t.Fatalf("notification: %s", note)
	}
	for _, k := range []string{"content", "sender", "sender_display_name", "room_name", "room_alias", "type"} {
		if _, ok := n[k]; ok {
			t.Errorf("the event_id_only notification carries %s: %s", k, note)
		}
	}
	if bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, []byte(alice.UserID)) {
		t.Fatalf("content or sender left the server: %s", raw)
	}
	devs, _ := n["devices"].([]any)
	if len(devs) != 1 || dig(devs[0], "pushkey") != "pushkey-bob" || dig(devs[0], "app_id") != "org.example.chatalot.test" {
		t.Fatalf("devices: %s", note)
	}

	// 2. The gateway is down for a while: the server retries with backoff
	// and delivers once it is back.
	gw.setMode("down")
	whileDown, err := alice.SendText(ctx, room.RoomID, "sent while the gateway is down")
	if err != nil {
		t.Fatal(err)
	}
	gw.wait(t, "two failed attempts", func() bool { return gw.failures >= 2 })
	gw.setMode("up")
	gw.wait(t, "delivery after the outage", func() bool { return gw.receivedLocked(whileDown.EventID) != nil })

	// 3. The gateway hangs: sending and syncing go on regardless. The
	// ordering proves it: every send below completes, and bob's sync sees
	// the messages and their count, while the gateway still holds the
	// first request unanswered.
	gw.setMode("block")
	held, err := alice.SendText(ctx, room.RoomID, "this push will hang")
	if err != nil {
		t.Fatal(err)
	}
	gw.wait(t, "the gateway to hold a request", func() bool { return gw.blocked == 1 })
	var later []id.EventID
	for i := range 5 {
		r, err := alice.SendText(ctx, room.RoomID, fmt.Sprint("sent while the gateway hangs ", i))
		if err != nil {
			t.Fatal(err)
		}
		later = append(later, r.EventID)
	}
	resp := rawSync(t, s.URL, bob.AccessToken, "")
	if c, _ := unreadCount(resp, room.RoomID); c != 8 {
		t.Fatalf("bob's unread count while the gateway hangs: %v", c)
	}
	gw.mu.Lock()
	stillHeld := gw.blocked == 1 && gw.returned == 0
	gw.mu.Unlock()
	if !stillHeld {
		t.Fatal("the gateway answered before the sends were done: the test proves nothing")
	}
	gw.setMode("up")
	gw.wait(t, "the held and queued notifications", func() bool {
		if gw.receivedLocked(held.EventID) == nil {
			return false
		}
		for _, e := range later {
			if gw.receivedLocked(e) == nil {
				return false
			}
		}
		return true
	})

	// 4. A read receipt clears the count, and the next sync says so.
	since := resp["next_batch"].(string)
	if err := bob.SendReceipt(ctx, room.RoomID, later[len(later)-1], event.ReceiptTypeRead, struct{}{}); err != nil {
		t.Fatal(err)
	}
	after := rawSync(t, s.URL, bob.AccessToken, since)
	if c, ok := unreadCount(after, room.RoomID); !ok || c != 0 {
		t.Fatalf("unread after the receipt: %v (%v)", c, dig(after, "rooms", "join", string(room.RoomID)))
	}

	// 5. An encrypted message in the one-to-one room notifies, by its
	// envelope alone.
	enc, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventEncrypted, map[string]any{
		"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg", "sender_key": "k", "device_id": "D", "session_id": "s",
	})
	if err != nil {
		t.Fatal(err)
	}
	gw.wait(t, "the encrypted notification", func() bool { return gw.receivedLocked(enc.EventID) != nil })
	gw.mu.Lock()
	var encNote map[string]any
	_ = json.Unmarshal(gw.receivedLocked(enc.EventID), &encNote)
	gw.mu.Unlock()
	if encNote["prio"] != "high" || dig(encNote, "counts", "unread") != 1.0 {
		t.Fatalf("encrypted notification: %v", encNote)
	}
}

// pushRoom is the room mautrix-go's rule evaluation asks about.
type pushRoom struct{ members int }

func (r pushRoom) GetOwnDisplayname() string { return "" }
func (r pushRoom) GetMemberCount() int       { return r.members }

// TestPushGatewayPrivateRefused: without the admin's permission, a pusher
// cannot point the server at a loopback or private address.
func TestPushGatewayPrivateRefused(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	bob := newClient(t, s.URL, "ssrfbob")
	kind := mautrix.PusherKindHTTP
	for _, u := range []string{
		"http://127.0.0.1:9/_matrix/push/v1/notify",
		"https://127.0.0.1:9/_matrix/push/v1/notify",
		"https://169.254.169.254/_matrix/push/v1/notify",
		"https://[::1]/_matrix/push/v1/notify",
		"https://10.0.0.1/_matrix/push/v1/notify",
	} {
		err := bob.SetPusher(ctx, &mautrix.Pusher{
			Kind: &kind, AppID: "org.example.chatalot.test", PushKey: "k", AppDisplayName: "Test", DeviceDisplayName: "Phone",
			Language: "en", Data: mautrix.PusherData{"url": u},
		})
		var he mautrix.HTTPError
		if !errors.As(err, &he) || he.RespError == nil || he.RespError.ErrCode != "M_INVALID_PARAM" || he.Response.StatusCode != 400 {
			t.Errorf("%s: %v", u, err)
		}
	}
	got, err := bob.GetPushers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Pushers) != 0 {
		t.Fatalf("pushers: %+v", got.Pushers)
	}
}

// TestPushersGoWithTheirDevice: a device that logs out takes its pushers
// with it, so a phone that signed out gets no more of the account's
// notifications; the account's other devices keep theirs.
func TestPushersGoWithTheirDevice(t *testing.T) {
	gw := newPushGateway(t)
	s := harness.Start(t, harness.WithArgs("--push-allow-private-gateways"))
	ctx := context.Background()
	alice := newClient(t, s.URL, "devpushalice")
	phone := newClient(t, s.URL, "devpushbob")
	laptop, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := laptop.Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "devpushbob"},
		Password: "correct horse battery staple", StoreCredentials: true,
	}); err != nil {
		t.Fatal(err)
	}
	kind := mautrix.PusherKindHTTP
	for key, c := range map[string]*mautrix.Client{"phone-key": phone, "laptop-key": laptop} {
		if err := c.SetPusher(ctx, &mautrix.Pusher{
			Kind: &kind, AppID: "org.example.chatalot.test", PushKey: key, AppDisplayName: "Test", DeviceDisplayName: key,
			Language: "en", Data: mautrix.PusherData{"url": gw.srv.URL + "/_matrix/push/v1/notify"},
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := laptop.GetPushers(ctx); err != nil || len(got.Pushers) != 2 {
		t.Fatalf("pushers before the logout: %+v %v", got, err)
	}

	if _, err := phone.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := laptop.GetPushers(ctx)
	if err != nil || len(got.Pushers) != 1 || got.Pushers[0].PushKey != "laptop-key" {
		t.Fatalf("pushers after the phone logged out: %+v %v", got, err)
	}

	// A message now reaches the laptop's gateway only.
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{laptop.UserID}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := laptop.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendText(ctx, room.RoomID, "are you there?")
	if err != nil {
		t.Fatal(err)
	}
	gw.wait(t, "the notification", func() bool { return gw.receivedLocked(sent.EventID) != nil })
	gw.mu.Lock()
	defer gw.mu.Unlock()
	for _, n := range gw.got {
		var note struct {
			EventID id.EventID `json:"event_id"`
			Devices []struct {
				PushKey string `json:"pushkey"`
			} `json:"devices"`
		}
		_ = json.Unmarshal(n, &note)
		if note.EventID == sent.EventID && (len(note.Devices) != 1 || note.Devices[0].PushKey != "laptop-key") {
			t.Fatalf("notification went to %+v", note.Devices)
		}
	}
}

// TestIgnoredUsersAreNotCounted: events from a user someone ignores are
// hidden from them, so they neither count as unread nor are pushed, and
// the ignore list still holds after a restart.
func TestIgnoredUsersAreNotCounted(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	alice := newClient(t, s.URL, "ignalice")
	bob := newClient(t, s.URL, "ignbob")
	carol := newClient(t, s.URL, "igncarol")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*mautrix.Client{bob, carol} {
		if _, err := c.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
	}
	if err := bob.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{string(alice.UserID): map[string]any{}}}); err != nil {
		t.Fatal(err)
	}
	countAfter := func(c *mautrix.Client, sender *mautrix.Client, text string) float64 {
		t.Helper()
		if _, err := sender.SendText(ctx, room.RoomID, text); err != nil {
			t.Fatal(err)
		}
		n, _ := unreadCount(rawSync(t, s.URL, c.AccessToken, ""), room.RoomID)
		return n
	}
	if n := countAfter(bob, alice, "from alice"); n != 0 {
		t.Fatalf("bob's count after a message from the user he ignores: %v", n)
	}
	if n := countAfter(bob, carol, "from carol"); n != 1 {
		t.Fatalf("bob's count after carol's message: %v, want 1", n)
	}
	s.Restart() // on a new port
	for _, c := range []*mautrix.Client{alice, bob, carol} {
		c.HomeserverURL, _ = url.Parse(s.URL)
	}
	if n := countAfter(bob, alice, "from alice again"); n != 1 {
		t.Fatalf("bob's count after a restart and another message from alice: %v, want still 1", n)
	}
	// Nor does bob's timeline show them, before or after the restart.
	evs, _ := dig(rawSync(t, s.URL, bob.AccessToken, ""), "rooms", "join", string(room.RoomID), "timeline", "events").([]any)
	for _, ev := range evs {
		if dig(ev, "sender") == string(alice.UserID) && dig(ev, "type") == "m.room.message" {
			t.Fatalf("bob's timeline shows a message from the user he ignores: %v", ev)
		}
	}
	// Carol ignores nobody: alice's message after carol's own counts.
	if n, _ := unreadCount(rawSync(t, s.URL, carol.AccessToken, ""), room.RoomID); n != 1 {
		t.Fatalf("carol's count: %v, want 1", n)
	}
}

// TestPasswordChangeDeletesOtherTokensPushers: a pusher's gateway name is
// not resolved when it is set (it is checked at each connection), and a
// password change that logs out the other devices takes their pushers too;
// the pusher of the token that changed the password stays.
func TestPasswordChangeDeletesOtherTokensPushers(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	const password = "correct horse battery staple"
	phone := newClient(t, s.URL, "pwpushbob")
	laptop, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := laptop.Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "pwpushbob"},
		Password: password, StoreCredentials: true,
	}); err != nil {
		t.Fatal(err)
	}
	kind := mautrix.PusherKindHTTP
	for key, c := range map[string]*mautrix.Client{"phone-key": phone, "laptop-key": laptop} {
		if err := c.SetPusher(ctx, &mautrix.Pusher{
			Kind: &kind, AppID: "org.example.chatalot.test", PushKey: key, AppDisplayName: "Test", DeviceDisplayName: key,
			Language: "en", Data: mautrix.PusherData{"url": "https://dummy.url/_matrix/push/v1/notify"},
		}); err != nil {
			t.Fatalf("set pusher %s: %v", key, err)
		}
	}
	body := map[string]any{"new_password": "another good password", "auth": map[string]any{
		"type": "m.login.password", "password": password,
		"identifier": map[string]any{"type": "m.id.user", "user": "pwpushbob"},
	}}
	if _, err := laptop.MakeRequest(ctx, http.MethodPost, laptop.BuildClientURL("v3", "account", "password"), body, nil); err != nil {
		t.Fatalf("change password: %v", err)
	}
	got, err := laptop.GetPushers(ctx)
	if err != nil || len(got.Pushers) != 1 || got.Pushers[0].PushKey != "laptop-key" {
		t.Fatalf("pushers after the password change: %+v %v", got, err)
	}
}
