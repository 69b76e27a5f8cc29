package tests

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// The deployment files in deploy/ are checked by the tools that will read
// them: systemd-analyze, caddy and nginx from Debian's packages (.ci/run
// installs them). Their upload limits must equal Chatalot's default
// max_upload_bytes, and their proxy timeouts must outlast a /sync long-poll.

func opsDeployFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(opsRepoRoot(t), "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// opsDefaultMaxUpload reads max_upload_bytes from `chatalot config print`.
func opsDefaultMaxUpload(t *testing.T) int64 {
	t.Helper()
	out, err := harness.Run(t, "", "config", "print")
	if err != nil {
		t.Fatalf("config print: %v %s", err, out)
	}
	m := regexp.MustCompile(`(?m)^max_upload_bytes = (\d+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no max_upload_bytes in:\n%s", out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func TestOpsSystemdUnit(t *testing.T) {
	analyze := opsTool(t, "systemd-analyze", "systemd")
	unit := opsDeployFile(t, "chatalot.service")
	for _, want := range []string{
		"User=chatalot", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
		"StateDirectory=chatalot", "ExecReload=/bin/kill -HUP $MAINPID", "CapabilityBoundingSet=\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	// The data directory is the only writable path.
	rw := regexp.MustCompile(`(?m)^ReadWritePaths=(.*)$`).FindAllStringSubmatch(unit, -1)
	if len(rw) != 1 || strings.TrimSpace(rw[0][1]) != "/var/lib/chatalot" {
		t.Errorf("ReadWritePaths: %q, want only /var/lib/chatalot", rw)
	}
	if !strings.Contains(opsDeployFile(t, "chatalot.toml"), `data_dir = "/var/lib/chatalot"`) {
		t.Error("deploy/chatalot.toml's data_dir is not the unit's writable directory")
	}

	// systemd-analyze verify wants the binary it names to exist: point it
	// at the one the tests built.
	dir := t.TempDir()
	path := filepath.Join(dir, "chatalot.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/chatalot", harness.Binary(t))), 0o644)
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || strings.Contains(string(out), "chatalot.service") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The sandbox rates as well hardened (exposure 2.0 or less of 10).
	out, err = exec.Command(analyze, "security", "--offline=yes", "--threshold=20", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	t.Log(opsLastLine(string(out)))
}

func opsLastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestOpsCaddyfile(t *testing.T) {
	caddy := opsTool(t, "caddy", "caddy")
	conf := opsDeployFile(t, "Caddyfile")
	m := regexp.MustCompile(`max_size (\d+)MiB`).FindStringSubmatch(conf)
	if m == nil {
		t.Fatal("no request_body max_size in MiB")
	}
	if mib, _ := strconv.ParseInt(m[1], 10, 64); mib<<20 != opsDefaultMaxUpload(t) {
		t.Errorf("Caddy's upload limit %s MiB is not max_upload_bytes %d", m[1], opsDefaultMaxUpload(t))
	}
	opsCheckTimeouts(t, conf, regexp.MustCompile(`(?m)^\s*(read_timeout|write_timeout|response_header_timeout) (\d+)m$`), time.Minute)
	home := t.TempDir()
	cmd := exec.Command(caddy, "validate", "--adapter", "caddyfile", "--config", filepath.Join(opsRepoRoot(t), "deploy", "Caddyfile"))
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Valid configuration") {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	if out, err := exec.Command(caddy, "fmt", filepath.Join(opsRepoRoot(t), "deploy", "Caddyfile")).Output(); err == nil && string(out) != conf {
		t.Error("deploy/Caddyfile is not in caddy fmt's layout (run caddy fmt --overwrite deploy/Caddyfile)")
	}
}

// TestOpsProxiesForwardOnlyWhatClientsNeed: both reverse proxy examples
// forward the client API and client discovery, and neither the admin API
// (kept on the machine), /.well-known/matrix/server (no federation yet)
// nor /_synapse/client (nothing serves it). No proxy needed to check this.
func TestOpsProxiesForwardOnlyWhatClientsNeed(t *testing.T) {
	caddy := regexp.MustCompile(`(?m)^\s*@chatalot path (.*)$`).FindStringSubmatch(opsDeployFile(t, "Caddyfile"))
	nginx := regexp.MustCompile(`(?m)^\s*location ~ \^\((.*)\) \{$`).FindStringSubmatch(opsDeployFile(t, "nginx.conf"))
	if caddy == nil || nginx == nil {
		t.Fatalf("no proxied paths found: Caddyfile %q, nginx.conf %q", caddy, nginx)
	}
	for name, paths := range map[string]string{"Caddyfile": caddy[1], "nginx.conf": strings.ReplaceAll(nginx[1], `\.`, ".")} {
		for _, want := range []string{"/_matrix/", "/.well-known/matrix/client", "/.well-known/matrix/support"} {
			if !strings.Contains(paths, want) {
				t.Errorf("%s does not forward %s: %s", name, want, paths)
			}
		}
		for _, never := range []string{"/_synapse", "/.well-known/matrix/server", "/.well-known/matrix/*", "/.well-known/matrix/|"} {
			if strings.Contains(paths, never) {
				t.Errorf("%s forwards %s: %s", name, never, paths)
			}
		}
	}
}

// opsCheckTimeouts requires every matched timeout (number in group 2, in
// unit) to be at least five minutes, and at least one to exist.
func opsCheckTimeouts(t *testing.T, conf string, re *regexp.Regexp, unit time.Duration) {
	t.Helper()
	ms := re.FindAllStringSubmatch(conf, -1)
	if len(ms) == 0 {
		t.Fatal("no proxy timeouts")
	}
	for _, m := range ms {
		n, _ := strconv.Atoi(m[2])
		if time.Duration(n)*unit < 5*time.Minute {
			t.Errorf("%s is under 5 minutes: a /sync long-poll may be cut", m[0])
		}
	}
}

func TestOpsNginxConf(t *testing.T) {
	nginx := opsTool(t, "nginx", "nginx")
	site := opsDeployFile(t, "nginx.conf")
	m := regexp.MustCompile(`client_max_body_size (\d+)m;`).FindStringSubmatch(site)
	if m == nil {
		t.Fatal("no client_max_body_size in m")
	}
	if mib, _ := strconv.ParseInt(m[1], 10, 64); mib<<20 != opsDefaultMaxUpload(t) {
		t.Errorf("nginx's upload limit %sm is not max_upload_bytes %d", m[1], opsDefaultMaxUpload(t))
	}
	opsCheckTimeouts(t, site, regexp.MustCompile(`(proxy_read_timeout|proxy_send_timeout) (\d+)s;`), time.Second)
	if !strings.Contains(site, "proxy_pass http://127.0.0.1:8008;") {
		t.Error("proxy_pass must have no URI part, so that encoded paths pass unchanged")
	}

	// nginx -t loads the certificates, so the site is checked with a
	// throw-away one in place of Let's Encrypt's, inside a minimal main
	// configuration whose files are all in a temporary prefix.
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	opsSelfSigned(t, cert, key)
	site = strings.ReplaceAll(site, "/etc/letsencrypt/live/chat.example.org/fullchain.pem", cert)
	site = strings.ReplaceAll(site, "/etc/letsencrypt/live/chat.example.org/privkey.pem", key)
	os.WriteFile(filepath.Join(dir, "site.conf"), []byte(site), 0o644)
	os.MkdirAll(filepath.Join(dir, "tmp"), 0o700)
	main := strings.NewReplacer("DIR", dir).Replace(`pid DIR/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path DIR/tmp;
    proxy_temp_path DIR/tmp;
    fastcgi_temp_path DIR/tmp;
    uwsgi_temp_path DIR/tmp;
    scgi_temp_path DIR/tmp;
    include DIR/site.conf;
}
`)
	os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644)
	out, err := exec.Command(nginx, "-t", "-q", "-p", dir, "-e", "stderr", "-c", filepath.Join(dir, "nginx.conf")).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

func opsSelfSigned(t *testing.T, certPath, keyPath string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "chat.example.org"}, DNSNames: []string{"chat.example.org"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

// TestOpsProductionConfig: the example configuration passes its own check.
func TestOpsProductionConfig(t *testing.T) {
	path := filepath.Join(opsRepoRoot(t), "deploy", "chatalot.toml")
	if out, err := harness.Run(t, "", "config", "check", path); err != nil {
		t.Fatalf("config check deploy/chatalot.toml: %v\n%s", err, out)
	}
	out, err := harness.Run(t, "", "config", "print", "--config", path)
	if err != nil || !strings.Contains(out, `public_baseurl = "https://chat.example.org"`) || !strings.Contains(out, "max_upload_bytes = "+strconv.FormatInt(opsDefaultMaxUpload(t), 10)) {
		t.Fatalf("config print: %v\n%s", err, out)
	}
}
