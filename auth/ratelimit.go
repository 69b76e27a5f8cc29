package auth

import (
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Limiter holds token buckets per client address and per user, one set per
// class of action (login, register, send…). Buckets live only in memory:
// client addresses are never stored or logged, and a restart forgets them.
// A full bucket is the same as no bucket, so full buckets are dropped when
// the table grows; memory is bounded by the number of clients active within
// one refill period.
type Limiter struct {
	enabled bool
	rates   map[string]Rate
	now     func() time.Time

	mu      sync.Mutex
	buckets map[bucketKey]*bucket
	sweepAt int // sweep full buckets when the table reaches this size
}

type bucketKey struct {
	class string
	who   string // "ip:…" or "user:…"
}

type bucket struct {
	tokens float64
	last   time.Time
}

const minSweep = 1024

// NewLimiter returns a limiter with the given rates; a disabled limiter
// allows everything.
func NewLimiter(enabled bool, rates map[string]Rate) *Limiter {
	return &Limiter{enabled: enabled, rates: rates, now: time.Now, buckets: map[bucketKey]*bucket{}, sweepAt: minSweep}
}

// Enabled reports whether limits apply.
func (l *Limiter) Enabled() bool { return l != nil && l.enabled }

// take removes one token from a bucket, or returns how long until one is
// available.
func (l *Limiter) take(class, who string) (ok bool, wait time.Duration) {
	return l.use(class, who, 1, true)
}

// use takes cost tokens from a bucket, or with consume false only checks
// that they are there. An action that costs more than a full bucket holds
// (a profile change in 500 rooms) is allowed from a full bucket and leaves
// it in debt: the user then waits until the debt is paid back.
func (l *Limiter) use(class, who string, cost int, consume bool) (ok bool, wait time.Duration) {
	if !l.Enabled() {
		return true, 0
	}
	r, found := l.rates[class]
	if !found {
		return true, 0
	}
	perToken := r.Per.Seconds() / float64(r.Count)
	need := float64(min(max(cost, 1), r.Count))
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := bucketKey{class, who}
	b := l.buckets[k]
	if b == nil {
		if len(l.buckets) >= l.sweepAt {
			l.sweep(now)
		}
		b = &bucket{tokens: float64(r.Count), last: now}
		l.buckets[k] = b
	}
	b.tokens = math.Min(float64(r.Count), b.tokens+now.Sub(b.last).Seconds()/perToken)
	b.last = now
	if b.tokens >= need {
		if consume {
			b.tokens -= float64(max(cost, 1))
		}
		return true, 0
	}
	return false, time.Duration((need - b.tokens) * perToken * float64(time.Second))
}

// sweep drops buckets that have refilled; the caller holds mu.
func (l *Limiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		r := l.rates[k.class]
		perToken := r.Per.Seconds() / float64(r.Count)
		if b.tokens+now.Sub(b.last).Seconds()/perToken >= float64(r.Count) {
			delete(l.buckets, k)
		}
	}
	l.sweepAt = max(minSweep, 2*len(l.buckets))
}

func limited(wait time.Duration) *spec.Error {
	ms := wait.Milliseconds() + 1
	return spec.LimitExceeded(ms)
}

// AllowIP takes a token for the client's address. It returns nil or a 429
// M_LIMIT_EXCEEDED with retry_after_ms, and sets the Retry-After header.
func (l *Limiter) AllowIP(c *gin.Context, class string) *spec.Error {
	if !l.Enabled() {
		return nil
	}
	if ok, wait := l.take(class, "ip:"+clientKey(c)); !ok {
		return retryAfter(c, wait)
	}
	return nil
}

// AllowUser takes a token for a user. Admins are exempt.
func (l *Limiter) AllowUser(c *gin.Context, dev *Device, class string) *spec.Error {
	return l.AllowUserCost(c, dev, class, 1)
}

// AllowUserCost takes cost tokens for a user, for an action that fans out:
// it pays for what it makes (one member event per joined room, one
// to-device message per recipient device). Admins are exempt.
func (l *Limiter) AllowUserCost(c *gin.Context, dev *Device, class string, cost int) *spec.Error {
	if !l.Enabled() || dev == nil || dev.IsAdmin {
		return nil
	}
	if ok, wait := l.use(class, "user:"+string(dev.UserID), cost, true); !ok {
		return retryAfter(c, wait)
	}
	return nil
}

// checkAccount and chargeAccount limit failed password checks against an
// account per client address, admins' accounts included. The bucket is the
// pair (address, account), not the account alone: a per-account bucket
// would let anyone lock the owner out by failing on purpose, refusing even
// the right password. A guess spread over many addresses is bounded by
// each address's login limit and by the cost of Argon2id. checkAccount runs
// before the check (without using a token), chargeAccount after a failure.
func (l *Limiter) checkAccount(c *gin.Context, user spec.UserID) *spec.Error {
	if !l.Enabled() {
		return nil
	}
	if ok, wait := l.use(RateLoginFailures, accountKey(c, user), 1, false); !ok {
		return retryAfter(c, wait)
	}
	return nil
}

func (l *Limiter) chargeAccount(c *gin.Context, user spec.UserID) {
	if l.Enabled() {
		l.take(RateLoginFailures, accountKey(c, user))
	}
}

// accountKey names the bucket of failed password checks for one account
// from one client address.
func accountKey(c *gin.Context, user spec.UserID) string {
	return "account:" + string(user) + " ip:" + clientKey(c)
}

func retryAfter(c *gin.Context, wait time.Duration) *spec.Error {
	if c != nil {
		c.Header("Retry-After", strconv.FormatInt(int64(math.Ceil(wait.Seconds())), 10))
	}
	return limited(wait)
}

// PerUser is gin middleware that limits an authenticated route (behind
// Middleware) per user, for example sending events with RateSend.
func (l *Limiter) PerUser(class string) gin.HandlerFunc {
	return api.Middleware(func(c *gin.Context) error {
		if err := l.AllowUser(c, DeviceFrom(c), class); err != nil {
			return err
		}
		return nil
	})
}

// PerIP is gin middleware that limits a route per client address.
func (l *Limiter) PerIP(class string) gin.HandlerFunc {
	return api.Middleware(func(c *gin.Context) error {
		if err := l.AllowIP(c, class); err != nil {
			return err
		}
		return nil
	})
}

// clientKey is the address a limit applies to: the peer's, or when the
// peer is one of the router's trusted proxies (trusted_proxies, nobody by
// default) the client address it forwarded in X-Forwarded-For. A loopback
// peer is not trusted for being local: a TCP forwarder on the same host
// (onion service, stunnel, ssh -L) passes on whatever header the client
// wrote. IPv6 clients are limited per /64, the usual size of one
// subscriber's network.
func clientKey(c *gin.Context) string {
	host := c.ClientIP()
	if host == "" { // not HOST:PORT: a listener of another kind
		host = c.Request.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	addr = addr.Unmap()
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}
