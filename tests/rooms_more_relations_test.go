package tests

import (
	"context"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/chatalot/chatalot/tests/harness"
)

// sendMsg sends a plaintext m.room.message and returns its event ID.
func sendMsg(t *testing.T, cli *mautrix.Client, room id.RoomID, content *event.MessageEventContent) id.EventID {
	t.Helper()
	if content.MsgType == "" {
		content.MsgType = event.MsgText
	}
	res, err := cli.SendMessageEvent(context.Background(), room, event.EventMessage, content)
	if err != nil {
		t.Fatalf("%s sends %q: %v", cli.UserID, content.Body, err)
	}
	return res.EventID
}

// raw makes a request mautrix has no method for and decodes the answer.
func raw(t *testing.T, cli *mautrix.Client, method string, url string, body any, out any) error {
	t.Helper()
	_, err := cli.MakeRequest(context.Background(), method, url, body, out)
	return err
}

func eventIDs(evs []*event.Event) []id.EventID {
	out := make([]id.EventID, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

// TestRepliesEditsReactionsAndThreads drives relations with mautrix-go as a
// client sees them: replies, edits (only the sender's count), reactions (no
// duplicates), threads with their bundled summaries and the thread list.
func TestRepliesEditsReactionsAndThreads(t *testing.T) {
	s := harness.Start(t)
	ctx := context.Background()
	alice := newClient(t, s.URL, "alice")
	bob := newClient(t, s.URL, "bob")
	eve := newClient(t, s.URL, "eve")
	r, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	room := r.RoomID
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}

	root := sendMsg(t, alice, room, &event.MessageEventContent{Body: "Lunch at noon?"})
	// A reply (rich reply: m.in_reply_to, no rel_type).
	reply := &event.MessageEventContent{Body: "Sounds good"}
	reply.SetReply(&event.Event{ID: root, Sender: alice.UserID})
	replyID := sendMsg(t, bob, room, reply)
	got, err := alice.GetEvent(ctx, room, replyID)
	if err != nil {
		t.Fatal(err)
	}
	_ = got.Content.ParseRaw(got.Type)
	if got.Content.AsMessage().RelatesTo.GetReplyTo() != root {
		t.Fatalf("the reply lost its m.in_reply_to: %+v", got.Content.Raw)
	}

	// Edits: Alice edits twice; Bob's "edit" of Alice's message is not one.
	edit := func(cli *mautrix.Client, body string) id.EventID {
		c := &event.MessageEventContent{MsgType: event.MsgText, Body: body}
		c.SetEdit(root)
		return sendMsg(t, cli, room, c)
	}
	edit(alice, "Lunch at 12:30?")
	latestEdit := edit(alice, "Lunch at 13:00?")
	edit(bob, "Lunch is cancelled")

	// Reactions: one per key per user.
	if _, err := bob.SendReaction(ctx, room, root, "👍"); err != nil {
		t.Fatal(err)
	}
	_, err = bob.SendReaction(ctx, room, root, "👍")
	wantHTTPError(t, err, 400, "M_DUPLICATE_ANNOTATION")
	if _, err := alice.SendReaction(ctx, room, root, "👍"); err != nil {
		t.Fatal(err)
	}

	// A thread under the root, with the reply fallback for unthreaded
	// clients.
	var last id.EventID = root
	var threadIDs []id.EventID
	for i, cli := range []*mautrix.Client{bob, alice, bob} {
		c := &event.MessageEventContent{MsgType: event.MsgText, Body: []string{"which place?", "the usual", "ok"}[i]}
		c.RelatesTo = (&event.RelatesTo{}).SetThread(root, last)
		last = sendMsg(t, cli, room, c)
		threadIDs = append(threadIDs, last)
	}
	// A thread cannot start from a thread event.
	bad := &event.MessageEventContent{MsgType: event.MsgText, Body: "nested"}
	bad.RelatesTo = (&event.RelatesTo{}).SetThread(threadIDs[0], threadIDs[0])
	_, err = alice.SendMessageEvent(ctx, room, event.EventMessage, bad)
	wantHTTPError(t, err, 400, "M_UNKNOWN")

	// The root as Bob fetches it: the thread summary and the latest edit
	// are bundled; the content is the original.
	ev, err := bob.GetEvent(ctx, room, root)
	if err != nil {
		t.Fatal(err)
	}
	rel := ev.Unsigned.Relations
	if rel.GetThread().GetCount() != 3 || rel.Thread.LatestEvent == nil || rel.Thread.LatestEvent.ID != last || !rel.Thread.CurrentUserParticipated {
		t.Fatalf("thread summary: %+v", rel.GetThread())
	}
	if le := rel.GetLatestEdit(); le == nil || le.ID != latestEdit {
		t.Fatalf("latest edit: %+v", le)
	}
	_ = ev.Content.ParseRaw(ev.Type)
	if ev.Content.AsMessage().Body != "Lunch at noon?" {
		t.Fatalf("the server replaced the content: %q", ev.Content.AsMessage().Body)
	}

	// The same through /messages, as a client that opens the room does.
	msgs, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range msgs.Chunk {
		if e.ID == root {
			found = e.Unsigned.Relations.GetThread().GetCount() == 3
		}
	}
	if !found {
		t.Fatal("/messages has no thread summary on the root")
	}

	// The relations API: the thread's events, paginated, and the reactions.
	thread, err := bob.GetRelations(ctx, room, root, &mautrix.ReqGetRelations{RelationType: event.RelThread, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	sameList(t, "thread page 1", eventIDs(thread.Chunk), threadIDs[2], threadIDs[1])
	thread2, err := bob.GetRelations(ctx, room, root, &mautrix.ReqGetRelations{RelationType: event.RelThread, Limit: 2, From: thread.NextBatch})
	if err != nil {
		t.Fatal(err)
	}
	sameList(t, "thread page 2", eventIDs(thread2.Chunk), threadIDs[0])
	reactions, err := alice.GetRelations(ctx, room, root, &mautrix.ReqGetRelations{RelationType: event.RelAnnotation, EventType: event.EventReaction})
	if err != nil || len(reactions.Chunk) != 2 {
		t.Fatalf("reactions: %v %v", reactions, err)
	}
	edits, err := alice.GetRelations(ctx, room, root, &mautrix.ReqGetRelations{RelationType: event.RelReplace, Dir: mautrix.DirectionForward})
	if err != nil || len(edits.Chunk) != 3 || edits.Chunk[1].ID != latestEdit {
		t.Fatalf("edits: %v %v", edits, err)
	}

	// The thread list.
	var threads struct {
		Chunk []*event.Event `json:"chunk"`
	}
	if err := raw(t, bob, http.MethodGet, bob.BuildURLWithQuery(mautrix.ClientURLPath{"v1", "rooms", room, "threads"}, map[string]string{"include": "participated"}), nil, &threads); err != nil {
		t.Fatal(err)
	}
	if len(threads.Chunk) != 1 || threads.Chunk[0].ID != root || threads.Chunk[0].Unsigned.Relations.GetThread().GetCount() != 3 {
		t.Fatalf("thread list: %+v", threads.Chunk)
	}

	// Eve, who is not in the room, gets nothing from any of it.
	_, err = eve.GetRelations(ctx, room, root, &mautrix.ReqGetRelations{})
	wantHTTPError(t, err, 404, "M_NOT_FOUND")
	err = raw(t, eve, http.MethodGet, eve.BuildClientURL("v1", "rooms", room, "threads"), nil, &threads)
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	_, err = eve.GetEvent(ctx, room, root) // the spec's /event answer: not found
	wantHTTPError(t, err, 404, "M_NOT_FOUND")
	_, err = eve.SendReaction(ctx, room, root, "👀")
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	_, err = eve.TimestampToEvent(ctx, room, time.UnixMilli(ev.Timestamp), mautrix.DirectionForward)
	wantHTTPError(t, err, 403, "M_FORBIDDEN")
	// Bob may look up the root by its time; Eve may not (above).
	at, err := bob.TimestampToEvent(ctx, room, time.UnixMilli(ev.Timestamp), mautrix.DirectionForward)
	if err != nil || at.Timestamp.UnixMilli() < ev.Timestamp {
		t.Fatalf("timestamp_to_event: %+v %v", at, err)
	}
}
