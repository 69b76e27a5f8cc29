// Package schedule holds delayed events (MSC4140): events a user asked the
// server to send into a room later, unless they cancel or restart the
// delay first. MatrixRTC clients (Element Call) schedule their own "left
// the call" this way and keep restarting it while they are connected.
//
// A delayed event is a row of this package's table until it is sent or
// cancelled, so a restart loses none: at start-up the due times are read
// back into memory and what fell due meanwhile is sent at once. One
// goroutine sleeps until the earliest due time (a timer, reset whenever a
// schedule, restart or cancel changes the earliest); nothing polls the
// database, and an ordinary send never touches this package.
package schedule

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"sync"
	"time"

	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
)

// Rooms is what the scheduler needs from the rooms package.
type Rooms interface {
	Send(ctx context.Context, from rooms.Sender, id spec.RoomID, ev rooms.SendRequest) (spec.EventID, error)
	Membership(user spec.UserID, id spec.RoomID) string
}

// Config holds the limits the MSC asks homeservers to set.
type Config struct {
	// MaxDelay is the longest delay a client may ask for.
	MaxDelay time.Duration
	// MaxPerUser is how many delayed events one user may have scheduled.
	MaxPerUser int
}

// DefaultConfig: a day covers reminders and MatrixRTC's seconds-long
// heartbeats alike; a hundred per user is far above what a client keeps
// (one per call it is in) and bounds what one account can store.
func DefaultConfig() Config {
	return Config{MaxDelay: 24 * time.Hour, MaxPerUser: 100}
}

// Deps is what the scheduler is built from.
type Deps struct {
	DB       *storage.DB
	Rooms    Rooms
	Log      zerolog.Logger
	Stopping <-chan struct{} // closed at shutdown: the scheduler stops
	Config   Config
	// ManageLimit rate-limits the unauthenticated management endpoints
	// per client address (nil: none).
	ManageLimit gin.HandlerFunc
}

// Service is the scheduler and its endpoints.
type Service struct {
	db       *storage.DB
	rooms    Rooms
	log      zerolog.Logger
	stopping <-chan struct{}
	cfg      Config
	limit    gin.HandlerFunc
	now      func() time.Time

	// mu guards timers. An event being sent (by its timer or a send
	// action) is out of timers meanwhile: a cancel or restart of it finds
	// nothing to act on.
	mu     sync.Mutex
	timers *timers
	wake   chan struct{} // the earliest due time may have changed
}

// New reads the scheduled events' due times back into memory; Start runs
// the scheduler.
func New(ctx context.Context, d Deps) (*Service, error) {
	if d.Config.MaxDelay <= 0 || d.Config.MaxPerUser <= 0 {
		def := DefaultConfig()
		if d.Config.MaxDelay <= 0 {
			d.Config.MaxDelay = def.MaxDelay
		}
		if d.Config.MaxPerUser <= 0 {
			d.Config.MaxPerUser = def.MaxPerUser
		}
	}
	s := &Service{
		db: d.DB, rooms: d.Rooms, log: d.Log, stopping: d.Stopping, cfg: d.Config, limit: d.ManageLimit,
		now: time.Now, timers: newTimers(), wake: make(chan struct{}, 1),
	}
	all, err := s.allTimes(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range all {
		s.timers.add(t.id, t.delay, t.at)
	}
	return s, nil
}

// Start runs the scheduler until Stopping is closed.
func (s *Service) Start() { go s.run() }

// run sleeps until the earliest due time, sends what is due, and sleeps
// again. A change to the schedule wakes it to recompute the sleep.
func (s *Service) run() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.mu.Lock()
		at, ok := s.timers.next()
		s.mu.Unlock()
		if ok {
			t.Reset(time.Until(time.UnixMilli(at)))
		} else {
			t.Stop()
		}
		select {
		case <-t.C:
			s.sendDue()
		case <-s.wake:
		case <-s.stopping:
			return
		}
	}
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Service) nowMS() int64 { return s.now().UnixMilli() }

// sendDue sends every event that is due. One that fails is finalised all
// the same: the MSC asks not to retry a send that failed at its time (a
// rate limit, a lost permission), and the client sees it is gone.
func (s *Service) sendDue() {
	s.mu.Lock()
	due := s.timers.popDue(s.nowMS())
	s.mu.Unlock()
	for _, t := range due {
		ctx := context.Background()
		d, err := s.load(ctx, t.id)
		if err == nil && d != nil {
			if _, sendErr := s.deliver(ctx, d); sendErr != nil {
				s.log.Warn().Err(sendErr).Str("room_id", string(d.Room)).Msg("a delayed event could not be sent at its time")
			}
			err = s.remove(ctx, t.id)
		}
		if err != nil {
			// The row stays: the next start sends it (idempotently).
			s.log.Error().Err(err).Msg("delayed event")
		}
	}
}

// deliver sends a delayed event into its room as its sender. The
// transaction ID is derived from the delay ID, so that a send repeated
// after a crash (the row was not yet removed) finds the first one.
func (s *Service) deliver(ctx context.Context, d *delayedEvent) (spec.EventID, error) {
	return s.rooms.Send(ctx, rooms.Sender{User: d.User, Device: d.Device}, d.Room, rooms.SendRequest{
		Type: d.Type, StateKey: d.StateKey, TxnID: rooms.DelayedTxnPrefix + d.DelayID, Content: []byte(d.Content),
	})
}

// newDelayID is 128 random bits: the delay ID alone lets its holder send,
// restart or cancel the event (the MSC's delegation to a call's SFU).
func newDelayID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return "syd_" + base64.RawURLEncoding.EncodeToString(b)
}

// parseDelay reads the delay in milliseconds and checks it against the
// limit (MSC4140's unstable error code and field).
func (s *Service) parseDelay(v string) (int64, error) {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 {
		return 0, spec.InvalidParam("the delay must be a positive whole number of milliseconds")
	}
	if max := s.cfg.MaxDelay.Milliseconds(); ms > max {
		return 0, spec.NewError(spec.ErrMaxDelayExceeded, "the delay is over the %d ms this server allows", max).
			With("org.matrix.msc4140.max_delay", max)
	}
	return ms, nil
}

// schedule stores a new delayed event and wakes the scheduler. The room is
// checked only for the sender's membership: power levels are evaluated when
// the event is sent, as the MSC says.
func (s *Service) schedule(ctx context.Context, d *delayedEvent) error {
	if err := rooms.CheckSendable(d.Type, d.StateKey); err != nil {
		return err
	}
	if s.rooms.Membership(d.User, d.Room) != string(spec.Join) {
		return spec.Forbidden("you are not joined to room %s", d.Room)
	}
	d.DelayID = newDelayID()
	d.RunningSince = s.nowMS()
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		n, earliest, err := countOf(tx, d.User)
		if err != nil {
			return err
		}
		if n >= s.cfg.MaxPerUser {
			wait := max(earliest-d.RunningSince, 0)
			return errTooMany.With("retry_after_ms", wait)
		}
		return insertDelayed(tx, d)
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.timers.add(d.DelayID, d.DelayMS, d.sendAt())
	s.mu.Unlock()
	s.poke()
	return nil
}

var errTooMany = spec.NewError(spec.ErrLimitExceeded, "the maximum number of delayed events has been reached")

var errNoSuchDelay = spec.NotFound("no delayed event with this ID is scheduled")

// cancel finalises a delayed event without sending it.
func (s *Service) cancel(ctx context.Context, id string) error {
	s.mu.Lock()
	_, ok := s.timers.remove(id)
	s.mu.Unlock()
	if !ok {
		return errNoSuchDelay
	}
	s.poke()
	return s.remove(ctx, id)
}

// restart sets the send time to now plus the original delay.
func (s *Service) restart(ctx context.Context, id string) error {
	now := s.nowMS()
	s.mu.Lock()
	t := s.timers.get(id)
	if t != nil {
		s.timers.reset(id, now+t.delay)
	}
	s.mu.Unlock()
	if t == nil {
		return errNoSuchDelay
	}
	s.poke()
	return s.restartAt(ctx, id, now)
}

// sendNow sends a delayed event at once. If the room refuses it, it stays
// scheduled (the cause may be gone by its time) and the caller gets the
// room's error, as the MSC asks.
func (s *Service) sendNow(ctx context.Context, id string) error {
	s.mu.Lock()
	t, ok := s.timers.remove(id)
	s.mu.Unlock()
	if !ok {
		return errNoSuchDelay
	}
	s.poke()
	d, err := s.load(ctx, id)
	if err != nil {
		return err
	}
	if d == nil {
		return errNoSuchDelay
	}
	if _, err := s.deliver(ctx, d); err != nil {
		s.mu.Lock()
		s.timers.add(id, t.delay, t.at)
		s.mu.Unlock()
		s.poke()
		return err
	}
	return s.remove(ctx, id)
}
