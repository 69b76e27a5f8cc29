package admin

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

// TestSuspendedRouteClassification: what a suspended account may and may
// not do, by route shape.
func TestSuspendedRouteClassification(t *testing.T) {
	s := &Service{}
	cases := []struct {
		method, route string
		denied        bool
	}{
		{"GET", "/_matrix/client/v3/sync", false},
		{"GET", "/_matrix/client/v3/rooms/:roomId/messages", false},
		{"POST", "/_matrix/client/v3/rooms/:roomId/leave", false},
		{"POST", "/_matrix/client/v3/rooms/:roomId/forget", false},
		{"POST", "/_matrix/client/v3/logout", false},
		{"POST", "/_matrix/client/v3/keys/upload", false},
		{"PUT", "/_matrix/client/v3/room_keys/keys", false},
		{"PUT", "/_matrix/client/v3/sendToDevice/:eventType/:txnId", false},
		{"POST", "/_matrix/client/v3/rooms/:roomId/receipt/:receiptType/:eventId", false},
		{"POST", "/_matrix/client/v3/account/deactivate", false},
		{"POST", "/_matrix/client/v3/delete_devices", false},
		{"POST", "/_matrix/client/v3/createRoom", true},
		{"POST", "/_matrix/client/v3/join/:roomIdOrAlias", true},
		{"POST", "/_matrix/client/v3/knock/:roomIdOrAlias", true},
		{"POST", "/_matrix/client/v3/rooms/:roomId/join", true},
		{"POST", "/_matrix/client/v3/rooms/:roomId/invite", true},
		{"POST", "/_matrix/client/v3/rooms/:roomId/kick", true},
		{"POST", "/_matrix/client/v3/rooms/:roomId/ban", true},
		{"PUT", "/_matrix/client/v3/rooms/:roomId/send/:eventType/:txnId", true},
		{"PUT", "/_matrix/client/v3/rooms/:roomId/state/:eventType/*stateKey", true},
		{"PUT", "/_matrix/client/r0/profile/:userId/:keyName", true},
		{"PUT", "/_matrix/client/v3/directory/room/:roomAlias", true},
		{"POST", "/_matrix/media/v3/upload", true},
		{"PUT", "/_matrix/client/v3/rooms/:roomId/redact/:eventId/:txnId", true}, // not their own
	}
	for _, c := range cases {
		r := gin.New()
		var got bool
		r.Handle(c.method, c.route, func(g *gin.Context) { got = s.suspendedMayNot(g, "@a:test") })
		path := c.route
		for _, p := range []string{":roomIdOrAlias", ":roomId", ":eventType", ":txnId", "*stateKey", ":userId", ":keyName", ":roomAlias", ":receiptType", ":eventId"} {
			path = replaceSeg(path, p)
		}
		req := httptest.NewRequest(c.method, path, nil)
		r.ServeHTTP(httptest.NewRecorder(), req)
		if got != c.denied {
			t.Errorf("%s %s: denied %v, want %v", c.method, c.route, got, c.denied)
		}
	}
	if !isLogout("/_matrix/client/v3/logout/all") || isLogout("/_matrix/client/v3/sync") {
		t.Fatal("isLogout")
	}
}

func replaceSeg(path, param string) string {
	out := []byte{}
	for i := 0; i < len(path); {
		if len(path)-i >= len(param) && path[i:i+len(param)] == param {
			out = append(out, 'x')
			i += len(param)
			continue
		}
		out = append(out, path[i])
		i++
	}
	return string(out)
}

// TestPage: paging slices and the next offset.
func TestPage(t *testing.T) {
	list := []int{1, 2, 3, 4, 5}
	for _, c := range []struct{ from, limit, n, next int }{
		{0, 2, 2, 2}, {2, 2, 2, 4}, {4, 2, 1, -1}, {5, 2, 0, -1}, {9, 2, 0, -1}, {0, 0, 0, -1}, {0, 10, 5, -1},
	} {
		got, next := page(list, c.from, c.limit)
		if len(got) != c.n || next != c.next {
			t.Errorf("page(from %d, limit %d) = %v, %d", c.from, c.limit, got, next)
		}
	}
}

// TestGeneratedTokensAreLettersAndDigits: a generated invite code never
// holds punctuation, so none begins with "-" and reads as a CLI flag.
func TestGeneratedTokensAreLettersAndDigits(t *testing.T) {
	for i := 0; i < 2000; i++ {
		tok, err := randomToken(16)
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != 16 || strings.Trim(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != "" {
			t.Fatalf("generated token %q", tok)
		}
	}
}
