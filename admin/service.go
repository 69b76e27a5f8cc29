// Package admin is the server admin's toolset: the Synapse-compatible admin
// API (/_synapse/admin/…) that tools such as synapse-admin and bot
// frameworks expect, the account moderation endpoints of the client-server
// API (lock, suspend, whois), server notices, /.well-known/matrix/support,
// and the audit log that records every admin action. The `chatalot admin`
// CLI drives the same service on the data directory.
//
// Admin powers are deliberately bounded: there is no endpoint to log in as
// another user and no shadow-ban, and every action leaves an audit row
// (who, what, on what, when — never content) in the same transaction as
// its effect wherever one transaction can hold both.
package admin

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/media"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

// Contact is one entry of /.well-known/matrix/support.
type Contact struct {
	MatrixID string `json:"matrix_id,omitempty"`
	Email    string `json:"email_address,omitempty"`
	Role     string `json:"role"`
}

// Config is what the server's configuration tells the admin package.
type Config struct {
	// Version is answered by server_version.
	Version string
	// Contacts and SupportPage are /.well-known/matrix/support; with
	// neither it answers 404, as the spec says.
	Contacts    []Contact
	SupportPage string
	// NoticesUser is the localpart of the account that sends server
	// notices, created (without a password) on first use. Default "server",
	// a name auth reserves so nobody can register it.
	NoticesUser string
	// NoticesRoomName names each user's server-notices room.
	NoticesRoomName string
	// LogIPAddresses mirrors the server setting: only then does whois show
	// the last address a session used, kept in memory, never stored.
	LogIPAddresses bool
	// Retention is the server's message retention (retention.go).
	Retention RetentionPolicy
	// MediaRetention is the server's media retention (mediaretention.go).
	MediaRetention MediaRetention
	// ForgottenRoomRetention has the retention pass purge the rooms every
	// local member left and forgot, once nothing happened in them for that
	// long (roomgc.go; 0: never).
	ForgottenRoomRetention time.Duration
}

// Rooms is what the admin toolset does to rooms on the server admin's
// behalf: the rooms package's service.
type Rooms interface {
	// Reading rooms whatever the caller's membership.
	Exists(id spec.RoomID) bool
	AdminRoom(ctx context.Context, id spec.RoomID) (rooms.AdminRoom, bool, error)
	AdminRooms(ctx context.Context) ([]rooms.AdminRoom, error)
	AdminState(id spec.RoomID) []*events.PDU
	MembersOf(id spec.RoomID) map[spec.UserID]string
	ForgotBy(user spec.UserID, id spec.RoomID) bool
	LastEventTS(id spec.RoomID) int64
	JoinedMembers(id spec.RoomID) []spec.UserID
	Membership(user spec.UserID, id spec.RoomID) string
	RoomsOf(user spec.UserID) map[spec.RoomID]string
	JoinedRooms(user spec.UserID) []spec.RoomID
	StoredEvent(ctx context.Context, id spec.EventID) (*rooms.Event, error)
	FirstPositionAt(ctx context.Context, room spec.RoomID, ts int64) (int64, bool, error)

	// Acting: server notices, memberships, room deletion and purges.
	CreateRoom(ctx context.Context, creator spec.UserID, req rooms.CreateRequest) (spec.RoomID, spec.RoomAlias, error)
	Send(ctx context.Context, from rooms.Sender, id spec.RoomID, req rooms.SendRequest) (spec.EventID, error)
	Change(ctx context.Context, from rooms.Sender, id spec.RoomID, ch rooms.MembershipChange) (spec.EventID, error)
	LeaveAllRooms(ctx context.Context, user spec.UserID) error
	MoveAliases(ctx context.Context, from, to spec.RoomID) ([]spec.RoomAlias, error)
	PurgeRoom(ctx context.Context, id spec.RoomID, opts rooms.PurgeOptions) (storage.Removed, error)
	PurgeHistory(ctx context.Context, id spec.RoomID, before int64) (int, error)
	PurgeHistoryWith(ctx context.Context, id spec.RoomID, before int64, opts rooms.PurgeOptions) (storage.Removed, error)
	HasExpired(ctx context.Context, id spec.RoomID, before int64) (bool, error)
	EraseSender(ctx context.Context, user spec.UserID, dryRun bool) (storage.Removed, error)
	MediaNeeded(tx *storage.Tx, uri string, user spec.UserID) (bool, error)
	LocalAliases(ctx context.Context, by rooms.Caller, room spec.RoomID) ([]string, error)

	// Event reports.
	ListReports(ctx context.Context, f rooms.ReportFilter) ([]rooms.Report, int, error)
	GetReport(ctx context.Context, id int64) (*rooms.Report, error)
	DeleteReport(ctx context.Context, id int64) (bool, error)
	ReportedEvent(ctx context.Context, r *rooms.Report) (*rooms.Event, error)
}

// Deps is what the service needs. Rooms, Media and Keys are nil in the CLI,
// which works on the accounts and the audit log only.
type Deps struct {
	DB         *storage.DB
	ServerName spec.ServerName
	Auth       *auth.Service
	Rooms      Rooms // nil: the CLI without rooms
	Media      *media.Service
	Keys       auth.DeviceHooks
	Log        zerolog.Logger
	Config     Config
	// Policy is the memory auth and rooms consult (policy.go), built
	// before them; nil: New loads one (the CLI, which serves nothing).
	Policy *Policy
	// Forgetters are the packages whose rows about a room a room purge
	// deletes, beside rooms' own (receipts, push, account data, key
	// backups, delayed events).
	Forgetters []rooms.RoomForgetter
	// Now is the clock (nil: time.Now); tests move it.
	Now func() time.Time
	// CLI says the service runs in `chatalot admin`: actions are recorded
	// as the CLI's, and changes the running server must apply are queued.
	CLI bool
}

// Service is the admin toolset.
type Service struct {
	db     *storage.DB
	server spec.ServerName
	auth   *auth.Service
	rooms  Rooms
	media  *media.Service
	keys   auth.DeviceHooks
	log    zerolog.Logger
	cfg    Config
	cli    bool
	now    func() time.Time

	// *Policy holds the account flags, blocked rooms and server-notices
	// rooms in memory (policy.go); the service changes them after its
	// writes commit.
	*Policy

	noticeMu sync.Mutex // one server-notices room per user, created once

	tasks *taskList // room deletions and history purges (rooms.go)

	forgetters []rooms.RoomForgetter // rows about rooms in other packages (forget.go)
}

// New builds the service and loads its state. The database must be
// migrated with Schema.
func New(ctx context.Context, d Deps) (*Service, error) {
	if d.Config.NoticesUser == "" {
		d.Config.NoticesUser = "server"
	}
	if d.Config.NoticesRoomName == "" {
		d.Config.NoticesRoomName = "Server Notices"
	}
	if d.Policy == nil {
		p, err := NewPolicy(ctx, d.DB, d.Config.LogIPAddresses)
		if err != nil {
			return nil, err
		}
		d.Policy = p
	}
	s := &Service{
		db: d.DB, server: d.ServerName, auth: d.Auth, rooms: d.Rooms, media: d.Media, keys: d.Keys,
		log: d.Log, cfg: d.Config, cli: d.CLI, now: time.Now, Policy: d.Policy,
		tasks: newTaskList(), forgetters: d.Forgetters,
	}
	if d.Now != nil {
		s.now = d.Now
	}
	if !d.CLI {
		d.Policy.mu.Lock()
		d.Policy.eraser = s.eraseAccount
		d.Policy.mu.Unlock()
	}
	return s, nil
}

// Actor is who performs an admin action: an admin through the API, or the
// CLI (whoever can read the data directory).
type Actor struct {
	User spec.UserID // "" for the CLI
}

// CLIActor is the actor of `chatalot admin` commands.
var CLIActor = Actor{}

func (a Actor) String() string {
	if a.User == "" {
		return "cli"
	}
	return string(a.User)
}

func (s *Service) origin() string {
	if s.cli {
		return "cli"
	}
	return "api"
}

// audit prepares the audit row of an action: it rides on the action's
// first write (storage.Attach), so the two commit together; extra, if not
// nil, writes the admin package's own part of the action in that same
// transaction. finish is called with the action's outcome: a failed action
// that wrote nothing is not recorded; one that succeeded without any write
// of its own (or whose writes could not carry the row) is recorded in a
// write of its own.
func (s *Service) audit(ctx context.Context, who Actor, action, target string, details map[string]any, extra func(*storage.Tx) error) (context.Context, func(error) error) {
	e := AuditEntry{TS: s.now().UnixMilli(), Actor: who.String(), Origin: s.origin(), Action: action, Target: target, Details: details}
	write := func(tx *storage.Tx) error {
		if extra != nil {
			if err := extra(tx); err != nil {
				return err
			}
		}
		return insertAudit(tx, e)
	}
	actx, done := storage.Attach(ctx, write)
	finish := func(err error) error {
		if done() || err != nil {
			return err
		}
		if werr := s.db.Write(context.WithoutCancel(ctx), write); werr != nil {
			s.log.Error().Err(werr).Str("action", action).Msg("admin action done but not recorded in the audit log")
			return werr
		}
		return nil
	}
	s.logAction(e)
	return actx, finish
}

// record writes an audit row together with fn's changes, in one write.
func (s *Service) record(ctx context.Context, who Actor, action, target string, details map[string]any, fn func(*storage.Tx) error) error {
	e := AuditEntry{TS: s.now().UnixMilli(), Actor: who.String(), Origin: s.origin(), Action: action, Target: target, Details: details}
	s.logAction(e)
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if fn != nil {
			if err := fn(tx); err != nil {
				return err
			}
		}
		return insertAudit(tx, e)
	})
}

// logAction logs an admin action. Invite codes are credentials: the log
// names the action but not the code (the audit log, for admins only, has it).
func (s *Service) logAction(e AuditEntry) {
	ev := s.log.Info().Str("actor", e.Actor).Str("action", e.Action)
	if !strings.HasSuffix(e.Action, "_registration_token") {
		ev = ev.Str("target", e.Target)
	}
	ev.Msg("admin action")
}
