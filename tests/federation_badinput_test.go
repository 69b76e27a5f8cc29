package tests

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/federation"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/tests/harness"
)

// fakeOrigin is another server as a test plays it: a name on loopback, a
// signing key served at its key endpoint (so that the server under test
// verifies its requests as any server's), and signed requests.
type fakeOrigin struct {
	name   string
	key    events.SigningKey
	client *http.Client
}

func newFakeOrigin(t *testing.T, pki harness.PKI) *fakeOrigin {
	t.Helper()
	port := harness.FreePort(t)
	f := &fakeOrigin{name: fmt.Sprintf("localhost:%d", port)}
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	f.key = events.SigningKey{ServerName: f.name, KeyID: "ed25519:fake", Private: priv}
	mux := http.NewServeMux()
	mux.HandleFunc("/_matrix/key/v2/server", func(w http.ResponseWriter, _ *http.Request) {
		raw, _ := json.Marshal(map[string]any{
			"server_name":     f.name,
			"verify_keys":     map[string]any{f.key.KeyID: map[string]string{"key": base64.RawStdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))}},
			"old_verify_keys": map[string]any{},
			"valid_until_ts":  time.Now().Add(time.Hour).UnixMilli(),
		})
		signed, err := events.SignJSON(raw, f.key)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(signed)
	})
	cert, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	caPEM, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	f.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return f
}

// do sends a signed federation request to dest (localhost:PORT) and
// returns the status and body.
func (f *fakeOrigin) do(t *testing.T, method, dest, path string, body any) (int, gjson.Result) {
	t.Helper()
	var content []byte
	if body != nil {
		var err error
		if content, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	auth, err := federation.Sign(federation.Request{Method: method, URI: path, Origin: f.name, Destination: dest, Content: content}, f.key)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(dest)
	req, err := http.NewRequest(method, "https://127.0.0.1:"+port+path, bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, gjson.ParseBytes(raw)
}

// memberEvent builds and signs a member event of one of the origin's users
// from a make_* template (or from scratch with tmpl nil: no DAG).
func (f *fakeOrigin) memberEvent(t *testing.T, tmpl gjson.Result, v spec.RoomVersion, room, sender, target, membership string) *events.PDU {
	t.Helper()
	ids := func(key string) []spec.EventID {
		out := []spec.EventID{}
		for _, id := range tmpl.Get(key).Array() {
			out = append(out, spec.EventID(id.String()))
		}
		return out
	}
	depth := tmpl.Get("depth").Int()
	if depth == 0 {
		depth = 1
	}
	p, err := events.Build(events.ProtoEvent{Type: spec.MRoomMember, StateKey: &target, Sender: spec.UserID(sender), RoomID: spec.RoomID(room),
		Content: []byte(`{"membership":"` + membership + `"}`), PrevEvents: ids("prev_events"), AuthEvents: ids("auth_events"),
		Depth: depth, OriginServerTS: time.Now().UnixMilli()}, v, f.key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func wantErr(t *testing.T, what string, code int, body gjson.Result, wantCode int, errcode string) {
	t.Helper()
	if code != wantCode || body.Get("errcode").String() != errcode {
		t.Errorf("%s: %d %s, want %d %s", what, code, body.Raw, wantCode, errcode)
	}
}

// TestFederationBadInput: what another server gets wrong in invites,
// leaves, knocks, joins and queries is answered with the Matrix error the
// spec names, never a 500, and changes nothing.
func TestFederationBadInput(t *testing.T) {
	pki := harness.NewPKI(t)
	hs1, name1 := startFederated(t, pki)
	alice := registerForTest(t, hs1.URL, "alice")
	carol := registerForTest(t, hs1.URL, "carol")
	fake := newFakeOrigin(t, pki)
	mallory := "@mallory:" + fake.name
	room := createRoomOn(t, hs1, alice, map[string]any{"preset": "public_chat", "room_alias_name": "square"})
	esc := url.PathEscape

	// Invites: of a user of another server, of no account here, and
	// without the room's create event in invite_room_state.
	fakeRoom := "!elsewhere:" + fake.name
	invite := func(v spec.RoomVersion, target string, state []any) (int, gjson.Result) {
		ev := fake.memberEvent(t, gjson.Result{}, v, fakeRoom, mallory, target, "invite")
		return fake.do(t, "PUT", name1, "/_matrix/federation/v2/invite/"+esc(fakeRoom)+"/"+esc(string(ev.EventID())),
			map[string]any{"room_version": v, "event": json.RawMessage(ev.JSON()), "invite_room_state": state})
	}
	code, body := invite("10", "@carol:elsewhere.example", nil)
	wantErr(t, "an invite of another server's user", code, body, 400, "M_INVALID_PARAM")
	code, body = invite("10", "@nobody:"+name1, nil)
	wantErr(t, "an invite of a user with no account", code, body, 400, "M_INVALID_PARAM")
	code, body = invite("12", "@carol:"+name1, []any{})
	wantErr(t, "a v12 invite without m.room.create in its state", code, body, 400, "M_INVALID_PARAM")
	code, body = invite("12", "@carol:"+name1, []any{map[string]any{"type": "m.room.create", "state_key": "", "content": map[string]any{}}})
	wantErr(t, "a v12 invite with stripped state", code, body, 400, "M_INVALID_PARAM")
	// Before v12 the spec asks for a warning while servers migrate: a
	// stripped state is kept as given, and carol sees the invite.
	code, body = invite("10", "@carol:"+name1, []any{map[string]any{"type": "m.room.name", "state_key": "", "sender": mallory, "content": map[string]string{"name": "old style"}}})
	if code != 200 || !body.Get("event.signatures").Get(gjson.Escape(name1)).Exists() {
		t.Fatalf("a v10 invite with stripped state: %d %s", code, body.Raw)
	}
	waitFor(t, 10*time.Second, "carol's invite", func() bool {
		return strings.Contains(syncNow(t, hs1, carol).Get(roomPath("invite", fakeRoom)).Raw, "old style")
	})
	code, body = fake.do(t, "PUT", name1, "/_matrix/federation/v2/invite/"+esc(fakeRoom)+"/$x", map[string]any{"room_version": "10", "event": "not an event"})
	if code != 400 {
		t.Errorf("an invite that is not an event: %d %s", code, body.Raw)
	}
	code, body = fake.do(t, "PUT", name1, "/_matrix/federation/v2/invite/"+esc(fakeRoom)+"/$x", map[string]any{"room_version": "99", "event": map[string]any{}})
	wantErr(t, "an invite in an unknown room version", code, body, 400, "M_INCOMPATIBLE_ROOM_VERSION")

	// A make_join for a banned user.
	postOK(t, hs1, alice, "/_matrix/client/v3/rooms/"+esc(room)+"/ban", map[string]string{"user_id": mallory})
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/make_join/"+esc(room)+"/"+esc(mallory)+"?ver=12", nil)
	wantErr(t, "make_join of a banned user", code, body, 403, "M_FORBIDDEN")
	// A make_join for another server's user.
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/make_join/"+esc(room)+"/"+esc("@alice:"+name1)+"?ver=12", nil)
	wantErr(t, "make_join of another server's user", code, body, 403, "M_FORBIDDEN")

	// A send_leave whose event is a join.
	eve := "@eve:" + fake.name
	code, tmpl := fake.do(t, "GET", name1, "/_matrix/federation/v1/make_join/"+esc(room)+"/"+esc(eve)+"?ver=12", nil)
	if code != 200 {
		t.Fatalf("make_join: %d %s", code, tmpl.Raw)
	}
	v := spec.RoomVersion(tmpl.Get("room_version").String())
	join := fake.memberEvent(t, tmpl.Get("event"), v, room, eve, eve, "join")
	code, body = fake.do(t, "PUT", name1, "/_matrix/federation/v2/send_leave/"+esc(room)+"/"+esc(string(join.EventID())), json.RawMessage(join.JSON()))
	wantErr(t, "send_leave of a join", code, body, 400, "M_INVALID_PARAM")
	if m := memberOn(t, hs1, alice, room, eve); m != "" {
		t.Errorf("the join sent as a leave changed eve's membership to %q", m)
	}
	// make_leave of a user not in the room; make_knock on a public room.
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/make_leave/"+esc(room)+"/"+esc(eve), nil)
	wantErr(t, "make_leave of a non-member", code, body, 403, "M_FORBIDDEN")
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/make_knock/"+esc(room)+"/"+esc(eve)+"?ver=12", nil)
	wantErr(t, "make_knock on a public room", code, body, 403, "M_FORBIDDEN")
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/make_knock/"+esc("!nowhere:"+name1)+"/"+esc(eve)+"?ver=12", nil)
	wantErr(t, "make_knock on an unknown room", code, body, 404, "M_NOT_FOUND")

	// Queries.
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape("#square:"+name1), nil)
	if code != 200 || body.Get("room_id").String() != room || !strings.Contains(body.Get("servers").Raw, name1) {
		t.Errorf("query/directory: %d %s", code, body.Raw)
	}
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape("#nothing:"+name1), nil)
	wantErr(t, "query/directory of an unknown alias", code, body, 404, "M_NOT_FOUND")
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/query/directory?room_alias=square", nil)
	wantErr(t, "query/directory of no alias", code, body, 400, "M_INVALID_PARAM")
	code, _, raw := doRequest(t, "PUT", hs1.URL+"/_matrix/client/v3/profile/"+esc("@alice:"+name1)+"/displayname", alice, map[string]string{"displayname": "Alice A."})
	if code != 200 {
		t.Fatalf("set displayname: %d %s", code, raw)
	}
	// profile_lookup is shared_rooms (the default): a server with no user
	// in a room with alice is not told her profile; once eve joins
	// alice's room (send_join of the join refused as a leave), it is.
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape("@alice:"+name1), nil)
	wantErr(t, "query/profile of a user sharing no room with the origin", code, body, 403, "M_FORBIDDEN")
	code, body = fake.do(t, "PUT", name1, "/_matrix/federation/v2/send_join/"+esc(room)+"/"+esc(string(join.EventID())), json.RawMessage(join.JSON()))
	if code != 200 {
		t.Fatalf("send_join: %d %s", code, body.Raw)
	}
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape("@alice:"+name1), nil)
	if code != 200 || body.Get("displayname").String() != "Alice A." {
		t.Errorf("query/profile: %d %s", code, body.Raw)
	}
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape("@alice:"+name1)+"&field=avatar_url", nil)
	if code != 200 || body.Get("displayname").Exists() {
		t.Errorf("query/profile of avatar_url only: %d %s", code, body.Raw)
	}
	// No account: the same answer as a user sharing no room (nobody can
	// be found out by asking).
	code, body = fake.do(t, "GET", name1, "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape("@nobody:"+name1), nil)
	wantErr(t, "query/profile of no account", code, body, 403, "M_FORBIDDEN")

	// EDUs about users of another server than the origin, or of rooms
	// they are not in, are dropped; eve's, now joined, is not.
	trudy := "@trudy:" + fake.name
	code, body = fake.do(t, "PUT", name1, "/_matrix/federation/v1/send/edus1", map[string]any{"origin": fake.name, "pdus": []any{}, "edus": []any{
		map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": room, "user_id": "@alice:" + name1, "typing": true}},
		map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": room, "user_id": trudy, "typing": true}},
		map[string]any{"edu_type": "m.typing", "content": "not an object"},
		map[string]any{"edu_type": "m.receipt", "content": map[string]any{room: map[string]any{"m.read": map[string]any{trudy: map[string]any{"event_ids": []string{"$x"}}}}}},
		map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": []any{map[string]any{"user_id": eve, "presence": "online"}}}},
		map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": room, "user_id": eve, "typing": true}},
	}})
	if code != 200 {
		t.Fatalf("a transaction of EDUs: %d %s", code, body.Raw)
	}
	var eph string
	waitFor(t, 10*time.Second, "eve typing on hs1", func() bool {
		eph = syncNow(t, hs1, alice).Get(roomPath("join", room) + ".ephemeral.events").Raw
		return strings.Contains(eph, eve)
	})
	if strings.Contains(eph, trudy) || strings.Contains(eph, "@alice:"+name1) {
		t.Errorf("a dropped EDU reached alice: %s", eph)
	}
	_, _, raw = doRequest(t, "GET", hs1.URL+"/_matrix/client/v3/presence/"+esc(eve)+"/status", alice, nil)
	if gjson.GetBytes(raw, "presence").String() == "online" {
		t.Errorf("presence accepted with federation_presence off: %s", raw)
	}
	if strings.Contains(hs1.Logs(), "internal error") || strings.Contains(hs1.Logs(), "handler panicked") {
		t.Errorf("a request was answered with a 500:\n%s", hs1.Logs())
	}
}

// TestFederationPresenceOn: with federation_presence on at both servers,
// presence crosses (the other half of TestFederationMembership's check).
func TestFederationPresenceOn(t *testing.T) {
	pki := harness.NewPKI(t)
	hs1, name1 := startFederatedWith(t, pki, "--federation-presence")
	hs2, name2 := startFederatedWith(t, pki, "--federation-presence")
	alice := registerForTest(t, hs1.URL, "alice")
	bob := registerForTest(t, hs2.URL, "bob")
	room := createRoomOn(t, hs1, alice, map[string]any{"preset": "public_chat"})
	postOK(t, hs2, bob, "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(name1), map[string]any{})
	code, _, raw := doRequest(t, "PUT", hs2.URL+"/_matrix/client/v3/presence/"+url.PathEscape("@bob:"+name2)+"/status", bob,
		map[string]any{"presence": "unavailable", "status_msg": "out for lunch"})
	if code != 200 {
		t.Fatalf("presence: %d %s", code, raw)
	}
	waitFor(t, 30*time.Second, "bob's presence on hs1", func() bool {
		_, _, raw := doRequest(t, "GET", hs1.URL+"/_matrix/client/v3/presence/"+url.PathEscape("@bob:"+name2)+"/status", alice, nil)
		time.Sleep(50 * time.Millisecond)
		return gjson.GetBytes(raw, "status_msg").String() == "out for lunch" && gjson.GetBytes(raw, "presence").String() == "unavailable"
	})
}
