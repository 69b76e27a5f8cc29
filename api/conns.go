package api

import (
	"io"
	"net"
	"net/netip"
	"sync"
)

// LimitConnections caps how many connections one client address (IPv6: one
// /64) may hold open at once: past perAddress, a new connection is closed
// as soon as it is accepted, so that one client cannot take every file
// descriptor with idle or stalled connections. Peers in exempt (addresses
// or CIDR ranges: the trusted reverse proxies, which carry every client's
// connections) are not counted. perAddress <= 0 means no cap.
func LimitConnections(ln net.Listener, perAddress int, exempt []string) net.Listener {
	if perAddress <= 0 {
		return ln
	}
	l := &connLimiter{Listener: ln, max: perAddress, open: map[netip.Prefix]int{}}
	for _, e := range exempt {
		if p, err := netip.ParsePrefix(e); err == nil {
			l.exempt = append(l.exempt, p.Masked())
		} else if a, err := netip.ParseAddr(e); err == nil {
			l.exempt = append(l.exempt, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return l
}

type connLimiter struct {
	net.Listener
	max    int
	exempt []netip.Prefix

	mu   sync.Mutex
	open map[netip.Prefix]int
}

// Accept returns the next connection within the cap; those over it are
// closed here and never reach the server.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key, counted := l.key(c.RemoteAddr())
		if !counted {
			return c, nil
		}
		l.mu.Lock()
		full := l.open[key] >= l.max
		if !full {
			l.open[key]++
		}
		l.mu.Unlock()
		if full {
			c.Close()
			continue
		}
		return &countedConn{Conn: c, release: func() { l.release(key) }}, nil
	}
}

// key is the address a connection counts under, and false for exempt or
// unknown peers.
func (l *connLimiter) key(addr net.Addr) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Prefix{}, false
	}
	a := ap.Addr().Unmap()
	for _, e := range l.exempt {
		if e.Contains(a) {
			return netip.Prefix{}, false
		}
	}
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p, true
}

func (l *connLimiter) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key]--; l.open[key] <= 0 {
		delete(l.open, key)
	}
}

// countedConn gives its place back once, when closed.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// ReadFrom keeps the connection's own ReadFrom (sendfile) for the server.
func (c *countedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
