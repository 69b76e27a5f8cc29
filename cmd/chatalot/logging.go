package main

import (
	"flag"
	"io"
	"os"
	"os/signal"
	"reflect"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// newLogger returns the server's logger: human-readable lines by default,
// one JSON object per line with log_format json.
//
// The level lives in zerolog's global level rather than in the logger, so
// that a SIGHUP can change it at run time for every copy of the logger the
// services hold: a zerolog.Logger is a value, copied into each package at
// wiring time.
func newLogger(cfg Config, w io.Writer) zerolog.Logger {
	level, _ := zerolog.ParseLevel(cfg.LogLevel)
	zerolog.SetGlobalLevel(level)
	// Durations with their unit ("duration":"1.52ms"), not a bare number
	// of milliseconds that a reader has to know.
	zerolog.DurationFieldFormat = zerolog.DurationFormatString
	if cfg.LogFormat == "console" {
		// Colours only on a terminal: under systemd the journal would
		// show the escape codes.
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !isTerminal(w)}
	}
	return zerolog.New(w).Level(zerolog.DebugLevel).With().Timestamp().Logger()
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// reloadable are the settings a SIGHUP applies to the running server; any
// other change is reported as needing a restart.
var reloadable = map[string]func(Config){
	"log_level": func(c Config) {
		level, _ := zerolog.ParseLevel(c.LogLevel)
		zerolog.SetGlobalLevel(level)
	},
}

// reloader re-reads the configuration, from the same file, variables and
// flags as at start (so flags and CHATALOT_* variables still win over the
// file), and applies what is safe to change at run time.
type reloader struct {
	fs         *flag.FlagSet
	configPath *string
	set        map[string]*string
	running    Config // what the server runs with now
	log        zerolog.Logger
}

// watchReload reloads the configuration at every SIGHUP until stop is
// called.
func watchReload(fs *flag.FlagSet, configPath *string, set map[string]*string, cfg Config, log zerolog.Logger) (stop func()) {
	r := &reloader{fs: fs, configPath: configPath, set: set, running: cfg, log: log}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				r.reload()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

// reload applies one SIGHUP. An invalid configuration changes nothing.
func (r *reloader) reload() {
	next, path, err := loadConfig(r.fs, r.configPath, r.set)
	if err != nil {
		r.log.Error().Err(err).Msg("configuration not reloaded: the server goes on with the configuration it has")
		return
	}
	applied, restart := []string{}, []string{}
	cur, nv := reflect.ValueOf(&r.running).Elem(), reflect.ValueOf(next)
	for _, f := range fields() {
		if reflect.DeepEqual(cur.FieldByIndex(f.Index).Interface(), nv.FieldByIndex(f.Index).Interface()) {
			continue
		}
		key := f.Tag.Get("toml")
		apply, ok := reloadable[key]
		if !ok {
			restart = append(restart, key)
			continue
		}
		apply(next)
		cur.FieldByIndex(f.Index).Set(nv.FieldByIndex(f.Index))
		applied = append(applied, key)
	}
	// Logged at the new level or above, so that the line is always seen.
	level := max(zerolog.InfoLevel, zerolog.GlobalLevel())
	ev := r.log.WithLevel(level).Str("file", path).Strs("applied", applied).Strs("needs_restart", restart)
	if len(applied) > 0 {
		ev = ev.Str("log_level", r.running.LogLevel)
	}
	switch {
	case len(restart) > 0:
		ev.Msg("configuration reloaded; the settings in needs_restart take effect at the next start")
	case len(applied) == 0:
		ev.Msg("configuration reloaded: nothing changed")
	default:
		ev.Msg("configuration reloaded")
	}
}
