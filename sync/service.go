package sync

import (
	"context"
	"encoding/json"
	stdsync "sync"
	"sync/atomic"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
)

// RoomReader is what sync reads from the rooms package, all of it from memory
// but the timeline, state and rendering calls.
type RoomReader interface {
	// The user's rooms and who is in them.
	RoomsOf(user spec.UserID) map[spec.RoomID]string
	ForgottenRooms(user spec.UserID) []spec.RoomID
	Membership(user spec.UserID, id spec.RoomID) string
	MembershipEvent(user spec.UserID, id spec.RoomID) (pos int64, membership string)
	MembershipChanges(id spec.RoomID, since, until int64) map[spec.UserID]string
	JoinedMembers(id spec.RoomID) []spec.UserID
	ShareARoom(a, b spec.UserID) bool
	UsersSharingRoomsWith(user spec.UserID) []spec.UserID
	RoomSummary(id spec.RoomID, viewer spec.UserID) rooms.Summary

	// A room's timeline and state for one sync response.
	Position(id spec.RoomID) int64
	LatestEvents(ctx context.Context, q rooms.TimelineRequest) ([]*rooms.Event, bool, error)
	StateAt(ctx context.Context, id spec.RoomID, pos int64) ([]*events.PDU, error)
	StateDelta(ctx context.Context, id spec.RoomID, from, to int64) ([]*events.PDU, error)
	// StateResolved is the state that state resolution set in (from, to]
	// beyond the timeline's events, the latest per key.
	StateResolved(id spec.RoomID, from, to int64) []rooms.Resolved
	CurrentState(id spec.RoomID, typ, key string) *events.PDU
	StrippedState(id spec.RoomID, user spec.UserID) []json.RawMessage
	ViewerOf(user spec.UserID, device string) *rooms.Viewer
	RenderEvents(ctx context.Context, viewer spec.UserID, device string, evs []*rooms.Event) ([]json.RawMessage, error)

	// The events receipts and read markers point at.
	Event(ctx context.Context, user spec.UserID, id spec.RoomID, eventID spec.EventID) (*rooms.Event, error)
	ThreadOf(ctx context.Context, room spec.RoomID, id spec.EventID) (string, error)
	RelatesTo(ctx context.Context, room spec.RoomID, id, target spec.EventID) (bool, error)

	// What a sliding sync room list orders and filters by.
	RoomList(user spec.UserID, upTo int64) []rooms.ListEntry
	Forgotten(user spec.UserID, id spec.RoomID) bool
	BumpStamp(id spec.RoomID, upTo int64) int64
	RoomType(id spec.RoomID) string
	SpaceChildren(space spec.RoomID) []spec.RoomID
}

// AccountData is what sync needs from the accounts package.
type AccountData interface {
	// AccountData returns the user's account data changed in (since, until]:
	// global events and per-room events, each {type, content}.
	AccountData(ctx context.Context, user spec.UserID, since, until int64) (global []json.RawMessage, perRoom map[spec.RoomID][]json.RawMessage, err error)
	// AccountDataPosition is the highest position of the user's account
	// data, from memory.
	AccountDataPosition(user spec.UserID) int64
	// GetAccountData reads one account data event's content (room "" for
	// global) and whether it is set.
	GetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string) (json.RawMessage, bool, error)
	// SetAccountData writes one account data event (read markers).
	SetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string, content json.RawMessage) error
	// IgnoredUsers is the user's m.ignored_user_list, from memory.
	IgnoredUsers(user spec.UserID) map[spec.UserID]bool
}

// Keys is what sync needs from the E2EE directory.
type Keys interface {
	ToDevice(ctx context.Context, user spec.UserID, deviceID string, since, until int64, limit int) (msgs []json.RawMessage, last int64, err error)
	AckToDevice(ctx context.Context, user spec.UserID, deviceID string, upTo int64) error
	ToDevicePosition(user spec.UserID, deviceID string) int64
	DeviceListChanges(ctx context.Context, since, until int64) ([]spec.UserID, error)
	DeviceListPosition() int64
	OneTimeKeyCounts(ctx context.Context, user spec.UserID, deviceID string) (map[string]int, error)
	UnusedFallbackKeyTypes(ctx context.Context, user spec.UserID, deviceID string) ([]string, error)
}

// Unread is what sync needs from push: each user's unread notification
// counts per room, kept in memory by push.
type Unread interface {
	// Position is the stream position of the last change of any of the
	// user's counts.
	Position(user spec.UserID) int64
	// Counts returns the user's counts in a room — the main timeline's,
	// each thread's {notifications, highlights} by thread root — and the
	// stream position of their last change.
	Counts(user spec.UserID, room spec.RoomID) (notifications, highlights int64, threads map[string][2]int64, pos int64)
	// ReceiptRead marks the user's notifications up to the event (at
	// stream position pos) as read: in one thread ("main" or a root), or
	// in all of them for thread "".
	ReceiptRead(ctx context.Context, user spec.UserID, room spec.RoomID, eventID spec.EventID, pos int64, thread string) error
}

// Outbound sends local users' typing, public read receipts and presence to
// other servers (federation; nil without it). It never blocks.
type Outbound interface {
	Typing(room spec.RoomID, user spec.UserID, typing bool)
	Receipt(room spec.RoomID, user spec.UserID, eventID spec.EventID, thread string, ts int64)
	Presence(user spec.UserID, state string, statusMsg *string, lastActiveAgo int64, currentlyActive bool)
}

// Config is the sync policy an admin sets.
type Config struct {
	// Presence off means no presence is stored or delivered (privacy).
	Presence bool
}

// Deps is what the sync service needs.
type Deps struct {
	DB          *storage.DB
	Rooms       RoomReader
	AccountData AccountData
	Keys        Keys
	Notifier    *Notifier
	Unread      Unread // may be nil: no unread counts
	Config      Config
	Log         zerolog.Logger
	// Stopping is closed at shutdown: long-polls answer at once.
	Stopping <-chan struct{}
	// Federation sends the ephemeral changes of local users to other
	// servers (nil: none).
	Federation Outbound
}

// Service answers /sync and the ephemeral endpoints.
type Service struct {
	db       *storage.DB
	rooms    RoomReader
	acct     AccountData
	keys     Keys
	notifier *Notifier
	unread   Unread
	out      Outbound // nil without federation
	cfg      Config
	log      zerolog.Logger
	stopping <-chan struct{}

	filterCache   stdsync.Map // user + filter ID → *Filter
	inlineFilters inlineFilterCache

	// serial orders in-memory ephemeral changes (typing, presence). It
	// starts from the clock so that tokens from before a restart stay
	// below every new serial.
	serial atomic.Int64

	typing   *typingState
	receipts *receiptState
	presence *presenceState

	conns *connStore // sliding sync connections (slidingconn.go)
}

// New returns the sync service.
func New(d Deps) *Service {
	s := &Service{
		db: d.DB, rooms: d.Rooms, acct: d.AccountData, keys: d.Keys, notifier: d.Notifier, unread: d.Unread, out: d.Federation,
		cfg: d.Config, log: d.Log, stopping: d.Stopping, conns: newConnStore(),
	}
	if s.notifier == nil {
		s.notifier = NewNotifier(s.db)
	}
	s.serial.Store(time.Now().UnixMilli())
	s.notifier.track(d.DB.Position(), s.serial.Load)
	s.typing = newTypingState()
	s.receipts = newReceiptState()
	s.presence = newPresenceState()
	if d.DB.Node() != "" {
		d.DB.OnFollow(s.followReceipts)
	}
	return s
}

// Notifier is the notifier other packages signal.
func (s *Service) Notifier() *Notifier { return s.notifier }

// Routes mounts the sync, filter and ephemeral endpoints.
func (s *Service) Routes(r *gin.Engine, requireAuth gin.HandlerFunc) {
	c := api.ClientAPI(r, requireAuth) // v3, and r0 for the r0 API's endpoints
	c.GET("/sync", api.Handle(s.sync))
	c.POST("/user/:userId/filter", api.Handle(s.createFilter))
	c.GET("/user/:userId/filter/:filterId", api.Handle(s.getFilter))
	c.PUT("/rooms/:roomId/typing/:userId", api.Handle(s.putTyping))
	c.POST("/rooms/:roomId/receipt/:receiptType/:eventId", api.Handle(s.postReceipt))
	c.POST("/rooms/:roomId/read_markers", api.Handle(s.postReadMarkers))
	c.GET("/presence/:userId/status", api.Handle(s.getPresence))
	c.PUT("/presence/:userId/status", api.Handle(s.putPresence))
}

// nextSerial takes the next ephemeral serial.
func (s *Service) nextSerial() int64 { return s.serial.Add(1) }
