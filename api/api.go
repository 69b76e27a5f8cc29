// Package api is the HTTP plumbing every domain package shares: the router
// with its middleware (errors, panics, CORS, body limits, access log), and
// helpers to read request bodies into Matrix errors instead of 500s.
package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
)

// Options configure the router.
type Options struct {
	Log zerolog.Logger
	// MaxBodyBytes caps every request body unless a route raises it with
	// BodyLimit (media uploads). Over it: 413 M_TOO_LARGE.
	MaxBodyBytes int64
	// LogIPAddresses adds the client address to access logs. Off by default:
	// Chatalot keeps no IP history unless the admin asks for it.
	LogIPAddresses bool
	// BodyIdleTimeout cuts off a client that stops sending its request
	// body for this long (default 30s): a stalled upload must not hold a
	// connection and a temporary file forever.
	BodyIdleTimeout time.Duration
	// BodyMinRate, in bytes per second, is the least average rate a request
	// body must arrive at once BodyIdleTimeout has passed (default 1024; a
	// negative value turns it off): a body trickled a byte at a time is
	// never idle, but must not hold a connection for ever either.
	BodyMinRate int64
	// WriteIdleTimeout cuts off a client that stops reading its response
	// for this long (default 30s). The deadline moves at every write, so a
	// long-poll may wait as long as it likes before it answers.
	WriteIdleTimeout time.Duration
	// TrustedProxies are the addresses (or CIDR ranges) of reverse proxies
	// whose X-Forwarded-For is believed. Nobody's by default: otherwise any
	// client could pick the address its rate limits are counted under.
	TrustedProxies []string
}

// DefaultMaxBodyBytes is the default request body cap for JSON endpoints.
const DefaultMaxBodyBytes = 1 << 20

func init() { gin.SetMode(gin.ReleaseMode) }

// NewRouter returns a gin engine with Chatalot's middleware: every error a
// handler reports with c.Error is rendered as a Matrix error in one place.
func NewRouter(o Options) *gin.Engine {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	r := gin.New()
	_ = r.SetTrustedProxies(o.TrustedProxies) // validated with the configuration
	r.HandleMethodNotAllowed = true
	r.RemoveExtraSlash = false
	// Route on the raw path so that an escaped "/" inside an ID does not
	// split it, and unescape parameters ourselves: gin's own unescaping is
	// the query-string kind, which turns "+" (valid in user IDs and base64
	// session IDs) into a space.
	r.UseRawPath = true
	r.UnescapePathValues = false
	r.ContextWithFallback = true
	if o.BodyIdleTimeout <= 0 {
		o.BodyIdleTimeout = 30 * time.Second
	}
	if o.BodyMinRate == 0 {
		o.BodyMinRate = 1024
	}
	if o.WriteIdleTimeout <= 0 {
		o.WriteIdleTimeout = 30 * time.Second
	}
	r.Use(writeDeadline(o.WriteIdleTimeout), plainJSONType, accessLog(o), recovery(o.Log), cors,
		bodyLimit(o.MaxBodyBytes, o.BodyIdleTimeout, max(o.BodyMinRate, 0)), renderErrors(o.Log), unescapeParams)
	r.NoRoute(Handle(func(c *gin.Context) error { return spec.Unrecognized("unrecognized request") }))
	r.NoMethod(Handle(func(c *gin.Context) error {
		return spec.Unrecognized("method not allowed").WithStatus(http.StatusMethodNotAllowed)
	}))
	return r
}

// newErrorID returns a short random ID that ties a 500 to its log line.
func newErrorID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// renderErrors writes the last error a handler reported. A *spec.Error goes
// out as is; anything else is a server fault: logged with an ID that the
// client also sees, answered 500 M_UNKNOWN.
func renderErrors(log zerolog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Next()
		if len(c.Errors) == 0 || c.Writer.Written() {
			return
		}
		err := c.Errors.Last().Err
		var me *spec.Error
		if errors.As(err, &me) {
			c.JSON(me.Status, me.Body())
			return
		}
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			me = spec.TooLarge("request body is over %d bytes", tooLarge.Limit)
			c.JSON(me.Status, me.Body())
			return
		}
		if errors.Is(err, errBodyStalled) {
			c.Header("Connection", "close")
			me = spec.NewError(spec.ErrUnknown, "the request body stopped arriving").WithStatus(http.StatusRequestTimeout)
			c.JSON(me.Status, me.Body())
			return
		}
		id := newErrorID()
		c.Set(errorIDKey, id)
		log.Error().Err(err).Str("error_id", id).Str("route", c.FullPath()).Msg("internal error")
		c.JSON(http.StatusInternalServerError, gin.H{"errcode": spec.ErrUnknown, "error": "internal server error (error ID " + id + ")"})
	}
}

const errorIDKey = "chatalot.error_id"

// recovery turns a panic into a logged 500 M_UNKNOWN and keeps serving.
func recovery(log zerolog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler {
				panic(p)
			}
			id := newErrorID()
			c.Set(errorIDKey, id)
			log.Error().Str("error_id", id).Str("route", c.FullPath()).Interface("panic", p).Msg("handler panicked")
			if !c.Writer.Written() {
				c.AbortWithStatusJSON(http.StatusInternalServerError, gin.H{"errcode": spec.ErrUnknown, "error": "internal server error (error ID " + id + ")"})
			}
		}()
		c.Next()
	}
}

// cors answers preflight requests and marks every response readable by
// browser clients, as the client-server API's "Web Browser Clients" section
// requires.
func cors(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
	if c.Request.Method == http.MethodOptions {
		c.AbortWithStatus(http.StatusNoContent)
		return
	}
	c.Next()
}

// unescapeParams percent-decodes path parameters as paths are decoded.
// A parameter that does not decode is refused. When the request's path
// needed no escaping, gin routed on the decoded path already.
var unescapeParams = Middleware(func(c *gin.Context) error {
	if c.Request.URL.RawPath == "" {
		return nil
	}
	for i, p := range c.Params {
		v, err := url.PathUnescape(p.Value)
		if err != nil {
			return spec.InvalidParam("path parameter %s is not valid percent-encoding", p.Key)
		}
		c.Params[i].Value = v
	}
	return nil
})

const rawBodyKey = "chatalot.raw_body"

// bodyLimit caps the request body. Reading past the cap fails with
// *http.MaxBytesError, which renderErrors turns into 413 M_TOO_LARGE.
func bodyLimit(max int64, idle time.Duration, minRate int64) gin.HandlerFunc {
	return func(c *gin.Context) {
		body := &idleBody{ReadCloser: c.Request.Body, rc: http.NewResponseController(c.Writer), idle: idle,
			start: time.Now(), minRate: minRate}
		c.Set(rawBodyKey, io.ReadCloser(body))
		c.Request.Body = http.MaxBytesReader(c.Writer, body, max)
		c.Next()
	}
}

// idleBody moves the connection's read deadline forward at every read of
// the body, so a client that stalls mid-body is cut off after idle while a
// slow but steady upload goes on. Past idle, the body must also have
// arrived at minRate bytes a second on average: the deadline is never
// later than start + idle + received/minRate.
type idleBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	idle    time.Duration
	set     bool
	start   time.Time
	minRate int64 // 0: no minimum
	read    int64
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.rc.SetReadDeadline(b.deadline(time.Now())) == nil {
		b.set = true
	}
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		// The deadline stays in the past: the server must not wait for the
		// rest of this body before answering.
		return n, errBodyStalled
	}
	if err != nil && b.set {
		_ = b.rc.SetReadDeadline(time.Time{})
		b.set = false
	}
	return n, err
}

// deadline is when the next read must have returned.
func (b *idleBody) deadline(now time.Time) time.Time {
	d := now.Add(b.idle)
	if b.minRate > 0 {
		due := b.start.Add(b.idle + time.Duration(float64(b.read)/float64(b.minRate)*float64(time.Second)))
		if due.Before(d) {
			d = due
		}
	}
	return d
}

// writeDeadline cuts off a client that stops reading: the connection's
// write deadline is idle from the start of the request and from every
// write, so a blocked write (the client's receive window full) fails
// after idle and the handler lets go of the connection and whatever it
// was sending. Waiting before the first write (a long-poll) costs nothing.
func writeDeadline(idle time.Duration) gin.HandlerFunc {
	return func(c *gin.Context) {
		w := &deadlineWriter{ResponseWriter: c.Writer, rc: http.NewResponseController(c.Writer), idle: idle}
		w.extend()
		c.Writer = w
		c.Next()
	}
}

type deadlineWriter struct {
	gin.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (w *deadlineWriter) extend() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.idle)) }

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(p)
}

func (w *deadlineWriter) WriteString(s string) (int, error) {
	w.extend()
	return w.ResponseWriter.WriteString(s)
}

func (w *deadlineWriter) Flush() {
	w.extend()
	w.ResponseWriter.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// errBodyStalled is what a handler sees when the client stopped sending.
var errBodyStalled = errors.New("the client stopped sending the request body")

// BodyLimit replaces the router's body cap for one route (media uploads):
// a declared Content-Length over max is refused before reading anything.
func BodyLimit(max int64) gin.HandlerFunc {
	return Middleware(func(c *gin.Context) error {
		if c.Request.ContentLength > max {
			return spec.TooLarge("request body is over %d bytes", max)
		}
		if raw, ok := c.Get(rawBodyKey); ok {
			c.Request.Body = http.MaxBytesReader(c.Writer, raw.(io.ReadCloser), max)
		}
		return nil
	})
}

// accessLog logs one line per request: method, route template, status and
// duration. Never the raw URL (it may hold an access_token), never bodies,
// never the client address unless the admin enabled IP logging.
func accessLog(o Options) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "(unmatched)"
		}
		ev := o.Log.Info()
		if c.Writer.Status() >= 500 {
			ev = o.Log.Warn()
		}
		ev = ev.Str("method", c.Request.Method).Str("route", route).Int("status", c.Writer.Status()).
			Dur("duration", time.Since(start))
		if id, ok := c.Get(errorIDKey); ok {
			ev = ev.Interface("error_id", id)
		}
		if o.LogIPAddresses {
			ev = ev.Str("ip", c.ClientIP())
		}
		ev.Msg("request")
	}
}
