package tests

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/chatalot/chatalot/tests/harness"
)

// TestRoomVersionsOnTheRealServer: capabilities list every stable room
// version with the configured default, rooms without a version get it, and
// a room of the oldest version works.
func TestRoomVersionsOnTheRealServer(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{{nil, "12"}, {[]string{"--default-room-version", "10"}, "10"}} {
		s := harness.Start(t, harness.WithArgs(tc.args...))
		tok := registerForTest(t, s.URL, "alice")
		call := func(method, path string, body any) map[string]any {
			t.Helper()
			raw, _ := json.Marshal(body)
			req, _ := http.NewRequest(method, s.URL+path, bytes.NewReader(raw))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := httpClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			out := map[string]any{}
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
				t.Fatalf("%s %s: %d %v %v", method, path, resp.StatusCode, out, err)
			}
			return out
		}
		caps := call("GET", "/_matrix/client/v3/capabilities", nil)["capabilities"].(map[string]any)["m.room_versions"].(map[string]any)
		available := caps["available"].(map[string]any)
		if caps["default"] != tc.want || len(available) != 12 {
			t.Fatalf("m.room_versions %v", caps)
		}
		for _, v := range []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
			if available[v] != "stable" {
				t.Fatalf("version %s: %v", v, available[v])
			}
		}
		id := call("POST", "/_matrix/client/v3/createRoom", map[string]any{})["room_id"].(string)
		create := call("GET", "/_matrix/client/v3/rooms/"+id+"/state/m.room.create/", nil)
		if create["room_version"] != tc.want {
			t.Fatalf("new room of version %v, want %s", create["room_version"], tc.want)
		}
		old := call("POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "1"})["room_id"].(string)
		sent := call("PUT", "/_matrix/client/v3/rooms/"+old+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "v1"})
		if id, _ := sent["event_id"].(string); len(id) < 3 || id[len(id)-len(":localhost"):] != ":localhost" {
			t.Fatalf("v1 event ID %v", sent)
		}
	}
}
