package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/chatalot/chatalot/events"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "chatalot test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues a server certificate for the names.
func (ca *testCA) leaf(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// testServer is one homeserver: its signing key, its key endpoint and one
// route behind RequireServerAuth that echoes the verified origin.
type testServer struct {
	name      string
	key       events.SigningKey
	srv       *httptest.Server
	port      int
	valid     time.Duration // valid_until_ts offset served
	hits      int           // requests to the key endpoint
	wellKnown string        // served as m.server when set
	keys      KeySource
	// onSend, when set, answers PUT /_matrix/federation/v1/send/{txnId}
	// with the status it returns.
	onSend func(body []byte) int
}

func newTestServer(t *testing.T, ca *testCA, name string, cert tls.Certificate) *testServer {
	t.Helper()
	gin.SetMode(gin.TestMode)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s := &testServer{name: name, key: events.SigningKey{ServerName: name, KeyID: "ed25519:t1", Private: priv}, valid: time.Hour}
	r := gin.New()
	r.GET("/_matrix/key/v2/server", func(c *gin.Context) {
		s.hits++
		c.Data(200, "application/json", s.keysBody(t))
	})
	r.GET("/.well-known/matrix/server", func(c *gin.Context) {
		if s.wellKnown == "" {
			c.Status(404)
			return
		}
		c.Header("Cache-Control", "max-age=60")
		c.JSON(200, gin.H{"m.server": s.wellKnown})
	})
	r.PUT("/_matrix/federation/v1/send/:txnId", func(c *gin.Context) {
		body, _ := io.ReadAll(c.Request.Body)
		if s.onSend == nil {
			c.Status(404)
			return
		}
		c.JSON(s.onSend(body), gin.H{"pdus": gin.H{}})
	})
	r.Any("/_matrix/federation/v1/test/*rest", func(c *gin.Context) {
		RequireServerAuth(s.name, s.keys)(c)
		if c.IsAborted() {
			return
		}
		c.JSON(200, gin.H{"origin": Origin(c)})
	})
	s.srv = httptest.NewUnstartedServer(r)
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	_, p, _ := net.SplitHostPort(s.srv.Listener.Addr().String())
	s.port, _ = strconv.Atoi(p)
	return s
}

func (s *testServer) keysBody(t *testing.T) []byte {
	pub := s.key.Private.Public().(ed25519.PublicKey)
	raw, _ := json.Marshal(map[string]any{
		"server_name":     s.name,
		"verify_keys":     map[string]any{s.key.KeyID: map[string]string{"key": base64.RawStdEncoding.EncodeToString(pub)}},
		"old_verify_keys": map[string]any{},
		"valid_until_ts":  time.Now().Add(s.valid).UnixMilli(),
	})
	signed, err := events.SignJSON(raw, s.key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// network maps test server names to the test servers with SRV records.
type network map[string]*testServer

func (n network) lookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	if s, ok := n[name]; ok && service == "matrix-fed" {
		return "", []*net.SRV{{Target: "127.0.0.1.", Port: uint16(s.port)}}, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// client is a federation client that trusts only pool and finds servers in n.
func (n network) client(pool *x509.CertPool) *http.Client {
	conf := &tls.Config{RootCAs: pool}
	wk := &http.Client{Transport: &http.Transport{
		TLSClientConfig: conf,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, _ := net.SplitHostPort(addr)
			s, ok := n[host]
			if !ok {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
			return (&net.Dialer{}).DialContext(ctx, network, s.srv.Listener.Addr().String())
		},
	}}
	return NewHTTPClient(&Resolver{LookupSRV: n.lookupSRV, HTTP: wk}, conf)
}

type tlsConf struct{ Config tls.Config }

func tlsConfigFor(ca *testCA) *tlsConf { return &tlsConf{Config: tls.Config{RootCAs: ca.pool}} }

func base64Std(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }
