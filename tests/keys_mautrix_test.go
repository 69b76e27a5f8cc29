//go:build goolm

// The mautrix-go crypto tests need its pure-Go olm (make test builds with
// -tags goolm); without the tag mautrix wants the C libolm.

package tests

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "go.mau.fi/util/dbutil/litestream" // the sqlite3-fk-wal driver of mautrix's crypto store
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/chatalot/chatalot/tests/harness"
)

// e2eeClient is a mautrix-go client with its pure-Go olm (goolm) crypto
// helper, syncing in the background, that records every message it
// decrypts.
type e2eeClient struct {
	cli    *mautrix.Client
	helper *cryptohelper.CryptoHelper

	mu       sync.Mutex
	received map[id.RoomID][]string // decrypted m.room.message bodies
	changed  chan struct{}
	failures []error
}

// newE2EEClient registers a user with a device and starts its crypto and
// sync loop; everything stops when the test ends.
func newE2EEClient(t *testing.T, ctx context.Context, s *harness.Server, localpart string) *e2eeClient {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: localpart, Password: "correct horse battery staple"})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	cli.UserID, cli.AccessToken, cli.DeviceID = res.UserID, res.AccessToken, res.DeviceID
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte("test pickle key"), filepath.Join(t.TempDir(), "crypto.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Init(ctx); err != nil {
		t.Fatalf("crypto init for %s: %v", localpart, err)
	}
	cli.Crypto = helper
	c := &e2eeClient{cli: cli, helper: helper, received: map[id.RoomID][]string{}, changed: make(chan struct{}, 1)}
	helper.DecryptErrorCallback = func(evt *event.Event, err error) {
		c.mu.Lock()
		c.failures = append(c.failures, err)
		c.mu.Unlock()
	}
	syncer := cli.Syncer.(mautrix.ExtensibleSyncer)
	syncer.OnEventType(event.EventMessage, func(ctx context.Context, evt *event.Event) {
		if !evt.Mautrix.WasEncrypted {
			return
		}
		c.mu.Lock()
		c.received[evt.RoomID] = append(c.received[evt.RoomID], evt.Content.AsMessage().Body)
		c.mu.Unlock()
		c.poke()
	})
	syncer.OnSync(func(context.Context, *mautrix.RespSync, string) bool { c.poke(); return true })
	syncCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cli.SyncWithContext(syncCtx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = helper.Close()
	})
	return c
}

func (c *e2eeClient) poke() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until cond holds, re-checking after each sync or decrypted
// message, and fails the test at the deadline.
func (c *e2eeClient) waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-c.changed:
		case <-deadline:
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("%s: not within %s (decryption failures: %v)", what, d, c.failures)
		}
	}
}

func (c *e2eeClient) hasMessage(room id.RoomID, body string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.received[room] {
		if b == body {
			return true
		}
	}
	return false
}

// joined reports whether c's state store has user joined to room.
func (c *e2eeClient) joined(ctx context.Context, room id.RoomID, user id.UserID) bool {
	m, err := c.cli.StateStore.GetMember(ctx, room, user)
	return err == nil && m != nil && m.Membership == event.MembershipJoin
}

// TestMautrixEncryptedMessagesBothWays: two users with mautrix-go's goolm
// crypto exchange encrypted messages in an encrypted room, each decrypting
// the other's; the server's data directory never holds a plaintext.
func TestMautrixEncryptedMessagesBothWays(t *testing.T) {
	s := harness.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	suffix := randomSuffix()
	alice := newE2EEClient(t, ctx, s, "alice"+suffix)
	bob := newE2EEClient(t, ctx, s, "bob"+suffix)

	created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Invite: []id.UserID{bob.cli.UserID},
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	room := created.RoomID
	if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("bob joins: %v", err)
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
	bob.waitFor(t, "bob decrypts alice's message", time.Minute, func() bool { return bob.hasMessage(room, toBob) })
	if _, err := bob.cli.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: toAlice}); err != nil {
		t.Fatalf("bob sends: %v", err)
	}
	alice.waitFor(t, "alice decrypts bob's message", time.Minute, func() bool { return alice.hasMessage(room, toAlice) })

	cancel()
	s.Stop()
	assertNoPlaintext(t, s, toBob, toAlice)
}
