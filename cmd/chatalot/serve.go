package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

// serve runs the homeserver until SIGTERM or SIGINT.
func serve(args []string) error {
	fs := newFlagSet("serve")
	configPath, set := configFlags(fs)
	if err := parseFlags(fs, args, serveHelp); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("serve: unexpected argument %q (run \"chatalot serve -h\" for its flags)", fs.Arg(0))
	}
	cfg, _, err := loadConfig(fs, configPath, set)
	if err != nil {
		return err
	}
	log := newLogger(cfg, os.Stderr)
	_, warnings := unknownVariables(os.Environ())
	for _, w := range warnings {
		log.Warn().Msg(w)
	}

	stopCPUProfile, err := startCPUProfile()
	if err != nil {
		return err
	}
	defer stopCPUProfile()
	// The sockets first: a port in use must stop the server before it
	// creates anything in a new data directory.
	ln, err := listen("listen", cfg.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	ln = api.LimitConnections(ln, int(cfg.MaxConnsPerIP), cfg.trustedProxies())
	fedLn, err := federationListener(cfg)
	if err != nil {
		return err
	}
	if fedLn != nil {
		defer fedLn.Close()
	}
	var metricsLn net.Listener
	if cfg.Metrics && cfg.MetricsListen != "" {
		if metricsLn, err = listen("metrics_listen", cfg.MetricsListen); err != nil {
			return err
		}
		defer metricsLn.Close()
	}
	app, err := openApp(cfg, log)
	if err != nil {
		return err
	}
	defer app.Close()
	defer writeHeapProfile()
	stopMetrics := app.serveMetrics(metricsLn)
	defer stopMetrics(context.Background())

	srv := &http.Server{
		Handler:           app.Handler(),               // the router, measured when metrics are on
		ReadHeaderTimeout: cfg.durations.headerTimeout, // slow-header clients are cut off
		IdleTimeout:       120 * time.Second,
		ErrorLog:          nil,
	}
	if cfg.Registration == "open" {
		log.Warn().Msg("registration is open: anyone who can reach this server can create an account")
	}
	log.Info().Str("server_name", cfg.ServerName).Str("listen", ln.Addr().String()).
		Str("data_dir", cfg.DataDir).Str("version", version).Msg("Chatalot is serving")
	if fedLn != nil {
		// The same handler: the federation and key routes are among its
		// routes; TLS is this listener's.
		fedSrv := &http.Server{Handler: app.Handler(), ReadHeaderTimeout: cfg.durations.headerTimeout, IdleTimeout: 120 * time.Second}
		go func() { _ = fedSrv.Serve(fedLn) }()
		defer fedSrv.Close()
		log.Info().Str("federation_listen", fedLn.Addr().String()).Msg("serving federation over TLS")
	}
	stopReload := watchReload(fs, configPath, set, cfg, log) // SIGHUP
	defer stopReload()
	return serveUntilSignal(srv, ln, app, cfg.durations.shutdownGrace, log)
}

// serveUntilSignal serves until SIGTERM or SIGINT, then shuts down: it
// stops accepting, ends long-polls (they answer at once) and lets in-flight
// requests finish within grace.
func serveUntilSignal(srv *http.Server, ln net.Listener, app *App, grace time.Duration, log zerolog.Logger) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case sig := <-sigs:
		log.Info().Str("signal", sig.String()).Msg("shutting down")
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	app.BeginShutdown()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn().Err(err).Msg("in-flight requests did not finish in time")
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info().Msg("stopped")
	return nil
}

// startCPUProfile writes a CPU profile to CHATALOT_CPU_PROFILE=FILE until
// the returned function is called at shutdown: how performance work finds
// its costs (see the README's Performance).
func startCPUProfile() (stop func(), err error) {
	path := os.Getenv("CHATALOT_CPU_PROFILE")
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeHeapProfile writes what is live on the heap to
// CHATALOT_HEAP_PROFILE=FILE, if set; serve calls it at shutdown, before
// the services let go of it.
func writeHeapProfile() {
	path := os.Getenv("CHATALOT_HEAP_PROFILE")
	if path == "" {
		return
	}
	if f, err := os.Create(path); err == nil {
		runtime.GC()
		_ = pprof.WriteHeapProfile(f)
		f.Close()
	}
}

// listen opens the listening socket of a setting, naming the setting when
// it cannot.
func listen(key, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("%s: %s is already in use by another program (or another Chatalot); stop it, or choose another address with %s (--%s, %s)",
			key, addr, key, strings.ReplaceAll(key, "_", "-"), "CHATALOT_"+strings.ToUpper(key))
	case err != nil:
		return nil, fmt.Errorf("%s: cannot listen on %s: %w", key, addr, err)
	}
	return ln, nil
}

// dataPaths are the files inside the data directory.
type dataPaths struct{ dir, db, key, media string }

func pathsOf(dir string) dataPaths {
	return dataPaths{
		dir:   dir,
		db:    filepath.Join(dir, "chatalot.db"),
		key:   filepath.Join(dir, signingKeyFile),
		media: filepath.Join(dir, "media"),
	}
}

// App is the wired server: every domain service on one database.
type App struct {
	cfg      Config
	log      zerolog.Logger
	db       *storage.DB
	key      events.SigningKey
	stopping chan struct{}
	router   http.Handler
	lock     *dataLock // held while the server uses the data directory
	metrics  *metrics  // nil unless metrics are on
}

// openApp creates the data directory on first start, loads the signing key,
// opens and migrates the database, and wires the services.
func openApp(cfg Config, log zerolog.Logger) (*App, error) {
	// Validate also parses the duration settings the services are built
	// with; loadConfig has run it already, a test's configuration has not.
	if ps := cfg.Validate(); len(ps) > 0 {
		return nil, ps
	}
	p := pathsOf(cfg.DataDir)
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	// One server per data directory: two would each keep the stream
	// position and room state in memory and overwrite each other's.
	lock, err := lockDataDir(p.dir)
	if err != nil {
		return nil, err
	}
	key, err := loadOrCreateSigningKey(p.key, cfg.ServerName)
	if err != nil {
		lock.release()
		return nil, err
	}
	db, err := storage.Open(cfg.databaseAt(p), storage.Options{Durability: cfg.Durability, FilePath: p.db, Serving: true})
	if err != nil {
		lock.release()
		return nil, err
	}
	a := &App{cfg: cfg, log: log, db: db, key: key, stopping: make(chan struct{}), lock: lock}
	if err := a.wire(context.Background()); err != nil {
		db.Close()
		lock.release()
		return nil, err
	}
	if cfg.Metrics {
		a.metrics = newMetrics(a)
	}
	return a, nil
}

// Router is the HTTP handler of the whole server.
func (a *App) Router() http.Handler { return a.router }

// BeginShutdown tells long-running requests to finish now.
func (a *App) BeginShutdown() {
	select {
	case <-a.stopping:
	default:
		close(a.stopping)
	}
}

// Close closes the database cleanly, then lets go of the data directory.
func (a *App) Close() error {
	err := a.db.Close()
	a.lock.release()
	return err
}

func (a *App) serverName() spec.ServerName { return spec.ServerName(a.cfg.ServerName) }

func (a *App) routerOptions() api.Options {
	return api.Options{Log: a.log, MaxBodyBytes: a.cfg.MaxBodyBytes, LogIPAddresses: a.cfg.LogIPAddresses,
		TrustedProxies: a.cfg.trustedProxies(), BodyIdleTimeout: a.cfg.durations.bodyIdle,
		BodyMinRate: bodyMinRate(a.cfg.BodyMinRate), WriteIdleTimeout: a.cfg.durations.writeIdle}
}

// bodyMinRate is body_min_rate as api takes it (negative: no minimum).
func bodyMinRate(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}
