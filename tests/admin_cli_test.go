package tests

import (
	"strings"
	"testing"
	"time"

	"github.com/chatalot/chatalot/tests/harness"
)

// admCLI runs `chatalot admin ARGS --data-dir DIR` and fails the test on an
// error.
func admCLI(t *testing.T, dir, stdin string, args ...string) string {
	t.Helper()
	out, err := harness.Run(t, stdin, append(append([]string{"admin"}, args...), "--data-dir", dir)...)
	if err != nil {
		t.Fatalf("chatalot admin %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestAdminCLIServerStopped: every CLI command on a data directory with no
// server running; the server then starts on what the CLI did.
func TestAdminCLIServerStopped(t *testing.T) {
	dir := t.TempDir()
	admCLI(t, dir, admPassword+"\n", "create-user", "boss", "--admin", "--password-stdin")
	admCLI(t, dir, admPassword+"\n", "create-user", "alice", "--password-stdin")
	admCLI(t, dir, admPassword+"\n", "create-user", "carol", "--password-stdin")
	if out := admCLI(t, dir, "", "token", "create", "welcome-1", "--uses", "2"); strings.TrimSpace(out) != "welcome-1" {
		t.Fatalf("token create: %s", out)
	}
	generated := strings.TrimSpace(admCLI(t, dir, "", "token", "create", "--expires", "24h"))
	if len(generated) != 16 {
		t.Fatalf("generated token: %q", generated)
	}
	admCLI(t, dir, "", "token", "create", "doomed")
	if out := admCLI(t, dir, "", "token", "revoke", "doomed"); !strings.Contains(out, "deleted doomed") {
		t.Fatalf("revoke: %s", out)
	}
	list := admCLI(t, dir, "", "token", "list")
	if !strings.Contains(list, "welcome-1") || !strings.Contains(list, generated) || strings.Contains(list, "doomed") {
		t.Fatalf("token list:\n%s", list)
	}
	if out := admCLI(t, dir, "", "make-admin", "alice"); !strings.Contains(out, "@alice:localhost is a server admin") {
		t.Fatalf("make-admin: %s", out)
	}
	admCLI(t, dir, "", "make-admin", "@alice:localhost", "--revoke")
	if out := admCLI(t, dir, "a new password for alice\n", "reset-password", "alice", "--password-stdin"); !strings.Contains(out, "password of @alice:localhost changed") || strings.Contains(out, "a new password") {
		t.Fatalf("reset-password: %s", out)
	}
	if out := admCLI(t, dir, "", "deactivate", "carol", "--erase"); !strings.Contains(out, "deactivated @carol:localhost") {
		t.Fatalf("deactivate: %s", out)
	}
	if out := admCLI(t, dir, "", "rooms", "list"); !strings.Contains(out, "0 of 0 rooms") {
		t.Fatalf("rooms list: %s", out)
	}
	log := admCLI(t, dir, "", "audit-log")
	for _, a := range []string{"create_user", "create_registration_token", "delete_registration_token", "set_admin", "reset_password", "deactivate_user"} {
		if !strings.Contains(log, a) {
			t.Errorf("audit-log has no %s:\n%s", a, log)
		}
	}
	if strings.Contains(log, admPassword) || strings.Contains(log, "a new password") {
		t.Fatalf("the audit log shows a password:\n%s", log)
	}
	// Mistakes are refused with a message and a failure status.
	for _, args := range [][]string{
		{"deactivate", "nobody"}, {"make-admin", "@x:elsewhere.example"}, {"token", "revoke", "nope"},
		{"reset-password", "alice", "--password-stdin"}, {"rooms", "delete"}, {"audit-log", "--limit", "0"},
	} {
		out, err := harness.Run(t, "", append(append([]string{"admin"}, args...), "--data-dir", dir)...)
		if err == nil {
			t.Errorf("chatalot admin %v succeeded:\n%s", args, out)
		}
	}

	e := &admEnv{t: t, s: harness.Start(t, harness.WithDataDir(dir), harness.WithArgs("--registration", "token"))}
	e.token = e.login("boss", admPassword)
	if c, _ := e.loginCode("alice", admPassword); c == 200 {
		t.Fatal("the old password still works")
	}
	alice := e.login("alice", "a new password for alice")
	e.want("GET", e.s.URL+"/_synapse/admin/v1/server_version", alice, nil, 403, "M_FORBIDDEN")
	if c, _ := e.loginCode("carol", admPassword); c == 200 {
		t.Fatal("a deactivated user logged in")
	}
	if u := e.admin("GET", e.s.URL+"/_synapse/admin/v2/users/@carol:localhost", nil, 200); u["deactivated"] != true || u["erased"] != true {
		t.Fatalf("carol: %v", u)
	}
	if c, out := e.registerWithToken("dave", "welcome-1"); c != 200 {
		t.Fatalf("register with a CLI invite code: %d %v", c, out)
	}
	if c, _ := e.registerWithToken("erin", "doomed"); c == 200 {
		t.Fatal("a revoked invite code registered an account")
	}
	entries := e.audit()
	if len(entries) < 8 || entries[0]["actor"] != "cli" || entries[0]["origin"] != "cli" {
		t.Fatalf("audit log over the API: %v", entries)
	}
}

// TestAdminCLIServerRunning: the CLI on the data directory of a running
// server; what matters for security takes effect at once in the database
// and within a second in the server's memory.
func TestAdminCLIServerRunning(t *testing.T) {
	e := admStart(t, "--registration", "token")
	dir := e.s.DataDir
	code := strings.TrimSpace(admCLI(t, dir, "", "token", "create", "--uses", "5"))
	for _, name := range []string{"alice", "bob"} {
		if c, out := e.registerWithToken(name, code); c != 200 {
			t.Fatalf("register %s: %d %v", name, c, out)
		}
	}
	alice := e.login("alice", admPassword)
	bob := e.login("bob", admPassword)
	room := e.createRoom(bob, map[string]any{"preset": "public_chat", "name": "Hangout"})
	e.want("POST", e.url("/_matrix/client/v3/join/%s", room), alice, map[string]any{}, 200, "")

	// Deactivation: alice's open session stops, she leaves the room, she
	// cannot log in again.
	admCLI(t, dir, "", "deactivate", "alice")
	if c, _ := e.loginCode("alice", admPassword); c == 200 {
		t.Fatal("a deactivated user logged in")
	}
	admWait(t, 10*time.Second, "the deactivated user's session to end", func() bool {
		c, _ := e.do("GET", e.s.URL+"/_matrix/client/v3/account/whoami", alice, nil)
		return c == 401
	})
	admWait(t, 10*time.Second, "the deactivated user to leave the room", func() bool {
		m := e.want("GET", e.url("/_matrix/client/v3/rooms/%s/joined_members", room), bob, nil, 200, "")["joined"].(map[string]any)
		_, in := m["@alice:localhost"]
		return !in
	})

	// Admin rights: bob's open session gains them, then loses them.
	e.want("GET", e.s.URL+"/_synapse/admin/v1/server_version", bob, nil, 403, "M_FORBIDDEN")
	admCLI(t, dir, "", "make-admin", "bob")
	admWait(t, 10*time.Second, "bob's session to become an admin's", func() bool {
		c, _ := e.do("GET", e.s.URL+"/_synapse/admin/v1/server_version", bob, nil)
		return c == 200
	})
	admCLI(t, dir, "", "make-admin", "bob", "--revoke")
	admWait(t, 10*time.Second, "bob's session to lose admin rights", func() bool {
		c, _ := e.do("GET", e.s.URL+"/_synapse/admin/v1/server_version", bob, nil)
		return c == 403
	})

	// A password reset logs bob's devices out.
	admCLI(t, dir, "yet another long password\n", "reset-password", "bob", "--password-stdin")
	admWait(t, 10*time.Second, "bob's old session to end", func() bool {
		c, _ := e.do("GET", e.s.URL+"/_matrix/client/v3/account/whoami", bob, nil)
		return c == 401
	})
	e.login("bob", "yet another long password")

	// A revoked invite code no longer registers, at once.
	admCLI(t, dir, "", "token", "revoke", code)
	if c, _ := e.registerWithToken("carol", code); c == 200 {
		t.Fatal("a revoked invite code registered an account")
	}
	if out := admCLI(t, dir, "", "rooms", "list"); !strings.Contains(out, room) || !strings.Contains(out, "Hangout") {
		t.Fatalf("rooms list:\n%s", out)
	}
	log := admCLI(t, dir, "", "audit-log", "--actor", "cli", "--action", "deactivate_user")
	if !strings.Contains(log, "@alice:localhost") {
		t.Fatalf("audit-log:\n%s", log)
	}
}
