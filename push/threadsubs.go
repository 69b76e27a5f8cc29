package push

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
)

// Thread subscriptions (MSC4306, unstable prefix): a user says which
// threads they follow, and the push rules notify them of those threads
// (.io.element.msc4306.rule.subscribed_thread) and, if the user enables it,
// of no other thread (.io.element.msc4306.rule.unsubscribed_thread).
//
// A subscription is manual or automatic; an automatic one names the thread
// event that caused it, and is refused when the user unsubscribed after
// that event (two devices racing to subscribe on a mention must not undo a
// deliberate unsubscription). Who follows which thread is in memory, as
// rule evaluation asks for every threaded event and every member.

const (
	threadSubscriptionCondition = "io.element.msc4306.thread_subscription"
)

// threadSubsSchema is appended to push's migrations: one row per thread a
// user subscribed to or unsubscribed from. unsubscribed_at is the stream
// position of the last unsubscription (0: never).
const threadSubsSchema = `
CREATE TABLE push_thread_subscriptions (
	user_id         TEXT    NOT NULL,
	room_id         TEXT    NOT NULL,
	thread_root     TEXT    NOT NULL,
	subscribed      BOOLEAN NOT NULL,
	automatic       BOOLEAN NOT NULL,
	unsubscribed_at BIGINT  NOT NULL CHECK (unsubscribed_at >= 0),
	PRIMARY KEY (user_id, room_id, thread_root)
);`

type threadKey struct {
	user spec.UserID
	room spec.RoomID
	root string
}

// threadSub is one row, in memory.
type threadSub struct {
	subscribed, automatic bool
	unsubscribedAt        int64
}

// threadSubs is every user's thread subscriptions; writes go through the
// database first and change the map after the commit.
type threadSubs struct {
	mu  sync.RWMutex
	all map[threadKey]threadSub
}

func (t *threadSubs) get(k threadKey) (threadSub, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s, ok := t.all[k]
	return s, ok
}

// subscribed answers the thread_subscription condition.
func (t *threadSubs) subscribed(user spec.UserID, room spec.RoomID, root string) bool {
	s, _ := t.get(threadKey{user, room, root})
	return s.subscribed
}

func (s *Service) loadThreadSubs(ctx context.Context) error {
	s.subs = &threadSubs{all: map[threadKey]threadSub{}}
	rows, err := s.db.Query(ctx, `SELECT user_id, room_id, thread_root, subscribed, automatic, unsubscribed_at FROM push_thread_subscriptions`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k threadKey
		var v threadSub
		if err := rows.Scan(&k.user, &k.room, &k.root, &v.subscribed, &v.automatic, &v.unsubscribedAt); err != nil {
			return err
		}
		s.subs.all[k] = v
	}
	return rows.Err()
}

// setThreadSub writes one subscription and then updates memory.
func (s *Service) setThreadSub(ctx context.Context, k threadKey, v threadSub) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`INSERT INTO push_thread_subscriptions (user_id, room_id, thread_root, subscribed, automatic, unsubscribed_at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (user_id, room_id, thread_root) DO UPDATE SET
				subscribed = excluded.subscribed, automatic = excluded.automatic, unsubscribed_at = excluded.unsubscribed_at`,
			string(k.user), string(k.room), k.root, v.subscribed, v.automatic, v.unsubscribedAt)
		if err != nil {
			return err
		}
		tx.AfterCommit(func() {
			s.subs.mu.Lock()
			s.subs.all[k] = v
			s.subs.mu.Unlock()
		})
		return nil
	})
}

// threadTarget parses the path of a subscription request and checks that
// the thread root is an event the user can see: if not (or it does not
// exist) the answer is 404, whatever the reason, as the MSC says.
func (s *Service) threadTarget(c *gin.Context) (threadKey, error) {
	dev := auth.DeviceFrom(c)
	room, err := spec.ParseRoomID(c.Param("roomId"))
	if err != nil {
		return threadKey{}, spec.InvalidParam("room ID: %v", err)
	}
	root, err := spec.ParseEventID(c.Param("eventId"))
	if err != nil {
		return threadKey{}, spec.InvalidParam("event ID: %v", err)
	}
	if _, err := s.visibleEvent(c.Request.Context(), dev.UserID, room, root); err != nil {
		return threadKey{}, err
	}
	return threadKey{dev.UserID, room, string(root)}, nil
}

// visibleEvent is an event the user can see; any refusal is 404.
func (s *Service) visibleEvent(ctx context.Context, user spec.UserID, room spec.RoomID, id spec.EventID) (*rooms.Event, error) {
	ev, err := s.rooms.Event(ctx, user, room, id)
	var se *spec.Error
	if errors.As(err, &se) {
		return nil, spec.NotFound("thread not found")
	}
	return ev, err
}

// GET /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{eventId}/subscription
func (s *Service) getThreadSubscription(c *gin.Context) error {
	k, err := s.threadTarget(c)
	if err != nil {
		return err
	}
	sub, _ := s.subs.get(k)
	if !sub.subscribed {
		return spec.NotFound("not subscribed to this thread")
	}
	c.JSON(http.StatusOK, gin.H{"automatic": sub.automatic})
	return nil
}

// PUT /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{eventId}/subscription
// {} subscribes manually; {"automatic": eventId} subscribes because of that
// event of the thread, unless the user unsubscribed after it. A manual
// subscription is never turned into an automatic one.
func (s *Service) putThreadSubscription(c *gin.Context) error {
	k, err := s.threadTarget(c)
	if err != nil {
		return err
	}
	body, err := events.ReadContent(c.Request.Body, 4096)
	if err != nil {
		return err
	}
	var req struct {
		Automatic *string `json:"automatic"`
	}
	if err := api.DecodeJSON(body, &req); err != nil {
		return spec.BadJSON("automatic must be an event ID")
	}
	sub, _ := s.subs.get(k)
	if req.Automatic == nil {
		sub.subscribed, sub.automatic = true, false
	} else {
		if err := s.checkAutomatic(c.Request.Context(), k, *req.Automatic, sub); err != nil {
			return err
		}
		if sub.subscribed {
			c.JSON(http.StatusOK, gin.H{})
			return nil
		}
		sub.subscribed, sub.automatic = true, true
	}
	if err := s.setThreadSub(c.Request.Context(), k, sub); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// checkAutomatic requires the cause of an automatic subscription to be an
// event of the thread (not its root), sent after the last unsubscription.
func (s *Service) checkAutomatic(ctx context.Context, k threadKey, cause string, sub threadSub) error {
	notInThread := spec.NewError(spec.ErrNotInThread, "the event is not in this thread")
	id, err := spec.ParseEventID(cause)
	if err != nil {
		return notInThread
	}
	ev, err := s.visibleEvent(ctx, k.user, k.room, id)
	var se *spec.Error
	if errors.As(err, &se) {
		return notInThread
	}
	if err != nil {
		return err
	}
	rel := ev.PDU.Content().Get(`m\.relates_to`)
	if rel.Get("rel_type").Str != "m.thread" || rel.Get("event_id").Str != k.root {
		return notInThread
	}
	if !sub.subscribed && ev.Position <= sub.unsubscribedAt {
		return spec.NewError(spec.ErrConflictingUnsubscription, "you unsubscribed from this thread after that event")
	}
	return nil
}

// DELETE /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{eventId}/subscription:
// succeeds whether or not the user was subscribed.
func (s *Service) deleteThreadSubscription(c *gin.Context) error {
	k, err := s.threadTarget(c)
	if err != nil {
		return err
	}
	sub := threadSub{unsubscribedAt: s.db.Position()}
	if err := s.setThreadSub(c.Request.Context(), k, sub); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// threadSubscriptionHolds evaluates the condition for a recipient: the
// event is in a thread, and the recipient's subscription to it is as the
// condition says.
func threadSubscriptionHolds(c *condition, ev *EventView, to Recipient) bool {
	if ev.Thread == "" || to.SubscribedToThread == nil {
		return false
	}
	return to.SubscribedToThread() == c.subscribed
}

// compileThreadSubscription reads the condition's one parameter.
func compileThreadSubscription(v gjson.Result, c *condition) {
	sub := v.Get("subscribed")
	if !sub.IsBool() {
		c.never = true
		return
	}
	c.subscribed = sub.Bool()
}
