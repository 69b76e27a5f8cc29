// Package interop runs Chatalot's federation against another homeserver
// implementation: Dendrite v0.13.8 (Apache-2.0), built from the module in
// ./dendrite so that the main module never gains its dependencies, on
// loopback with SQLite and a CA made by the test.
//
// The first build of Dendrite compiles ~90 modules: about three minutes of
// CPU; later builds find them in Go's build cache and only link.
//
// Timelines are read with /sync on both servers; Dendrite's /messages, in
// a room it joined over federation, asks the resident for /backfill first,
// and is checked once.
package interop

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/tests/harness"
)

var (
	dendriteOnce sync.Once
	dendriteBin  string
	dendriteErr  error
)

// buildDendrite builds Dendrite's server from ./dendrite once per test
// process. The compiled packages stay in Go's build cache, so later runs
// only link; the first (cold) build takes minutes.
func buildDendrite(t *testing.T) string {
	t.Helper()
	dendriteOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		dir, err := os.MkdirTemp("", "chatalot-dendrite-")
		if err != nil {
			dendriteErr = err
			return
		}
		dendriteBin = filepath.Join(dir, "dendrite")
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", dendriteBin, "github.com/matrix-org/dendrite/cmd/dendrite")
		cmd.Dir = filepath.Join(filepath.Dir(file), "dendrite")
		if out, err := cmd.CombinedOutput(); err != nil {
			dendriteErr = fmt.Errorf("go build of Dendrite in %s: %v\n%s", cmd.Dir, err, out)
			return
		}
		t.Logf("built Dendrite in %s", time.Since(start).Round(time.Second))
	})
	if dendriteErr != nil {
		// As tests/ops_helpers_test.go's tools: in CI (CI set) this fails,
		// elsewhere (offline, no C compiler for its SQLite) it skips.
		if os.Getenv("CI") != "" {
			t.Fatal(dendriteErr)
		}
		t.Skipf("cannot build Dendrite: %v", dendriteErr)
	}
	return dendriteBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if dendriteBin != "" {
		os.RemoveAll(filepath.Dir(dendriteBin))
	}
	os.Exit(code)
}

// dendrite is one running Dendrite: its client API over plain HTTP, its
// federation over TLS at its server name.
type dendrite struct {
	Name string // localhost:PORT, the HTTPS listener
	URL  string // http://127.0.0.1:PORT, the client API

	dir  string
	args []string // the command line, kept for restarts
	env  []string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	mu   sync.Mutex
	logs bytes.Buffer // every line logged, over all runs
}

func (d *dendrite) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.Write(p)
}

// Logs is what the server has logged so far.
func (d *dendrite) Logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

// startDendrite runs Dendrite with SQLite in a temporary directory, named
// localhost:PORT, serving federation with the test CA's certificate and
// trusting that CA (SSL_CERT_FILE: Go reads the roots from it on Linux),
// with open registration and no rate limits, asking no notary for keys.
func startDendrite(t *testing.T, pki harness.PKI) *dendrite {
	t.Helper()
	bin := buildDendrite(t)
	dir := t.TempDir()
	tlsPort, httpPort := harness.FreePort(t), harness.FreePort(t)
	d := &dendrite{Name: fmt.Sprintf("localhost:%d", tlsPort), URL: fmt.Sprintf("http://127.0.0.1:%d", httpPort), dir: dir}

	// The signing key: a "MATRIX PRIVATE KEY" PEM block holding the seed.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "MATRIX PRIVATE KEY", Headers: map[string]string{"Key-ID": "ed25519:test"}, Bytes: priv.Seed()})
	keyFile := filepath.Join(dir, "matrix_key.pem")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	db := func(name string) map[string]any {
		return map[string]any{"connection_string": "file:" + filepath.Join(dir, name+".db")}
	}
	// JSON is YAML: the config is written as JSON.
	cfg := map[string]any{
		"version": 2,
		"global": map[string]any{
			"server_name": d.Name, "private_key": keyFile,
			"trusted_third_party_id_servers": []string{},
			"jetstream":                      map[string]any{"storage_path": filepath.Join(dir, "jetstream")},
			"presence":                       map[string]any{"enable_inbound": false, "enable_outbound": false},
			"report_stats":                   map[string]any{"enabled": false},
		},
		"client_api": map[string]any{
			"registration_disabled": false, "guests_disabled": true,
			"rate_limiting": map[string]any{"enabled": false},
		},
		"federation_api": map[string]any{
			"database": db("federationapi"), "key_perspectives": []any{}, "prefer_direct_fetch": true,
			"send_max_retries": 16,
		},
		"key_server":  map[string]any{"database": db("keyserver")},
		"media_api":   map[string]any{"database": db("mediaapi"), "base_path": filepath.Join(dir, "media")},
		"mscs":        map[string]any{"database": db("mscs")},
		"relay_api":   map[string]any{"database": db("relayapi")},
		"room_server": map[string]any{"database": db("roomserver")},
		"sync_api":    map[string]any{"database": db("syncapi"), "search": map[string]any{"enabled": false, "index_path": filepath.Join(dir, "search"), "language": "en"}},
		"user_api":    map[string]any{"account_database": db("userapi"), "bcrypt_cost": 4},
		"logging":     []any{map[string]any{"type": "std", "level": "info"}},
	}
	raw, _ := json.MarshalIndent(cfg, "", "  ")
	cfgFile := filepath.Join(dir, "dendrite.yaml")
	if err := os.WriteFile(cfgFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	d.args = []string{bin, "--config", cfgFile,
		"--http-bind-address", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--https-bind-address", fmt.Sprintf("127.0.0.1:%d", tlsPort),
		"--tls-cert", pki.CertFile, "--tls-key", pki.KeyFile,
		"--really-enable-open-registration"}
	d.env = append(os.Environ(), "SSL_CERT_FILE="+pki.CAFile)
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("Dendrite's log:\n%s", d.Logs())
		}
	})
	d.launch(t)
	return d
}

// launch starts the process and waits until its client API answers.
func (d *dendrite) launch(t *testing.T) {
	t.Helper()
	cmd := exec.Command(d.args[0], d.args[1:]...)
	cmd.Dir, cmd.Env = d.dir, d.env
	cmd.Stdout, cmd.Stderr = d, d
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	d.cmd, d.done = cmd, done
	waitFor(t, 2*time.Minute, "Dendrite to answer", func() bool {
		select {
		case <-done:
			t.Fatalf("Dendrite exited:\n%s", d.Logs())
		default:
		}
		resp, err := http.Get(d.URL + "/_matrix/client/versions")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// stop ends the process with SIGTERM (SIGKILL after 15 seconds).
func (d *dendrite) stop() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
	d.cmd = nil
}

// register makes an account through the client API's dummy stage (a first
// request for the session, then the stage) and returns its access token.
func (d *dendrite) register(t *testing.T, name string) string {
	t.Helper()
	req := map[string]any{"username": name, "password": "correct horse battery staple"}
	code, raw := call(t, "POST", d.URL+"/_matrix/client/v3/register", "", req)
	if code == 401 {
		var uia struct {
			Session string `json:"session"`
		}
		_ = json.Unmarshal(raw, &uia)
		req["auth"] = map[string]string{"type": "m.login.dummy", "session": uia.Session}
		code, raw = call(t, "POST", d.URL+"/_matrix/client/v3/register", "", req)
	}
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if code != 200 || json.Unmarshal(raw, &out) != nil || out.AccessToken == "" {
		t.Fatalf("register %s on Dendrite: %d %s", name, code, raw)
	}
	return out.AccessToken
}

// homeserver is what the test does the same way on either server.
type homeserver struct {
	name, url string
	logs      func() string
}

// TestDendriteFederation: a Chatalot server and a Dendrite server on
// loopback, each with a certificate of the test's CA. A Dendrite user
// joins a Chatalot room and a Chatalot user a Dendrite room, and messages
// go both ways; then, in those rooms and a few more: forks, second users,
// state, content, device keys and to-device messages, typing and
// receipts, display names and profiles, redactions, moderation, joins into
// rooms with history, restarts of each server, leaves and rejoins,
// restricted rooms, invites and aliases. Every step waits on what the
// other server shows its client.
func TestDendriteFederation(t *testing.T) {
	pki := harness.NewPKI(t)
	den := startDendrite(t, pki)
	cs, csName := startFederated(t, pki)
	c := homeserver{csName, cs.URL, cs.Logs}
	d := homeserver{den.Name, den.URL, den.Logs}
	alice := registerChatalot(t, cs.URL, "alice")
	dave := den.register(t, "dave")
	erin := den.register(t, "erin")
	bob := registerChatalot(t, cs.URL, "bob")
	aliceID, daveID := "@alice:"+csName, "@dave:"+den.Name
	bobID, erinID := "@bob:"+csName, "@erin:"+den.Name
	// A failure shows Chatalot's log; Dendrite's is shown as the test ends.
	both := func() string { return "\nChatalot's log:\n" + c.logs() }

	// onC is a room on Chatalot that dave joins, onD one on Dendrite that
	// alice joins; the later steps use both.
	var onC, onD string
	need := func(t *testing.T) {
		if onC == "" || onD == "" {
			t.Skip("the joins failed")
		}
	}

	t.Run("dendrite user joins a chatalot room", func(t *testing.T) {
		// Dendrite v0.13.8 knows room versions up to 11 (a version 12
		// room ID, without a server name, is not even a room ID to it);
		// Chatalot's default is 12.
		room := createRoom(t, c, alice, map[string]any{"preset": "public_chat", "room_version": "11", "name": "on chatalot"})
		send(t, c, alice, room, "before dave came")
		join(t, d, dave, room, c.name, both)
		waitMembers(t, c, alice, room, both, aliceID, daveID)
		waitMembers(t, d, dave, room, both, aliceID, daveID)
		// The room's state came with the join.
		waitState(t, d, dave, room, "m.room.name", "name", "on chatalot", both)
		send(t, c, alice, room, "hello from chatalot")
		waitBody(t, d, dave, room, "hello from chatalot", both)
		send(t, d, dave, room, "hello from dendrite")
		waitBody(t, c, alice, room, "hello from dendrite", both)
		// A second round: each server's next event follows the other's.
		send(t, c, alice, room, "chatalot again")
		waitBody(t, d, dave, room, "chatalot again", both)
		send(t, d, dave, room, "dendrite again")
		waitBody(t, c, alice, room, "dendrite again", both)
		// Dendrite's /messages reaches back past dave's join: the history
		// from before it comes from Chatalot's /backfill.
		code, raw := call(t, "GET", d.url+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=100", dave, nil)
		var bodies []string
		gjson.GetBytes(raw, "chunk").ForEach(func(_, ev gjson.Result) bool {
			if ev.Get("type").String() == "m.room.message" {
				bodies = append(bodies, ev.Get("content.body").String())
			}
			return true
		})
		if want := []string{"dendrite again", "chatalot again", "hello from dendrite", "hello from chatalot", "before dave came"}; code != 200 || !slices.Equal(bodies, want) {
			t.Fatalf("Dendrite's /messages: %d %q, want %q: %.2000s%s", code, bodies, want, raw, both())
		}
		onC = room
	})

	t.Run("chatalot user joins a dendrite room", func(t *testing.T) {
		room := createRoom(t, d, dave, map[string]any{"preset": "public_chat", "name": "on dendrite"})
		join(t, c, alice, room, d.name, both)
		waitMembers(t, d, dave, room, both, aliceID, daveID)
		waitMembers(t, c, alice, room, both, aliceID, daveID)
		waitState(t, c, alice, room, "m.room.name", "name", "on dendrite", both)
		// alice's join carries her profile, as a join on Chatalot would.
		code, raw := call(t, "GET", c.url+"/_matrix/client/v3/profile/"+url.PathEscape(aliceID)+"/displayname", alice, nil)
		if name := gjson.GetBytes(raw, "displayname").String(); code != 200 || name == "" {
			t.Fatalf("alice's display name on Chatalot: %d %s", code, raw)
		} else {
			waitDisplayName(t, d, dave, room, aliceID, name, both)
		}
		send(t, d, dave, room, "welcome from dendrite")
		waitBody(t, c, alice, room, "welcome from dendrite", both)
		send(t, c, alice, room, "thanks from chatalot")
		waitBody(t, d, dave, room, "thanks from chatalot", both)
		send(t, d, dave, room, "dendrite once more")
		waitBody(t, c, alice, room, "dendrite once more", both)
		send(t, c, alice, room, "chatalot once more")
		waitBody(t, d, dave, room, "chatalot once more", both)
		onD = room
	})

	t.Run("room version 11 on dendrite", func(t *testing.T) {
		room := createRoom(t, d, dave, map[string]any{"preset": "public_chat", "room_version": "11"})
		join(t, c, alice, room, d.name, both)
		waitMembers(t, d, dave, room, both, aliceID, daveID)
		send(t, d, dave, room, "v11 from dendrite")
		waitBody(t, c, alice, room, "v11 from dendrite", both)
		send(t, c, alice, room, "v11 from chatalot")
		waitBody(t, d, dave, room, "v11 from chatalot", both)
	})

	t.Run("room version 10 on chatalot", func(t *testing.T) {
		room := createRoom(t, c, alice, map[string]any{"preset": "public_chat", "room_version": "10"})
		join(t, d, dave, room, c.name, both)
		waitMembers(t, c, alice, room, both, aliceID, daveID)
		send(t, c, alice, room, "v10 from chatalot")
		waitBody(t, d, dave, room, "v10 from chatalot", both)
		send(t, d, dave, room, "v10 from dendrite")
		waitBody(t, c, alice, room, "v10 from dendrite", both)
	})

	// Both servers send at the same moment: the DAG forks, and the next
	// event of each server joins the branches.
	t.Run("both send at once", func(t *testing.T) {
		need(t)
		for _, room := range []string{onC, onD} {
			var wg sync.WaitGroup
			errs := make(chan error, 6)
			for i := range 3 {
				wg.Add(2)
				go func() { defer wg.Done(); errs <- sendErr(c, alice, room, fmt.Sprintf("alice at once %d", i)) }()
				go func() { defer wg.Done(); errs <- sendErr(d, dave, room, fmt.Sprintf("dave at once %d", i)) }()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			for i := range 3 {
				for _, s := range []homeserver{c, d} {
					tok := map[string]string{c.name: alice, d.name: dave}[s.name]
					waitBody(t, s, tok, room, fmt.Sprintf("alice at once %d", i), both)
					waitBody(t, s, tok, room, fmt.Sprintf("dave at once %d", i), both)
				}
			}
			send(t, c, alice, room, "after the fork from alice")
			send(t, d, dave, room, "after the fork from dave")
			waitBody(t, d, dave, room, "after the fork from alice", both)
			waitBody(t, c, alice, room, "after the fork from dave", both)
		}
	})

	// A server already in a room joins its next user without make_join: the
	// join reaches the other server as any event does.
	t.Run("second users join through their own servers", func(t *testing.T) {
		need(t)
		join(t, d, erin, onC, c.name, both)
		join(t, c, bob, onD, d.name, both)
		waitMembers(t, c, alice, onC, both, aliceID, daveID, erinID)
		waitMembers(t, d, dave, onD, both, aliceID, daveID, bobID)
		send(t, d, erin, onC, "erin was here")
		waitBody(t, c, alice, onC, "erin was here", both)
		send(t, c, bob, onD, "bob was here")
		waitBody(t, d, dave, onD, "bob was here", both)
	})

	t.Run("state changes", func(t *testing.T) {
		need(t)
		setState(t, c, alice, onC, "m.room.topic", map[string]any{"topic": "chatalot's topic"})
		waitState(t, d, dave, onC, "m.room.topic", "topic", "chatalot's topic", both)
		setState(t, d, dave, onD, "m.room.topic", map[string]any{"topic": "dendrite's topic"})
		waitState(t, c, alice, onD, "m.room.topic", "topic", "dendrite's topic", both)
	})

	// Content that canonical JSON must encode the same way on both
	// servers, or signatures and content hashes would not verify: escapes,
	// non-ASCII and astral characters, keys that sort differently as UTF-8
	// and UTF-16, large integers, nesting, empty objects and arrays.
	t.Run("content survives both ways", func(t *testing.T) {
		need(t)
		content := map[string]any{
			"msgtype": "m.text",
			"body":    "tricky: \"quotes\" \\ back\nline\ttab \u0001\u001f \u007f é 日本 😀 \u2028\u2029 </script>",
			"org.chatalot.test": map[string]any{
				"max": 9007199254740991, "min": -9007199254740991, "zero": 0, "neg": -1,
				"bool": true, "null": nil, "empty": map[string]any{}, "list": []any{}, "nested": []any{[]any{1, "a"}, map[string]any{"b": false}},
				"\uff61": 1, "\U0001F600": 2, "a": 3, "B": 4, "é": 5,
			},
		}
		for _, dir := range []struct {
			from, to     homeserver
			tokF, tokT   string
			room, marker string
		}{
			{c, d, alice, dave, onC, "from chatalot"},
			{d, c, dave, alice, onD, "from dendrite"},
		} {
			content["org.chatalot.marker"] = dir.marker
			txn := fmt.Sprintf("tricky%d", txnSeq.Add(1))
			code, raw := call(t, "PUT", dir.from.url+"/_matrix/client/v3/rooms/"+url.PathEscape(dir.room)+"/send/m.room.message/"+txn, dir.tokF, content)
			if code != 200 {
				t.Fatalf("send on %s: %d %s", dir.from.name, code, raw)
			}
			id := gjson.GetBytes(raw, "event_id").String()
			want, _ := json.Marshal(content)
			var got []byte
			ok := poll(time.Minute, func() bool {
				code, raw := call(t, "GET", dir.to.url+"/_matrix/client/v3/rooms/"+url.PathEscape(dir.room)+"/event/"+url.PathEscape(id), dir.tokT, nil)
				got = raw
				return code == 200
			})
			if !ok {
				t.Fatalf("the event %s never reached %s: %s%s", dir.marker, dir.to.name, got, both())
			}
			if !sameJSON(t, gjson.GetBytes(got, "content").Raw, string(want)) {
				t.Fatalf("the content %s changed on the way:\nsent %s\ngot  %s", dir.marker, want, gjson.GetBytes(got, "content").Raw)
			}
		}
	})

	// Device keys uploaded on one server are found by the other's users
	// (the federation key query), signature intact.
	t.Run("device keys across servers", func(t *testing.T) {
		need(t)
		aliceKey := uploadDeviceKeys(t, c, alice, aliceID)
		daveKey := uploadDeviceKeys(t, d, dave, daveID)
		waitDeviceKey := func(on homeserver, token, user, want string) {
			t.Helper()
			var last []byte
			ok := poll(time.Minute, func() bool {
				code, raw := call(t, "POST", on.url+"/_matrix/client/v3/keys/query", token, map[string]any{"device_keys": map[string]any{user: []string{}}})
				last = raw
				found := false
				gjson.GetBytes(raw, "device_keys."+gjson.Escape(user)).ForEach(func(dev, keys gjson.Result) bool {
					found = found || keys.Get("keys."+gjson.Escape("ed25519:"+dev.String())).String() == want
					return !found
				})
				return code == 200 && found
			})
			if !ok {
				t.Fatalf("%s's device key not found on %s: %s%s", user, on.name, last, both())
			}
		}
		waitDeviceKey(c, alice, daveID, daveKey)
		waitDeviceKey(d, dave, aliceID, aliceKey)
		// A new device after the lists were fetched: each server tells the
		// other (m.device_list_update), and the other's answer changes.
		dave2 := login(t, d, "dave")
		waitDeviceKey(c, alice, daveID, uploadDeviceKeys(t, d, dave2, daveID))
		alice2 := login(t, c, "alice")
		waitDeviceKey(d, dave, aliceID, uploadDeviceKeys(t, c, alice2, aliceID))

		// One-time keys claimed across servers (/user/keys/claim).
		for _, q := range []struct {
			on, owner       homeserver
			token, id, name string
		}{{c, d, alice, daveID, "dave"}, {d, c, dave, aliceID, "alice"}} {
			tok := login(t, q.owner, q.name)
			_, device, priv := uploadDeviceKeysWith(t, q.owner, tok, q.id)
			want := uploadOneTimeKey(t, q.owner, tok, q.id, device, priv)
			code, raw := call(t, "POST", q.on.url+"/_matrix/client/v3/keys/claim", q.token,
				map[string]any{"one_time_keys": map[string]any{q.id: map[string]string{device: "signed_curve25519"}}})
			got := gjson.GetBytes(raw, "one_time_keys."+gjson.Escape(q.id)+"."+gjson.Escape(device)+"."+gjson.Escape("signed_curve25519:AAAAAQ")+".key").String()
			if code != 200 || got != want {
				t.Fatalf("claim of %s's one-time key on %s: %d %s (want %s)%s", q.id, q.on.name, code, raw, want, both())
			}
		}
	})

	// To-device messages cross in m.direct_to_device EDUs both ways.
	t.Run("to-device messages", func(t *testing.T) {
		need(t)
		for _, m := range []struct {
			from, to         homeserver
			fromTok, toTok   string
			toUser, toDevice string
		}{
			{c, d, alice, dave, daveID, deviceOf(t, d, dave)},
			{d, c, dave, alice, aliceID, deviceOf(t, c, alice)},
		} {
			marker := fmt.Sprintf("to-device from %s %d", m.from.name, txnSeq.Add(1))
			code, raw := call(t, "PUT", m.from.url+"/_matrix/client/v3/sendToDevice/org.chatalot.test/td"+fmt.Sprint(txnSeq.Add(1)), m.fromTok,
				map[string]any{"messages": map[string]any{m.toUser: map[string]any{m.toDevice: map[string]string{"marker": marker}}}})
			if code != 200 {
				t.Fatalf("sendToDevice on %s: %d %s", m.from.name, code, raw)
			}
			var last []byte
			ok := poll(time.Minute, func() bool {
				code, raw := call(t, "GET", m.to.url+"/_matrix/client/v3/sync?timeout=0", m.toTok, nil)
				last = raw
				found := false
				gjson.GetBytes(raw, "to_device.events").ForEach(func(_, ev gjson.Result) bool {
					found = ev.Get("type").String() == "org.chatalot.test" && ev.Get("content.marker").String() == marker
					return !found
				})
				return code == 200 && found
			})
			if !ok {
				t.Fatalf("%q never reached %s: %s%s", marker, m.to.name, last, both())
			}
		}
	})

	// Typing notifications and read receipts (m.typing, m.receipt EDUs)
	// both ways.
	t.Run("typing and receipts", func(t *testing.T) {
		need(t)
		for _, q := range []struct {
			from, to         homeserver
			fromTok, toTok   string
			fromUser, marker string
		}{{c, d, alice, dave, aliceID, "receipt from chatalot"}, {d, c, dave, alice, daveID, "receipt from dendrite"}} {
			code, raw := call(t, "PUT", q.from.url+"/_matrix/client/v3/rooms/"+url.PathEscape(onC)+"/typing/"+url.PathEscape(q.fromUser), q.fromTok,
				map[string]any{"typing": true, "timeout": 30000})
			if code != 200 {
				t.Fatalf("typing on %s: %d %s", q.from.name, code, raw)
			}
			id := sendID(t, q.to, q.toTok, onC, q.marker)
			waitBody(t, q.from, q.fromTok, onC, q.marker, both)
			code, raw = call(t, "POST", q.from.url+"/_matrix/client/v3/rooms/"+url.PathEscape(onC)+"/receipt/m.read/"+url.PathEscape(id), q.fromTok, map[string]any{})
			if code != 200 {
				t.Fatalf("receipt on %s: %d %s", q.from.name, code, raw)
			}
			var typing, receipt bool
			var last []byte
			ok := poll(time.Minute, func() bool {
				code, raw := call(t, "GET", q.to.url+"/_matrix/client/v3/sync?timeout=0", q.toTok, nil)
				last = raw
				if code != 200 {
					return false
				}
				gjson.GetBytes(raw, "rooms.join."+gjson.Escape(onC)+".ephemeral.events").ForEach(func(_, ev gjson.Result) bool {
					switch ev.Get("type").String() {
					case "m.typing":
						for _, u := range ev.Get("content.user_ids").Array() {
							typing = typing || u.String() == q.fromUser
						}
					case "m.receipt":
						receipt = receipt || ev.Get("content."+gjson.Escape(id)+".m\\.read."+gjson.Escape(q.fromUser)).Exists()
					}
					return true
				})
				return typing && receipt
			})
			if !ok {
				t.Fatalf("on %s, %s typing %v, receipt %v: %.2000s%s", q.to.name, q.fromUser, typing, receipt, last, both())
			}
		}
	})

	// A display name change is a new member event in every joined room.
	t.Run("display names", func(t *testing.T) {
		need(t)
		setName(t, d, dave, daveID, "Dave of Dendrite")
		waitDisplayName(t, c, alice, onC, daveID, "Dave of Dendrite", both)
		setName(t, c, alice, aliceID, "Alice of Chatalot")
		waitDisplayName(t, d, dave, onD, aliceID, "Alice of Chatalot", both)
		// And each server's profile of the other's user (/query/profile).
		for _, q := range []struct {
			on          homeserver
			token, user string
			want        string
		}{{c, alice, daveID, "Dave of Dendrite"}, {d, dave, aliceID, "Alice of Chatalot"}} {
			var last []byte
			ok := poll(time.Minute, func() bool {
				code, raw := call(t, "GET", q.on.url+"/_matrix/client/v3/profile/"+url.PathEscape(q.user), q.token, nil)
				last = raw
				return code == 200 && gjson.GetBytes(raw, "displayname").String() == q.want
			})
			if !ok {
				t.Fatalf("%s's profile on %s: %s%s", q.user, q.on.name, last, both())
			}
		}
	})

	t.Run("redactions", func(t *testing.T) {
		need(t)
		id := sendID(t, d, dave, onC, "dave regrets this")
		waitBody(t, c, alice, onC, "dave regrets this", both)
		redact(t, d, dave, onC, id)
		waitNoBody(t, c, alice, onC, "dave regrets this", both)
		id = sendID(t, c, alice, onD, "alice regrets this")
		waitBody(t, d, dave, onD, "alice regrets this", both)
		redact(t, c, alice, onD, id)
		waitNoBody(t, d, dave, onD, "alice regrets this", both)
		// A redacted state event that is current state: the room's state
		// loses its content too.
		id = setState(t, d, dave, onD, "m.room.topic", map[string]any{"topic": "a topic to regret"})
		waitState(t, c, alice, onD, "m.room.topic", "topic", "a topic to regret", both)
		redact(t, d, dave, onD, id)
		waitState(t, c, alice, onD, "m.room.topic", "topic", "", both)
	})

	// Power given by the other server's user, used; kicks both ways.
	t.Run("moderation", func(t *testing.T) {
		need(t)
		var pl map[string]any
		code, raw := call(t, "GET", d.url+"/_matrix/client/v3/rooms/"+url.PathEscape(onD)+"/state/m.room.power_levels/", dave, nil)
		if code != 200 || json.Unmarshal(raw, &pl) != nil {
			t.Fatalf("power levels on Dendrite: %d %s", code, raw)
		}
		pl["users"].(map[string]any)[aliceID] = 50
		setState(t, d, dave, onD, "m.room.power_levels", pl)
		waitState(t, c, alice, onD, "m.room.power_levels", "users."+gjson.Escape(aliceID), "50", both)
		setState(t, c, alice, onD, "m.room.topic", map[string]any{"topic": "alice moderates"})
		waitState(t, d, dave, onD, "m.room.topic", "topic", "alice moderates", both)

		kick(t, c, alice, onC, erinID)
		waitMembership(t, d, dave, onC, erinID, "leave", both)
		kick(t, d, dave, onD, bobID)
		waitMembership(t, c, alice, onD, bobID, "leave", both)
	})

	// A join into a room with history: members who left, changed power
	// levels, name and topic, many messages; all verified from send_join.
	t.Run("joining a room with history", func(t *testing.T) {
		for _, q := range []struct {
			host, guest                homeserver
			owner, leaver, joiner      string // tokens: the owner on host, a user of host who leaves, the joiner on guest
			ownerID, leaverID, roomVer string
		}{{c, d, alice, bob, dave, aliceID, bobID, "11"}, {d, c, dave, erin, alice, daveID, erinID, ""}} {
			body := map[string]any{"preset": "public_chat", "name": "old room on " + q.host.name}
			if q.roomVer != "" {
				body["room_version"] = q.roomVer
			}
			room := createRoom(t, q.host, q.owner, body)
			join(t, q.host, q.leaver, room, q.host.name, both)
			leave(t, q.host, q.leaver, room)
			setState(t, q.host, q.owner, room, "m.room.topic", map[string]any{"topic": "much happened here"})
			setState(t, q.host, q.owner, room, "m.room.power_levels", map[string]any{
				"users": map[string]int{q.ownerID: 100}, "events_default": 0, "state_default": 50, "redact": 50,
				"ban": 50, "kick": 50, "invite": 0, "users_default": 0,
			})
			for i := range 30 {
				send(t, q.host, q.owner, room, fmt.Sprintf("history %d", i))
			}
			join(t, q.guest, q.joiner, room, q.host.name, both)
			waitState(t, q.guest, q.joiner, room, "m.room.topic", "topic", "much happened here", both)
			waitMembership(t, q.guest, q.joiner, room, q.leaverID, "leave", both)
			send(t, q.guest, q.joiner, room, "late but here")
			waitBody(t, q.host, q.owner, room, "late but here", both)
			send(t, q.host, q.owner, room, "welcome, late one")
			waitBody(t, q.guest, q.joiner, room, "welcome, late one", both)
		}
	})

	// Dendrite is down while alice writes: her messages wait in Chatalot's
	// queue, and reach Dendrite once it is back and has called Chatalot.
	t.Run("dendrite restarts", func(t *testing.T) {
		need(t)
		const failing = "federation: cannot send, will retry"
		before := strings.Count(c.logs(), failing)
		den.stop()
		for _, room := range []string{onC, onD} {
			send(t, c, alice, room, "while dendrite was down")
		}
		waitFor(t, time.Minute, "Chatalot failing to reach Dendrite", func() bool {
			return strings.Count(c.logs(), failing) > before
		})
		den.launch(t)
		send(t, d, dave, onD, "dendrite is back")
		waitBody(t, c, alice, onD, "dendrite is back", both)
		for _, room := range []string{onC, onD} {
			waitBody(t, d, dave, room, "while dendrite was down", both)
			send(t, c, alice, room, "glad you are back")
			waitBody(t, d, dave, room, "glad you are back", both)
		}
	})

	// Chatalot restarts: the rooms it joined over federation are read back
	// and the conversation goes on both ways.
	t.Run("chatalot restarts", func(t *testing.T) {
		need(t)
		cs.Stop()
		cs.Launch()
		c.url = cs.URL
		for _, room := range []string{onC, onD} {
			send(t, c, alice, room, "alice after the restart")
			waitBody(t, d, dave, room, "alice after the restart", both)
			send(t, d, dave, room, "dave after the restart")
			waitBody(t, c, alice, room, "dave after the restart", both)
		}
	})

	// Leaves both ways; alice is Chatalot's last member of onD, and her
	// leave still reaches Dendrite.
	t.Run("leaves", func(t *testing.T) {
		need(t)
		leave(t, d, dave, onC)
		waitMembership(t, c, alice, onC, daveID, "leave", both)
		leave(t, c, alice, onD)
		waitMembership(t, d, dave, onD, aliceID, "leave", both)
	})

	// alice rejoins the room Chatalot has no member in any more, which
	// moved on meanwhile.
	t.Run("rejoin after a leave", func(t *testing.T) {
		need(t)
		setState(t, d, dave, onD, "m.room.topic", map[string]any{"topic": "while alice was away"})
		for i := range 3 {
			send(t, d, dave, onD, fmt.Sprintf("alice missed %d", i))
		}
		join(t, c, alice, onD, d.name, both)
		waitMembership(t, d, dave, onD, aliceID, "join", both)
		send(t, d, dave, onD, "welcome back alice")
		waitBody(t, c, alice, onD, "welcome back alice", both)
		send(t, c, alice, onD, "alice is back")
		waitBody(t, d, dave, onD, "alice is back", both)
		waitState(t, c, alice, onD, "m.room.topic", "topic", "while alice was away", both)

		// And dave rejoins onC, which Dendrite has no member in either.
		setState(t, c, alice, onC, "m.room.topic", map[string]any{"topic": "while dave was away"})
		for i := range 3 {
			send(t, c, alice, onC, fmt.Sprintf("dave missed %d", i))
		}
		join(t, d, dave, onC, c.name, both)
		waitMembership(t, c, alice, onC, daveID, "join", both)
		waitState(t, d, dave, onC, "m.room.topic", "topic", "while dave was away", both)
		send(t, c, alice, onC, "welcome back dave")
		waitBody(t, d, dave, onC, "welcome back dave", both)
		send(t, d, dave, onC, "dave is back")
		waitBody(t, c, alice, onC, "dave is back", both)
	})

	// Restricted rooms (join rule "restricted", room versions 8+): a user
	// of the other server joins through membership of an allowed room;
	// the resident names one of its users who may invite and signs the
	// join.
	t.Run("restricted rooms", func(t *testing.T) {
		need(t)
		restricted := func(allow string) map[string]any {
			return map[string]any{"preset": "public_chat", "room_version": "10", "initial_state": []any{map[string]any{
				"type": "m.room.join_rules", "state_key": "",
				"content": map[string]any{"join_rule": "restricted", "allow": []any{map[string]string{"type": "m.room_membership", "room_id": allow}}},
			}}}
		}
		// dave is in onC again (rejoin above): he may join a room on
		// Chatalot that allows onC's members.
		room := createRoom(t, c, alice, restricted(onC))
		join(t, d, dave, room, c.name, both)
		waitMembership(t, c, alice, room, daveID, "join", both)
		send(t, d, dave, room, "restricted, from dendrite")
		waitBody(t, c, alice, room, "restricted, from dendrite", both)
		// alice is in onD again: she may join a room on Dendrite that
		// allows onD's members.
		room = createRoom(t, d, dave, restricted(onD))
		join(t, c, alice, room, d.name, both)
		waitMembership(t, d, dave, room, aliceID, "join", both)
		send(t, c, alice, room, "restricted, from chatalot")
		waitBody(t, d, dave, room, "restricted, from chatalot", both)
	})

	// Invites both ways into private rooms, then the join the invite
	// allows, with no server named: the inviter's server is asked. (Knocks
	// are not tested: Dendrite v0.13.8 serves neither /knock nor
	// make_knock.)
	t.Run("invites", func(t *testing.T) {
		need(t)
		for _, q := range []struct {
			host, guest         homeserver
			hostTok, guestTok   string
			hostUser, guestUser string
		}{{c, d, alice, dave, aliceID, daveID}, {d, c, dave, alice, daveID, aliceID}} {
			room := createRoom(t, q.host, q.hostTok, map[string]any{"preset": "private_chat", "room_version": "10"})
			code, raw := call(t, "POST", q.host.url+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", q.hostTok, map[string]string{"user_id": q.guestUser})
			if code != 200 {
				t.Fatalf("invite on %s: %d %s%s", q.host.name, code, raw, both())
			}
			var last []byte
			ok := poll(time.Minute, func() bool {
				code, raw := call(t, "GET", q.guest.url+"/_matrix/client/v3/sync?timeout=0", q.guestTok, nil)
				last = raw
				return code == 200 && gjson.GetBytes(raw, "rooms.invite."+gjson.Escape(room)).Exists()
			})
			if !ok {
				t.Fatalf("the invite never reached %s: %.1500s%s", q.guest.name, last, both())
			}
			code, raw = call(t, "POST", q.guest.url+"/_matrix/client/v3/join/"+url.PathEscape(room), q.guestTok, map[string]any{})
			if code != 200 {
				t.Fatalf("join of the invited room on %s: %d %s%s", q.guest.name, code, raw, both())
			}
			waitMembership(t, q.host, q.hostTok, room, q.guestUser, "join", both)
			// Dendrite answers the join before its client API holds the
			// room: wait for the guest's own server too.
			waitMembership(t, q.guest, q.guestTok, room, q.guestUser, "join", both)
			send(t, q.guest, q.guestTok, room, "invited and here")
			waitBody(t, q.host, q.hostTok, room, "invited and here", both)
			send(t, q.host, q.hostTok, room, "glad you came")
			waitBody(t, q.guest, q.guestTok, room, "glad you came", both)
		}
	})

	// Rooms joined by alias: the alias's server answers /query/directory.
	t.Run("aliases", func(t *testing.T) {
		need(t)
		for _, q := range []struct {
			host, guest         homeserver
			hostTok, guestTok   string
			hostUser, guestUser string
		}{{c, d, alice, dave, aliceID, daveID}, {d, c, dave, alice, daveID, aliceID}} {
			room := createRoom(t, q.host, q.hostTok, map[string]any{"preset": "public_chat", "room_version": "10"})
			alias := fmt.Sprintf("#alias%d:%s", txnSeq.Add(1), q.host.name)
			code, raw := call(t, "PUT", q.host.url+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias), q.hostTok, map[string]string{"room_id": room})
			if code != 200 {
				t.Fatalf("alias on %s: %d %s", q.host.name, code, raw)
			}
			code, raw = call(t, "GET", q.guest.url+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias), q.guestTok, nil)
			if code != 200 || gjson.GetBytes(raw, "room_id").String() != room {
				t.Fatalf("%s resolves %s: %d %s%s", q.guest.name, alias, code, raw, both())
			}
			code, raw = call(t, "POST", q.guest.url+"/_matrix/client/v3/join/"+url.PathEscape(alias), q.guestTok, map[string]any{})
			if code != 200 {
				t.Fatalf("join of %s on %s: %d %s%s", alias, q.guest.name, code, raw, both())
			}
			waitMembership(t, q.host, q.hostTok, room, q.guestUser, "join", both)
		}
	})
}

func createRoom(t *testing.T, s homeserver, token string, body map[string]any) string {
	t.Helper()
	code, raw := call(t, "POST", s.url+"/_matrix/client/v3/createRoom", token, body)
	var out struct {
		RoomID string `json:"room_id"`
	}
	if code != 200 || json.Unmarshal(raw, &out) != nil || out.RoomID == "" {
		t.Fatalf("createRoom on %s: %d %s", s.name, code, raw)
	}
	return out.RoomID
}

func join(t *testing.T, s homeserver, token, room, via string, logs func() string) {
	t.Helper()
	code, raw := call(t, "POST", s.url+"/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(via), token, map[string]any{})
	if code != 200 {
		t.Fatalf("join %s on %s through %s: %d %s%s", room, s.name, via, code, raw, logs())
	}
}

func waitMembers(t *testing.T, s homeserver, token, room string, logs func() string, users ...string) {
	t.Helper()
	var last []byte
	ok := poll(time.Minute, func() bool {
		code, raw := call(t, "GET", s.url+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", token, nil)
		last = raw
		if code != 200 {
			return false
		}
		var out struct {
			Joined map[string]any `json:"joined"`
		}
		_ = json.Unmarshal(raw, &out)
		for _, u := range users {
			if _, ok := out.Joined[u]; !ok {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("%v not all joined on %s: %s%s", users, s.name, last, logs())
	}
}

func send(t *testing.T, s homeserver, token, room, body string) {
	t.Helper()
	sendID(t, s, token, room, body)
}

func sendID(t *testing.T, s homeserver, token, room, body string) string {
	t.Helper()
	id, err := sendEvent(s, token, room, body)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func sendErr(s homeserver, token, room, body string) error {
	_, err := sendEvent(s, token, room, body)
	return err
}

var txnSeq atomic.Int64

// sendEvent sends an m.text message; it may run on any goroutine.
func sendEvent(s homeserver, token, room, body string) (string, error) {
	txn := fmt.Sprintf("t%d-%d", time.Now().UnixNano(), txnSeq.Add(1))
	code, raw, err := do("PUT", s.url+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/"+txn, token,
		map[string]string{"msgtype": "m.text", "body": body})
	if err != nil {
		return "", err
	}
	var out struct {
		EventID string `json:"event_id"`
	}
	if code != 200 || json.Unmarshal(raw, &out) != nil {
		return "", fmt.Errorf("send %q on %s: %d %s", body, s.name, code, raw)
	}
	return out.EventID, nil
}

func redact(t *testing.T, s homeserver, token, room, id string) {
	t.Helper()
	code, raw := call(t, "PUT", s.url+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/redact/"+url.PathEscape(id)+"/r"+fmt.Sprint(txnSeq.Add(1)), token, map[string]any{})
	if code != 200 {
		t.Fatalf("redact %s on %s: %d %s", id, s.name, code, raw)
	}
}

func setState(t *testing.T, s homeserver, token, room, typ string, content map[string]any) string {
	t.Helper()
	code, raw := call(t, "PUT", s.url+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/"+typ+"/", token, content)
	if code != 200 {
		t.Fatalf("set %s on %s: %d %s", typ, s.name, code, raw)
	}
	return gjson.GetBytes(raw, "event_id").String()
}

func setName(t *testing.T, s homeserver, token, user, name string) {
	t.Helper()
	code, raw := call(t, "PUT", s.url+"/_matrix/client/v3/profile/"+url.PathEscape(user)+"/displayname", token, map[string]string{"displayname": name})
	if code != 200 {
		t.Fatalf("set display name on %s: %d %s", s.name, code, raw)
	}
}

// waitDisplayName waits until user's member event in room on s has name.
func waitDisplayName(t *testing.T, s homeserver, token, room, user, name string, logs func() string) {
	t.Helper()
	var last []byte
	ok := poll(time.Minute, func() bool {
		code, raw := call(t, "GET", s.url+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(user), token, nil)
		last = raw
		var content struct {
			DisplayName string `json:"displayname"`
		}
		return code == 200 && json.Unmarshal(raw, &content) == nil && content.DisplayName == name
	})
	if !ok {
		t.Fatalf("%s is not %q in %s on %s: %s%s", user, name, room, s.name, last, logs())
	}
}

func kick(t *testing.T, s homeserver, token, room, user string) {
	t.Helper()
	code, raw := call(t, "POST", s.url+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/kick", token, map[string]string{"user_id": user})
	if code != 200 {
		t.Fatalf("kick %s on %s: %d %s", user, s.name, code, raw)
	}
}

func leave(t *testing.T, s homeserver, token, room string) {
	t.Helper()
	code, raw := call(t, "POST", s.url+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", token, map[string]any{})
	if code != 200 {
		t.Fatalf("leave %s on %s: %d %s", room, s.name, code, raw)
	}
}

// waitMembership waits until user's membership in room on s is want.
func waitMembership(t *testing.T, s homeserver, token, room, user, want string, logs func() string) {
	t.Helper()
	var last []byte
	ok := poll(time.Minute, func() bool {
		code, raw := call(t, "GET", s.url+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(user), token, nil)
		last = raw
		var content struct {
			Membership string `json:"membership"`
		}
		return code == 200 && json.Unmarshal(raw, &content) == nil && content.Membership == want
	})
	if !ok {
		t.Fatalf("%s's membership in %s on %s is not %s: %s%s", user, room, s.name, want, last, logs())
	}
}

// sameJSON reports whether two JSON texts hold the same value.
func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

// deviceOf is the device ID of an access token.
func deviceOf(t *testing.T, s homeserver, token string) string {
	t.Helper()
	code, raw := call(t, "GET", s.url+"/_matrix/client/v3/account/whoami", token, nil)
	device := gjson.GetBytes(raw, "device_id").String()
	if code != 200 || device == "" {
		t.Fatalf("whoami on %s: %d %s", s.name, code, raw)
	}
	return device
}

// login makes a new device of the user and returns its access token.
func login(t *testing.T, s homeserver, name string) string {
	t.Helper()
	code, raw := call(t, "POST", s.url+"/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": name},
		"password": "correct horse battery staple",
	})
	token := gjson.GetBytes(raw, "access_token").String()
	if code != 200 || token == "" {
		t.Fatalf("login %s on %s: %d %s", name, s.name, code, raw)
	}
	return token
}

// uploadDeviceKeys uploads signed device keys for the token's device and
// returns its ed25519 key.
func uploadDeviceKeys(t *testing.T, s homeserver, token, user string) string {
	t.Helper()
	key, _, _ := uploadDeviceKeysWith(t, s, token, user)
	return key
}

// uploadDeviceKeysWith is uploadDeviceKeys that also returns the device's
// ID and private key.
func uploadDeviceKeysWith(t *testing.T, s homeserver, token, user string) (string, string, ed25519.PrivateKey) {
	t.Helper()
	device := deviceOf(t, s, token)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	curve := make([]byte, 32)
	_, _ = rand.Read(curve)
	edKey := base64.RawStdEncoding.EncodeToString(pub)
	keys, _ := json.Marshal(map[string]any{
		"user_id": user, "device_id": device,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"curve25519:" + device: base64.RawStdEncoding.EncodeToString(curve), "ed25519:" + device: edKey},
	})
	signed, err := events.SignJSON(keys, events.SigningKey{ServerName: user, KeyID: "ed25519:" + device, Private: priv})
	if err != nil {
		t.Fatal(err)
	}
	code, raw := call(t, "POST", s.url+"/_matrix/client/v3/keys/upload", token, map[string]any{"device_keys": json.RawMessage(signed)})
	if code != 200 {
		t.Fatalf("keys/upload on %s: %d %s", s.name, code, raw)
	}
	return edKey, device, priv
}

// uploadOneTimeKey uploads a signed curve25519 one-time key of the device
// and returns it.
func uploadOneTimeKey(t *testing.T, s homeserver, token, user, device string, priv ed25519.PrivateKey) string {
	t.Helper()
	curve := make([]byte, 32)
	_, _ = rand.Read(curve)
	key := base64.RawStdEncoding.EncodeToString(curve)
	obj, _ := json.Marshal(map[string]string{"key": key})
	signed, err := events.SignJSON(obj, events.SigningKey{ServerName: user, KeyID: "ed25519:" + device, Private: priv})
	if err != nil {
		t.Fatal(err)
	}
	code, raw := call(t, "POST", s.url+"/_matrix/client/v3/keys/upload", token,
		map[string]any{"one_time_keys": map[string]json.RawMessage{"signed_curve25519:AAAAAQ": signed}})
	if code != 200 {
		t.Fatalf("one-time key upload on %s: %d %s", s.name, code, raw)
	}
	return key
}

// waitState waits until the room's state event typ (state key "") on s
// has want at the gjson path key of its content.
func waitState(t *testing.T, s homeserver, token, room, typ, key, want string, logs func() string) {
	t.Helper()
	var last []byte
	ok := poll(time.Minute, func() bool {
		code, raw := call(t, "GET", s.url+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/"+typ+"/", token, nil)
		last = raw
		return code == 200 && gjson.GetBytes(raw, key).String() == want
	})
	if !ok {
		t.Fatalf("%s of %s on %s is not %q: %s%s", typ, room, s.name, want, last, logs())
	}
}

// waitBody waits until body is among the room's latest messages on s.
func waitBody(t *testing.T, s homeserver, token, room, body string, logs func() string) {
	t.Helper()
	waitTimeline(t, s, token, room, fmt.Sprintf("%q on %s", body, s.name), logs, func(bodies []string) bool {
		return slices.Contains(bodies, body)
	})
}

// waitNoBody waits until no message of the room's latest on s has body
// (a redacted message has no content).
func waitNoBody(t *testing.T, s homeserver, token, room, body string, logs func() string) {
	t.Helper()
	waitTimeline(t, s, token, room, fmt.Sprintf("%q redacted on %s", body, s.name), logs, func(bodies []string) bool {
		return !slices.Contains(bodies, body)
	})
}

// waitTimeline waits until cond holds for the bodies of the room's latest
// messages, as an initial /sync shows them.
func waitTimeline(t *testing.T, s homeserver, token, room, what string, logs func() string, cond func([]string) bool) {
	t.Helper()
	filter := url.QueryEscape(`{"room":{"timeline":{"limit":100}}}`)
	var last []byte
	ok := poll(time.Minute, func() bool {
		code, raw := call(t, "GET", s.url+"/_matrix/client/v3/sync?timeout=0&filter="+filter, token, nil)
		last = raw
		if code != 200 {
			return false
		}
		var out struct {
			Rooms struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct {
							Type    string `json:"type"`
							Content struct {
								Body string `json:"body"`
							} `json:"content"`
						} `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		if json.Unmarshal(raw, &out) != nil {
			return false
		}
		var bodies []string
		for _, ev := range out.Rooms.Join[room].Timeline.Events {
			if ev.Type == "m.room.message" {
				bodies = append(bodies, ev.Content.Body)
			}
		}
		return cond(bodies)
	})
	if !ok {
		t.Fatalf("timed out waiting for %s: %s%s", what, last, logs())
	}
}

// poll calls cond until it holds or d has passed.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(d, cond) {
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}

// call sends a request with an optional access token and JSON body.
func call(t *testing.T, method, rawURL, token string, body any) (int, []byte) {
	t.Helper()
	code, raw, err := do(method, rawURL, token, body)
	if err != nil {
		t.Fatal(err)
	}
	return code, raw
}

func do(method, rawURL, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, rawURL, rd)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 90 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, rawURL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

func registerChatalot(t *testing.T, base, name string) string {
	t.Helper()
	code, raw := call(t, "POST", base+"/_matrix/client/v3/register", "", map[string]any{
		"username": name, "password": "correct horse battery staple", "auth": map[string]string{"type": "m.login.dummy"},
	})
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if code != 200 || json.Unmarshal(raw, &out) != nil || out.AccessToken == "" {
		t.Fatalf("register %s on Chatalot: %d %s", name, code, raw)
	}
	return out.AccessToken
}

// startFederated starts a Chatalot server named localhost:PORT serving
// federation over TLS on that port, trusting the test CA.
func startFederated(t *testing.T, pki harness.PKI) (*harness.Server, string) {
	port := harness.FreePort(t)
	name := fmt.Sprintf("localhost:%d", port)
	s := harness.Start(t, harness.WithArgs("--server-name", name, "--federation",
		"--federation-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--federation-tls-cert", pki.CertFile, "--federation-tls-key", pki.KeyFile,
		"--federation-ca-file", pki.CAFile))
	return s, name
}
