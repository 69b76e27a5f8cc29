package oauth

import (
	"strings"
	"testing"
)

// RFC 7636 appendix B: the verifier and S256 challenge of its example.
func TestVerifierMatchesRFC7636Example(t *testing.T) {
	const verifier, challenge = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	if !verifierMatches(verifier, challenge) {
		t.Fatal("the RFC's example does not match")
	}
	for _, v := range []string{verifier + "x", verifier[:42], strings.Repeat("a", 129), verifier[:42] + "+", ""} {
		if verifierMatches(v, challenge) {
			t.Errorf("verifier %q matched", v)
		}
	}
	if !validChallenge(challenge) || validChallenge(challenge+"A") || validChallenge(strings.Repeat("*", 43)) {
		t.Error("challenge shape")
	}
}

func TestParseScope(t *testing.T) {
	cases := []struct {
		scope, granted, device string
		ok                     bool
	}{
		{"urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ", "urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ", "ABCDEFGHIJ", true},
		{"openid urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:a.b_c~d-e", "urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:a.b_c~d-e", "a.b_c~d-e", true},
		// Stable and unstable naming the same device are one device.
		{"urn:matrix:client:api:* urn:matrix:client:device:D1 urn:matrix:org.matrix.msc2967.client:device:D1", "urn:matrix:client:api:* urn:matrix:client:device:D1 urn:matrix:org.matrix.msc2967.client:device:D1", "D1", true},
		{"urn:matrix:client:device:D1", "", "", false},
		{"urn:matrix:client:api:*", "", "", false},
		{"urn:matrix:client:api:* urn:matrix:client:device:", "", "", false},
		{"urn:matrix:client:api:* urn:matrix:client:device:D1 urn:matrix:client:device:D2", "", "", false},
		{"urn:matrix:client:api:* urn:matrix:client:device:D%31", "", "", false},
		{"urn:matrix:client:api:* urn:matrix:client:device:D1 urn:synapse:admin:*", "", "", false},
		{"", "", "", false},
	}
	for _, tc := range cases {
		granted, device, err := parseScope(tc.scope)
		if (err == nil) != tc.ok || granted != tc.granted || device != tc.device {
			t.Errorf("parseScope(%q) = %q, %q, %v", tc.scope, granted, device, err)
		}
	}
}

func TestRedirectMatches(t *testing.T) {
	registered := []string{"https://app.example.com/cb?x=1", "http://127.0.0.1/cb", "http://[::1]/cb", "com.example.app:/cb"}
	for uri, want := range map[string]bool{
		"https://app.example.com/cb?x=1":     true,
		"https://app.example.com/cb":         false,
		"https://app.example.com/cb?x=1&y":   false,
		"http://127.0.0.1:51234/cb":          true,
		"http://127.0.0.1/cb":                true,
		"http://[::1]:8080/cb":               true,
		"http://127.0.0.1:51234/other":       false,
		"http://localhost:51234/cb":          false, // another loopback name is another URI
		"https://127.0.0.1:51234/cb":         false,
		"com.example.app:/cb":                true,
		"com.example.app:/cb/../x":           false,
		"http://127.0.0.1:51234@evil.com/cb": false,
	} {
		if got := redirectMatches(registered, uri); got != want {
			t.Errorf("redirectMatches(%q) = %v, want %v", uri, got, want)
		}
	}
}

func TestUserCodes(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		c := newUserCode()
		if len(c) != 9 || c[4] != '-' || strings.ContainsAny(c, "AEIOUY0123456789") {
			t.Fatalf("user code %q", c)
		}
		seen[c] = true
	}
	if len(seen) < 199 {
		t.Errorf("only %d distinct codes in 200", len(seen))
	}
	for in, want := range map[string]string{"bcdf-ghjk": "BCDF-GHJK", "BCDFGHJK": "BCDF-GHJK", " bcdf ghjk ": "BCDF-GHJK", "BCD": "", "BCDFGHJKL": ""} {
		if got := normalUserCode(in); got != want {
			t.Errorf("normalUserCode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFormSourceStaysASource(t *testing.T) {
	for uri, want := range map[string]string{
		"https://app.example.com:8443/cb": "https://app.example.com:8443",
		"com.example.app:/cb":             "com.example.app:",
		"http://127.0.0.1:5000/cb":        "http://127.0.0.1:5000",
		"https://a.example.com;x/cb":      "",
	} {
		if got := formSource(uri); got != want {
			t.Errorf("formSource(%q) = %q, want %q", uri, got, want)
		}
	}
}
