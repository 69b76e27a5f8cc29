package main

import (
	"context"
	"time"

	"github.com/chatalot/chatalot/media"
	"github.com/chatalot/chatalot/oauth"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/schedule"
	"github.com/chatalot/chatalot/server/app"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	chatsync "github.com/chatalot/chatalot/sync"
)

// testClock, when a test sets it before openApp, is the clock of media
// and admin (media retention); nil is time.Now.
var testClock func() time.Time

// wire migrates every package's tables and builds the server (server/app)
// on the data directory.
func (a *App) wire(ctx context.Context) error {
	if err := checkSQLiteLeftBehind(ctx, a.db, pathsOf(a.cfg.DataDir)); err != nil {
		return err
	}
	if err := a.db.Migrate(ctx, append([]storage.Schema{identitySchema}, app.Schemas...)...); err != nil {
		return err
	}
	logMigrations(a.log, a.db)
	if err := checkServerName(ctx, a.db, a.cfg.DataDir, a.cfg.ServerName); err != nil {
		return err
	}
	cfg, err := a.appConfig()
	if err != nil {
		return err
	}
	built, err := app.New(ctx, cfg, app.Deps{DB: a.db, Key: a.key, Log: a.log, Stopping: a.stopping, Now: testClock})
	if err != nil {
		return err
	}
	a.router = built.Router
	return nil
}

// appConfig turns the server configuration into each package's.
func (a *App) appConfig() (app.Config, error) {
	authCfg, err := a.cfg.authConfig()
	if err != nil {
		return app.Config{}, err
	}
	return app.Config{
		ServerName: a.serverName(),
		BaseURL:    a.cfg.BaseURL(),
		Version:    version,
		MediaDir:   pathsOf(a.cfg.DataDir).media,
		Rooms:      rooms.Config{Encryption: a.cfg.Encryption, DefaultRoomVersion: spec.RoomVersion(a.cfg.DefaultRoomVersion)},
		Auth:       authCfg,
		Sync:       chatsync.Config{Presence: a.cfg.Presence},
		Push:       a.cfg.pushConfig(),
		Media:      a.mediaConfig(),
		Admin:      a.cfg.adminConfig(),
		Schedule:   schedule.DefaultConfig(),
		Router:     a.routerOptions(),
		OAuth:      a.oauthConfig(),
		Federation: a.cfg.federationConfig(),
	}, nil
}

// mediaConfig turns the server configuration into the media package's.
func (a *App) mediaConfig() media.Config {
	return media.Config{
		MaxUploadBytes:       a.cfg.MaxUploadBytes,
		QuotaBytes:           a.cfg.MediaQuotaBytes,
		MaxThumbnailPixels:   a.cfg.MaxThumbnailPixels,
		ServeUnauthenticated: a.cfg.UnauthenticatedMedia,
		TURN:                 media.TURNConfig{URIs: a.cfg.turnURIs(), Secret: a.cfg.TURNSharedSecret, TTL: a.cfg.durations.turnUserLifetime},
	}
}

// oauthConfig turns the server configuration into the oauth package's, or
// nil with the OAuth 2.0 API off.
func (a *App) oauthConfig() *oauth.Config {
	if !a.cfg.OAuth {
		return nil
	}
	c := oauth.DefaultConfig()
	c.AccessTokenLifetime = a.cfg.durations.oauthTokenLifetime
	return &c
}
