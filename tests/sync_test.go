package tests

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// syncRecorder runs a mautrix-go sync loop and records what arrives.
type syncRecorder struct {
	mu       sync.Mutex
	messages []string
	typing   [][]id.UserID
	receipts []event.ReceiptEventContent
	stop     context.CancelFunc
	done     chan struct{}
}

func startSync(t *testing.T, cli *mautrix.Client) *syncRecorder {
	t.Helper()
	rec := &syncRecorder{done: make(chan struct{})}
	syncer := mautrix.NewDefaultSyncer()
	syncer.OnEventType(event.EventMessage, func(ctx context.Context, ev *event.Event) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.messages = append(rec.messages, ev.Content.AsMessage().Body)
	})
	syncer.OnEventType(event.EphemeralEventTyping, func(ctx context.Context, ev *event.Event) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.typing = append(rec.typing, ev.Content.AsTyping().UserIDs)
	})
	syncer.OnEventType(event.EphemeralEventReceipt, func(ctx context.Context, ev *event.Event) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.receipts = append(rec.receipts, *ev.Content.AsReceipt())
	})
	cli.Syncer = syncer
	cli.Store = mautrix.NewMemorySyncStore()
	ctx, cancel := context.WithCancel(context.Background())
	rec.stop = cancel
	go func() {
		defer close(rec.done)
		_ = cli.SyncWithContext(ctx)
	}()
	t.Cleanup(func() { cancel(); <-rec.done })
	return rec
}

func (r *syncRecorder) snapshot() ([]string, [][]id.UserID, []event.ReceiptEventContent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.messages...), append([][]id.UserID(nil), r.typing...), append([]event.ReceiptEventContent(nil), r.receipts...)
}

func TestSyncLoopsWithMautrix(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	alice := newClient(t, s.URL, "alice")
	bob := newClient(t, s.URL, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	rec := startSync(t, bob)

	var want []string
	for i := 0; i < 25; i++ {
		body := fmt.Sprint("message ", i)
		want = append(want, body)
		if _, err := alice.SendText(ctx, room.RoomID, body); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "bob to receive every message", func() bool {
		msgs, _, _ := rec.snapshot()
		return len(msgs) >= len(want)
	})
	msgs, _, _ := rec.snapshot()
	if fmt.Sprint(msgs) != fmt.Sprint(want) {
		t.Fatalf("bob received %v, want every message once, in order", msgs)
	}

	// Typing starts and then expires by itself.
	if _, err := alice.UserTyping(ctx, room.RoomID, true, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "typing to start and expire", func() bool {
		_, typing, _ := rec.snapshot()
		started := false
		for _, ids := range typing {
			if len(ids) == 1 && ids[0] == alice.UserID {
				started = true
			} else if started && len(ids) == 0 {
				return true
			}
		}
		return false
	})

	// A private receipt stays private; a public one is shared.
	last, err := alice.SendText(ctx, room.RoomID, "read me")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.SendReceipt(ctx, room.RoomID, last.EventID, event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatal(err)
	}
	if err := alice.SendReceipt(ctx, room.RoomID, last.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "alice's public receipt", func() bool {
		_, _, receipts := rec.snapshot()
		for _, r := range receipts {
			if _, ok := r[last.EventID][event.ReceiptTypeRead][alice.UserID]; ok {
				return true
			}
		}
		return false
	})
	_, _, receipts := rec.snapshot()
	for _, r := range receipts {
		if len(r[last.EventID][event.ReceiptTypeReadPrivate]) > 0 {
			t.Fatal("bob received alice's private receipt")
		}
	}
}
