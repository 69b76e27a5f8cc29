package rooms

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms/authrules"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
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
	// LeaseDuration is how long a cluster node's lease on a room lasts
	// without renewal (lease.go; 0: 30 seconds). Another node takes the
	// room over once it lapses.
	LeaseDuration time.Duration
}

// DefaultRoomVersion is the version new rooms get when the client names none.
func (s *Service) DefaultRoomVersion() spec.RoomVersion {
	if s.cfg.DefaultRoomVersion.Supported() {
		return s.cfg.DefaultRoomVersion
	}
	return spec.DefaultRoomVersion
}

// Notifier wakes the /sync requests of users a committed change concerns;
// the change says which room and what moved in it.
type Notifier interface {
	Notify(pos int64, c wake.Change, users ...spec.UserID)
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
	authrules.AuthState
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
	// Federation joins rooms of other servers (remote.go; nil: none).
	Federation RemoteServers
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
	federation   RemoteServers   // remote.go; nil without federation

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
	// outliers are local users' invites to and knocks on rooms not held
	// here (outliers.go).
	outliers map[spec.RoomID]map[spec.UserID]*outlier

	leases *leases // the rooms this cluster node writes (lease.go); nil outside a cluster
}

type nopNotifier struct{}

func (nopNotifier) Notify(int64, wake.Change, ...spec.UserID) {}

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
		profiles: d.Profiles, hook: d.CommitHook, guard: d.Guard, limit: d.Limits, now: time.Now, federation: d.Federation,
		rooms: map[spec.RoomID]*liveRoom{}, userRooms: map[spec.UserID]map[spec.RoomID]string{},
		forgotten: map[spec.UserID]map[spec.RoomID]bool{},
		outliers:  map[spec.RoomID]map[spec.UserID]*outlier{},
		txns:      map[txnKey]txnEntry{},
	}
	if d.DB.Node() == "" {
		if err := s.loadAll(dbQuerier{ctx, d.DB}); err != nil {
			return nil, err
		}
	} else {
		if err := s.loadFollowing(ctx); err != nil {
			return nil, err
		}
		s.leases = newLeases(d.DB, d.Config.LeaseDuration)
	}
	if err := s.reindexSearch(ctx); err != nil {
		return nil, fmt.Errorf("index the stored events for search: %w", err)
	}
	return s, nil
}

// Delayer answers a send or state request that carries MSC4140's delay
// parameter: it schedules the event instead of sending it now, and writes
// the response ({"delay_id"}) or returns the error. It reads the body itself, after looking up
// the transaction ID, as a retried request may come without one.
type Delayer interface {
	ServeDelayed(c *gin.Context, d DelayedSend) error
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

// loadAll loads the rooms and the remembered transaction IDs.
func (s *Service) loadAll(q querier) error {
	if err := s.load(q); err != nil {
		return fmt.Errorf("load rooms: %w", err)
	}
	if err := s.loadTxns(q); err != nil {
		return fmt.Errorf("load transaction IDs: %w", err)
	}
	return nil
}

func (s *Service) load(q querier) error {
	rows, err := q.Query(`SELECT room_id, version FROM rooms`)
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
		if err := s.loadRoom(q, r); err != nil {
			return fmt.Errorf("room %s: %w", r.id, err)
		}
		s.addLoaded(r)
	}
	rows, err = q.Query(`SELECT user_id, room_id FROM forgotten`)
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
	if err := rows.Err(); err != nil {
		return err
	}
	return s.loadOutliers(q)
}

// addLoaded makes a room loaded from the database known, with its members.
func (s *Service) addLoaded(r *liveRoom) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rooms[r.id] = r
	for u, h := range r.members {
		s.setUserRoom(u, r.id, h[len(h)-1].value)
	}
}

func (s *Service) loadRoom(q querier, r *liveRoom) error {
	snap := &snapshot{}
	state, err := queryEventsOn(q, `JOIN room_state st ON st.event_id = e.event_id WHERE st.room_id = $1`, string(r.id))
	if err != nil {
		return err
	}
	for _, ev := range state {
		sk, _ := ev.PDU.StateKey()
		snap.state = snap.state.With(authrules.StateKeyPair{Type: ev.PDU.Type(), StateKey: sk}, ev.PDU)
	}
	// Membership and visibility histories.
	hist, err := queryEventsOn(q, `WHERE e.room_id = $1 AND e.type IN ('m.room.member', 'm.room.history_visibility') AND e.state_key IS NOT NULL ORDER BY e.position`, string(r.id))
	if err != nil {
		return err
	}
	// State resolution's changes take effect after the event at their
	// position (dag.go).
	res, err := loadResolutions(q, r.id)
	if err != nil {
		return err
	}
	next := 0
	for _, ev := range hist {
		for ; next < len(res) && res[next].pos < ev.Position; next++ {
			r.recordResolution(res[next])
		}
		r.record(ev)
	}
	for ; next < len(res); next++ {
		r.recordResolution(res[next])
	}
	r.recent = nil
	// The latest events, and one more to know where memory starts.
	latest, err := queryEventsOn(q, `WHERE e.room_id = $1 ORDER BY e.position DESC LIMIT $2`, string(r.id), recentSize+1)
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
		if o := s.outlierOf(user, id); o != nil {
			return o.membership
		}
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
