package main

import (
	"crypto/tls"
	"net"
	"strings"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/federation"
	"github.com/chatalot/chatalot/spec"
)

// validateFederation checks the federation settings; with federation off
// they are not read.
func (c *Config) validateFederation(add func(key, format string, args ...any)) {
	if !c.Federation {
		return
	}
	for key, list := range map[string]string{"federation_allow": c.FederationAllow, "federation_deny": c.FederationDeny} {
		for _, n := range splitList(list) {
			if _, err := spec.ParseServerName(n); err != nil {
				add(key, "%q is not a server name", n)
			}
		}
	}
	if c.FederationCA != "" {
		if _, err := federation.TLSConfig(c.FederationCA); err != nil {
			add("federation_ca_file", "%v", err)
		}
	}
	if c.FederationListen == "" {
		if c.FederationCert != "" || c.FederationKey != "" {
			add("federation_listen", "must be set for federation_tls_cert and federation_tls_key to be used")
		}
		return
	}
	if err := checkHostPort(c.FederationListen); err != nil {
		add("federation_listen", "%q: %v", c.FederationListen, err)
	}
	if c.FederationCert == "" || c.FederationKey == "" {
		add("federation_tls_cert", "federation_listen serves TLS: federation_tls_cert and federation_tls_key are required")
		return
	}
	if _, err := tls.LoadX509KeyPair(c.FederationCert, c.FederationKey); err != nil {
		add("federation_tls_cert", "%v", err)
	}
}

// splitList splits a comma-separated setting, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// federationConfig is the federation package's configuration, or nil with
// federation off.
func (c *Config) federationConfig() *federation.Config {
	if !c.Federation {
		return nil
	}
	names := func(s string) []spec.ServerName {
		var out []spec.ServerName
		for _, n := range splitList(s) {
			out = append(out, spec.ServerName(n))
		}
		return out
	}
	return &federation.Config{Allow: names(c.FederationAllow), Deny: names(c.FederationDeny), CAFile: c.FederationCA,
		Presence: c.Presence && c.FederationPresence, ProfilesToRoomMates: c.ProfileLookup == auth.ProfileLookupSharedRooms}
}

// federationListener opens the TLS listener of federation_listen, or
// returns nil when federation is off or served on the main listener.
func federationListener(c Config) (net.Listener, error) {
	if !c.Federation || c.FederationListen == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.FederationCert, c.FederationKey)
	if err != nil {
		return nil, err
	}
	ln, err := listen("federation_listen", c.FederationListen)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}), nil
}
