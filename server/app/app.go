// Package app wires every package of the server into one HTTP handler:
// the services built in dependency order, their collaborators passed at
// construction, their routes mounted. cmd/chatalot runs it on the data
// directory; internal/servertest runs it on a temporary one for tests.
package app

import (
	"context"

	"github.com/chatalot/chatalot/admin"
	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/keys"
	"github.com/chatalot/chatalot/media"
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
var Schemas = []storage.Schema{auth.Schema, rooms.Schema, chatsync.Schema, keys.Schema, media.Schema, push.Schema, admin.Schema, schedule.Schema}

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
}

// Deps are what the server runs on.
type Deps struct {
	DB       *storage.DB // migrated with Schemas
	Key      events.SigningKey
	Log      zerolog.Logger
	Stopping <-chan struct{} // closed at shutdown: long-polls answer, workers stop
}

// App is the wired server: its router and the services behind it.
type App struct {
	Router   *gin.Engine
	Rooms    *rooms.Service
	Auth     *auth.Service
	Sync     *chatsync.Service
	Push     *push.Service
	Keys     *keys.Service
	Media    *media.Service
	Admin    *admin.Service
	Schedule *schedule.Service
}

// New builds every service and mounts every route. The workers (push
// delivery, the scheduler, admin's follow-ups) run until Stopping closes.
func New(ctx context.Context, cfg Config, d Deps) (*App, error) {
	// Every collaborator is passed at construction. The order follows the
	// edges; where two packages call each other at run time, the cycle is
	// broken by a value built before both (see each comment), never by a
	// setter after the fact.
	notifier := chatsync.NewNotifier(d.DB)
	authCfg := cfg.Auth
	// auth ⇄ rooms: auth drives rooms (profile changes, deactivation, the
	// user directory), and rooms reads auth's profiles and rate limits. The
	// limiter and a profile reader over the accounts table need nothing but
	// the configuration and the database, so they are built first and
	// rooms gets them; auth gets rooms.
	limiter := auth.NewLimiter(authCfg.RateLimits, authCfg.Rates)
	users := auth.NewUserReader(d.DB)
	// admin ⇄ (auth, rooms): admin drives both, and both consult its
	// policy. The policy is admin's memory of flags, blocked rooms and
	// notices rooms, loaded from its own tables before the others.
	adminCfg := cfg.Admin
	policy, err := admin.NewPolicy(ctx, d.DB, adminCfg.LogIPAddresses)
	if err != nil {
		return nil, err
	}
	// rooms ⇄ push: every commit of events runs push's part (notifications
	// and unread counts commit with the events), and push reads rooms. The
	// commit-hook list is built first; rooms commits through it and push
	// joins it while it is built, after rooms.
	commits := &rooms.CommitHooks{}
	roomsSvc, err := rooms.New(ctx, rooms.Deps{
		DB: d.DB, Key: d.Key, Server: cfg.ServerName, Log: d.Log, Notify: notifier,
		Config:   cfg.Rooms,
		Profiles: users, CommitHook: commits, Guard: policy.GuardMembership, Limits: limiter.PerUser,
	})
	if err != nil {
		return nil, err
	}
	// auth ⇄ (keys, push): auth tells keys and push of device changes, and
	// keys re-checks passwords through auth's UIA while push keeps
	// m.push_rules in auth's account data. As with commits, auth is given
	// a list built first, which keys and push join as they are built.
	devices := &auth.DeviceEvents{}
	authSvc, err := auth.New(auth.Deps{
		DB: d.DB, ServerName: cfg.ServerName, Config: authCfg, Log: d.Log,
		Notify: notifier, Rooms: roomsSvc, Directory: roomsSvc, Devices: devices,
		Policy: policy.ForRequests(roomsSvc), Limiter: limiter,
	})
	if err != nil {
		return nil, err
	}
	pushSvc, err := push.New(ctx, push.Deps{
		DB: d.DB, Rooms: roomsSvc, AccountData: authSvc, Notify: notifier, Log: d.Log, Stopping: d.Stopping,
		Config: cfg.Push, Commits: commits, Devices: devices,
	})
	if err != nil {
		return nil, err
	}
	pushSvc.Start()
	keysSvc, err := keys.New(keys.Deps{
		DB: d.DB, Log: d.Log, Notify: notifier, Rooms: roomsSvc,
		Config: keys.Config{ServerName: cfg.ServerName},
		UIA:    authSvc.Reauthenticate, Devices: authSvc, Limiter: limiter, DeviceEvents: devices,
	})
	if err != nil {
		return nil, err
	}
	// sync only reads the others, so it comes after them. push gives it
	// the unread counts and keeps m.push_rules in the account data.
	syncSvc := chatsync.New(chatsync.Deps{
		DB: d.DB, Rooms: roomsSvc, AccountData: pushSvc.WithRules(authSvc), Keys: keysSvc, Unread: pushSvc,
		Notifier: notifier, Log: d.Log, Stopping: d.Stopping,
		Config: cfg.Sync,
	})
	if err := syncSvc.Init(ctx); err != nil {
		return nil, err
	}
	mediaSvc, err := media.New(media.Deps{
		DB: d.DB, Dir: cfg.MediaDir, ServerName: cfg.ServerName, Config: cfg.Media, Log: d.Log,
	})
	if err != nil {
		return nil, err
	}
	// admin drives the others on the server admin's behalf, and applies
	// what `chatalot admin` changed meanwhile.
	adminSvc, err := admin.New(ctx, admin.Deps{
		DB: d.DB, ServerName: cfg.ServerName, Auth: authSvc, Rooms: roomsSvc, Media: mediaSvc, Keys: devices,
		Log: d.Log, Config: adminCfg, Policy: policy,
	})
	if err != nil {
		return nil, err
	}
	followups, stopFollowups := context.WithCancel(context.Background())
	go func() { <-d.Stopping; stopFollowups() }()
	go adminSvc.RunFollowups(followups)
	// schedule sends delayed events (MSC4140) through rooms; rooms' send
	// routes, mounted below, hand it the sends that carry a delay.
	scheduleSvc, err := schedule.New(ctx, schedule.Deps{
		DB: d.DB, Rooms: roomsSvc, Log: d.Log, Stopping: d.Stopping, Config: cfg.Schedule,
		ManageLimit: limiter.PerIP(auth.RateDelayedEvents),
	})
	if err != nil {
		return nil, err
	}
	scheduleSvc.Start()
	caps := authSvc.Capabilities()
	for k, v := range mediaSvc.Capabilities() {
		caps[k] = v
	}
	r := api.NewRouter(cfg.Router)
	srv := server.New(server.Deps{
		ServerName: cfg.ServerName,
		BaseURL:    cfg.BaseURL,
		Key:        d.Key,
		Version:    cfg.Version,
		Versions:   SpecVersions,
		UnstableFeatures: map[string]bool{
			"org.chatalot.encryption_policy." + cfg.Rooms.Encryption: true,
			"org.matrix.msc4222": true, // use_state_after in /sync
			"org.matrix.msc3814": true, // dehydrated devices
			"org.matrix.msc4140": true, // delayed events
			"org.matrix.msc4306": true, // thread subscriptions
			"org.matrix.msc3391": true, // deleting account data
			"org.matrix.msc3874": true, // rel_types filters on /messages
			"org.matrix.msc3890": true, // device-local notification settings go with the device
		},
		Capabilities:       caps,
		DefaultRoomVersion: cfg.Rooms.DefaultRoomVersion,
	})
	srv.Routes(r)
	requireAuth := authSvc.Middleware()
	api.ClientAPI(r, requireAuth).GET("/capabilities", api.Handle(srv.Capabilities)) // v3 and r0
	authSvc.Routes(r)
	roomsSvc.Routes(r, requireAuth, scheduleSvc)
	syncSvc.Routes(r, requireAuth)
	keysSvc.Routes(r, requireAuth)
	mediaSvc.Routes(r, requireAuth)
	pushSvc.Routes(r, requireAuth)
	scheduleSvc.Routes(r, requireAuth)
	adminSvc.Routes(r, requireAuth)
	return &App{
		Router: r, Rooms: roomsSvc, Auth: authSvc, Sync: syncSvc, Push: pushSvc, Keys: keysSvc,
		Media: mediaSvc, Admin: adminSvc, Schedule: scheduleSvc,
	}, nil
}
