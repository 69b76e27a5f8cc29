package rooms

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
)

// Config is the rooms policy an admin sets.
type Config struct {
	// Encryption is "required" (new rooms are encrypted and plaintext
	// messages are refused in encrypted rooms), "default" (new rooms are
	// encrypted, plaintext accepted) or "optional" (encrypted when asked).
	Encryption string
	// DefaultRoomVersion is the version of rooms created without one
	// (empty: spec.DefaultRoomVersion).
	DefaultRoomVersion spec.RoomVersion
}

// DefaultRoomVersion is the version new rooms get when the client names none.
func (s *Service) DefaultRoomVersion() spec.RoomVersion {
	if s.cfg.DefaultRoomVersion.Supported() {
		return s.cfg.DefaultRoomVersion
	}
	return spec.DefaultRoomVersion
}

// Notifier wakes the /sync requests of users a committed change concerns.
type Notifier interface {
	Notify(pos int64, users ...spec.UserID)
}

// Profiles gives the display name and avatar a join copies into the member
// event.
type Profiles interface {
	Profile(ctx context.Context, user spec.UserID) (displayName, avatarURL string, err error)
}

// CommitHook takes part in committing new events (push: notifications and
// unread counts), so that what it derives commits with the events and a
// /sync that sees an event sees its counts too. PrepareCommit runs before
// the write, under the room's write lock, with the room's state after the
// events: the slow work (rule evaluation) belongs there, off the single
// writer. The function it returns runs inside the write, once the events are
// stored and have their positions; its error fails the write.
type CommitHook interface {
	PrepareCommit(room spec.RoomID, evs []*Event, state RoomState) func(*storage.Tx) error
}

// RoomState is a room's state at one point, from memory.
type RoomState interface {
	AuthState
	// Joined lists the joined members; the slice is shared: do not modify.
	Joined() []spec.UserID
}

// Deps is what the rooms service needs.
type Deps struct {
	DB       *storage.DB
	Key      events.SigningKey
	Server   spec.ServerName
	Config   Config
	Log      zerolog.Logger
	Notify   Notifier
	Profiles Profiles // nil: member events carry no profile
	// CommitHook takes part in every commit of events (nil: none). Push
	// reads rooms, so it cannot be built first: pass a *CommitHooks it
	// joins while it is built.
	CommitHook CommitHook
	// Guard can refuse membership changes (admin's policy; nil allows
	// every change).
	Guard MembershipGuard
	// Limits returns the rate limit of a class of action (auth's per-user
	// limiter; nil: none).
	Limits func(class string) gin.HandlerFunc
}

// CommitHooks is a list of commit hooks that is itself a CommitHook. It is
// built before rooms and before its members, so that rooms is given its
// hooks at construction while a member that reads rooms (push) joins the
// list while it is being built, after rooms. Members join before serving.
type CommitHooks struct {
	mu    sync.RWMutex
	hooks []CommitHook
}

// Join adds a hook to every later commit.
func (l *CommitHooks) Join(h CommitHook) {
	l.mu.Lock()
	l.hooks = append(l.hooks, h)
	l.mu.Unlock()
}

// PrepareCommit prepares every member's part of the write, in the order
// they joined (nil if no member has a part).
func (l *CommitHooks) PrepareCommit(room spec.RoomID, evs []*Event, state RoomState) func(*storage.Tx) error {
	l.mu.RLock()
	var parts []func(*storage.Tx) error
	for _, h := range l.hooks {
		if part := h.PrepareCommit(room, evs, state); part != nil {
			parts = append(parts, part)
		}
	}
	l.mu.RUnlock()
	switch len(parts) {
	case 0:
		return nil
	case 1:
		return parts[0]
	}
	return func(tx *storage.Tx) error {
		for _, part := range parts {
			if err := part(tx); err != nil {
				return err
			}
		}
		return nil
	}
}

// Service owns every room: the DAG in the database and the hot state in
// memory.
type Service struct {
	db       *storage.DB
	key      events.SigningKey
	server   spec.ServerName
	cfg      Config
	log      zerolog.Logger
	notify   Notifier
	profiles Profiles
	now      func() time.Time
	hook     CommitHook
	// limit returns the rate limit of a class of action (auth's per-user
	// limiter; nil: none).
	limit func(class string) gin.HandlerFunc

	lastCreateTS atomic.Int64
	guard        MembershipGuard // admin.go; nil allows every change

	txnMu     sync.Mutex
	txns      map[txnKey]txnEntry
	txnPruned time.Time

	older olderRooms // the memory rooms give to older events (older.go)

	mu        sync.RWMutex
	rooms     map[spec.RoomID]*liveRoom
	userRooms map[spec.UserID]map[spec.RoomID]string // current membership per user
	// forgotten are the rooms each user forgot: out of userRooms, but an
	// incremental sync still tells other devices of a leave since their
	// token.
	forgotten map[spec.UserID]map[spec.RoomID]bool
}

type nopNotifier struct{}

func (nopNotifier) Notify(int64, ...spec.UserID) {}

// New loads every room's current state and recent events into memory.
func New(ctx context.Context, d Deps) (*Service, error) {
	if d.Notify == nil {
		d.Notify = nopNotifier{}
	}
	if d.Config.Encryption == "" {
		d.Config.Encryption = "required"
	}
	s := &Service{
		db: d.DB, key: d.Key, server: d.Server, cfg: d.Config, log: d.Log, notify: d.Notify,
		profiles: d.Profiles, hook: d.CommitHook, guard: d.Guard, limit: d.Limits, now: time.Now,
		rooms: map[spec.RoomID]*liveRoom{}, userRooms: map[spec.UserID]map[spec.RoomID]string{},
		forgotten: map[spec.UserID]map[spec.RoomID]bool{},
		txns:      map[txnKey]txnEntry{},
	}
	if err := s.load(ctx); err != nil {
		return nil, fmt.Errorf("load rooms: %w", err)
	}
	if err := s.loadTxns(ctx); err != nil {
		return nil, fmt.Errorf("load transaction IDs: %w", err)
	}
	if err := s.reindexSearch(ctx); err != nil {
		return nil, fmt.Errorf("index the stored events for search: %w", err)
	}
	return s, nil
}

// Delayer answers a send or state request that carries MSC4140's delay
// parameter: it schedules the event instead of sending it now, and writes
// the response ({"delay_id"}). It reads the body itself, after looking up
// the transaction ID, as a retried request may come without one.
type Delayer interface {
	ServeDelayed(c *gin.Context, d DelayedSend)
}

// DelayedSend is what a delayed send or state request names.
type DelayedSend struct {
	From     Sender
	Room     spec.RoomID
	Type     string
	StateKey *string // nil for a message event
	TxnID    string  // "" for a state event
	Delay    string  // the query parameter, in milliseconds
}

// DelayParam is the query parameter of /send and /state that delays the
// event (MSC4140, unstable prefix).
const DelayParam = "org.matrix.msc4140.delay"

// DelayedTxnPrefix starts the transaction ID under which a delayed event is
// finally sent: the send stays idempotent across a crash, and the sender
// sees the delay ID in unsigned (MSC4140).
const DelayedTxnPrefix = "org.matrix.msc4140.delay_id:"

// createTS returns a timestamp for a create event that no earlier create
// event of this server has used.
func (s *Service) createTS(now int64) int64 {
	for {
		last := s.lastCreateTS.Load()
		ts := max(now, last+1)
		if s.lastCreateTS.CompareAndSwap(last, ts) {
			return ts
		}
	}
}

func (s *Service) load(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `SELECT room_id, version FROM rooms`)
	if err != nil {
		return err
	}
	var list []*liveRoom
	for rows.Next() {
		var id, v string
		if err := rows.Scan(&id, &v); err != nil {
			rows.Close()
			return err
		}
		list = append(list, newLiveRoom(spec.RoomID(id), spec.RoomVersion(v)))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range list {
		if err := s.loadRoom(ctx, r); err != nil {
			return fmt.Errorf("room %s: %w", r.id, err)
		}
		s.rooms[r.id] = r
		for u, h := range r.members {
			s.setUserRoom(u, r.id, h[len(h)-1].value)
		}
	}
	rows, err = s.db.Query(ctx, `SELECT user_id, room_id FROM forgotten`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var u, id string
		if err := rows.Scan(&u, &id); err != nil {
			return err
		}
		s.forget(spec.UserID(u), spec.RoomID(id))
	}
	return rows.Err()
}

func (s *Service) loadRoom(ctx context.Context, r *liveRoom) error {
	snap := &snapshot{}
	rows, err := s.db.Query(ctx, `SELECT `+eventColumns+` JOIN room_state st ON st.event_id = e.event_id WHERE st.room_id = $1`, string(r.id))
	if err != nil {
		return err
	}
	state, err := scanEvents(rows)
	if err != nil {
		return err
	}
	for _, ev := range state {
		sk, _ := ev.PDU.StateKey()
		snap.state = snap.state.With(StateKeyPair{ev.PDU.Type(), sk}, ev.PDU)
	}
	// Membership and visibility histories.
	rows, err = s.db.Query(ctx, `SELECT `+eventColumns+` WHERE e.room_id = $1 AND e.type IN ('m.room.member', 'm.room.history_visibility') AND e.state_key IS NOT NULL ORDER BY e.position`, string(r.id))
	if err != nil {
		return err
	}
	hist, err := scanEvents(rows)
	if err != nil {
		return err
	}
	for _, ev := range hist {
		r.record(ev)
	}
	r.recent = nil
	// The latest events, and one more to know where memory starts.
	rows, err = s.db.Query(ctx, `SELECT `+eventColumns+` WHERE e.room_id = $1 ORDER BY e.position DESC LIMIT $2`, string(r.id), recentSize+1)
	if err != nil {
		return err
	}
	latest, err := scanEvents(rows)
	if err != nil {
		return err
	}
	if len(latest) == 0 {
		return fmt.Errorf("room has no events")
	}
	snap.position = latest[0].Position
	snap.depth = latest[0].PDU.Depth()
	snap.extremity = []*events.PDU{latest[0].PDU}
	if len(latest) > recentSize {
		r.recentFloor = latest[recentSize].Position
		latest = latest[:recentSize]
	}
	for i := len(latest) - 1; i >= 0; i-- {
		r.recent = append(r.recent, latest[i])
	}
	r.cur.Store(snap)
	return nil
}

func (s *Service) setUserRoom(u spec.UserID, id spec.RoomID, membership string) {
	m := s.userRooms[u]
	if m == nil {
		m = map[spec.RoomID]string{}
		s.userRooms[u] = m
	}
	if membership == spec.Leave || membership == "" {
		// A left room stays known (sync delivers the leave); forget removes it.
		m[id] = spec.Leave
		return
	}
	m[id] = membership
}

// room returns the in-memory room, or nil.
func (s *Service) room(id spec.RoomID) *liveRoom {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rooms[id]
}

// Membership returns a user's current membership of a room ("" if none).
func (s *Service) Membership(user spec.UserID, id spec.RoomID) string {
	r := s.room(id)
	if r == nil {
		return ""
	}
	return r.cur.Load().membership(user)
}

// RoomsOf returns the user's rooms with their current membership
// (join, invite, knock, leave, ban), from memory.
func (s *Service) RoomsOf(user spec.UserID) map[spec.RoomID]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[spec.RoomID]string, len(s.userRooms[user]))
	for id, m := range s.userRooms[user] {
		out[id] = m
	}
	return out
}

// UsersSharingRoomsWith returns every user who is joined to a room the user
// is joined to (the user included), from memory. The E2EE directory uses it
// to tell who must hear of device list changes.
func (s *Service) UsersSharingRoomsWith(user spec.UserID) []spec.UserID {
	s.mu.RLock()
	ids := make([]spec.RoomID, 0, len(s.userRooms[user]))
	for id, m := range s.userRooms[user] {
		if m == spec.Join {
			ids = append(ids, id)
		}
	}
	s.mu.RUnlock()
	seen := map[spec.UserID]bool{user: true}
	out := []spec.UserID{user}
	for _, id := range ids {
		for _, u := range s.JoinedMembers(id) {
			if !seen[u] {
				seen[u] = true
				out = append(out, u)
			}
		}
	}
	return out
}

// ShareARoom reports whether two users are joined to a common room.
func (s *Service) ShareARoom(a, b spec.UserID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ra, rb := s.userRooms[a], s.userRooms[b]
	if len(rb) < len(ra) {
		ra, rb = rb, ra
	}
	for id, m := range ra {
		if m == spec.Join && rb[id] == spec.Join {
			return true
		}
	}
	return false
}

// JoinedMembers returns the room's joined members from memory.
func (s *Service) JoinedMembers(id spec.RoomID) []spec.UserID {
	r := s.room(id)
	if r == nil {
		return nil
	}
	return slices.Clone(r.cur.Load().joined())
}

// joined lists the joined members. It is computed once per snapshot (every
// send wakes them and push evaluates for them) and shared: do not modify.
func (s *snapshot) joined() []spec.UserID {
	if p := s.joinedCache.Load(); p != nil {
		return *p
	}
	var out []spec.UserID
	for k, ev := range s.state.All() {
		if k.Type == spec.MRoomMember && ev.Content().Get("membership").String() == spec.Join {
			out = append(out, spec.UserID(k.StateKey))
		}
	}
	s.joinedCache.Store(&out)
	return out
}

// Joined is joined as part of RoomState.
func (s *snapshot) Joined() []spec.UserID { return s.joined() }

// builder builds a run of new events on a room's current state, in memory,
// so that several events (a whole createRoom) commit in one transaction or
// not at all.
type builder struct {
	s    *Service
	r    *liveRoom
	base *snapshot // the state the events are built on
	snap *snapshot // the working state: a new snapshot at each event
	evs  []*Event
	// redactions are stored events to rewrite in their redacted form.
	redactions []*events.PDU
	// extra writes more rows in the same transaction (a new room's alias).
	extra func(*storage.Tx) error
	// annotations are the annotations of a group of sends, so that a
	// duplicate within the group is refused like one already stored.
	annotations map[string]bool
}

func (s *Service) begin(r *liveRoom) *builder {
	return s.beginOn(r, r.cur.Load())
}

// beginOn starts a builder on a given state: a room's current one, or the
// state after a group of sends still being written (ops.go).
func (s *Service) beginOn(r *liveRoom, base *snapshot) *builder {
	return &builder{s: s, r: r, base: base, snap: base}
}

// add builds, signs and authorises one event on the working state.
func (b *builder) add(typ string, stateKey *string, sender spec.UserID, content []byte, redacts spec.EventID) (*Event, error) {
	v := b.r.version
	proto := events.ProtoEvent{
		Type: typ, StateKey: stateKey, Sender: sender, RoomID: b.r.id, Content: content,
		Depth: b.snap.depth + 1, OriginServerTS: b.s.now().UnixMilli(),
		Redacts: redacts,
	}
	for _, prev := range b.snap.extremity {
		proto.PrevEvents = append(proto.PrevEvents, prev.EventID())
	}
	if typ == spec.MRoomCreate && v.AtLeast12() {
		proto.RoomID = ""
		// The v12 room ID is the create event's hash: two identical
		// createRoom requests in one millisecond would get one room ID.
		// Create events get strictly increasing timestamps instead.
		proto.OriginServerTS = b.s.createTS(proto.OriginServerTS)
	}
	if proto.PrevEvents == nil {
		proto.PrevEvents = []spec.EventID{}
	}
	var sk *string
	if stateKey != nil {
		sk = stateKey
	}
	authState := StateMap{}
	for _, k := range AuthEventKeys(typ, sk, sender, gjson.ParseBytes(contentOrEmpty(content)), v) {
		if ev := b.snap.state.Get(k.Type, k.StateKey); ev != nil {
			proto.AuthEvents = append(proto.AuthEvents, ev.EventID())
			authState[k] = ev
		}
	}
	if v.EventIDInEvent() {
		// Room versions 1 and 2 name prev and auth events with their hashes.
		if err := addReferenceHashes(&proto, b.snap.extremity, authState); err != nil {
			return nil, err
		}
	}
	if proto.AuthEvents == nil {
		proto.AuthEvents = []spec.EventID{}
	}
	// v12: the create event is not an auth event but the rules still read it.
	if create := b.snap.state.Get(spec.MRoomCreate, ""); create != nil {
		authState[StateKeyPair{spec.MRoomCreate, ""}] = create
	}
	pdu, err := events.Build(proto, v, b.s.key)
	if err != nil {
		return nil, err
	}
	if len(pdu.JSON()) > maxPDUSize {
		return nil, spec.TooLarge("the event is %d bytes; the limit is %d", len(pdu.JSON()), maxPDUSize)
	}
	if err := Allowed(pdu, authState); err != nil {
		var se *spec.Error
		if errors.As(err, &se) {
			return nil, &authRuleError{se}
		}
		return nil, err
	}
	if typ == spec.MRoomCreate && v.AtLeast12() {
		// The room ID is derived from the create event (MSC4291).
		b.r.id = pdu.RoomID()
	}
	ev := &Event{PDU: pdu, replacedKnown: true}
	if sk, ok := pdu.StateKey(); ok {
		ev.replaced = b.snap.state.Get(pdu.Type(), sk)
	}
	b.applyLocal(pdu)
	b.evs = append(b.evs, ev)
	return ev, nil
}

// addReferenceHashes gives a room version 1 or 2 event the reference hashes
// of the events it names.
func addReferenceHashes(proto *events.ProtoEvent, prev []*events.PDU, auth StateMap) error {
	proto.ReferenceHashes = make(map[spec.EventID][32]byte, len(prev)+len(auth))
	for _, list := range [][]*events.PDU{prev, slices.Collect(maps.Values(auth))} {
		for _, ev := range list {
			sum, err := ev.ReferenceHash()
			if err != nil {
				return err
			}
			proto.ReferenceHashes[ev.EventID()] = sum
		}
	}
	return nil
}

// authRuleError is a refusal by the auth rules of an event the server built.
// It is sent as the M_FORBIDDEN it wraps, except where the spec wants
// another answer (createRoom: M_INVALID_ROOM_STATE).
type authRuleError struct{ err *spec.Error }

func (e *authRuleError) Error() string { return e.err.Error() }
func (e *authRuleError) Unwrap() error { return e.err }

// maxPDUSize is the spec's limit on a whole event in canonical JSON.
const maxPDUSize = 65536

func contentOrEmpty(c []byte) []byte {
	if len(c) == 0 {
		return []byte("{}")
	}
	return c
}

// applyLocal makes the working state the state after pdu. A state event
// changes one entry of the persistent state (statetrie.go) and, for a
// member event, the joined list by one user: what it changes, not what the
// room holds.
func (b *builder) applyLocal(pdu *events.PDU) {
	prev := b.snap
	next := &snapshot{state: prev.state, depth: pdu.Depth(), extremity: []*events.PDU{pdu}, position: prev.position}
	joined := prev.joinedCache.Load()
	if sk, ok := pdu.StateKey(); ok {
		k := StateKeyPair{pdu.Type(), sk}
		if k.Type == spec.MRoomMember && joined != nil {
			joined = changeJoined(*joined, spec.UserID(sk), prev.membership(spec.UserID(sk)), pdu.Content().Get("membership").String())
		}
		next.state = prev.state.With(k, pdu)
	}
	if joined != nil {
		next.joinedCache.Store(joined)
	}
	b.snap = next
}

// changeJoined returns the joined list after a user's membership changed
// from before to after; the list given is shared and left as it is.
func changeJoined(joined []spec.UserID, user spec.UserID, before, after string) *[]spec.UserID {
	switch {
	case before == after || (before != spec.Join && after != spec.Join):
		return &joined
	case after == spec.Join:
		out := make([]spec.UserID, len(joined), len(joined)+1)
		copy(out, joined)
		out = append(out, user)
		return &out
	default: // leaves
		out := make([]spec.UserID, 0, len(joined))
		for _, u := range joined {
			if u != user {
				out = append(out, u)
			}
		}
		return &out
	}
}

// commit persists the built events with their stream positions in one
// transaction; after the commit it publishes the new state and wakes the
// users concerned. On error nothing is stored and memory is unchanged.
func (b *builder) commit(ctx context.Context, newRoom bool, creator spec.UserID, device, txnID string) error {
	if len(b.evs) == 0 {
		return nil
	}
	err := b.submit(ctx, nil, newRoom, creator, device, txnID).Wait()
	if err != nil {
		b.failed()
	}
	return err
}

// failed forgets the positions of events whose write failed.
func (b *builder) failed() {
	for _, ev := range b.evs {
		ev.Position = 0
	}
}

// submit queues the write of the built events, after the write it depends
// on if any, and returns at once; commit's comment says what it does.
func (b *builder) submit(ctx context.Context, after *storage.Pending, newRoom bool, creator spec.UserID, device, txnID string) *storage.Pending {
	if txnID != "" {
		last := b.evs[len(b.evs)-1]
		last.DeviceID, last.TxnID = device, txnID
	}
	final := b.snap
	wake := b.s.usersToWake(b.r, b.evs, final)
	var hook func(*storage.Tx) error
	if b.s.hook != nil {
		hook = b.s.hook.PrepareCommit(b.r.id, b.evs, final)
	}
	return b.s.db.Submit(ctx, after, func(tx *storage.Tx) error {
		if newRoom {
			if _, err := tx.Exec(`INSERT INTO rooms (room_id, version, creator, created_ts) VALUES ($1, $2, $3, $4)`,
				string(b.r.id), string(b.r.version), string(creator), b.s.now().UnixMilli()); err != nil {
				return fmt.Errorf("insert room: %w", err)
			}
		}
		for _, ev := range b.evs {
			ev.Position = tx.NextPosition()
			if err := insertEvent(tx, ev); err != nil {
				return err
			}
		}
		if err := applyRedactions(tx, b.redactions, b.evs); err != nil {
			return err
		}
		// The relations and search indexes change with the events, in
		// the same transaction (relations.go).
		if err := indexEvents(tx, b.base, b.evs, b.redactions); err != nil {
			return err
		}
		if b.extra != nil {
			if err := b.extra(tx); err != nil {
				return err
			}
		}
		if hook != nil {
			if err := hook(tx); err != nil {
				return err
			}
		}
		pos := b.evs[len(b.evs)-1].Position
		tx.AfterCommit(func() {
			// final may be the base of the next group, being built now:
			// publish a copy.
			published := &snapshot{position: pos, state: final.state, extremity: final.extremity, depth: final.depth}
			published.joinedCache.Store(final.joinedCache.Load())
			b.r.apply(b.evs, published, b.redactions)
			b.s.rememberTxns(b.evs)
			b.s.publishMemberships(b.r, b.evs, newRoom)
			b.s.notify.Notify(pos, wake...)
		})
		return nil
	})
}

// publishMemberships updates the per-user room index after a commit.
func (s *Service) publishMemberships(r *liveRoom, evs []*Event, newRoom bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if newRoom {
		s.rooms[r.id] = r
	}
	for _, ev := range evs {
		if ev.PDU.Type() != spec.MRoomMember {
			continue
		}
		sk, _ := ev.PDU.StateKey()
		s.setUserRoom(spec.UserID(sk), r.id, ev.PDU.Content().Get("membership").String())
	}
}

// usersToWake is everyone joined after the events, plus every user whose
// membership they change (an invitee, a kicked user).
func (s *Service) usersToWake(r *liveRoom, evs []*Event, final *snapshot) []spec.UserID {
	users := slices.Clone(final.joined())
	for _, ev := range evs {
		if ev.PDU.Type() == spec.MRoomMember {
			sk, _ := ev.PDU.StateKey()
			if m := ev.PDU.Content().Get("membership").String(); m != spec.Join {
				users = append(users, spec.UserID(sk))
			}
		}
	}
	return users
}
