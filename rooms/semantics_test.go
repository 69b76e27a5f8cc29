package rooms

import (
	"context"
	"crypto/ed25519"
	"net/http/httptest"
	"testing"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth/authtest"
	"github.com/chatalot/chatalot/events"
	"github.com/rs/zerolog"
)

// restart builds a new rooms service and router on the same database, as a
// server restart does: what is in memory is what start-up loads.
func (ts *testServer) restart() {
	ts.t.Helper()
	_, priv, _ := ed25519.GenerateKey(nil)
	s, err := New(context.Background(), Deps{
		DB: ts.db, Key: events.SigningKey{ServerName: "test", KeyID: "ed25519:1", Private: priv},
		Server: "test", Config: Config{Encryption: ts.s.cfg.Encryption}, Log: zerolog.Nop(),
	})
	if err != nil {
		ts.t.Fatal(err)
	}
	r := api.NewRouter(api.Options{Log: zerolog.Nop()})
	s.Routes(r, authtest.Middleware)
	ts.srv.Close()
	ts.s, ts.srv = s, httptest.NewServer(r)
}

// TestTxnIDScopeIsDeviceAndEndpoint: a transaction ID is scoped to one
// device and one endpoint (client-server API "Transaction identifiers"):
// the same ID in another room, or for another event type, is a new
// request; a retry on the same path is not, also after a restart.
func TestTxnIDScopeIsDeviceAndEndpoint(t *testing.T) {
	ts := newTestServer(t, "optional")
	a, b := ts.createRoom(userA, nil), ts.createRoom(userA, nil)
	put := func(who, room, typ, body string) string {
		return ts.must(who, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/"+typ+"/abc", map[string]any{"body": body})["event_id"].(string)
	}
	first := put(userA, a, "m.room.message", "first")
	if again := put(userA, a, "m.room.message", "changed"); again != first {
		t.Fatalf("a retry with other content sent %s, want %s", again, first)
	}
	inB := put(userA, b, "m.room.message", "first")
	otherType := put(userA, a, "org.example.custom", "first")
	otherDevice := put(userA+"|OTHER", a, "m.room.message", "first")
	seen := map[string]bool{first: true}
	for _, id := range []string{inB, otherType, otherDevice} {
		if seen[id] {
			t.Fatalf("distinct requests shared an event: %s, %s, %s, %s", first, inB, otherType, otherDevice)
		}
		seen[id] = true
	}
	// A redaction's transaction is scoped to its own path.
	red := ts.must(userA, "PUT", "/_matrix/client/v3/rooms/"+a+"/redact/"+esc(otherType)+"/abc", map[string]any{})["event_id"].(string)
	if seen[red] {
		t.Fatalf("the redaction reused event %s", red)
	}
	ts.restart()
	if again := put(userA, b, "m.room.message", "after restart"); again != inB {
		t.Fatalf("after a restart the retry in room b sent %s, want %s", again, inB)
	}
	if again := put(userA, a, "m.room.message", "after restart"); again != first {
		t.Fatalf("after a restart the retry in room a sent %s, want %s", again, first)
	}
	if again := ts.must(userA, "PUT", "/_matrix/client/v3/rooms/"+a+"/redact/"+esc(otherType)+"/abc", map[string]any{})["event_id"].(string); again != red {
		t.Fatalf("after a restart the redaction retry sent %s, want %s", again, red)
	}
}
