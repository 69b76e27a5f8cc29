package main

import (
	"net"
	"net/http"
	"strings"
)

// adminAPIModes are the values of admin_api: where the Synapse-compatible
// admin API (/_synapse/admin/…) is served.
//
//   - loopback (default): only to requests made on this machine and not
//     relayed by a reverse proxy, so that an admin reaches it with curl on
//     the server or through an SSH tunnel, and the internet never does,
//     even if the proxy forwards /_synapse/admin by mistake;
//   - on: to anyone who reaches the server (every endpoint still requires
//     an admin's access token), for admin web UIs used from elsewhere;
//   - off: not at all (the `chatalot admin` command still works).
var adminAPIModes = []string{"loopback", "on", "off"}

// proxyHeaders are the headers a reverse proxy adds to what it relays
// (Caddy and the nginx site in deploy/ send X-Forwarded-For); a request
// with one of them did not come straight from this machine.
var proxyHeaders = []string{"X-Forwarded-For", "X-Real-Ip", "Forwarded"}

// adminAPIGate answers 404 M_UNRECOGNIZED for the admin API where admin_api
// does not serve it, and passes everything else to next.
func adminAPIGate(mode string, next http.Handler) http.Handler {
	if mode == "on" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isAdminAPIPath(r.URL.Path) && (mode == "off" || !fromThisMachine(r)) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			msg := `{"errcode":"M_UNRECOGNIZED","error":"the admin API is served only to this machine (admin_api = \"loopback\")"}`
			if mode == "off" {
				msg = `{"errcode":"M_UNRECOGNIZED","error":"the admin API is off (admin_api = \"off\"); use the chatalot admin command"}`
			}
			_, _ = w.Write([]byte(msg))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isAdminAPIPath reports whether a (decoded) path is in /_synapse/admin.
func isAdminAPIPath(path string) bool {
	return path == "/_synapse/admin" || strings.HasPrefix(path, "/_synapse/admin/")
}

// fromThisMachine reports whether a request came over a loopback
// connection and was not relayed by a reverse proxy.
func fromThisMachine(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return false
	}
	for _, h := range proxyHeaders {
		if _, ok := r.Header[h]; ok {
			return false
		}
	}
	return true
}
