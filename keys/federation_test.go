package keys_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/keys"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// fakeRemote is the other servers as keys sees them through federation:
// one server, "remote", whose answers the test sets, and a record of the
// EDUs queued.
type fakeRemote struct {
	mu       sync.Mutex
	devices  map[string]any // remote user's device ID → keys, as /user/keys/query answers
	streamID int64          // /user/devices' stream_id
	down     bool
	queries  int
	resyncs  int
	edus     []queuedEDU
}

type queuedEDU struct {
	dest    spec.ServerName
	typ     string
	content map[string]any
}

func (f *fakeRemote) QueryKeys(_ context.Context, _ spec.ServerName, users map[spec.UserID][]string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries++
	if f.down {
		return nil, errors.New("connection refused")
	}
	out := map[spec.UserID]any{}
	for u := range users {
		out[u] = f.devices
	}
	return json.Marshal(map[string]any{"device_keys": out})
}

func (f *fakeRemote) ClaimKeys(context.Context, spec.ServerName, map[spec.UserID]map[string]string) ([]byte, error) {
	return []byte(`{"one_time_keys":{}}`), nil
}

func (f *fakeRemote) RemoteUserDevices(_ context.Context, u spec.UserID) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resyncs++
	var devs []map[string]any
	for id, k := range f.devices {
		devs = append(devs, map[string]any{"device_id": id, "keys": k})
	}
	return json.Marshal(map[string]any{"user_id": u, "stream_id": f.streamID, "devices": devs})
}

func (f *fakeRemote) QueueEDU(_ *storage.Tx, dest spec.ServerName, typ string, content any) error {
	b, _ := json.Marshal(content)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	f.mu.Lock()
	f.edus = append(f.edus, queuedEDU{dest, typ, m})
	f.mu.Unlock()
	return nil
}

func (f *fakeRemote) queued(typ string) []queuedEDU {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []queuedEDU
	for _, e := range f.edus {
		if e.typ == typ {
			out = append(out, e)
		}
	}
	return out
}

func newFedEnv(t *testing.T) (*env, *fakeRemote) {
	t.Helper()
	f := &fakeRemote{devices: map[string]any{}}
	e := &env{t: t, dir: t.TempDir(), notes: &notifier{woken: map[spec.UserID]int64{}}, uia: &fakeUIA{},
		rooms: &fakeRooms{shared: map[spec.UserID][]spec.UserID{}}, fed: f}
	e.open()
	t.Cleanup(e.close)
	return e, f
}

// remoteDevice is a device of a remote user with real keys.
func remoteDevice(f *fakeRemote, user spec.UserID, id string) map[string]any {
	k := newDevice(user, id).deviceKeys()
	f.mu.Lock()
	f.devices[id] = k
	f.mu.Unlock()
	return k
}

func (e *env) remoteDeviceIDs(as *device, user spec.UserID) map[string]bool {
	e.t.Helper()
	r := e.do(as, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{string(user): []string{}}})
	e.want(r, 200)
	out := map[string]bool{}
	devs, _ := r.get("device_keys", string(user)).(map[string]any)
	for d := range devs {
		out[d] = true
	}
	return out
}

func (e *env) cachedStream(user spec.UserID) int64 {
	var n int64 = -1
	_ = e.db.QueryRow(context.Background(), `SELECT stream_id FROM remote_device_lists WHERE user_id = $1`, string(user)).Scan(&n)
	return n
}

// TestRemoteDeviceListCache: a remote user's list is fetched once and then
// served from the cache; an update that follows on from the cached stream
// ID is applied to it; one after a gap drops the cache and resyncs through
// /user/devices; a replayed update changes nothing; local users sharing a
// room with the remote user are woken for each change.
func TestRemoteDeviceListCache(t *testing.T) {
	e, f := newFedEnv(t)
	ctx := context.Background()
	alice := newDevice("@alice:test", "A")
	const rem = spec.UserID("@rem:remote")
	e.rooms.share(alice.user, rem)
	remoteDevice(f, rem, "R1")

	if got := e.remoteDeviceIDs(alice, rem); !got["R1"] || len(got) != 1 {
		t.Fatalf("first query: %v", got)
	}
	if got := e.remoteDeviceIDs(alice, rem); !got["R1"] || f.queries != 1 {
		t.Fatalf("second query asked the remote again (%d queries): %v", f.queries, got)
	}
	if s := e.cachedStream(rem); s != 0 {
		t.Fatalf("cached with stream %d, want 0 (unknown)", s)
	}

	// An update with a prev_id the cache does not know: resync.
	r2 := remoteDevice(f, rem, "R2")
	f.mu.Lock()
	f.streamID = 5
	f.mu.Unlock()
	before := e.notes.last(alice.user)
	raw, _ := json.Marshal(r2)
	if err := e.svc.ReceiveDeviceListUpdate(ctx, keys.DeviceListUpdate{UserID: rem, DeviceID: "R2", StreamID: 5, PrevID: []int64{4}, Keys: raw}); err != nil {
		t.Fatal(err)
	}
	if e.notes.last(alice.user) <= before {
		t.Fatal("alice was not woken for the remote user's change")
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.cachedStream(rem) != 5 {
		if time.Now().After(deadline) {
			t.Fatalf("no resync: cached stream %d", e.cachedStream(rem))
		}
		time.Sleep(10 * time.Millisecond)
	}
	queries := f.queries

	// Updates that follow on: applied without asking.
	r3 := remoteDevice(f, rem, "R3")
	raw, _ = json.Marshal(r3)
	if err := e.svc.ReceiveDeviceListUpdate(ctx, keys.DeviceListUpdate{UserID: rem, DeviceID: "R3", StreamID: 6, PrevID: []int64{5}, Keys: raw}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.ReceiveDeviceListUpdate(ctx, keys.DeviceListUpdate{UserID: rem, DeviceID: "R1", StreamID: 7, PrevID: []int64{6}, Deleted: true}); err != nil {
		t.Fatal(err)
	}
	// A replay of an applied update changes nothing.
	if err := e.svc.ReceiveDeviceListUpdate(ctx, keys.DeviceListUpdate{UserID: rem, DeviceID: "R3", StreamID: 6, PrevID: []int64{5}, Keys: raw}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
	got := e.remoteDeviceIDs(alice, rem)
	if len(got) != 2 || !got["R2"] || !got["R3"] || f.queries != queries {
		t.Fatalf("after the updates: %v (%d queries, want %d)", got, f.queries, queries)
	}

	// Keys that are not the device's own are refused.
	other, _ := json.Marshal(newDevice(rem, "OTHER").deviceKeys())
	if err := e.svc.ReceiveDeviceListUpdate(ctx, keys.DeviceListUpdate{UserID: rem, DeviceID: "R9", StreamID: 8, PrevID: []int64{7}, Keys: other}); err == nil {
		t.Fatal("an update carrying another device's keys was applied")
	}

	// The remote user joins another room here: while no room was shared,
	// their server sent no updates, so the cached list goes.
	sk := string(rem)
	_, priv, _ := ed25519.GenerateKey(nil)
	join, err := events.Build(events.ProtoEvent{Type: spec.MRoomMember, StateKey: &sk, Sender: rem, RoomID: "!other:test",
		Content: []byte(`{"membership":"join"}`), Depth: 1, OriginServerTS: time.Now().UnixMilli()}, "10",
		events.SigningKey{ServerName: "remote", KeyID: "ed25519:k", Private: priv})
	if err != nil {
		t.Fatal(err)
	}
	hook := e.svc.PrepareCommit("!other:test", []*rooms.Event{{PDU: join}}, nil)
	if err := e.db.Write(ctx, hook); err != nil {
		t.Fatal(err)
	}
	if s := e.cachedStream(rem); s != -1 {
		t.Fatalf("the list of a user joining a room is still cached (stream %d)", s)
	}

	// An update for a remote user who shares no room here is ignored.
	before = e.db.Position()
	if err := e.svc.ReceiveDeviceListUpdate(ctx, keys.DeviceListUpdate{UserID: "@stranger:remote", DeviceID: "S", StreamID: 1}); err != nil {
		t.Fatal(err)
	}
	if e.db.Position() != before {
		t.Fatal("an update for a stranger was recorded")
	}

	// A remote user whose server is down and who is not cached: failures.
	r := e.do(alice, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{"@new:remote": []string{}}})
	e.want(r, 200)
	if r.get("failures", "remote") == nil {
		t.Fatalf("no failure for a server that is down: %s", r.raw)
	}
}

// TestLocalChangesAnnounced: a local user's device changes are queued as
// m.device_list_update EDUs for the servers sharing a room with them, each
// with a new stream ID naming the previous one; to-device messages for
// remote users are queued as m.direct_to_device; a user sharing no room
// with another server announces nothing to it.
func TestLocalChangesAnnounced(t *testing.T) {
	e, f := newFedEnv(t)
	ctx := context.Background()
	alice := newDevice("@alice:test", "A")
	loner := newDevice("@loner:test", "L")
	e.rooms.share(alice.user, "@rem:remote")

	if err := e.svc.DeviceAdded(ctx, alice.user, alice.id, "laptop"); err != nil {
		t.Fatal(err)
	}
	e.upload(alice, 1)
	if err := e.svc.DeviceAdded(ctx, loner.user, loner.id, ""); err != nil {
		t.Fatal(err)
	}
	ups := f.queued("m.device_list_update")
	if len(ups) != 2 {
		t.Fatalf("updates queued: %+v", ups)
	}
	first, second := ups[0].content, ups[1].content
	if ups[0].dest != "remote" || first["user_id"] != string(alice.user) || first["device_id"] != "A" || first["prev_id"] != nil || first["keys"] != nil {
		t.Fatalf("first update: %+v", ups[0])
	}
	if first["device_display_name"] != nil {
		t.Errorf("the device's name left the server: %v", first)
	}
	prev, _ := second["prev_id"].([]any)
	if len(prev) != 1 || prev[0] != first["stream_id"] || second["keys"] == nil {
		t.Fatalf("second update does not follow the first: %+v", second)
	}
	ud, err := e.svc.UserDevices(ctx, alice.user)
	if err != nil {
		t.Fatal(err)
	}
	if float64(ud.StreamID) != second["stream_id"] || len(ud.Devices) != 1 || ud.Devices[0].DeviceID != "A" {
		t.Fatalf("/user/devices: %+v", ud)
	}

	if err := e.svc.DeviceDeleted(ctx, alice.user, alice.id); err != nil {
		t.Fatal(err)
	}
	ups = f.queued("m.device_list_update")
	if last := ups[len(ups)-1].content; last["deleted"] != true || last["device_id"] != "A" {
		t.Fatalf("deletion: %+v", last)
	}

	bob := newDevice("@bob:test", "B")
	if err := e.svc.DeviceAdded(ctx, bob.user, bob.id, ""); err != nil {
		t.Fatal(err)
	}
	r := e.do(bob, "PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1", map[string]any{"messages": map[string]any{
		"@rem:remote": map[string]any{"RDEV": map[string]string{"ciphertext": "x"}},
	}})
	e.want(r, 200)
	tds := f.queued("m.direct_to_device")
	if len(tds) != 1 || tds[0].dest != "remote" || tds[0].content["sender"] != string(bob.user) || tds[0].content["type"] != "m.room.encrypted" || tds[0].content["message_id"] == "" {
		t.Fatalf("to-device EDU: %+v", tds)
	}
	// The same transaction ID again: not queued twice.
	e.want(e.do(bob, "PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1", map[string]any{"messages": map[string]any{
		"@rem:remote": map[string]any{"RDEV": map[string]string{"ciphertext": "x"}},
	}}), 200)
	if n := len(f.queued("m.direct_to_device")); n != 1 {
		t.Fatalf("a retried transaction was queued again: %d", n)
	}

	// Inbound: delivered once per message ID.
	msg := map[spec.UserID]map[string]json.RawMessage{bob.user: {"*": json.RawMessage(`{"hello":1}`)}}
	for range 2 {
		if err := e.svc.ReceiveToDevice(ctx, "@rem:remote", "m.room.encrypted", "m1", msg); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := e.svc.ToDevice(ctx, bob.user, bob.id, 0, e.db.Position(), 0)
	if err != nil || len(got) != 1 {
		t.Fatalf("inbound to-device: %d messages, %v", len(got), err)
	}
}

// TestSigningKeyUpdates: a local user's cross-signing upload is queued as
// an m.signing_key_update with the master and self-signing keys (never the
// user-signing key) for the servers sharing a room with them; an inbound
// one replaces a remote user's cached master key.
func TestSigningKeyUpdates(t *testing.T) {
	e, f := newFedEnv(t)
	ctx := context.Background()
	a := newDevice(alice, "ALICE1")
	const rem = spec.UserID("@rem:remote")
	e.rooms.share(alice, rem)
	e.upload(a, 0)
	x := newCrossSigning(alice)
	e.want(e.do(a, "POST", deviceSigningPath, x.upload()), 200)
	ups := f.queued("m.signing_key_update")
	if len(ups) != 1 || ups[0].dest != "remote" || ups[0].content["user_id"] != string(alice) {
		t.Fatalf("signing key updates: %+v", ups)
	}
	master, _ := ups[0].content["master_key"].(map[string]any)
	if keys, _ := master["keys"].(map[string]any); keys["ed25519:"+x.masterPub()] != x.masterPub() || ups[0].content["self_signing_key"] == nil {
		t.Fatalf("the update does not carry the keys: %+v", ups[0].content)
	}
	if _, ok := ups[0].content["user_signing_key"]; ok {
		t.Fatal("the user-signing key left the server")
	}

	// Inbound: the cached master key of a remote user is replaced.
	remoteDevice(f, rem, "R1")
	e.query(a, string(rem)) // cached now
	rx := newCrossSigning(rem)
	raw, _ := json.Marshal(rx.master())
	if err := e.svc.ReceiveSigningKeyUpdate(ctx, keys.SigningKeyUpdate{UserID: rem, MasterKey: raw}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
	got, _ := e.query(a, string(rem)).get("master_keys", string(rem)).(map[string]any)
	if keys, _ := got["keys"].(map[string]any); keys["ed25519:"+rx.masterPub()] != rx.masterPub() {
		t.Fatalf("cached master key: %v", got)
	}
	// A key of another user is refused.
	other, _ := json.Marshal(newCrossSigning(bob).master())
	if err := e.svc.ReceiveSigningKeyUpdate(ctx, keys.SigningKeyUpdate{UserID: rem, MasterKey: other}); err == nil {
		t.Fatal("another user's master key was accepted")
	}
}
