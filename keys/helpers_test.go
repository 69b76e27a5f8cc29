package keys_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"github.com/chatalot/chatalot/auth/authtest"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/internal/pgtest"
	"github.com/chatalot/chatalot/keys"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
)

// The keys service is the device hook of the accounts package.
var _ auth.DeviceHooks = (*keys.Service)(nil)

// env is one keys service on a fresh SQLite database behind an in-process
// router whose fake auth middleware takes "Bearer <user ID>|<device ID>".
type env struct {
	t     *testing.T
	dir   string
	db    *storage.DB
	svc   *keys.Service
	srv   *httptest.Server
	notes *notifier
	uia   *fakeUIA
	rooms *fakeRooms
	fed   keys.RemoteKeys // nil: federation off
}

type notifier struct {
	mu    sync.Mutex
	woken map[spec.UserID]int64
}

func (n *notifier) Notify(pos int64, _ wake.Change, users ...spec.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		n.woken[u] = pos
	}
}

func (n *notifier) last(u spec.UserID) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.woken[u]
}

// fakeUIA accepts the request when the body carries auth.type
// m.login.password with password "secret", and otherwise answers the 401
// challenge.
type fakeUIA struct {
	mu    sync.Mutex
	calls int
}

func (f *fakeUIA) check(c *gin.Context, dev *auth.Device, body []byte) (func(), error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	var b struct {
		Auth struct {
			Type     string `json:"type"`
			Password string `json:"password"`
		} `json:"auth"`
	}
	_ = json.Unmarshal(body, &b)
	if b.Auth.Type == "m.login.password" && b.Auth.Password == "secret" {
		return func() {}, nil
	}
	return nil, spec.NewError(spec.ErrUnauthorized, "authenticate").WithStatus(http.StatusUnauthorized).
		With("flows", []any{map[string]any{"stages": []string{"m.login.password"}}})
}

type fakeRooms struct {
	mu     sync.Mutex
	shared map[spec.UserID][]spec.UserID
}

func (f *fakeRooms) UsersSharingRoomsWith(u spec.UserID) []spec.UserID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.shared[u]
}

// share makes the users share a room.
func (f *fakeRooms) share(users ...spec.UserID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range users {
		for _, b := range users {
			if a != b {
				f.shared[a] = append(f.shared[a], b)
			}
		}
	}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), notes: &notifier{woken: map[spec.UserID]int64{}}, uia: &fakeUIA{},
		rooms: &fakeRooms{shared: map[spec.UserID][]spec.UserID{}}}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	t := e.t
	db, err := storage.Open(pgtest.Location(e.t, e.dir, "chatalot.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(context.Background(), keys.Schema); err != nil {
		t.Fatal(err)
	}
	svc, err := keys.New(keys.Deps{
		DB: db, Log: zerolog.Nop(), Notify: e.notes, Rooms: e.rooms, UIA: e.uia.check,
		Config:     keys.Config{ServerName: "test", MaxOneTimeKeys: 50, MaxKeyUploadBytes: 64 << 10},
		Federation: e.fed,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := api.NewRouter(api.Options{Log: zerolog.Nop()})
	svc.Routes(r, authtest.Middleware)
	e.db, e.svc, e.srv = db, svc, httptest.NewServer(r)
}

func (e *env) close() {
	if e.srv != nil {
		e.srv.Close()
		e.db.Close()
		e.srv = nil
	}
}

// restart reopens the database and the service, as a server restart does.
func (e *env) restart() {
	e.close()
	e.open()
}

// resp is a decoded response.
type resp struct {
	status int
	body   map[string]any
	raw    []byte
}

func (r resp) errcode() string {
	s, _ := r.body["errcode"].(string)
	return s
}

// get walks the decoded body along a path of object keys.
func (r resp) get(path ...string) any {
	var v any = r.body
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// do sends a request as dev; body is JSON-encoded unless it is []byte or a
// string (sent as is).
func (e *env) do(dev *device, method, path string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if dev != nil {
		req.Header.Set("Authorization", "Bearer "+string(dev.user)+"|"+dev.id)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := resp{status: res.StatusCode, raw: raw}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

// want fails the test unless r has the status (and errcode, if given).
func (e *env) want(r resp, status int, errcode ...string) {
	e.t.Helper()
	if r.status != status || (len(errcode) > 0 && r.errcode() != errcode[0]) {
		e.t.Fatalf("got %d %s, want %d %v", r.status, r.raw, status, errcode)
	}
}

// device is a client device with real keys.
type device struct {
	user  spec.UserID
	id    string
	pub   ed25519.PublicKey
	priv  ed25519.PrivateKey
	curve string
}

func newDevice(user spec.UserID, id string) *device {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return &device{user: user, id: id, pub: pub, priv: priv, curve: randomKey()}
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawStdEncoding.EncodeToString(b)
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

func (d *device) edKey() string { return b64(d.pub) }

// sign signs a JSON object as user with the key keyID.
func sign(obj any, user spec.UserID, keyID string, priv ed25519.PrivateKey) map[string]any {
	raw, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	signed, err := events.SignJSON(raw, events.SigningKey{ServerName: string(user), KeyID: keyID, Private: priv})
	if err != nil {
		panic(err)
	}
	var out map[string]any
	if err := json.Unmarshal(signed, &out); err != nil {
		panic(err)
	}
	return out
}

// unsignedDeviceKeys is the device-keys object before signing.
func (d *device) unsignedDeviceKeys() map[string]any {
	return map[string]any{
		"user_id":    d.user,
		"device_id":  d.id,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]string{
			"ed25519:" + d.id:    d.edKey(),
			"curve25519:" + d.id: d.curve,
		},
	}
}

// deviceKeys is the device's self-signed device-keys object.
func (d *device) deviceKeys() map[string]any {
	return sign(d.unsignedDeviceKeys(), d.user, "ed25519:"+d.id, d.priv)
}

// otk is a signed one-time (or fallback) key object.
func (d *device) otk(fallback bool) map[string]any {
	k := map[string]any{"key": randomKey()}
	if fallback {
		k["fallback"] = true
	}
	return sign(k, d.user, "ed25519:"+d.id, d.priv)
}

// upload publishes the device keys and n one-time keys.
func (e *env) upload(d *device, n int) resp {
	e.t.Helper()
	otks := map[string]any{}
	for i := 0; i < n; i++ {
		otks["signed_curve25519:"+d.id+itoa(i)] = d.otk(false)
	}
	r := e.do(d, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": d.deviceKeys(), "one_time_keys": otks})
	e.want(r, 200)
	return r
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// crossSigning is a user's three cross-signing key pairs.
type crossSigning struct {
	user                          spec.UserID
	masterPriv, selfPriv, usrPriv ed25519.PrivateKey
}

func newCrossSigning(user spec.UserID) *crossSigning {
	_, m, _ := ed25519.GenerateKey(rand.Reader)
	_, s, _ := ed25519.GenerateKey(rand.Reader)
	_, u, _ := ed25519.GenerateKey(rand.Reader)
	return &crossSigning{user: user, masterPriv: m, selfPriv: s, usrPriv: u}
}

func pubOf(priv ed25519.PrivateKey) string { return b64(priv.Public().(ed25519.PublicKey)) }

func (x *crossSigning) masterPub() string { return pubOf(x.masterPriv) }
func (x *crossSigning) selfPub() string   { return pubOf(x.selfPriv) }
func (x *crossSigning) userPub() string   { return pubOf(x.usrPriv) }

func (x *crossSigning) key(usage string, priv ed25519.PrivateKey) map[string]any {
	pub := pubOf(priv)
	return map[string]any{"user_id": x.user, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub: pub}}
}

func (x *crossSigning) master() map[string]any { return x.key("master", x.masterPriv) }

// signedByMaster returns the key of usage signed by signer (the master key
// unless a test forges).
func (x *crossSigning) signedBy(usage string, priv, signer ed25519.PrivateKey) map[string]any {
	return sign(x.key(usage, priv), x.user, "ed25519:"+pubOf(signer), signer)
}

// upload is a full device_signing/upload body.
func (x *crossSigning) upload() map[string]any {
	return map[string]any{
		"master_key":       x.master(),
		"self_signing_key": x.signedBy("self_signing", x.selfPriv, x.masterPriv),
		"user_signing_key": x.signedBy("user_signing", x.usrPriv, x.masterPriv),
	}
}

var errNotFound = errors.New("not found")

// queryDevice returns the device's keys as another user sees them.
func (e *env) queryDevice(as *device, user spec.UserID, id string) (map[string]any, error) {
	r := e.do(as, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{string(user): []string{}}})
	e.want(r, 200)
	d, ok := r.get("device_keys", string(user), id).(map[string]any)
	if !ok {
		return nil, errNotFound
	}
	return d, nil
}
