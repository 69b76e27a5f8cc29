// Package app wires every package of the server into one HTTP handler:
// the services built in dependency order, their collaborators passed at
// construction, their routes mounted. cmd/chatalot runs it on the data
// directory; internal/servertest runs it on a temporary one for tests.
package app

import (
	"context"
	"time"

	"github.com/chatalot/chatalot/admin"
	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/federation"
	"github.com/chatalot/chatalot/keys"
	"github.com/chatalot/chatalot/media"
	"github.com/chatalot/chatalot/oauth"
	"github.com/chatalot/chatalot/push"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/schedule"
	"github.com/chatalot/chatalot/server"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	chatsync "github.com/chatalot/chatalot/sync"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
)

// SpecVersions are the client-server API versions whose endpoints Chatalot
// serves; the list grows as features land.
var SpecVersions = []string{"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11"}

// Schemas are the tables of every package, in the order they migrate.
var Schemas = []storage.Schema{auth.Schema, rooms.Schema, chatsync.Schema, keys.Schema, media.Schema, push.Schema, admin.Schema, schedule.Schema, oauth.Schema, federation.Schema}

// Config is the server configuration in each package's own terms.
type Config struct {
	ServerName spec.ServerName
	BaseURL    string // the client-server API's public URL (well-known)
	Version    string // the binary's version (/_matrix/federation/v1/version)
	MediaDir   string // where media files are kept
	Rooms      rooms.Config
	Auth       auth.Config
	Sync       chatsync.Config
	Push       push.Config
	Media      media.Config
	Admin      admin.Config
	Schedule   schedule.Config
	Router     api.Options
	OAuth      *oauth.Config      // nil: the OAuth 2.0 API is off, and /auth_metadata answers 404
	Federation *federation.Config // nil: federation is off (no federation routes, nothing leaves)
}

// Deps are what the server runs on.
type Deps struct {
	DB       *storage.DB // migrated with Schemas
	Key      events.SigningKey
	Log      zerolog.Logger
	Stopping <-chan struct{} // closed at shutdown: long-polls answer, workers stop
	// Now is the clock of media and admin (nil: time.Now); tests move it
	// to expire media.
	Now func() time.Time
}

// App is the wired server: its router and the services behind it.
type App struct {
	Router     *gin.Engine
	Rooms      *rooms.Service
	Auth       *auth.Service
	Sync       *chatsync.Service
	Push       *push.Service
	Keys       *keys.Service
	Media      *media.Service
	Admin      *admin.Service
	Schedule   *schedule.Service
	OAuth      *oauth.Service      // nil with the OAuth 2.0 API off
	Federation *federation.Service // nil with federation off
}

// New builds every service and mounts every route. The workers (push
// delivery, the scheduler, admin's follow-ups) run until Stopping closes.
//
// Every collaborator is passed at construction. The services are built in
// the order of their edges; where two packages call each other at run
// time, the cycle is broken by a value built before both (newShared),
// never by a setter after the fact.
func New(ctx context.Context, cfg Config, d Deps) (*App, error) {
	sh, err := newShared(ctx, cfg, d)
	if err != nil {
		return nil, err
	}
	a := &App{}
	if err := a.buildCore(ctx, cfg, d, sh); err != nil {
		return nil, err
	}
	if err := a.buildReaders(ctx, cfg, d, sh); err != nil {
		return nil, err
	}
	if err := a.buildFederation(ctx, cfg, d, sh); err != nil {
		return nil, err
	}
	a.start(d.Stopping)
	a.Router = a.routes(cfg, d.Key)
	return a, nil
}

// shared are the values built before the services, one per cycle between
// them.
type shared struct {
	notifier *chatsync.Notifier
	limiter  *auth.Limiter
	users    *auth.UserReader
	policy   *admin.Policy
	commits  *rooms.CommitHooks
	devices  *auth.DeviceEvents
	oauth    auth.OAuthSessions // nil with the OAuth 2.0 API off
	peers    *federation.Peers  // nil with federation off
}

func newShared(ctx context.Context, cfg Config, d Deps) (*shared, error) {
	sh := &shared{notifier: chatsync.NewNotifier(d.DB)}
	// auth ⇄ rooms: auth drives rooms (profile changes, deactivation, the
	// user directory), and rooms reads auth's profiles and rate limits. The
	// limiter and a profile reader over the accounts table need nothing but
	// the configuration and the database, so they are built first and
	// rooms gets them; auth gets rooms.
	sh.limiter = auth.NewLimiter(cfg.Auth.RateLimits, cfg.Auth.Rates)
	sh.users = auth.NewUserReader(d.DB)
	// admin ⇄ (auth, rooms): admin drives both, and both consult its
	// policy. The policy is admin's memory of flags, blocked rooms and
	// notices rooms, loaded from its own tables before the others.
	var err error
	if sh.policy, err = admin.NewPolicy(ctx, d.DB, cfg.Admin.LogIPAddresses); err != nil {
		return nil, err
	}
	// rooms ⇄ push: every commit of events runs push's part (notifications
	// and unread counts commit with the events), and push reads rooms. The
	// commit-hook list is built first; rooms commits through it and push
	// joins it while it is built, after rooms.
	sh.commits = &rooms.CommitHooks{}
	// auth ⇄ (keys, push): auth tells keys and push of device changes, and
	// keys re-checks passwords through auth's UIA while push keeps
	// m.push_rules in auth's account data. As with commits, auth is given
	// a list built first, which keys and push join as they are built.
	sh.devices = &auth.DeviceEvents{}
	// auth ⇄ oauth: oauth signs people in through auth, and auth's UIA
	// asks oauth which sessions it granted (the m.oauth stage). A reader
	// over oauth's grants needs only the database, so auth gets it.
	if cfg.OAuth != nil {
		sh.oauth = oauth.NewSessions(d.DB, cfg.BaseURL)
	}
	// rooms ⇄ federation: federation drives rooms (remote events), and
	// rooms joins remote rooms through federation's client side, which
	// needs only the database and the key, so rooms gets it.
	if cfg.Federation != nil {
		if sh.peers, err = federation.NewPeers(d.DB, d.Key, *cfg.Federation, d.Log); err != nil {
			return nil, err
		}
	}
	return sh, nil
}

// buildCore builds the services that call each other: rooms, auth, push
// and keys, in that order, through the shared values.
func (a *App) buildCore(ctx context.Context, cfg Config, d Deps, sh *shared) error {
	var err error
	deps := rooms.Deps{
		DB: d.DB, Key: d.Key, Server: cfg.ServerName, Log: d.Log, Notify: sh.notifier, Config: cfg.Rooms,
		Profiles: sh.users, CommitHook: sh.commits, Guard: sh.policy.GuardMembership, Limits: sh.limiter.PerUser,
	}
	if sh.peers != nil {
		deps.Federation = sh.peers // a nil *Peers would be a non-nil interface
	}
	a.Rooms, err = rooms.New(ctx, deps)
	if err != nil {
		return err
	}
	authDeps := auth.Deps{
		DB: d.DB, ServerName: cfg.ServerName, Config: cfg.Auth, Log: d.Log,
		Notify: sh.notifier, Rooms: a.Rooms, Directory: a.Rooms, Devices: sh.devices,
		Policy: sh.policy.ForRequests(a.Rooms), Limiter: sh.limiter, OAuth: sh.oauth,
		Eraser: sh.policy, // the admin Service erases the rest of an erased account
	}
	if sh.peers != nil {
		authDeps.RemoteProfiles = sh.peers // a nil *Peers would be a non-nil interface
	}
	a.Auth, err = auth.New(authDeps)
	if err != nil {
		return err
	}
	a.Push, err = push.New(ctx, push.Deps{
		DB: d.DB, Rooms: a.Rooms, AccountData: a.Auth, Notify: sh.notifier, Log: d.Log, Stopping: d.Stopping,
		Config: cfg.Push, Commits: sh.commits, Devices: sh.devices,
	})
	if err != nil {
		return err
	}
	keysDeps := keys.Deps{
		DB: d.DB, Log: d.Log, Notify: sh.notifier, Rooms: a.Rooms,
		Config: keys.Config{ServerName: cfg.ServerName},
		UIA:    a.Auth.ReauthenticateCrossSigningReset, Devices: a.Auth, Limiter: sh.limiter, DeviceEvents: sh.devices,
	}
	if sh.peers != nil {
		// keys ⇄ federation: keys asks other servers and queues EDUs
		// through federation's client side, built first; federation
		// delivers inbound EDUs to keys.
		keysDeps.Federation = sh.peers
		keysDeps.Commits = sh.commits
	}
	a.Keys, err = keys.New(keysDeps)
	return err
}

// buildReaders builds the services that only call the core ones: sync,
// media, admin and the scheduler.
func (a *App) buildReaders(ctx context.Context, cfg Config, d Deps, sh *shared) error {
	// push gives sync the unread counts and keeps m.push_rules in the
	// account data.
	a.Sync = chatsync.New(chatsync.Deps{
		DB: d.DB, Rooms: a.Rooms, AccountData: a.Push.WithRules(a.Auth), Keys: a.Keys, Unread: a.Push,
		Notifier: sh.notifier, Log: d.Log, Stopping: d.Stopping, Config: cfg.Sync,
		Federation: syncOutbound(sh.peers),
	})
	if err := a.Sync.Init(ctx); err != nil {
		return err
	}
	var err error
	mediaDeps := media.Deps{
		DB: d.DB, Dir: cfg.MediaDir, ServerName: cfg.ServerName, Config: cfg.Media, Log: d.Log, Now: d.Now,
	}
	if sh.peers != nil {
		mediaDeps.Federation = sh.peers // other servers' media; a nil *Peers would be a non-nil interface
	}
	if a.Media, err = media.New(mediaDeps); err != nil {
		return err
	}
	// schedule sends delayed events (MSC4140) through rooms; rooms' send
	// routes (routes) hand it the sends that carry a delay.
	if a.Schedule, err = schedule.New(ctx, schedule.Deps{
		DB: d.DB, Rooms: a.Rooms, Log: d.Log, Stopping: d.Stopping, Config: cfg.Schedule,
		ManageLimit: sh.limiter.PerIP(auth.RateDelayedEvents),
	}); err != nil {
		return err
	}
	// admin drives the others on the server admin's behalf, and applies
	// what `chatalot admin` changed meanwhile. A room purge deletes every
	// package's rows about the room in one transaction: rooms' own and
	// those of the Forgetters.
	if a.Admin, err = admin.New(ctx, admin.Deps{
		DB: d.DB, ServerName: cfg.ServerName, Auth: a.Auth, Rooms: a.Rooms, Media: a.Media, Keys: sh.devices,
		Log: d.Log, Config: cfg.Admin, Policy: sh.policy, Now: d.Now,
		Forgetters: []rooms.RoomForgetter{a.Sync, a.Push, a.Auth, a.Keys, a.Schedule},
	}); err != nil {
		return err
	}
	// A deletion a crash interrupted is finished before serving.
	if err := a.Admin.ResumePurges(ctx); err != nil {
		return err
	}
	if cfg.OAuth == nil {
		return nil
	}
	// The OAuth 2.0 API signs people in through auth; a device deleted
	// anywhere ends its grants.
	a.OAuth = oauth.New(oauth.Deps{
		DB: d.DB, Accounts: a.Auth, Limiter: sh.limiter, BaseURL: cfg.BaseURL,
		ServerName: cfg.ServerName, Config: *cfg.OAuth, Log: d.Log,
	})
	sh.devices.Join(deletions{a.OAuth})
	return nil
}

// buildFederation builds federation when it is on: its outbound queue
// joins the commit hooks, and its routes answer other servers.
func (a *App) buildFederation(ctx context.Context, cfg Config, d Deps, sh *shared) error {
	if sh.peers == nil {
		return nil
	}
	a.Federation = federation.New(federation.Deps{
		DB: d.DB, Rooms: a.Rooms, Peers: sh.peers, Stopping: d.Stopping, Commits: sh.commits, Media: a.Media, Keys: a.Keys,
		Ephemeral: a.Sync, Profiles: sh.users,
	})
	// What a restart or crash left queued is sent now.
	return a.Federation.Start(ctx)
}

// syncOutbound is federation's client side as sync's way out, or nil with
// federation off (a nil *Peers would be a non-nil interface).
func syncOutbound(p *federation.Peers) chatsync.Outbound {
	if p == nil {
		return nil
	}
	return p
}

// start runs the workers: push's clean-up, admin's follow-ups and the
// scheduler, until stopping closes.
func (a *App) start(stopping <-chan struct{}) {
	a.Push.Start()
	followups, stopFollowups := context.WithCancel(context.Background())
	go func() { <-stopping; stopFollowups() }()
	go a.Admin.RunFollowups(followups)
	go a.Admin.RunRetention(followups) // message retention (MSC1763)
	go a.Admin.RunMediaRetention(followups)
	a.Schedule.Start()
}

// routes mounts every package's paths on a new router.
func (a *App) routes(cfg Config, key events.SigningKey) *gin.Engine {
	caps := a.Auth.Capabilities()
	for k, v := range a.Media.Capabilities() {
		caps[k] = v
	}
	r := api.NewRouter(cfg.Router)
	sd := server.Deps{
		ServerName:         cfg.ServerName,
		BaseURL:            cfg.BaseURL,
		Key:                key,
		Version:            cfg.Version,
		Versions:           SpecVersions,
		UnstableFeatures:   unstableFeatures(cfg.Rooms.Encryption, a.OAuth != nil),
		Capabilities:       caps,
		DefaultRoomVersion: cfg.Rooms.DefaultRoomVersion,
	}
	if a.Federation != nil {
		sd.Notary = a.Federation // a nil *Service would be a non-nil interface
	}
	srv := server.New(sd)
	srv.Routes(r)
	requireAuth := a.Auth.Middleware()
	api.ClientAPI(r, requireAuth).GET("/capabilities", api.Handle(srv.Capabilities)) // v3 and r0
	a.Auth.Routes(r)
	a.Rooms.Routes(r, requireAuth, a.Schedule)
	a.Sync.Routes(r, requireAuth)
	a.Sync.SlidingRoutes(r, requireAuth)
	a.Keys.Routes(r, requireAuth)
	a.Media.Routes(r, requireAuth)
	a.Push.Routes(r, requireAuth)
	a.Schedule.Routes(r, requireAuth)
	a.Admin.Routes(r, requireAuth)
	if a.OAuth != nil {
		a.OAuth.Routes(r)
	}
	if a.Federation != nil {
		a.Federation.Routes(r)
	}
	return r
}

// unstableFeatures are the unstable features /versions advertises, each
// proved by versions_test.go.
func unstableFeatures(encryption string, oauthOn bool) map[string]bool {
	return map[string]bool{
		"org.chatalot.encryption_policy." + encryption: true,
		"org.matrix.msc4222":                           true,    // use_state_after in /sync
		"org.matrix.msc3814":                           true,    // dehydrated devices
		"org.matrix.msc4140":                           true,    // delayed events
		"org.matrix.msc4306":                           true,    // thread subscriptions
		"org.matrix.msc3391":                           true,    // deleting account data
		"org.matrix.msc3874":                           true,    // rel_types filters on /messages
		"org.matrix.msc3890":                           true,    // device-local notification settings go with the device
		"org.matrix.simplified_msc3575":                true,    // sliding sync (MSC4186), which Element X requires
		oauth.FeatureRendezvous:                        oauthOn, // QR-code login's rendezvous (MSC4388), part of the OAuth 2.0 API
	}
}

// deletions is a device hook that hears only of deleted devices: the OAuth
// grants a device was made by end with it.
type deletions struct {
	oauth *oauth.Service
}

func (deletions) DeviceAdded(context.Context, spec.UserID, string, string) error   { return nil }
func (deletions) DeviceUpdated(context.Context, spec.UserID, string, string) error { return nil }
func (d deletions) DeviceDeleted(ctx context.Context, user spec.UserID, id string) error {
	return d.oauth.DeviceDeleted(ctx, user, id)
}
