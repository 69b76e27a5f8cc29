//go:build goolm

package tests

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/federation"
	"github.com/chatalot/chatalot/tests/harness"
)

// loginE2EEDevice logs a registered user in as a new device and uploads
// its keys with mautrix-go's crypto, without syncing.
func loginE2EEDevice(t *testing.T, ctx context.Context, s *harness.Server, localpart string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password: "correct horse battery staple", StoreCredentials: true}); err != nil {
		t.Fatalf("login %s: %v", localpart, err)
	}
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte("test pickle key"), filepath.Join(t.TempDir(), "crypto.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Init(ctx); err != nil {
		t.Fatalf("crypto init for %s's new device: %v", localpart, err)
	}
	t.Cleanup(func() { _ = helper.Close() })
	return cli
}

// keysQuery is /keys/query for users, as token's user on s.
type queryAnswer struct {
	Failures   map[string]json.RawMessage                       `json:"failures"`
	DeviceKeys map[string]map[string]map[string]any             `json:"device_keys"`
	MasterKeys map[string]json.RawMessage                       `json:"master_keys"`
	OneTime    map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

func keysQuery(t *testing.T, s *harness.Server, token string, users ...id.UserID) queryAnswer {
	t.Helper()
	req := map[string][]string{}
	for _, u := range users {
		req[string(u)] = []string{}
	}
	code, _, raw := doRequest(t, "POST", s.URL+"/_matrix/client/v3/keys/query", token, map[string]any{"device_keys": req, "timeout": 5000})
	if code != 200 {
		t.Fatalf("keys/query: %d %s", code, raw)
	}
	var out queryAnswer
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// syncToken is the next_batch of an initial sync with an empty timeline.
func syncToken(t *testing.T, s *harness.Server, token string) string {
	t.Helper()
	filter := url.QueryEscape(`{"room":{"timeline":{"limit":0}}}`)
	code, _, raw := doRequest(t, "GET", s.URL+"/_matrix/client/v3/sync?timeout=0&filter="+filter, token, nil)
	if code != 200 {
		t.Fatalf("sync: %d %s", code, raw)
	}
	var out struct {
		NextBatch string `json:"next_batch"`
	}
	_ = json.Unmarshal(raw, &out)
	return out.NextBatch
}

// keysChanged is /keys/changes from a token to now.
func keysChanged(t *testing.T, s *harness.Server, token, from string) []string {
	t.Helper()
	to := syncToken(t, s, token)
	code, _, raw := doRequest(t, "GET", s.URL+"/_matrix/client/v3/keys/changes?from="+url.QueryEscape(from)+"&to="+url.QueryEscape(to), token, nil)
	if code != 200 {
		t.Fatalf("keys/changes: %d %s", code, raw)
	}
	var out struct {
		Changed []string `json:"changed"`
	}
	_ = json.Unmarshal(raw, &out)
	return out.Changed
}

// fakeServer is a federation origin played by the test: its key served
// over TLS with the test CA's certificate, and requests signed with it.
type fakeServer struct {
	name string
	key  events.SigningKey
}

func newFakeServer(t *testing.T, pki harness.PKI) *fakeServer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{name: fmt.Sprintf("localhost:%d", ln.Addr().(*net.TCPAddr).Port)}
	f.key = events.SigningKey{ServerName: f.name, KeyID: "ed25519:fake", Private: priv}
	cert, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_matrix/key/v2/server", func(w http.ResponseWriter, r *http.Request) {
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
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return f
}

// do sends a signed federation request to the server named dest at url.
func (f *fakeServer) do(t *testing.T, method, base, dest, path string, body any) (int, []byte) {
	t.Helper()
	var content []byte
	if body != nil {
		content, _ = json.Marshal(body)
	}
	auth, err := federation.Sign(federation.Request{Method: method, URI: path, Origin: f.name, Destination: dest, Content: content}, f.key)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, base+path, bytes.NewReader(content))
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := fedHTTP(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// fedHTTP is a client to the federation listeners (TLS, certificates of
// the test CA, which this client does not check: the servers do).
func fedHTTP(t *testing.T) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

// TestFederationE2EE: alice on one server and bob on another, each with
// mautrix-go's goolm crypto, share an encrypted room: each decrypts the
// other's messages, the Olm sessions set up by claiming one-time keys
// across servers and the Megolm keys sent as to-device messages across
// servers. Then: bob's new device reaches alice's /keys/query through an
// m.device_list_update, and her server answers from its cache while bob's
// is down; a to-device message to bob sent while his server is down, with
// alice's server killed meanwhile, is delivered once both are back; keys
// of a user who shares no room with the asking server are not given out;
// and EDUs that speak for another server's users, or are malformed, are
// dropped without a 500.
func TestFederationE2EE(t *testing.T) {
	pki := harness.NewPKI(t)
	hsA, nameA := startFederated(t, pki)
	hsB, nameB := startFederated(t, pki)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	suffix := randomSuffix()
	alice := newE2EEClient(t, ctx, hsA, "alice"+suffix)
	bob := newE2EEClient(t, ctx, hsB, "bob"+suffix)

	created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "public_chat",
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	room := created.RoomID
	if _, err := bob.cli.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{nameA}}); err != nil {
		t.Fatalf("bob joins over federation: %v\nA:\n%s\nB:\n%s", err, hsA.Logs(), hsB.Logs())
	}
	alice.waitFor(t, "alice sees bob joined", time.Minute, func() bool { return alice.joined(ctx, room, bob.cli.UserID) })
	bob.waitFor(t, "bob sees the room encrypted", time.Minute, func() bool {
		enc, _ := bob.cli.StateStore.IsEncrypted(ctx, room)
		return enc && bob.joined(ctx, room, alice.cli.UserID)
	})

	toBob := "secret for bob " + randomSuffix()
	toAlice := "secret for alice " + randomSuffix()
	if _, err := alice.cli.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: toBob}); err != nil {
		t.Fatalf("alice sends: %v", err)
	}
	bob.waitFor(t, "bob decrypts alice's message on the other server", time.Minute, func() bool { return bob.hasMessage(room, toBob) })
	if _, err := bob.cli.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: toAlice}); err != nil {
		t.Fatalf("bob sends: %v", err)
	}
	alice.waitFor(t, "alice decrypts bob's message on the other server", time.Minute, func() bool { return alice.hasMessage(room, toAlice) })

	// bob adds a device: alice's server hears of it (m.device_list_update)
	// and her /keys/query and /keys/changes show it.
	aliceTok := alice.cli.AccessToken
	before := syncToken(t, hsA, aliceTok)
	// A second device of alice's syncs by hand (her first is mautrix's).
	code, _, raw := doRequest(t, "POST", hsA.URL+"/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": "alice" + suffix}, "password": "correct horse battery staple"})
	if code != 200 {
		t.Fatalf("alice logs in again: %d %s", code, raw)
	}
	var login struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(raw, &login)
	since := syncToken(t, hsA, login.AccessToken)
	if q := keysQuery(t, hsA, aliceTok, bob.cli.UserID); len(q.DeviceKeys[string(bob.cli.UserID)]) != 1 {
		t.Fatalf("bob's devices before: %+v", q)
	}
	bob2 := loginE2EEDevice(t, ctx, hsB, "bob"+suffix)
	waitFor(t, 30*time.Second, "bob's new device in alice's /keys/query", func() bool {
		_, ok := keysQuery(t, hsA, aliceTok, bob.cli.UserID).DeviceKeys[string(bob.cli.UserID)][string(bob2.DeviceID)]
		if !ok {
			time.Sleep(100 * time.Millisecond)
		}
		return ok
	})
	waitFor(t, 30*time.Second, "bob in alice's /keys/changes", func() bool {
		return strings.Contains(strings.Join(keysChanged(t, hsA, aliceTok, before), " "), string(bob.cli.UserID))
	})
	code, _, raw = doRequest(t, "GET", hsA.URL+"/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(since), login.AccessToken, nil)
	var synced struct {
		DeviceLists struct {
			Changed []string `json:"changed"`
		} `json:"device_lists"`
	}
	if err := json.Unmarshal(raw, &synced); code != 200 || err != nil || !strings.Contains(strings.Join(synced.DeviceLists.Changed, " "), string(bob.cli.UserID)) {
		t.Fatalf("bob not in alice's device_lists.changed: %d %s", code, raw)
	}
	// With bob's server down, alice's answers from the list it keeps.
	hsB.Stop()
	q := keysQuery(t, hsA, aliceTok, bob.cli.UserID)
	if len(q.Failures) != 0 || len(q.DeviceKeys[string(bob.cli.UserID)]) != 2 {
		t.Fatalf("bob's devices from the cache, with his server down: %+v", q)
	}
	// A user of a server that is down is reported in failures.
	carolOnB := id.UserID("@nobody" + suffix + ":" + nameB)
	if q := keysQuery(t, hsA, aliceTok, carolOnB); q.Failures[nameB] == nil {
		t.Errorf("an unreachable server is not in failures: %+v", q)
	}

	// A to-device message for bob's new device while his server is down:
	// queued on alice's server, which is killed, and delivered once both
	// are back.
	secret := "to-device " + randomSuffix()
	code, _, raw = doRequest(t, "PUT", hsA.URL+"/_matrix/client/v3/sendToDevice/org.chatalot.test/"+randomSuffix(), aliceTok,
		map[string]any{"messages": map[string]any{string(bob.cli.UserID): map[string]any{string(bob2.DeviceID): map[string]string{"secret": secret}}}})
	if code != 200 {
		t.Fatalf("sendToDevice: %d %s", code, raw)
	}
	waitFor(t, 30*time.Second, "alice's server failing to reach bob's", func() bool {
		return strings.Contains(hsA.Logs(), "federation: cannot send, will retry")
	})
	hsA.Kill()
	hsB.Launch()
	hsA.Launch()
	waitFor(t, 90*time.Second, "the to-device message on bob's new device", func() bool {
		code, _, raw := doRequest(t, "GET", hsB.URL+"/_matrix/client/v3/sync?timeout=1000&filter="+url.QueryEscape(`{"room":{"rooms":[]}}`), bob2.AccessToken, nil)
		return code == 200 && strings.Contains(string(raw), secret) && strings.Contains(string(raw), `"sender":"`+string(alice.cli.UserID)+`"`)
	})

	// carol on bob's server shares no room with alice's: alice's server
	// gets none of her keys, though she has some.
	carol := newE2EEClient(t, ctx, hsB, "carol"+suffix)
	if q := keysQuery(t, hsB, bob.cli.AccessToken, carol.cli.UserID); len(q.DeviceKeys[string(carol.cli.UserID)]) != 1 {
		t.Fatalf("carol's keys on her own server: %+v", q)
	}
	if q := keysQuery(t, hsA, aliceTok, carol.cli.UserID); len(q.DeviceKeys[string(carol.cli.UserID)]) != 0 || len(q.Failures) != 0 {
		t.Errorf("carol's keys given to a server she shares no room with: %+v", q)
	}
	code, _, raw = doRequest(t, "POST", hsA.URL+"/_matrix/client/v3/keys/claim", aliceTok,
		map[string]any{"one_time_keys": map[string]any{string(carol.cli.UserID): map[string]string{string(carol.cli.DeviceID): "signed_curve25519"}}})
	if code != 200 || strings.Contains(string(raw), string(carol.cli.DeviceID)) {
		t.Errorf("claim of carol's keys across servers: %d %s", code, raw)
	}

	// A server of the test's own, in no room: it may not list bob's
	// devices, gets no keys, and its forged or malformed EDUs are dropped.
	fake := newFakeServer(t, pki)
	fedB := "https://" + nameB
	fedB = strings.Replace(fedB, "localhost", "127.0.0.1", 1)
	if code, raw := fake.do(t, "GET", fedB, nameB, "/_matrix/federation/v1/user/devices/"+url.PathEscape(string(bob.cli.UserID)), nil); code != 403 {
		t.Errorf("/user/devices for a server sharing no room: %d %s", code, raw)
	}
	code, raw = fake.do(t, "POST", fedB, nameB, "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": map[string]any{string(bob.cli.UserID): []string{}}})
	if code != 200 || strings.Contains(string(raw), string(bob.cli.DeviceID)) {
		t.Errorf("/user/keys/query for a server sharing no room: %d %s", code, raw)
	}
	code, raw = fake.do(t, "POST", fedB, nameB, "/_matrix/federation/v1/user/keys/claim",
		map[string]any{"one_time_keys": map[string]any{string(bob.cli.UserID): map[string]string{string(bob.cli.DeviceID): "signed_curve25519"}}})
	if code != 200 || strings.Contains(string(raw), string(bob.cli.DeviceID)) {
		t.Errorf("/user/keys/claim for a server sharing no room: %d %s", code, raw)
	}
	for _, bad := range []any{map[string]any{}, map[string]any{"device_keys": "x"}, map[string]any{"device_keys": map[string]any{"@a:b": 1}},
		map[string]any{"device_keys": map[string]any{"not a user": []string{}}}} {
		if code, raw := fake.do(t, "POST", fedB, nameB, "/_matrix/federation/v1/user/keys/query", bad); code != 400 {
			t.Errorf("/user/keys/query with %v: %d %s", bad, code, raw)
		}
	}
	for _, bad := range []any{map[string]any{}, map[string]any{"one_time_keys": []int{1}}, map[string]any{"one_time_keys": map[string]any{"@a:b": "x"}}} {
		if code, raw := fake.do(t, "POST", fedB, nameB, "/_matrix/federation/v1/user/keys/claim", bad); code != 400 {
			t.Errorf("/user/keys/claim with %v: %d %s", bad, code, raw)
		}
	}
	if code, raw := fake.do(t, "GET", fedB, nameB, "/_matrix/federation/v1/user/devices/"+url.PathEscape(string(alice.cli.UserID)), nil); code != 400 {
		t.Errorf("/user/devices for a user of another server: %d %s", code, raw)
	}

	fedA := strings.Replace("https://"+nameA, "localhost", "127.0.0.1", 1)
	before = syncToken(t, hsA, aliceTok)
	edus := []any{
		// Speaks for bob, a user of another server than the origin.
		map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{"user_id": string(bob.cli.UserID), "device_id": "FORGED", "stream_id": 99, "prev_id": []int{1}}},
		map[string]any{"edu_type": "m.signing_key_update", "content": map[string]any{"user_id": string(bob.cli.UserID), "master_key": map[string]any{"user_id": string(bob.cli.UserID)}}},
		map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{"sender": string(bob.cli.UserID), "type": "org.chatalot.forged", "message_id": "1",
			"messages": map[string]any{string(alice.cli.UserID): map[string]any{"*": map[string]string{"forged": "yes"}}}}},
		// Malformed.
		"not an object",
		map[string]any{"edu_type": "m.device_list_update", "content": "not an object"},
		map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{"user_id": 5}},
		map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{"user_id": "@x:" + fake.name, "stream_id": "one"}},
		map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{"sender": "@x:" + fake.name, "messages": []int{1}}},
		map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{"sender": "@x:" + fake.name, "type": "t", "message_id": "2",
			"messages": map[string]any{string(alice.cli.UserID): map[string]any{"*": "not an object"}}}},
		map[string]any{"edu_type": "org.example.unknown", "content": map[string]any{}},
	}
	code, raw = fake.do(t, "PUT", fedA, nameA, "/_matrix/federation/v1/send/"+randomSuffix(), map[string]any{"origin": fake.name, "pdus": []any{}, "edus": edus})
	if code != 200 {
		t.Fatalf("a transaction of bad EDUs: %d %s", code, raw)
	}
	if changed := keysChanged(t, hsA, aliceTok, before); strings.Contains(strings.Join(changed, " "), string(bob.cli.UserID)) {
		t.Errorf("a forged device-list update for bob changed his list: %v", changed)
	}
	if q := keysQuery(t, hsA, aliceTok, bob.cli.UserID); len(q.DeviceKeys[string(bob.cli.UserID)]) != 2 {
		t.Errorf("bob's devices after forged EDUs: %+v", q)
	}
	if logs := hsA.Logs(); !strings.Contains(logs, "federation: dropped an EDU") || !strings.Contains(logs, "federation: dropped a malformed EDU") {
		t.Errorf("the dropped EDUs are not logged")
	}
}
