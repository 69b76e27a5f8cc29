// Package push is notifications: the user's push rules, their evaluation on
// every new event for every member, the unread counts /sync reports, the
// notifications list, and delivery to push gateways.
//
// Evaluation takes part in the commit of the events (rooms.CommitHook): the
// rules run before the write, under the room's write lock and outside the
// single writer; the notifications are stored in the events' own
// transaction; the counts in memory change in its after-commit hook, before
// rooms wakes the members. A /sync that sees an event therefore sees its
// counts, with no second write and no waiting. Delivery to gateways runs in
// other goroutines, one per pusher, with retries: a slow or dead gateway
// slows neither sending nor /sync.
package push

import (
	"context"
	"database/sql"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
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
	CurrentState(id spec.RoomID, typ, key string) *events.PDU
	Event(ctx context.Context, user spec.UserID, id spec.RoomID, eventID spec.EventID) (*rooms.Event, error)
}

// AccountData is where push rules are kept: the user's global m.push_rules
// account data (the accounts package).
type AccountData interface {
	GetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string) (json.RawMessage, bool, error)
	SetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string, content json.RawMessage) error
	// IgnoredUsers is the user's ignore list, from memory: their events
	// are neither counted nor pushed for the user.
	IgnoredUsers(user spec.UserID) map[spec.UserID]bool
}

// Notifier wakes the /sync requests of users whose counts changed.
type Notifier interface {
	Notify(pos int64, c wake.Change, users ...spec.UserID)
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
	// Commits is rooms' list of commit hooks: push joins it, so that
	// notifications and unread counts commit with the events (nil: push
	// sees no commits). Push reads rooms, so rooms is built first and push
	// joins the list rooms was given.
	Commits *rooms.CommitHooks
	// Devices is auth's list of device hooks: push joins it, so that a
	// device's pushers go with the device (nil: they stay).
	Devices *auth.DeviceEvents
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

	threads  *threadIndex
	subs     *threadSubs // MSC4306 thread subscriptions (threadsubs.go)
	counts   *countStore
	ids      *interned
	gateways *dispatcher
	started  sync.Once
	// staged counts notification rows waiting in push_staged (store.go).
	staged      atomic.Int64
	flushTimers flushTimers
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
		threads: newThreadIndex(threadIndexSize), counts: newCountStore(),
	}
	ids, err := loadInterned(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	s.ids = ids
	if s.db.Node() != "" {
		if err := s.loadCountsFollowing(ctx); err != nil {
			return nil, err
		}
	} else if err := s.loadCounts(func(q string, args ...any) (*sql.Rows, error) { return s.db.Query(ctx, q, args...) }); err != nil {
		return nil, err
	}
	if err := s.loadThreadSubs(ctx); err != nil {
		return nil, err
	}
	s.gateways = newDispatcher(s)
	s.db.OnPublish(s.gateways.published)
	if err := s.loadPushers(ctx); err != nil {
		return nil, err
	}
	if d.Commits != nil {
		d.Commits.Join(s)
	}
	if d.Devices != nil {
		d.Devices.Join(deviceHook{s})
	}
	return s, nil
}

// deviceHook is push's part in device changes: only a deletion concerns
// it (its pushers go).
type deviceHook struct{ s *Service }

func (deviceHook) DeviceAdded(context.Context, spec.UserID, string, string) error   { return nil }
func (deviceHook) DeviceUpdated(context.Context, spec.UserID, string, string) error { return nil }
func (h deviceHook) DeviceDeleted(ctx context.Context, user spec.UserID, deviceID string) error {
	return h.s.DeviceDeleted(ctx, user, deviceID)
}

type nopNotifier struct{}

func (nopNotifier) Notify(int64, wake.Change, ...spec.UserID) {}

// Start runs the daily clean-up until Stopping is closed.
func (s *Service) Start() {
	s.started.Do(func() { go s.pruneLoop() })
}

// evaluated is what the rules made of a group of events: the notifications
// to store and the implicit reads of senders.
type evaluated struct {
	rows  []*notificationRow
	reads []readMark
}

type readMark struct {
	user   spec.UserID
	room   spec.RoomID
	thread string
	ev     *rooms.Event // the position is known once the event is stored
}

// PrepareCommit evaluates every recipient's rules on a group of events
// about to be committed, and returns the part of the write that stores the
// result (rooms.CommitHook).
func (s *Service) PrepareCommit(room spec.RoomID, evs []*rooms.Event, state rooms.RoomState) func(*storage.Tx) error {
	var out evaluated
	ts := s.now().UnixMilli()
	for _, ev := range evs {
		s.evaluate(room, ev, state, ts, &out)
	}
	return func(tx *storage.Tx) error { return s.store(tx, &out) }
}

// evaluate runs every recipient's rules on one event.
func (s *Service) evaluate(room spec.RoomID, ev *rooms.Event, state rooms.RoomState, ts int64, out *evaluated) {
	pdu := ev.PDU
	sender := pdu.Sender()
	thread := s.threads.threadOf(pdu)
	// Sending an event is reading up to it, in its thread (client-server
	// API, "Marking notifications as read").
	out.reads = append(out.reads, readMark{user: sender, room: room, thread: thread, ev: ev})

	// The recipients are the joined members after the group of events.
	// The invitee of an invite is a recipient too (.m.rule.invite_for_me),
	// though not counted in the room's unread counts.
	joined := state.Joined()
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
	view.SenderMay = senderMay(state, sender)
	if thread != mainThread {
		view.Thread = thread
	}
	for _, r := range recipients {
		if s.acct != nil && s.acct.IgnoredUsers(r.user)[sender] {
			continue // the client hides the event: nothing to count or push
		}
		rules, err := s.rulesOf(context.Background(), r.user)
		if err != nil {
			s.log.Warn().Err(err).Msg("push: cannot read push rules; using the defaults")
			rules = &userRules{compiled: compile(DefaultRules(r.user))}
		}
		user := r.user
		o := rules.compiled.evaluate(view, Recipient{User: user, DisplayName: func() string { return memberName(state, user) },
			SubscribedToThread: func() bool { return s.subs.subscribed(user, room, thread) }})
		if !o.Notify {
			continue
		}
		out.rows = append(out.rows, &notificationRow{
			user: user, room: room, event: pdu.EventID(), ev: ev, thread: thread,
			highlight: o.Highlight, counted: r.counted, actions: o.Actions, actionsJSON: o.actionsJSON, ts: ts, eventType: pdu.Type(),
		})
	}
}

// senderMay answers sender_notification_permission from the room's power
// levels, read once per event and only if a rule asks.
func senderMay(state rooms.RoomState, sender spec.UserID) func(string) bool {
	var once sync.Once
	var pl authrules.PowerLevels
	var ok bool
	return func(key string) bool {
		once.Do(func() {
			var err error
			pl, err = authrules.PowerLevelsOf(state)
			ok = err == nil
		})
		// Any doubt about the power levels means no permission.
		return ok && pl.UserLevel(sender) >= pl.NotificationLevel(key)
	}
}

// memberName is a member's display name in the room.
func memberName(state authrules.AuthState, user spec.UserID) string {
	ev := state.Get(spec.MRoomMember, string(user))
	if ev == nil {
		return ""
	}
	return ev.Content().Get("displayname").Str
}

// displayName is a member's display name in the room's current state.
func (s *Service) displayName(room spec.RoomID, user spec.UserID) string {
	return memberName(currentState{s.rooms, room}, user)
}

// currentState is a room's current state as authrules.AuthState.
type currentState struct {
	rooms Rooms
	room  spec.RoomID
}

func (c currentState) Get(typ, key string) *events.PDU { return c.rooms.CurrentState(c.room, typ, key) }

// store writes the notifications and read positions of a group of events
// inside the events' transaction and, once committed, updates the counts in
// memory and hands the notifications to the gateways. rooms wakes every
// joined member and every user whose membership the events change, at the
// events' position, after this: the recipients' /sync find the new counts.
func (s *Service) store(tx *storage.Tx, e *evaluated) error {
	// A sender's implicit read needs a write only when it clears something:
	// a user who keeps sending with nothing unread costs no write.
	// The newest counted row of each thread is noted here, in the writer's
	// order, not after the commit: a group written in the same batch as
	// the one it follows must see that one's rows. (A write rolled back
	// leaves it too high: at worst one needless write of a read position.)
	var reads []readMark
	s.counts.mu.Lock()
	for _, n := range e.rows {
		if n.counted {
			rc := s.counts.room(n.user, n.room)
			rc.lastRow[n.thread] = max(rc.lastRow[n.thread], n.position())
		}
	}
	for _, r := range e.reads {
		if rc := s.counts.room(r.user, r.room); rc.lastRow[r.thread] > rc.readUpTo(r.thread) {
			reads = append(reads, r)
		}
	}
	s.counts.mu.Unlock()
	if len(e.rows) == 0 && len(reads) == 0 {
		return nil
	}
	newIDs, err := s.insertNotifications(tx, e.rows)
	if err != nil {
		return err
	}
	for _, r := range reads {
		if err := raiseRead(tx, r.user, r.room, r.thread, r.ev.Position); err != nil {
			return err
		}
		if err := s.readChanged(tx, r.user, r.room, r.ev.Position); err != nil {
			return err
		}
	}
	tx.AfterCommit(func() {
		s.ids.add(newIDs)
		if len(e.rows) > 0 {
			s.stagedRows(len(e.rows))
		}
		s.counts.mu.Lock()
		// A sender reads up to their own newest event, so nothing older can
		// be left uncounted: no recount is needed. Rows the reads cover
		// are left out of the counts.
		for _, r := range reads {
			s.counts.read(r.user, r.room, r.thread, r.ev.Position, r.ev.Position, nil)
		}
		for _, n := range e.rows {
			s.counts.notified(n)
		}
		s.counts.mu.Unlock()
		s.gateways.hold(e.rows)
	})
	return nil
}

// --- Threads ---------------------------------------------------------------

// threadIndexSize bounds the memory of the thread index.
const threadIndexSize = 1 << 16

// threadIndex remembers which recent events belong to a thread, so that an
// event relating to one of them (a reaction, an edit, a reply) is counted in
// that thread. After a restart, or for events older than the index, a
// relation to a thread event counts in the main timeline.
type threadIndex struct {
	mu   sync.Mutex // rooms evaluate their sends concurrently
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
	t.mu.Lock()
	defer t.mu.Unlock()
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

// pruneLoop moves staged notifications (left by the last run) and deletes
// read notifications older than the retention, at start and then daily:
// the list is a convenience, not an archive.
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
	s.flush()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(`DELETE FROM push_notified WHERE EXISTS (
			SELECT 1 FROM push_events e JOIN push_users u ON u.nid = push_notified.user_nid
			JOIN push_read r ON r.user_id = u.user_id AND r.room_id = e.room_id
				AND (r.thread_id = '' OR r.thread_id = e.thread_id) AND r.position >= push_notified.position
			WHERE e.position = push_notified.position AND e.ts < $1)`, cutoff); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM push_events WHERE ts < $1
			AND position NOT IN (SELECT position FROM push_notified)`, cutoff)
		return err
	})
	if err != nil && err != storage.ErrClosed {
		s.log.Warn().Err(err).Msg("push: could not prune old notifications")
	}
}
