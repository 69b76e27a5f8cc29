package main

import (
	"context"
	"errors"
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
	notifier := chatsync.NewNotifier(a.db)
	roomsSvc, err := rooms.New(ctx, rooms.Deps{
		DB: a.db, Key: a.key, Server: a.serverName(), Log: a.log, Notify: notifier,
		Config: rooms.Config{Encryption: a.cfg.Encryption, DefaultRoomVersion: spec.RoomVersion(a.cfg.DefaultRoomVersion)},
	})
	if err != nil {
		return err
	}
	authCfg, err := a.cfg.authConfig()
	if err != nil {
		return err
	}
	authSvc, err := auth.New(auth.Deps{
		DB: a.db, ServerName: a.serverName(), Config: authCfg, Log: a.log,
		Notify: notifier, Rooms: roomsSvc, Directory: roomsSvc,
	})
	if err != nil {
		return err
	}
	roomsSvc.SetProfiles(authSvc)
	syncSvc := chatsync.New(chatsync.Deps{
		DB: a.db, Rooms: roomsSvc, AccountData: authSvc, Notifier: notifier, Log: a.log, Stopping: a.stopping,
		Config: chatsync.Config{Presence: a.cfg.Presence},
	})
	if err := syncSvc.Init(ctx); err != nil {
		return err
	}
	// push takes part in every commit of events (notifications and unread
	// counts commit with them), gives /sync the counts, and keeps
	// m.push_rules in the account data /sync delivers.
	pushSvc, err := push.New(ctx, push.Deps{
		DB: a.db, Rooms: roomsSvc, AccountData: authSvc, Notify: notifier, Log: a.log, Stopping: a.stopping,
		Config: a.cfg.pushConfig(),
	})
	if err != nil {
		return err
	}
	roomsSvc.SetCommitHook(pushSvc)
	syncSvc.SetUnread(pushSvc)
	syncSvc.SetAccountData(pushSvc.WithRules(authSvc))
	pushSvc.Start()
	// keys re-checks the password through auth's UIA, and hears of every
	// device auth adds, renames or deletes.
	keysSvc, err := keys.New(keys.Deps{
		DB: a.db, Log: a.log, Notify: notifier, Rooms: roomsSvc,
		Config: keys.Config{ServerName: a.serverName()},
		UIA:    authSvc.Reauthenticate, Devices: authSvc, Limiter: authSvc.Limiter(),
	})
	if err != nil {
		return err
	}
	devices := deviceHooks{keys: keysSvc, push: pushSvc}
	authSvc.SetDeviceHooks(devices)
	syncSvc.SetKeys(keysSvc)
	mediaSvc, err := media.New(media.Deps{
		DB: a.db, Dir: pathsOf(a.cfg.DataDir).media, ServerName: a.serverName(), Config: a.mediaConfig(), Log: a.log,
	})
	if err != nil {
		return err
	}
	// admin drives the others on the server admin's behalf; its policies
	// refuse locked and suspended accounts (auth) and joins to blocked rooms
	// (rooms), and it applies what `chatalot admin` changed meanwhile.
	adminSvc, err := admin.New(ctx, admin.Deps{
		DB: a.db, ServerName: a.serverName(), Auth: authSvc, Rooms: roomsSvc, Media: mediaSvc, Keys: devices,
		Log: a.log, Config: a.cfg.adminConfig(),
	})
	if err != nil {
		return err
	}
	adminSvc.Hooks()
	followups, stopFollowups := context.WithCancel(context.Background())
	go func() { <-a.stopping; stopFollowups() }()
	go adminSvc.RunFollowups(followups)
	go adminSvc.RunRetention(followups) // message retention (MSC1763)
	// schedule sends delayed events (MSC4140) through rooms; rooms hands it
	// the sends that carry a delay.
	scheduleSvc, err := schedule.New(ctx, schedule.Deps{
		DB: a.db, Rooms: roomsSvc, Log: a.log, Stopping: a.stopping, Config: schedule.DefaultConfig(),
		ManageLimit: authSvc.Limiter().PerIP(auth.RateDelayedEvents),
	})
	if err != nil {
		return err
	}
	roomsSvc.SetDelayer(scheduleSvc)
	// A room purge deletes every package's rows about the room in one
	// transaction: rooms' own and those of these.
	adminSvc.ForgetRoomsWith(syncSvc, pushSvc, authSvc, keysSvc, scheduleSvc)
	if err := adminSvc.ResumePurges(ctx); err != nil {
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
	roomsSvc.SetLimits(authSvc.Limiter().PerUser)
	roomsSvc.Routes(r, requireAuth)
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

// deviceHooks tells the E2EE directory of every device change, and push of
// deletions: a device's keys and its pushers go with it.
type deviceHooks struct {
	keys *keys.Service
	push *push.Service
}

func (h deviceHooks) DeviceAdded(ctx context.Context, user spec.UserID, id, name string) error {
	return h.keys.DeviceAdded(ctx, user, id, name)
}

func (h deviceHooks) DeviceUpdated(ctx context.Context, user spec.UserID, id, name string) error {
	return h.keys.DeviceUpdated(ctx, user, id, name)
}

func (h deviceHooks) DeviceDeleted(ctx context.Context, user spec.UserID, id string) error {
	return errors.Join(h.keys.DeviceDeleted(ctx, user, id), h.push.DeviceDeleted(ctx, user, id))
}
