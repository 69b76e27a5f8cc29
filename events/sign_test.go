package events

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

// The appendix's test signing key (appendices, "Cryptographic Test Vectors").
const testSeed = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"

func testKey(t testing.TB, server string) SigningKey {
	t.Helper()
	seed, err := base64.RawStdEncoding.DecodeString(testSeed)
	if err != nil {
		t.Fatal(err)
	}
	return SigningKey{ServerName: server, KeyID: "ed25519:1", Private: ed25519.NewKeyFromSeed(seed)}
}

func testPub(t testing.TB) ed25519.PublicKey {
	return testKey(t, "x").Private.Public().(ed25519.PublicKey)
}

// mustCanonical makes a pretty-printed spec example comparable byte for byte.
func mustCanonical(t testing.TB, s string) string {
	t.Helper()
	c, err := Canonical([]byte(s))
	if err != nil {
		t.Fatalf("canonical %q: %v", s, err)
	}
	return string(c)
}

// appendices "JSON Signing", byte for byte.
func TestSignJSONSpecVectors(t *testing.T) {
	key := testKey(t, "domain")
	tests := []struct{ in, want string }{
		{`{}`, `{
    "signatures": {
        "domain": {
            "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        }
    }
}`},
		{`{"one": 1, "two": "Two"}`, `{
    "one": 1,
    "signatures": {
        "domain": {
            "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        }
    },
    "two": "Two"
}`},
	}
	for _, tt := range tests {
		got, err := SignJSON([]byte(tt.in), key)
		if err != nil {
			t.Fatalf("SignJSON(%s): %v", tt.in, err)
		}
		if want := mustCanonical(t, tt.want); string(got) != want {
			t.Errorf("SignJSON(%s) =\n%s\nwant\n%s", tt.in, got, want)
		}
		if err := VerifyJSON(got, "domain", "ed25519:1", testPub(t)); err != nil {
			t.Errorf("VerifyJSON of the vector: %v", err)
		}
	}
}

// The "Signing Details" example object, with unsigned data and an existing
// signature from another server. Its published signature was made with a key
// the spec does not give, so the expected signature was computed
// independently (Python json + cryptography) with the test seed.
func TestSignJSONKeepsUnsignedAndMergesSignatures(t *testing.T) {
	in := `{
   "name": "example.org",
   "signing_keys": {"ed25519:1": "XSl0kuyvrXNj6A+7/tkrB9sxSbRi08Of5uRhxOqZtEQ"},
   "unsigned": {"age_ts": 922834800000},
   "signatures": {"other.org": {"ed25519:x": "abc"}, "domain": {"ed25519:0": "def"}}
}`
	got, err := SignJSON([]byte(in), testKey(t, "domain"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"example.org","signatures":{"domain":{"ed25519:0":"def","ed25519:1":"DPYxV/Np2m8wARljgaprp32nAOVfZQFq6U8BA9GghkKCHoybI1rtszlLjgZLMq+68XZwY1vMKfRA3FDNTYyDCA"},"other.org":{"ed25519:x":"abc"}},"signing_keys":{"ed25519:1":"XSl0kuyvrXNj6A+7/tkrB9sxSbRi08Of5uRhxOqZtEQ"},"unsigned":{"age_ts":922834800000}}`
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	// Re-signing replaces our own signature and keeps the rest.
	again, err := SignJSON(got, testKey(t, "domain"))
	if err != nil || string(again) != want {
		t.Fatalf("re-sign: %s, %v", again, err)
	}
}

func TestSignJSONRefuses(t *testing.T) {
	key := testKey(t, "domain")
	tests := []struct {
		name string
		in   string
		key  SigningKey
	}{
		{"not an object", `[]`, key},
		{"not json", `{`, key},
		{"signatures not object", `{"signatures":[]}`, key},
		{"server signatures not object", `{"signatures":{"domain":"x"}}`, key},
		{"no server name", `{}`, SigningKey{KeyID: "ed25519:1", Private: key.Private}},
		{"bad key id", `{}`, SigningKey{ServerName: "d", KeyID: "rsa:1", Private: key.Private}},
		{"empty key version", `{}`, SigningKey{ServerName: "d", KeyID: "ed25519:", Private: key.Private}},
		{"short private key", `{}`, SigningKey{ServerName: "d", KeyID: "ed25519:1", Private: key.Private[:10]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := SignJSON([]byte(tt.in), tt.key); err == nil {
				t.Fatalf("signed: %s", got)
			} else if errCode(err) == "" {
				t.Fatalf("error %v is not a *spec.Error", err)
			}
		})
	}
}

func TestVerifyJSON(t *testing.T) {
	key := testKey(t, "domain")
	pub := testPub(t)
	signed, err := SignJSON([]byte(`{"one":1,"unsigned":{"age":5}}`), key)
	if err != nil {
		t.Fatal(err)
	}
	sig := "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
	vector := `{"one":1,"signatures":{"domain":{"ed25519:1":"` + sig + `"}},"two":"Two"}`
	otherPub := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)

	tests := []struct {
		name   string
		obj    string
		server string
		keyID  string
		pub    ed25519.PublicKey
		ok     bool
	}{
		{"valid", string(signed), "domain", "ed25519:1", pub, true},
		{"vector", vector, "domain", "ed25519:1", pub, true},
		{"padded signature", strings.Replace(vector, sig, sig+"==", 1), "domain", "ed25519:1", pub, true},
		{"whitespace and order do not matter", `{ "two":"Two", "signatures":{"domain":{"ed25519:1":"` + sig + `"}}, "one":1 }`, "domain", "ed25519:1", pub, true},
		{"unsigned is not covered", strings.Replace(vector, `"two":"Two"`, `"two":"Two","unsigned":{"x":1}`, 1), "domain", "ed25519:1", pub, true},
		{"tampered", strings.Replace(vector, `"one":1`, `"one":2`, 1), "domain", "ed25519:1", pub, false},
		{"extra field", strings.Replace(vector, `"two":"Two"`, `"two":"Two","x":1`, 1), "domain", "ed25519:1", pub, false},
		{"wrong key", vector, "domain", "ed25519:1", otherPub, false},
		{"wrong server", vector, "other", "ed25519:1", pub, false},
		{"wrong key id", vector, "domain", "ed25519:2", pub, false},
		{"unknown algorithm", strings.Replace(vector, "ed25519:1", "curve:1", 1), "domain", "curve:1", pub, false},
		{"no signatures", `{"one":1,"two":"Two"}`, "domain", "ed25519:1", pub, false},
		{"signatures not object", `{"signatures":"x"}`, "domain", "ed25519:1", pub, false},
		{"server not object", `{"signatures":{"domain":[]}}`, "domain", "ed25519:1", pub, false},
		{"signature not string", `{"signatures":{"domain":{"ed25519:1":1}}}`, "domain", "ed25519:1", pub, false},
		{"bad base64", strings.Replace(vector, sig, "!!!!", 1), "domain", "ed25519:1", pub, false},
		{"newline in base64", strings.Replace(vector, sig, sig[:10]+`\n`+sig[10:], 1), "domain", "ed25519:1", pub, false},
		{"short signature", strings.Replace(vector, sig, sig[:40], 1), "domain", "ed25519:1", pub, false},
		{"short public key", vector, "domain", "ed25519:1", pub[:31], false},
		{"nil public key", vector, "domain", "ed25519:1", nil, false},
		{"not json", `{"signatures":`, "domain", "ed25519:1", pub, false},
		{"not an object", `[1]`, "domain", "ed25519:1", pub, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyJSON([]byte(tt.obj), tt.server, tt.keyID, tt.pub)
			if tt.ok && err != nil {
				t.Fatalf("VerifyJSON: %v", err)
			}
			if !tt.ok {
				if err == nil {
					t.Fatal("VerifyJSON accepted")
				}
				if errCode(err) == "" {
					t.Fatalf("error %v is not a *spec.Error", err)
				}
			}
		})
	}
}

// appendices "Event Signing", byte for byte. The vectors predate room
// version 11 (they carry "origin"; the second has a version 1 "event_id"),
// so they hold for every version before 11, whose redaction algorithms agree
// on these events.
func TestSignEventSpecVectors(t *testing.T) {
	key := testKey(t, "domain")
	tests := []struct{ name, in, want string }{
		{"minimal", `{
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {
        "age_ts": 1000000
    }
}`, `{
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {
        "sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
    },
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {
        "age_ts": 1000000
    }
}`},
		{"redactable content", `{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {
        "age_ts": 1000000
    }
}`, `{
    "content": {
        "body": "Here is the message content"
    },
    "event_id": "$0:domain",
    "hashes": {
        "sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
    },
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {
        "age_ts": 1000000
    }
}`},
	}
	for _, v := range spec.SupportedRoomVersions {
		if v.AtLeast11() {
			continue
		}
		for _, tt := range tests {
			t.Run(tt.name+"/v"+string(v), func(t *testing.T) {
				got, err := SignEvent([]byte(tt.in), v, key)
				if err != nil {
					t.Fatal(err)
				}
				if want := mustCanonical(t, tt.want); string(got) != want {
					t.Fatalf("got\n%s\nwant\n%s", got, want)
				}
				if err := VerifyEvent(got, v, "domain", "ed25519:1", testPub(t)); err != nil {
					t.Fatalf("VerifyEvent: %v", err)
				}
				if err := CheckContentHash(got); err != nil {
					t.Fatalf("CheckContentHash: %v", err)
				}
				// The signature covers the redacted event, so a redacted copy
				// still verifies while its content hash no longer matches.
				red, err := Redact(got, v)
				if err != nil {
					t.Fatal(err)
				}
				if err := VerifyEvent(red, v, "domain", "ed25519:1", testPub(t)); err != nil {
					t.Fatalf("VerifyEvent of redacted copy: %v", err)
				}
				if tt.name == "redactable content" {
					if err := CheckContentHash(red); err == nil {
						t.Fatal("content hash of the redacted copy matched")
					}
				}
			})
		}
	}
}
