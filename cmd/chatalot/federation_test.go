package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateFederation: off by default, and a port in server_name only
// with it on; a TLS federation listener needs its certificate and key.
func TestValidateFederation(t *testing.T) {
	if defaults().Federation {
		t.Fatal("federation is on by default")
	}
	missing := filepath.Join(t.TempDir(), "none.pem")
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		set   func(*Config)
		wantK string
	}{
		{"defaults", func(*Config) {}, ""},
		{"port without federation", func(c *Config) { c.ServerName = "example.org:8448" }, "server_name"},
		{"port with federation", func(c *Config) { c.ServerName, c.Federation = "example.org:8448", true }, ""},
		{"on, main listener", func(c *Config) { c.Federation = true }, ""},
		{"listener without certificate", func(c *Config) { c.Federation, c.FederationListen = true, "0.0.0.0:8448" }, "federation_tls_cert"},
		{"unreadable certificate", func(c *Config) {
			c.Federation, c.FederationListen, c.FederationCert, c.FederationKey = true, "0.0.0.0:8448", missing, missing
		}, "federation_tls_cert"},
		{"certificate without listener", func(c *Config) { c.Federation, c.FederationCert = true, missing }, "federation_listen"},
		{"CA file without certificates", func(c *Config) { c.Federation, c.FederationCA = true, notPEM }, "federation_ca_file"},
		{"bad deny entry", func(c *Config) { c.Federation, c.FederationDeny = true, "ok.example, not a name" }, "federation_deny"},
		{"allow list", func(c *Config) { c.Federation, c.FederationAllow = true, "a.example, b.example:8448" }, ""},
		{"settings ignored when off", func(c *Config) { c.FederationListen, c.FederationDeny = "nonsense", "not a name" }, ""},
	} {
		cfg := defaults()
		c.set(&cfg)
		var keys []string
		for _, p := range cfg.Validate() {
			keys = append(keys, p.Key)
		}
		if got := strings.Join(keys, ","); got != c.wantK {
			t.Errorf("%s: problems %v, want %q", c.name, keys, c.wantK)
		}
	}
	cfg := defaults()
	if cfg.federationConfig() != nil {
		t.Error("a federation configuration with federation off")
	}
	cfg.Federation, cfg.FederationAllow, cfg.FederationDeny = true, " a.example ,, b.example", "c.example"
	fc := cfg.federationConfig()
	if len(fc.Allow) != 2 || fc.Allow[0] != "a.example" || len(fc.Deny) != 1 {
		t.Errorf("federation configuration: %+v", fc)
	}
}
