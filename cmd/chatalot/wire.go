package main

import (
	"context"
	"time"

	"github.com/chatalot/chatalot/admin"
	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/keys"
	"github.com/chatalot/chatalot/media"
	"github.com/chatalot/chatalot/push"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/schedule"
	"github.com/chatalot/chatalot/server"
	"github.com/chatalot/chatalot/spec"
	chatsync "github.com/chatalot/chatalot/sync"
)

// specVersions are the client-server API versions whose endpoints Chatalot
// serves; the list grows as features land.
var specVersions = []string{"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11"}

// wire migrates every package's tables and mounts every package's routes.
func (a *App) wire(ctx context.Context) error {
	if err := a.db.Migrate(ctx, identitySchema, auth.Schema, rooms.Schema, chatsync.Schema, keys.Schema, media.Schema, push.Schema, admin.Schema, schedule.Schema); err != nil {
		return err
	}
	logMigrations(a.log, a.db)
	if err := checkServerName(ctx, a.db, a.cfg.DataDir, a.cfg.ServerName); err != nil {
		return err
	}
	// Every collaborator is passed at construction. The order follows the
	// edges; where two packages call each other at run time, the cycle is
	// broken by a value built before both (see each comment), never by a
	// setter after the fact.
	notifier := chatsync.NewNotifier(a.db)
	authCfg, err := a.cfg.authConfig()
	if err != nil {
		return err
	}
	// auth ⇄ rooms: auth drives rooms (profile changes, deactivation, the
	// user directory), and rooms reads auth's profiles and rate limits. The
	// limiter and a profile reader over the accounts table need nothing but
	// the configuration and the database, so they are built first and
	// rooms gets them; auth gets rooms.
	limiter := auth.NewLimiter(authCfg.RateLimits, authCfg.Rates)
	users := auth.NewUserReader(a.db)
	// admin ⇄ (auth, rooms): admin drives both, and both consult its
	// policy. The policy is admin's memory of flags, blocked rooms and
	// notices rooms, loaded from its own tables before the others.
	adminCfg := a.cfg.adminConfig()
	policy, err := admin.NewPolicy(ctx, a.db, adminCfg.LogIPAddresses)
	if err != nil {
		return err
	}
	// rooms ⇄ push: every commit of events runs push's part (notifications
	// and unread counts commit with the events), and push reads rooms. The
	// commit-hook list is built first; rooms commits through it and push
	// joins it while it is built, after rooms.
	commits := &rooms.CommitHooks{}
	roomsSvc, err := rooms.New(ctx, rooms.Deps{
		DB: a.db, Key: a.key, Server: a.serverName(), Log: a.log, Notify: notifier,
		Config:   rooms.Config{Encryption: a.cfg.Encryption, DefaultRoomVersion: spec.RoomVersion(a.cfg.DefaultRoomVersion)},
		Profiles: users, CommitHook: commits, Guard: policy.GuardMembership, Limits: limiter.PerUser,
	})
	if err != nil {
		return err
	}
	// auth ⇄ (keys, push): auth tells keys and push of device changes, and
	// keys re-checks passwords through auth's UIA while push keeps
	// m.push_rules in auth's account data. As with commits, auth is given
	// a list built first, which keys and push join as they are built.
	devices := &auth.DeviceEvents{}
	authSvc, err := auth.New(auth.Deps{
		DB: a.db, ServerName: a.serverName(), Config: authCfg, Log: a.log,
		Notify: notifier, Rooms: roomsSvc, Directory: roomsSvc, Devices: devices,
		Policy: policy.ForRequests(roomsSvc), Limiter: limiter,
	})
	if err != nil {
		return err
	}
	pushSvc, err := push.New(ctx, push.Deps{
		DB: a.db, Rooms: roomsSvc, AccountData: authSvc, Notify: notifier, Log: a.log, Stopping: a.stopping,
		Config: a.cfg.pushConfig(), Commits: commits, Devices: devices,
	})
	if err != nil {
		return err
	}
	pushSvc.Start()
	keysSvc, err := keys.New(keys.Deps{
		DB: a.db, Log: a.log, Notify: notifier, Rooms: roomsSvc,
		Config: keys.Config{ServerName: a.serverName()},
		UIA:    authSvc.Reauthenticate, Devices: authSvc, Limiter: limiter, DeviceEvents: devices,
	})
	if err != nil {
		return err
	}
	// sync only reads the others, so it comes after them. push gives it
	// the unread counts and keeps m.push_rules in the account data.
	syncSvc := chatsync.New(chatsync.Deps{
		DB: a.db, Rooms: roomsSvc, AccountData: pushSvc.WithRules(authSvc), Keys: keysSvc, Unread: pushSvc,
		Notifier: notifier, Log: a.log, Stopping: a.stopping,
		Config: chatsync.Config{Presence: a.cfg.Presence},
	})
	if err := syncSvc.Init(ctx); err != nil {
		return err
	}
	mediaSvc, err := media.New(media.Deps{
		DB: a.db, Dir: pathsOf(a.cfg.DataDir).media, ServerName: a.serverName(), Config: a.mediaConfig(), Log: a.log,
	})
	if err != nil {
		return err
	}
	// admin drives the others on the server admin's behalf, and applies
	// what `chatalot admin` changed meanwhile.
	adminSvc, err := admin.New(ctx, admin.Deps{
		DB: a.db, ServerName: a.serverName(), Auth: authSvc, Rooms: roomsSvc, Media: mediaSvc, Keys: devices,
		Log: a.log, Config: adminCfg, Policy: policy,
	})
	if err != nil {
		return err
	}
	followups, stopFollowups := context.WithCancel(context.Background())
	go func() { <-a.stopping; stopFollowups() }()
	go adminSvc.RunFollowups(followups)
	// schedule sends delayed events (MSC4140) through rooms; rooms' send
	// routes, mounted below, hand it the sends that carry a delay.
	scheduleSvc, err := schedule.New(ctx, schedule.Deps{
		DB: a.db, Rooms: roomsSvc, Log: a.log, Stopping: a.stopping, Config: schedule.DefaultConfig(),
		ManageLimit: limiter.PerIP(auth.RateDelayedEvents),
	})
	if err != nil {
		return err
	}
	scheduleSvc.Start()
	caps := authSvc.Capabilities()
	for k, v := range mediaSvc.Capabilities() {
		caps[k] = v
	}
	r := api.NewRouter(a.routerOptions())
	srv := server.New(server.Deps{
		ServerName: a.serverName(),
		BaseURL:    a.cfg.BaseURL(),
		Key:        a.key,
		Version:    version,
		Versions:   specVersions,
		UnstableFeatures: map[string]bool{
			"org.chatalot.encryption_policy." + a.cfg.Encryption: true,
			"org.matrix.msc4222": true, // use_state_after in /sync
			"org.matrix.msc3814": true, // dehydrated devices
			"org.matrix.msc4140": true, // delayed events
			"org.matrix.msc4306": true, // thread subscriptions
			"org.matrix.msc3391": true, // deleting account data
			"org.matrix.msc3874": true, // rel_types filters on /messages
			"org.matrix.msc3890": true, // device-local notification settings go with the device
		},
		Capabilities:       caps,
		DefaultRoomVersion: spec.RoomVersion(a.cfg.DefaultRoomVersion),
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
	a.router = r
	return nil
}

// mediaConfig turns the server configuration into the media package's.
func (a *App) mediaConfig() media.Config {
	ttl, _ := time.ParseDuration(a.cfg.TURNUserLifetime) // validated at load
	return media.Config{
		MaxUploadBytes:       a.cfg.MaxUploadBytes,
		QuotaBytes:           a.cfg.MediaQuotaBytes,
		MaxThumbnailPixels:   a.cfg.MaxThumbnailPixels,
		ServeUnauthenticated: a.cfg.UnauthenticatedMedia,
		TURN:                 media.TURNConfig{URIs: a.cfg.turnURIs(), Secret: a.cfg.TURNSharedSecret, TTL: ttl},
	}
}
