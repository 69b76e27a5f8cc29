package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// TLSConfig is the TLS configuration for talking to other servers:
// certificates are always verified, against the system roots plus the PEM
// bundle at extraCAFile if given (for test or private CAs).
func TLSConfig(extraCAFile string) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if extraCAFile != "" {
		pem, err := os.ReadFile(extraCAFile)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificates in %s", extraCAFile)
		}
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// NewHTTPClient returns a client for federation requests: it takes URLs of
// the form https://<server name>/path, resolves the server name with r,
// dials the resolved address, sends the resolved Host and verifies the
// certificate for it.
func NewHTTPClient(r *Resolver, tlsConf *tls.Config) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		t, ok := ctx.Value(targetKey{}).(Target)
		if !ok {
			return nil, fmt.Errorf("federation: dial of %s without a resolved target", addr)
		}
		sni, _, err := splitServerName(t.Host)
		if err != nil {
			return nil, err
		}
		conf := tlsConf.Clone()
		conf.ServerName = sni
		conf.NextProtos = []string{"h2", "http/1.1"}
		raw, err := dialer.DialContext(ctx, network, t.Addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, conf)
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		return conn, nil
	}
	return &http.Client{Transport: &resolving{r: r, next: tr}, Timeout: 60 * time.Second}
}

type targetKey struct{}

// resolving resolves the URL's server name and rewrites the request so that
// connections are pooled per resolved address.
type resolving struct {
	r    *Resolver
	next http.RoundTripper
}

func (rt *resolving) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return nil, fmt.Errorf("federation: only https URLs, not %s", req.URL.Scheme)
	}
	t, err := rt.r.Resolve(req.Context(), req.URL.Host)
	if err != nil {
		return nil, err
	}
	out := req.Clone(context.WithValue(req.Context(), targetKey{}, t))
	out.Host = t.Host
	u := *req.URL
	u.Host = t.Addr
	out.URL = &u
	return rt.next.RoundTrip(out)
}
