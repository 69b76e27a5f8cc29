// Package push is notifications: the user's push rules, their evaluation on
// every new event for every member, the unread counts /sync reports, the
// notifications list, and delivery to push gateways.
//
// Nothing here is on the send path. rooms tells push of committed events
// from its after-commit hook (EventsCommitted only queues them); one
// goroutine evaluates the queue and publishes the new counts through a write
// of its own; delivery to gateways runs in yet other goroutines, one per
// pusher, with retries. A slow or dead gateway therefore slows neither
// sending nor /sync.
package push

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
)

// Config is the push policy an admin sets.
type Config struct {
	// AllowPrivateGateways lets pushers name gateways on loopback, private
	// and link-local addresses, and over plain http. Off by default: a
	// pusher URL is chosen by a user, and the server must not become a way
	// to reach its own network (SSRF). Tests and LAN-only gateways need it.
	AllowPrivateGateways bool
	// FullFormat sends event content, type, sender and room name to
	// gateways whose pusher did not ask for event_id_only. Off by default:
	// only the event ID, room ID and counts leave the server.
	FullFormat bool
	// RetryBackoff is the delay before the first retry of a failed
	// delivery; it doubles at each failure, up to maxBackoff.
	RetryBackoff time.Duration
	// RetryLimit is how long a notification is retried before it is dropped.
	RetryLimit time.Duration
	// Retention is how long read notifications stay listed in
	// GET /notifications; unread ones stay until read.
	Retention time.Duration
}

// DefaultConfig is the configuration of a first run.
func DefaultConfig() Config {
	return Config{RetryBackoff: time.Second, RetryLimit: time.Hour, Retention: 30 * 24 * time.Hour}
}

// Rooms is what push reads from the rooms service, all from memory except
// Event.
type Rooms interface {
	JoinedMembers(id spec.RoomID) []spec.UserID
	CurrentState(id spec.RoomID, typ, key string) *events.PDU
	Event(ctx context.Context, user spec.UserID, id spec.RoomID, eventID spec.EventID) (*rooms.Event, error)
}

// AccountData is where push rules are kept: the user's global m.push_rules
// account data (the accounts package).
type AccountData interface {
	GetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string) (json.RawMessage, bool, error)
	SetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string, content json.RawMessage) error
}

// Notifier wakes the /sync requests of users whose counts changed.
type Notifier interface {
	Notify(pos int64, users ...spec.UserID)
}

// Deps is what the push service needs.
type Deps struct {
	DB          *storage.DB
	Rooms       Rooms
	AccountData AccountData
	Notify      Notifier
	Config      Config
	Log         zerolog.Logger
	// Stopping is closed at shutdown: the workers stop.
	Stopping <-chan struct{}
}

// Service is the push service.
type Service struct {
	db       *storage.DB
	rooms    Rooms
	acct     AccountData
	notify   Notifier
	cfg      Config
	log      zerolog.Logger
	stopping <-chan struct{}
	now      func() time.Time

	// rules caches each user's ruleset, compiled (spec.UserID → *userRules).
	// Push is the only writer of m.push_rules, so the cache is replaced
	// after each of its own writes and never goes stale.
	rules   sync.Map
	rulesMu sync.Mutex // serialises rule changes (read, change, write)

	// The evaluation queue: rooms' after-commit hook appends, the worker
	// takes. Unbounded on purpose: the events are already in memory, and
	// dropping some would leave counts wrong.
	qmu      sync.Mutex
	queue    []queued
	queuedTo int64 // highest event position queued
	wake     chan struct{}
	doneMu   sync.Mutex
	doneTo   int64         // highest event position whose evaluation is published
	doneCh   chan struct{} // closed and replaced when doneTo moves
	threads  *threadIndex
	counts   *countStore
	gateways *dispatcher
	started  atomic.Bool
}

type queued struct {
	room spec.RoomID
	evs  []*rooms.Event
}

type userRules struct {
	set      *Ruleset
	compiled *compiledRules
}

// New loads the unread counts and the pushers. Call Start to run the
// workers.
func New(ctx context.Context, d Deps) (*Service, error) {
	if d.Config.RetryBackoff <= 0 {
		d.Config.RetryBackoff = DefaultConfig().RetryBackoff
	}
	if d.Config.RetryLimit <= 0 {
		d.Config.RetryLimit = DefaultConfig().RetryLimit
	}
	if d.Config.Retention <= 0 {
		d.Config.Retention = DefaultConfig().Retention
	}
	if d.Notify == nil {
		d.Notify = nopNotifier{}
	}
	s := &Service{
		db: d.DB, rooms: d.Rooms, acct: d.AccountData, notify: d.Notify, cfg: d.Config, log: d.Log,
		stopping: d.Stopping, now: time.Now,
		wake: make(chan struct{}, 1), doneCh: make(chan struct{}),
		threads: newThreadIndex(threadIndexSize), counts: newCountStore(),
	}
	if err := s.loadCounts(ctx); err != nil {
		return nil, err
	}
	s.gateways = newDispatcher(s)
	if err := s.loadPushers(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

type nopNotifier struct{}

func (nopNotifier) Notify(int64, ...spec.UserID) {}

// Start runs the evaluation worker and the daily clean-up until Stopping
// is closed.
func (s *Service) Start() {
	if !s.started.CompareAndSwap(false, true) {
		return
	}
	go s.work()
	go s.pruneLoop()
}

// EventsCommitted queues committed events for evaluation. It is called from
// the database writer's after-commit hook (rooms.Listener), so it only
// appends and signals: it never blocks.
func (s *Service) EventsCommitted(room spec.RoomID, evs []*rooms.Event) {
	if len(evs) == 0 {
		return
	}
	s.qmu.Lock()
	s.queue = append(s.queue, queued{room: room, evs: evs})
	s.queuedTo = max(s.queuedTo, evs[len(evs)-1].Position)
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// evalWait bounds how long a /sync waits for the evaluation of the events it
// is about to return. Evaluation is in-memory work, done in well under this
// in practice; under a burst the bound keeps /sync answering, and the late
// counts reach the client as a change of their own.
const evalWait = 250 * time.Millisecond

// WaitEvaluated waits until every event committed at or before pos has been
// evaluated and its counts published, or evalWait has passed. /sync calls it
// before reading the stream position, so that a new event's counts appear
// in the same response as the event (client-server API, "Server
// behaviour"). Part of sync's Unread.
func (s *Service) WaitEvaluated(ctx context.Context, pos int64) {
	if !s.started.Load() {
		return
	}
	s.qmu.Lock()
	target := min(pos, s.queuedTo)
	s.qmu.Unlock()
	var timer *time.Timer
	for {
		s.doneMu.Lock()
		done, ch := s.doneTo, s.doneCh
		s.doneMu.Unlock()
		if done >= target {
			break
		}
		if timer == nil {
			timer = time.NewTimer(evalWait)
		}
		select {
		case <-ch:
		case <-timer.C:
			return
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.stopping:
			timer.Stop()
			return
		}
	}
	if timer != nil {
		timer.Stop()
	}
}

func (s *Service) markDone(pos int64) {
	s.doneMu.Lock()
	if pos > s.doneTo {
		s.doneTo = pos
		close(s.doneCh)
		s.doneCh = make(chan struct{})
	}
	s.doneMu.Unlock()
}

// maxRowsPerWrite bounds one write of the worker, so that a burst in a big
// room is published in several commits rather than one huge one.
const maxRowsPerWrite = 2000

// work is the evaluation worker: it takes everything queued, evaluates it
// and publishes the results, in commit order.
func (s *Service) work() {
	for {
		select {
		case <-s.wake:
		case <-s.stopping:
			return
		}
		for {
			s.qmu.Lock()
			batch := s.queue
			s.queue = nil
			s.qmu.Unlock()
			if len(batch) == 0 {
				break
			}
			s.process(batch)
		}
	}
}

// process evaluates a run of committed events and publishes the results.
func (s *Service) process(batch []queued) {
	ctx := context.Background()
	var pending publishBatch
	for _, q := range batch {
		for _, ev := range q.evs {
			s.evaluate(ctx, q.room, ev, &pending)
			pending.upTo = ev.Position
			if len(pending.rows) >= maxRowsPerWrite {
				s.publish(ctx, &pending)
				pending = publishBatch{}
			}
		}
	}
	s.publish(ctx, &pending)
}

// publishBatch is the evaluation results of a run of events: the
// notifications to store and the implicit reads of senders.
type publishBatch struct {
	rows  []*notificationRow
	reads []readMark
	upTo  int64
}

type readMark struct {
	user   spec.UserID
	room   spec.RoomID
	thread string
	pos    int64
}

// evaluate runs every recipient's rules on one event.
func (s *Service) evaluate(ctx context.Context, room spec.RoomID, ev *rooms.Event, out *publishBatch) {
	pdu := ev.PDU
	sender := pdu.Sender()
	thread := s.threads.threadOf(pdu)
	// Sending an event is reading up to it, in its thread (client-server
	// API, "Marking notifications as read").
	out.reads = append(out.reads, readMark{user: sender, room: room, thread: thread, pos: ev.Position})

	// The recipients are the joined members at evaluation time, which
	// trails the commit by a moment: a member who joins in between may be
	// counted for an event sent just before they joined. The invitee of an
	// invite is a recipient too (.m.rule.invite_for_me), though not counted
	// in the room's unread counts.
	joined := s.rooms.JoinedMembers(room)
	type recipient struct {
		user    spec.UserID
		counted bool
	}
	recipients := make([]recipient, 0, len(joined)+1)
	for _, u := range joined {
		if u != sender {
			recipients = append(recipients, recipient{u, true})
		}
	}
	if sk, ok := pdu.StateKey(); ok && pdu.Type() == spec.MRoomMember && sk != string(sender) &&
		pdu.Content().Get("membership").Str == spec.Invite {
		recipients = append(recipients, recipient{spec.UserID(sk), false})
	}
	if len(recipients) == 0 {
		return
	}
	view := &EventView{
		Event:   gjson.ParseBytes(events.ClientEvent(pdu, nil)),
		Room:    room,
		Sender:  sender,
		Members: len(joined),
	}
	view.SenderMay = s.senderMay(room, sender)
	ts := s.now().UnixMilli()
	for _, r := range recipients {
		rules, err := s.rulesOf(ctx, r.user)
		if err != nil {
			s.log.Warn().Err(err).Msg("push: cannot read push rules; using the defaults")
			rules = &userRules{compiled: compile(DefaultRules(r.user))}
		}
		user := r.user
		o := rules.compiled.evaluate(view, Recipient{User: user, DisplayName: func() string { return s.displayName(room, user) }})
		if !o.Notify {
			continue
		}
		out.rows = append(out.rows, &notificationRow{
			user: user, room: room, event: pdu.EventID(), position: ev.Position, thread: thread,
			highlight: o.Highlight, counted: r.counted, actions: o.Actions, ts: ts, eventType: pdu.Type(),
		})
	}
}

// senderMay answers sender_notification_permission from the room's current
// power levels, read once per event and only if a rule asks.
func (s *Service) senderMay(room spec.RoomID, sender spec.UserID) func(string) bool {
	var once sync.Once
	var pl rooms.PowerLevels
	var ok bool
	return func(key string) bool {
		once.Do(func() {
			var err error
			pl, err = rooms.PowerLevelsOf(currentState{s.rooms, room})
			ok = err == nil
		})
		// Any doubt about the power levels means no permission.
		return ok && pl.UserLevel(sender) >= pl.NotificationLevel(key)
	}
}

// currentState is a room's current state as rooms.AuthState.
type currentState struct {
	rooms Rooms
	room  spec.RoomID
}

func (c currentState) Get(typ, key string) *events.PDU { return c.rooms.CurrentState(c.room, typ, key) }

func (s *Service) displayName(room spec.RoomID, user spec.UserID) string {
	ev := s.rooms.CurrentState(room, spec.MRoomMember, string(user))
	if ev == nil {
		return ""
	}
	return ev.Content().Get("displayname").Str
}

// publish stores a batch's notifications and read positions in one write
// and, once committed, updates the counts in memory, wakes the users and
// hands the notifications to the gateways.
func (s *Service) publish(ctx context.Context, b *publishBatch) {
	type key struct {
		user spec.UserID
		room spec.RoomID
	}
	// A sender's implicit read needs a write only when it clears something:
	// an unread count in memory, or a notification of this batch. A user
	// who keeps sending with nothing unread costs no write.
	type threadKey struct {
		user   spec.UserID
		room   spec.RoomID
		thread string
	}
	batchRows := map[threadKey]bool{}
	for _, n := range b.rows {
		if n.counted {
			batchRows[threadKey{n.user, n.room, n.thread}] = true
		}
	}
	var reads []readMark
	for _, r := range b.reads {
		if s.isRead(r.user, r.room, r.thread, r.pos) {
			continue
		}
		if batchRows[threadKey{r.user, r.room, r.thread}] || s.hasUnread(r.user, r.room, r.thread) {
			reads = append(reads, r)
		}
	}
	if len(b.rows) == 0 && len(reads) == 0 {
		s.markDone(b.upTo) // nothing notified, nothing read: no write
		return
	}
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := insertNotifications(tx, b.rows); err != nil {
			return err
		}
		recounted := map[key]map[string][2]int64{}
		for _, r := range reads {
			if err := raiseRead(tx, r.user, r.room, r.thread, r.pos); err != nil {
				return err
			}
		}
		for _, r := range reads {
			k := key{r.user, r.room}
			if _, done := recounted[k]; done {
				continue
			}
			c, err := recount(tx, r.user, r.room)
			if err != nil {
				return err
			}
			recounted[k] = c
		}
		change := tx.NextPosition()
		tx.AfterCommit(func() {
			woken := map[spec.UserID]bool{}
			s.counts.mu.Lock()
			for _, r := range reads {
				rc := s.counts.room(r.user, r.room)
				rc.marks[r.thread] = max(rc.marks[r.thread], r.pos)
			}
			for k, c := range recounted {
				rc := s.counts.room(k.user, k.room)
				if !sameCounts(rc.threads, c) {
					woken[k.user] = true
					s.counts.touch(k.user, rc, change)
				}
				rc.threads = c
			}
			for _, n := range b.rows {
				if !n.counted {
					woken[n.user] = true
					continue
				}
				if _, ok := recounted[key{n.user, n.room}]; ok {
					continue // the recount already has it
				}
				rc := s.counts.room(n.user, n.room)
				if n.position <= rc.readUpTo(n.thread) {
					continue // a receipt overtook the evaluation
				}
				c := rc.threads[n.thread]
				c[0]++
				if n.highlight {
					c[1]++
				}
				rc.threads[n.thread] = c
				s.counts.touch(n.user, rc, change)
				woken[n.user] = true
			}
			s.counts.mu.Unlock()
			if len(woken) > 0 {
				users := make([]spec.UserID, 0, len(woken))
				for u := range woken {
					users = append(users, u)
				}
				s.notify.Notify(change, users...)
			}
			for _, n := range b.rows {
				s.gateways.enqueue(n)
			}
		})
		return nil
	})
	if err != nil {
		// The events stay committed; only their counts are lost. Say so
		// without naming users or events (no metadata in logs).
		s.log.Error().Err(err).Int("notifications", len(b.rows)).Msg("push: could not store notifications")
	}
	s.markDone(b.upTo)
}

func sameCounts(a, b map[string][2]int64) bool {
	n := 0
	for k, v := range a {
		if v != ([2]int64{}) {
			n++
			if b[k] != v {
				return false
			}
		}
	}
	m := 0
	for _, v := range b {
		if v != ([2]int64{}) {
			m++
		}
	}
	return n == m
}

// --- Threads ---------------------------------------------------------------

// threadIndexSize bounds the memory of the thread index.
const threadIndexSize = 1 << 16

// threadIndex remembers which recent events belong to a thread, so that an
// event relating to one of them (a reaction, an edit, a reply) is counted in
// that thread. Only the worker uses it. After a restart, or for events older
// than the index, a relation to a thread event counts in the main timeline.
type threadIndex struct {
	of   map[spec.EventID]string
	ring []spec.EventID
	next int
}

func newThreadIndex(size int) *threadIndex {
	return &threadIndex{of: map[spec.EventID]string{}, ring: make([]spec.EventID, size)}
}

// threadOf returns the thread of an event: the root of an m.thread relation,
// else the thread of the event it relates to (one lookup: that event's own
// thread was resolved the same way when it arrived, which covers the spec's
// suggested few hops), else the main timeline.
func (t *threadIndex) threadOf(p *events.PDU) string {
	rel := lookup(p.Content(), []string{"m.relates_to"})
	if !rel.IsObject() {
		return mainThread
	}
	target := rel.Get("event_id")
	if target.Type != gjson.String {
		return mainThread
	}
	thread := mainThread
	if rel.Get("rel_type").Str == "m.thread" {
		if _, err := spec.ParseEventID(target.Str); err != nil {
			return mainThread
		}
		thread = target.Str
	} else if th, ok := t.of[spec.EventID(target.Str)]; ok {
		thread = th
	}
	if thread != mainThread {
		t.remember(p.EventID(), thread)
	}
	return thread
}

func (t *threadIndex) remember(id spec.EventID, thread string) {
	if old := t.ring[t.next]; old != "" {
		delete(t.of, old)
	}
	t.ring[t.next] = id
	t.of[id] = thread
	t.next = (t.next + 1) % len(t.ring)
}

// --- Clean-up --------------------------------------------------------------

// pruneLoop deletes read notifications older than the retention, at start
// and then daily: the list is a convenience, not an archive.
func (s *Service) pruneLoop() {
	t := time.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		s.prune(context.Background())
		select {
		case <-t.C:
		case <-s.stopping:
			return
		}
	}
}

func (s *Service) prune(ctx context.Context) {
	cutoff := s.now().Add(-s.cfg.Retention).UnixMilli()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		_, err := tx.Exec(`DELETE FROM push_notifications WHERE ts < $1 AND EXISTS (
			SELECT 1 FROM push_read r WHERE r.user_id = push_notifications.user_id AND r.room_id = push_notifications.room_id
			AND (r.thread_id = '' OR r.thread_id = push_notifications.thread_id) AND r.position >= push_notifications.position)`, cutoff)
		return err
	})
	if err != nil && err != storage.ErrClosed {
		s.log.Warn().Err(err).Msg("push: could not prune old notifications")
	}
}
