package federation_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/chatalot/chatalot/federation"
	"github.com/chatalot/chatalot/internal/servertest"
	"github.com/chatalot/chatalot/server/app"
)

// TestRemoteJoinCarriesProfile: a join through another server carries the
// user's display name, as a join of a room this server knows does (seen
// with Dendrite: Chatalot users had no name in its rooms). The resident is
// played by a TLS server that answers make_join and keeps the send_join.
func TestRemoteJoinCarriesProfile(t *testing.T) {
	caFile, cert := testPKI(t)
	joins := make(chan []byte, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/federation/v1/make_join/{room}/{user}", func(w http.ResponseWriter, r *http.Request) {
		user, room := r.PathValue("user"), r.PathValue("room")
		_ = json.NewEncoder(w).Encode(map[string]any{"room_version": "11", "event": map[string]any{
			"type": "m.room.member", "state_key": user, "sender": user, "room_id": room,
			"content": map[string]string{"membership": "join"}, "prev_events": []string{"$prev"}, "auth_events": []string{},
			"depth": 5, "origin_server_ts": time.Now().UnixMilli(),
		}})
	})
	mux.HandleFunc("PUT /_matrix/federation/v2/send_join/{room}/{event}", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		joins <- body
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"errcode":"M_FORBIDDEN","error":"the test keeps the join"}`)
	})
	resident := httptest.NewUnstartedServer(mux)
	resident.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	resident.Config.ErrorLog = log.New(io.Discard, "", 0)
	resident.StartTLS()
	t.Cleanup(resident.Close)
	name := resident.Listener.Addr().String() // 127.0.0.1:PORT

	s := servertest.New(t, "", func(c *app.Config) { c.Federation = &federation.Config{CAFile: caFile} })
	if code, body := s.As("@alice:test", "PUT", "/_matrix/client/v3/profile/@alice:test/displayname", map[string]string{"displayname": "Alice A"}); code != 200 {
		t.Fatalf("displayname: %d %v", code, body)
	}
	room := "!elsewhere:" + name
	if code, _ := s.As("@alice:test", "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(name),
		map[string]string{"reason": "hello"}); code == 200 {
		t.Fatal("the join succeeded without a send_join answer")
	}
	var join []byte
	select {
	case join = <-joins:
	default:
		t.Fatal("no send_join reached the resident")
	}
	c := gjson.GetBytes(join, "content")
	if c.Get("displayname").String() != "Alice A" || c.Get("membership").String() != "join" || c.Get("reason").String() != "hello" {
		t.Fatalf("the join's content is %s", c.Raw)
	}
	if !strings.HasPrefix(gjson.GetBytes(join, "sender").String(), "@alice:") {
		t.Fatalf("the join is not alice's: %s", join)
	}
}

// testPKI writes a CA certificate to a file and issues a certificate for
// 127.0.0.1 with it.
func testPKI(t *testing.T) (caFile string, leaf tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "join test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
