// Package media is the content repository: uploads (direct and the
// asynchronous create-then-PUT pair), authenticated downloads and
// thumbnails, the frozen legacy endpoints, the media configuration, and the
// VoIP TURN credentials endpoint that sits beside it in the spec's modules.
//
// Every upload is treated as hostile. Files in encrypted rooms arrive
// already encrypted by the client, so the server stores bytes it cannot
// read; it never trusts a declared type to decide how a browser renders
// them, never decodes an image whose declared size is over a limit, and
// never lets a client-chosen name reach a header unescaped.
//
// Bytes live on disk under Dir, content-addressed by SHA-256 so that equal
// uploads share one file; the database holds what each media ID points at.
package media

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/rs/zerolog"
)

// Config is what an admin can tune. Zero values take the defaults below.
type Config struct {
	// MaxUploadBytes is the largest upload accepted (413 M_TOO_LARGE over it).
	MaxUploadBytes int64
	// QuotaBytes is how many bytes of media one user may keep; 0 means no
	// quota. Each upload counts in full against its uploader, even when
	// its bytes are shared with an equal upload (a user cannot know that).
	QuotaBytes int64
	// MaxThumbnailPixels is the largest declared width×height the server
	// will decode to make a thumbnail; larger images get 413 M_TOO_LARGE
	// without their pixels ever being read.
	MaxThumbnailPixels int64
	// ServeUnauthenticated serves the deprecated /_matrix/media/v3 download
	// and thumbnail endpoints without an access token. Off by default: the
	// spec (v1.11) says servers SHOULD freeze them, and they let anyone who
	// learns an mxc:// URI fetch the media.
	ServeUnauthenticated bool
	// MaxPendingUploads bounds the unused IDs from /create one user may hold
	// at once (429 M_LIMIT_EXCEEDED over it).
	MaxPendingUploads int
	// UnusedExpiry is how long an ID from /create waits for its upload.
	UnusedExpiry time.Duration
	// MaxRemoteBytes is the largest media fetched from another server
	// (502 M_TOO_LARGE over it); 0 means MaxUploadBytes.
	MaxRemoteBytes int64
	// RemoteFetchTimeout bounds one fetch of remote media.
	RemoteFetchTimeout time.Duration
	// TURN configures /voip/turnServer; with no URIs or no secret the
	// endpoint gives the empty answer and no TURN server is advertised.
	TURN TURNConfig
}

// TURNConfig is a coturn-style TURN REST API setup ("use-auth-secret").
type TURNConfig struct {
	URIs   []string      // turn: and turns: URIs handed to clients
	Secret string        // static-auth-secret shared with the TURN server
	TTL    time.Duration // how long issued credentials stay valid
}

// Defaults of Config.
const (
	DefaultMaxUploadBytes     = 50 << 20
	DefaultMaxThumbnailPixels = 32 << 20 // 8K (7680×4320) fits
	DefaultMaxPendingUploads  = 20
	DefaultUnusedExpiry       = 24 * time.Hour // the spec's recommendation
	DefaultTURNTTL            = time.Hour
)

func (c Config) withDefaults() Config {
	if c.MaxUploadBytes <= 0 {
		c.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if c.MaxThumbnailPixels <= 0 {
		c.MaxThumbnailPixels = DefaultMaxThumbnailPixels
	}
	if c.MaxPendingUploads <= 0 {
		c.MaxPendingUploads = DefaultMaxPendingUploads
	}
	if c.UnusedExpiry <= 0 {
		c.UnusedExpiry = DefaultUnusedExpiry
	}
	if c.MaxRemoteBytes <= 0 {
		c.MaxRemoteBytes = c.MaxUploadBytes
	}
	if c.RemoteFetchTimeout <= 0 {
		c.RemoteFetchTimeout = DefaultRemoteFetchTimeout
	}
	if c.TURN.TTL <= 0 {
		c.TURN.TTL = DefaultTURNTTL
	}
	return c
}

// Deps are what the service is built from.
type Deps struct {
	DB         *storage.DB
	Dir        string // the media directory, DATA_DIR/media
	ServerName spec.ServerName
	Config     Config
	Log        zerolog.Logger
	// Now is the clock; nil means time.Now. Tests move it to expire IDs.
	Now func() time.Time
	// Federation fetches other servers' media (remote.go); nil with
	// federation off, when remote media is 404 M_NOT_FOUND.
	Federation Federation
}

// Service is the content repository.
type Service struct {
	db         *storage.DB
	blobs      *blobStore
	serverName spec.ServerName
	cfg        Config
	log        zerolog.Logger
	now        func() time.Time

	// blobMu orders placing a blob and recording a reference to it against
	// deleting the last reference and unlinking the blob. Uploads and
	// thumbnails hold it shared from "the file is in place" until their row
	// is committed; deletes hold it exclusively from their transaction until
	// the unlink. Without it a delete could count zero references, an upload
	// of the same bytes could find the file and commit its row, and the
	// delete would then unlink a file that a visible row points at.
	blobMu sync.RWMutex

	// uploaded is closed and replaced whenever an asynchronous upload
	// completes, waking downloads that wait for pending media.
	uploaded broadcast

	// thumbSlots bounds how many images are decoded at once: decoding is
	// where memory goes, so the bound is on memory as much as on CPU.
	thumbSlots chan struct{}
	thumbs     flights[thumbResult]

	fed     Federation // nil: federation off
	fetches flights[struct{}]
}

// New opens the media directory (creating it on first start), removes what a
// crash left behind (staging files, and blobs placed whose row was never
// committed), and returns the service. Call it after migrating Schema and
// before serving requests.
func New(d Deps) (*Service, error) {
	if d.DB == nil {
		return nil, errors.New("media: no database")
	}
	if d.Dir == "" {
		return nil, errors.New("media: no directory")
	}
	if _, err := spec.ParseServerName(string(d.ServerName)); err != nil {
		return nil, fmt.Errorf("media: server name: %w", err)
	}
	blobs, err := openBlobStore(d.Dir)
	if err != nil {
		return nil, err
	}
	clock := d.Now
	if clock == nil {
		clock = time.Now
	}
	slots := runtime.NumCPU() / 2
	if slots < 1 {
		slots = 1
	}
	s := &Service{
		db:         d.DB,
		blobs:      blobs,
		serverName: d.ServerName,
		cfg:        d.Config.withDefaults(),
		log:        d.Log,
		now:        clock,
		thumbSlots: make(chan struct{}, slots),
		fed:        d.Federation,
	}
	s.uploaded.init()
	// IDs from /create that lapsed unused are dropped at each start (and
	// per user at their next /create), so they cannot pile up.
	now := s.now().UnixMilli()
	if err := d.DB.Write(context.Background(), func(tx *storage.Tx) error {
		_, err := tx.Exec(`DELETE FROM media WHERE sha256 IS NULL AND expires_ts < $1`, now)
		return err
	}); err != nil {
		return nil, fmt.Errorf("media: drop lapsed IDs: %w", err)
	}
	if err := s.sweepOrphans(context.Background()); err != nil {
		return nil, err
	}
	return s, nil
}

// MaxUploadBytes is the effective upload limit, as /media/config reports it.
func (s *Service) MaxUploadBytes() int64 { return s.cfg.MaxUploadBytes }

// broadcast wakes every waiter at once: waiters take the current channel,
// check their condition, and wait on the channel; notify closes it and puts
// a fresh one in place. A waiter that took the channel before checking can
// never miss a notification that comes after its check.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) init() { b.ch = make(chan struct{}) }

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) notify() {
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
}

// flights makes concurrent requests for the same thumbnail (or remote
// media) share one making: the first does the work, the others wait for
// its result.
type flights[T any] struct {
	mu sync.Mutex
	m  map[string]*flight[T]
}

var errFlightAborted = errors.New("media work aborted")

type flight[T any] struct {
	done chan struct{}
	res  T
	err  error
}

func (f *flights[T]) do(ctx context.Context, key string, fn func() (T, error)) (T, error) {
	var zero T
	f.mu.Lock()
	if f.m == nil {
		f.m = map[string]*flight[T]{}
	}
	if fl, ok := f.m[key]; ok {
		f.mu.Unlock()
		select {
		case <-fl.done:
			return fl.res, fl.err
		case <-ctx.Done():
			return zero, ctx.Err()
		}
	}
	fl := &flight[T]{done: make(chan struct{})}
	f.m[key] = fl
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.m, key)
		f.mu.Unlock()
		close(fl.done)
	}()
	fl.err = errFlightAborted // stays if fn panics: waiters must not see a zero result as success
	fl.res, fl.err = fn()
	return fl.res, fl.err
}
