package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Target is where to reach a server: the address to dial and the name sent
// as Host and TLS SNI (the certificate must be valid for Host's hostname).
type Target struct {
	Addr string // host:port to dial
	Host string // Host header; its hostname part is the TLS server name
}

// SRVLookup is net.Resolver.LookupSRV; tests inject a fake.
type SRVLookup func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)

// Resolver finds servers as "Resolving server names" specifies: IP literals
// and explicit ports as given, then .well-known delegation, then SRV records
// (_matrix-fed first, then the deprecated _matrix), then port 8448.
type Resolver struct {
	LookupSRV SRVLookup
	// WellKnown fetches https://<host>/.well-known/matrix/server. It must
	// verify TLS; Client's is used by default.
	HTTP *http.Client
	now  func() time.Time

	mu    sync.Mutex
	cache map[string]wellKnownEntry
}

type wellKnownEntry struct {
	server  string // "" when there is no (valid) delegation
	expires time.Time
}

// Spec limits: a .well-known is cached for 24 hours when the response says
// nothing, at most 48 hours, and a failure for an hour. Bodies are small.
const (
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMaxTTL     = 48 * time.Hour
	wellKnownErrorTTL   = time.Hour
	wellKnownMaxBytes   = 50 << 10
	defaultPort         = "8448"
)

// Resolve returns where to reach serverName.
func (r *Resolver) Resolve(ctx context.Context, serverName string) (Target, error) {
	host, port, err := splitServerName(serverName)
	if err != nil {
		return Target{}, err
	}
	// 1 and 2: an IP literal, or an explicit port, is used as is.
	if isIP(host) || port != "" {
		return Target{Addr: net.JoinHostPort(host, orDefault(port)), Host: serverName}, nil
	}
	// 3: .well-known delegation.
	if delegated := r.wellKnown(ctx, host); delegated != "" {
		dh, dp, err := splitServerName(delegated)
		if err == nil {
			if isIP(dh) || dp != "" {
				return Target{Addr: net.JoinHostPort(dh, orDefault(dp)), Host: delegated}, nil
			}
			if t, ok := r.srv(ctx, dh); ok {
				return Target{Addr: t, Host: delegated}, nil
			}
			return Target{Addr: net.JoinHostPort(dh, defaultPort), Host: delegated}, nil
		}
	}
	// 4 and 5: SRV, then the default port.
	if t, ok := r.srv(ctx, host); ok {
		return Target{Addr: t, Host: host}, nil
	}
	return Target{Addr: net.JoinHostPort(host, defaultPort), Host: host}, nil
}

func orDefault(port string) string {
	if port == "" {
		return defaultPort
	}
	return port
}

func isIP(host string) bool { return net.ParseIP(host) != nil }

// splitServerName splits "host[:port]", where host may be "[v6]".
func splitServerName(name string) (host, port string, err error) {
	if name == "" {
		return "", "", fmt.Errorf("empty server name")
	}
	if strings.HasPrefix(name, "[") {
		end := strings.IndexByte(name, ']')
		if end < 0 {
			return "", "", fmt.Errorf("bad server name %q", name)
		}
		var rest string
		host, rest = name[1:end], name[end+1:]
		if net.ParseIP(host) == nil {
			return "", "", fmt.Errorf("bad IPv6 literal in %q", name)
		}
		if rest == "" {
			return host, "", nil
		}
		if !strings.HasPrefix(rest, ":") {
			return "", "", fmt.Errorf("bad server name %q", name)
		}
		port = rest[1:]
	} else if i := strings.LastIndexByte(name, ':'); i >= 0 {
		host, port = name[:i], name[i+1:]
	} else {
		host = name
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("bad port in %q", name)
		}
	}
	if host == "" {
		return "", "", fmt.Errorf("bad server name %q", name)
	}
	return strings.TrimPrefix(strings.TrimSuffix(host, "]"), "["), port, nil
}

// srv looks up _matrix-fed._tcp then _matrix._tcp and returns the first target.
func (r *Resolver) srv(ctx context.Context, host string) (string, bool) {
	lookup := r.LookupSRV
	if lookup == nil {
		lookup = net.DefaultResolver.LookupSRV
	}
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, addrs, err := lookup(ctx, service, "tcp", host)
		if err != nil || len(addrs) == 0 {
			continue
		}
		a := addrs[0] // LookupSRV sorts by priority and randomises by weight
		target := strings.TrimSuffix(a.Target, ".")
		if target == "" {
			continue
		}
		return net.JoinHostPort(target, strconv.Itoa(int(a.Port))), true
	}
	return "", false
}

func (r *Resolver) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// wellKnown returns the delegated server name for host, or "".
func (r *Resolver) wellKnown(ctx context.Context, host string) string {
	now := r.clock()
	r.mu.Lock()
	if e, ok := r.cache[host]; ok && now.Before(e.expires) {
		r.mu.Unlock()
		return e.server
	}
	r.mu.Unlock()
	server, ttl := r.fetchWellKnown(ctx, host)
	r.mu.Lock()
	if r.cache == nil {
		r.cache = map[string]wellKnownEntry{}
	}
	r.cache[host] = wellKnownEntry{server: server, expires: now.Add(ttl)}
	r.mu.Unlock()
	return server
}

func (r *Resolver) fetchWellKnown(ctx context.Context, host string) (string, time.Duration) {
	client := r.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", wellKnownErrorTTL
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", wellKnownErrorTTL
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", wellKnownErrorTTL
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxBytes+1))
	if err != nil || len(body) > wellKnownMaxBytes {
		return "", wellKnownErrorTTL
	}
	var wk struct {
		Server string `json:"m.server"`
	}
	if json.Unmarshal(body, &wk) != nil || wk.Server == "" {
		return "", wellKnownErrorTTL
	}
	if _, _, err := splitServerName(wk.Server); err != nil {
		return "", wellKnownErrorTTL
	}
	return wk.Server, cacheTTL(resp.Header.Get("Cache-Control"))
}

// cacheTTL reads max-age from Cache-Control, within the spec's bounds.
func cacheTTL(cc string) time.Duration {
	ttl := wellKnownDefaultTTL
	for _, d := range strings.Split(cc, ",") {
		d = strings.TrimSpace(strings.ToLower(d))
		if d == "no-store" || d == "no-cache" {
			return 0
		}
		if v, ok := strings.CutPrefix(d, "max-age="); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				ttl = time.Duration(n) * time.Second
			}
		}
	}
	if ttl > wellKnownMaxTTL {
		ttl = wellKnownMaxTTL
	}
	return ttl
}
