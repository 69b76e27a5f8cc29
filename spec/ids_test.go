package spec

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// idOfLen pads a prefix and suffix to exactly n bytes with 'a'.
func idOfLen(prefix, suffix string, n int) string {
	return prefix + strings.Repeat("a", n-len(prefix)-len(suffix)) + suffix
}

// hash43 is a canonical 43-character URL-safe base64 encoding of 32 bytes.
const hash43 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

// hashLike43 uses every special character of the URL-safe alphabet; its last
// character encodes only zero padding bits, as a canonical encoding must.
const hashLike43 = "abc-_XYZ0123456789abcdefghijklmnopqrstuvwxA"

func wantInvalidParam(t *testing.T, err error, code ErrCode) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *spec.Error", err, err)
	}
	if e.Code != code {
		t.Fatalf("errcode = %s, want %s (%s)", e.Code, code, e.Message)
	}
}

func TestParseServerName(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		host string
		port int
	}{
		{"matrix.org", true, "matrix.org", 0},
		{"matrix.org:8888", true, "matrix.org", 8888},
		{"localhost", true, "localhost", 0},
		{"MATRIX.ORG", true, "MATRIX.ORG", 0},
		{"my-server.example", true, "my-server.example", 0},
		{"-odd-.example", true, "-odd-.example", 0}, // the grammar allows hyphens anywhere
		{"1.2.3.4", true, "1.2.3.4", 0},
		{"1.2.3.4:1234", true, "1.2.3.4", 1234},
		{"0.0.0.0", true, "0.0.0.0", 0},
		{"255.255.255.255", true, "255.255.255.255", 0},
		{"[1234:5678::abcd]", true, "1234:5678::abcd", 0},
		{"[1234:5678::abcd]:5678", true, "1234:5678::abcd", 5678},
		{"[::1]", true, "::1", 0},
		{"[::ffff:1.2.3.4]:8448", true, "::ffff:1.2.3.4", 8448},
		{"[ABCD:EF01::1]", true, "ABCD:EF01::1", 0},
		{"example.org:1", true, "example.org", 1},
		{"example.org:65535", true, "example.org", 65535},
		{"example.org:08448", true, "example.org", 8448}, // 1*5DIGIT
		{"123abc", true, "123abc", 0},
		{idOfLen("", "", 255), true, strings.Repeat("a", 255), 0},

		{"", false, "", 0},
		{":8448", false, "", 0},
		{"example.org:", false, "", 0},
		{"example.org:0", false, "", 0},
		{"example.org:00000", false, "", 0},
		{"example.org:65536", false, "", 0},
		{"example.org:123456", false, "", 0},
		{"example.org:-1", false, "", 0},
		{"example.org:80a", false, "", 0},
		{"example.org:80:90", false, "", 0},
		{idOfLen("", "", 256), false, "", 0},
		{"exa mple.org", false, "", 0},
		{"exam_ple.org", false, "", 0},
		{"example.org/", false, "", 0},
		{"ex\x00ample.org", false, "", 0},
		{"exämple.org", false, "", 0},
		{"example..org", false, "", 0},
		{".example.org", false, "", 0},
		{"example.org.", false, "", 0},
		{"256.1.1.1", false, "", 0},
		{"1.2.3", false, "", 0},
		{"1.2.3.4.5", false, "", 0},
		{"1.2.3.0004", false, "", 0},
		{"1..2.3", false, "", 0},
		{"[::1", false, "", 0},
		{"::1", false, "", 0},
		{"[]", false, "", 0},
		{"[:]", false, "", 0},
		{"[1:2:3:4:5:6:7:8:9]", false, "", 0},
		{"[12345::1]", false, "", 0},
		{"[::g]", false, "", 0},
		{"[fe80::1%eth0]", false, "", 0},
		{"[1.2.3.4]", false, "", 0},
		{"[::1]x", false, "", 0},
		{"[::1]:", false, "", 0},
		{"[::1]:0", false, "", 0},
		{"[::1]:65536", false, "", 0},
	}
	for _, tt := range tests {
		got, err := ParseServerName(tt.in)
		if !tt.ok {
			if err == nil {
				t.Errorf("ParseServerName(%q) = %q, want error", tt.in, got)
				continue
			}
			wantInvalidParam(t, err, ErrInvalidParam)
			continue
		}
		if err != nil {
			t.Errorf("ParseServerName(%q): %v", tt.in, err)
			continue
		}
		if got.String() != tt.in || got.Host() != tt.host {
			t.Errorf("ParseServerName(%q) = %q host %q, want host %q", tt.in, got, got.Host(), tt.host)
		}
		port, hasPort := got.Port()
		if port != tt.port || hasPort != (tt.port != 0) {
			t.Errorf("ParseServerName(%q).Port() = %d %v, want %d", tt.in, port, hasPort, tt.port)
		}
	}
}

func TestParseUserID(t *testing.T) {
	tests := []struct {
		in        string
		ok        bool
		local     string
		server    ServerName
		compliant bool
	}{
		{"@alice:example.org", true, "alice", "example.org", true},
		{"@a.b_c=d-e/f+g:example.org:8448", true, "a.b_c=d-e/f+g", "example.org:8448", true},
		{"@bob:[::1]:8448", true, "bob", "[::1]:8448", true},
		{"@bob:1.2.3.4", true, "bob", "1.2.3.4", true},
		// Historical user IDs: accepted on read.
		{"@Alice:example.org", true, "Alice", "example.org", true},
		{"@al!ce#$%*:example.org", true, "al!ce#$%*", "example.org", true},
		{"@alice smith:example.org", true, "alice smith", "example.org", false},
		{"@ålice:example.org", true, "ålice", "example.org", false},
		{"@\x01ctl\x7f:example.org", true, "\x01ctl\x7f", "example.org", false},
		{"@:example.org", true, "", "example.org", false},
		{idOfLen("@", ":example.org", 255), true, strings.Repeat("a", 255-13), "example.org", true},

		{idOfLen("@", ":example.org", 256), false, "", "", false},
		{"", false, "", "", false},
		{"@", false, "", "", false},
		{"alice:example.org", false, "", "", false},
		{"#alice:example.org", false, "", "", false},
		{"@alice", false, "", "", false},
		{"@alice:", false, "", "", false},
		{"@alice:exa mple.org", false, "", "", false},
		{"@alice:example.org:0", false, "", "", false},
		{"@al\x00ice:example.org", false, "", "", false},
		{"@al\xffice:example.org", false, "", "", false},
		{"@\xed\xa0\x80:example.org", false, "", "", false}, // a UTF-16 surrogate
		{"@alice:ex\x00ample.org", false, "", "", false},
	}
	for _, tt := range tests {
		got, err := ParseUserID(tt.in)
		if !tt.ok {
			if err == nil {
				t.Errorf("ParseUserID(%q) = %q, want error", tt.in, got)
				continue
			}
			wantInvalidParam(t, err, ErrInvalidParam)
			continue
		}
		if err != nil {
			t.Errorf("ParseUserID(%q): %v", tt.in, err)
			continue
		}
		if got.String() != tt.in || got.Localpart() != tt.local || got.Server() != tt.server || got.Compliant() != tt.compliant {
			t.Errorf("ParseUserID(%q) = %q local %q server %q compliant %v", tt.in, got, got.Localpart(), got.Server(), got.Compliant())
		}
		if NewUserID(got.Localpart(), got.Server()) != got {
			t.Errorf("NewUserID does not rebuild %q", tt.in)
		}
	}
}

func TestValidateLocalpart(t *testing.T) {
	valid := []string{"alice", "a", "0", "a.b_c=d-e/f+g", "user_123", strings.Repeat("z", 252)}
	for _, l := range valid {
		if err := ValidateLocalpart(l); err != nil {
			t.Errorf("ValidateLocalpart(%q): %v", l, err)
		}
	}
	invalid := []string{"", "Alice", "al ice", "al:ice", "al@ice", "al#ice", "ålice", "al\x00ice",
		"al*ice", "al!ice", "al\\ice", "al~ice", strings.Repeat("z", 253)}
	for _, l := range invalid {
		err := ValidateLocalpart(l)
		if err == nil {
			t.Errorf("ValidateLocalpart(%q) accepted", l)
			continue
		}
		wantInvalidParam(t, err, ErrInvalidUsername)
	}
}

func TestParseRoomID(t *testing.T) {
	tests := []struct {
		in     string
		ok     bool
		server ServerName
	}{
		{"!abcDEF123:example.org", true, "example.org"},
		{"!abc:example.org:8448", true, "example.org:8448"},
		{"!abc:[::1]", true, "[::1]"},
		{"!ünïcode\x01:example.org", true, "example.org"},
		{"!" + hash43, true, ""},
		{"!" + hashLike43, true, ""},
		{idOfLen("!", ":example.org", 255), true, "example.org"},

		{idOfLen("!", ":example.org", 256), false, ""},
		{"", false, ""},
		{"!", false, ""},
		{"$abc:example.org", false, ""},
		{"!:example.org", false, ""},
		{"!abc:", false, ""},
		{"!abc:bad_server", false, ""},
		{"!a\x00b:example.org", false, ""},
		{"!a\xc3:example.org", false, ""},
		{"!abc", false, ""},                              // no server, not a hash
		{"!" + hash43[:42], false, ""},                   // 42 characters
		{"!" + hash43 + "A", false, ""},                  // 44 characters
		{"!" + hash43[:42] + "B", false, ""},             // non-zero padding bits
		{"!" + hash43[:42] + "+", false, ""},             // standard, not URL-safe, alphabet
		{"!" + hash43[:41] + "A=", false, ""},            // padding
		{"!" + strings.Repeat("é", 21) + "A", false, ""}, // 43 bytes, not base64
	}
	for _, tt := range tests {
		got, err := ParseRoomID(tt.in)
		if !tt.ok {
			if err == nil {
				t.Errorf("ParseRoomID(%q) = %q, want error", tt.in, got)
				continue
			}
			wantInvalidParam(t, err, ErrInvalidParam)
			continue
		}
		if err != nil {
			t.Errorf("ParseRoomID(%q): %v", tt.in, err)
			continue
		}
		if got.String() != tt.in || got.Server() != tt.server {
			t.Errorf("ParseRoomID(%q) = %q server %q, want server %q", tt.in, got, got.Server(), tt.server)
		}
	}
}

func TestParseEventID(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"$" + hash43, true},
		{"$abc:example.org", true}, // room versions 1 and 2
		{"$a", true},
		{"$ünïcode", true},
		{idOfLen("$", "", 255), true},

		{idOfLen("$", "", 256), false},
		{"", false},
		{"$", false},
		{"abc", false},
		{"!" + hash43, false},
		{"$a\x00b", false},
		{"$a\xffb", false},
	}
	for _, tt := range tests {
		got, err := ParseEventID(tt.in)
		if tt.ok != (err == nil) {
			t.Errorf("ParseEventID(%q) = %q, %v; want ok %v", tt.in, got, err, tt.ok)
			continue
		}
		if err != nil {
			wantInvalidParam(t, err, ErrInvalidParam)
		} else if got.String() != tt.in {
			t.Errorf("ParseEventID(%q) = %q", tt.in, got)
		}
	}
}

func TestParseRoomAlias(t *testing.T) {
	tests := []struct {
		in     string
		ok     bool
		local  string
		server ServerName
	}{
		{"#room:example.org", true, "room", "example.org"},
		{"#Room Name!:example.org:8448", true, "Room Name!", "example.org:8448"},
		{"#café:1.2.3.4", true, "café", "1.2.3.4"},
		{idOfLen("#", ":example.org", 255), true, strings.Repeat("a", 255-13), "example.org"},

		{idOfLen("#", ":example.org", 256), false, "", ""},
		{"", false, "", ""},
		{"#", false, "", ""},
		{"#room", false, "", ""},
		{"#:example.org", false, "", ""},
		{"#room:", false, "", ""},
		{"room:example.org", false, "", ""},
		{"#ro\x00om:example.org", false, "", ""},
		{"#ro\xffom:example.org", false, "", ""},
		{"#room:example.org:65536", false, "", ""},
	}
	for _, tt := range tests {
		got, err := ParseRoomAlias(tt.in)
		if !tt.ok {
			if err == nil {
				t.Errorf("ParseRoomAlias(%q) = %q, want error", tt.in, got)
				continue
			}
			wantInvalidParam(t, err, ErrInvalidParam)
			continue
		}
		if err != nil {
			t.Errorf("ParseRoomAlias(%q): %v", tt.in, err)
			continue
		}
		if got.String() != tt.in || got.Localpart() != tt.local || got.Server() != tt.server {
			t.Errorf("ParseRoomAlias(%q) = %q local %q server %q", tt.in, got, got.Localpart(), got.Server())
		}
	}
}

func TestAccessorsOfUnparsedValues(t *testing.T) {
	// Accessors of values that never went through a parser must not panic.
	if UserID("").Localpart() != "" || UserID("@nocolon").Server() != "" || UserID("").Compliant() {
		t.Error("empty user ID accessors")
	}
	if RoomID("").Server() != "" || RoomAlias("#x").Server() != "" {
		t.Error("empty room ID accessors")
	}
	if ServerName("bad name").Host() != "" {
		t.Error("invalid server name has a host")
	}
	if p, ok := ServerName("bad:0").Port(); ok || p != 0 {
		t.Error("invalid server name has a port")
	}
}

// FuzzParseIDs checks that no parser panics, and that whatever a parser
// accepts is returned unchanged and is accepted again.
func FuzzParseIDs(f *testing.F) {
	seeds := []string{
		"@alice:example.org", "@:example.org", "@a\x00:b", "@a:b:c", "@a:[::1]:8448",
		"!abc:example.org", "!" + hash43, "!" + hash43[:42] + "B", "$" + hash43, "$a:b",
		"#room:example.org", "#:x", "example.org:8448", "[1234:5678::abcd]:5678", "1.2.3.4",
		"256.0.0.1", "[fe80::1%25eth0]", "x:0", "x:65536", "[", "]", ":", "", "@", "!", "$", "#",
		idOfLen("@", ":example.org", 255), idOfLen("@", ":example.org", 256), "@\xed\xa0\x80:a",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if u, err := ParseUserID(s); err == nil {
			if u.String() != s || len(s) > 255 {
				t.Fatalf("user ID %q changed or too long", s)
			}
			if NewUserID(u.Localpart(), u.Server()) != u {
				t.Fatalf("user ID %q does not round-trip through its parts", s)
			}
			if _, err := ParseServerName(string(u.Server())); err != nil {
				t.Fatalf("user ID %q has an invalid server", s)
			}
			_ = u.Compliant()
		}
		if r, err := ParseRoomID(s); err == nil {
			if r.String() != s || len(s) > 255 {
				t.Fatalf("room ID %q changed or too long", s)
			}
			if srv := r.Server(); srv != "" {
				if _, err := ParseServerName(string(srv)); err != nil {
					t.Fatalf("room ID %q has an invalid server", s)
				}
			}
		}
		if e, err := ParseEventID(s); err == nil && (e.String() != s || len(s) > 255) {
			t.Fatalf("event ID %q changed or too long", s)
		}
		if a, err := ParseRoomAlias(s); err == nil {
			if a.String() != s || "#"+a.Localpart()+":"+string(a.Server()) != s {
				t.Fatalf("alias %q does not round-trip", s)
			}
		}
		if sn, err := ParseServerName(s); err == nil {
			if sn.String() != s {
				t.Fatalf("server name %q changed", s)
			}
			host := sn.Host()
			if strings.HasPrefix(s, "[") {
				host = "[" + host + "]"
			}
			rebuilt := host
			if port, ok := sn.Port(); ok {
				if port < 1 || port > 65535 {
					t.Fatalf("server name %q has port %d", s, port)
				}
				rebuilt += ":" + strconv.Itoa(port)
			}
			again, err := ParseServerName(rebuilt)
			if err != nil || again.Host() != sn.Host() {
				t.Fatalf("server name %q rebuilt as %q: %v", s, rebuilt, err)
			}
		}
		_ = ValidateLocalpart(s)
	})
}
