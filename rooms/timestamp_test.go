package rooms_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/chatalot/chatalot/rooms"
)

func TestTimestampToEvent(t *testing.T) {
	ts := newTestServer(t, "optional")
	clock := time.UnixMilli(1_700_000_000_000)
	rooms.SetClockForTest(ts.s, func() time.Time { return clock })
	room := ts.CreateRoom(userA, map[string]any{"preset": "public_chat"})
	ts.putState(userA, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
	clock = clock.Add(time.Minute) // t0 + 1m
	first := ts.send(userA, room, map[string]any{"body": "1"})
	clock = clock.Add(time.Minute) // t0 + 2m
	second := ts.send(userA, room, map[string]any{"body": "2"})
	clock = clock.Add(time.Minute) // t0 + 3m
	ts.join(userB, room)
	clock = clock.Add(time.Minute) // t0 + 4m
	third := ts.send(userA, room, map[string]any{"body": "3"})

	at := func(user string, d time.Duration, dir string) (int, map[string]any) {
		ms := time.UnixMilli(1_700_000_000_000).Add(d).UnixMilli()
		return ts.do(user, "GET", v1+room+"/timestamp_to_event?ts="+strconv.FormatInt(ms, 10)+"&dir="+dir, nil)
	}
	for _, c := range []struct {
		d    time.Duration
		dir  string
		want string
	}{
		{90 * time.Second, "f", second},
		{90 * time.Second, "b", first},
		{2 * time.Minute, "f", second}, // exactly at the event, either way
		{2 * time.Minute, "b", second},
		{5 * time.Minute, "b", third},
	} {
		code, body := at(userA, c.d, c.dir)
		if code != 200 || body["event_id"] != c.want {
			t.Fatalf("%s %s: %d %v, want %s", c.d, c.dir, code, body, c.want)
		}
		if body["origin_server_ts"] == nil {
			t.Fatalf("no origin_server_ts: %v", body)
		}
	}
	code, body := at(userA, 5*time.Minute, "f")
	wantError(t, code, body, 404, "M_NOT_FOUND")

	// Bob joined at 3m under "joined" visibility: the two messages before
	// are skipped both ways (he may see the room's creation, which was
	// shared).
	for _, dir := range []string{"b", "f"} {
		code, body = at(userB, 90*time.Second, dir)
		if code != 200 || body["event_id"] == second || body["event_id"] == first {
			t.Fatalf("Bob got a hidden event going %s: %d %v", dir, code, body)
		}
	}
	// Carol, not in the room, gets the room's 403.
	code, body = at(userC, time.Minute, "f")
	wantError(t, code, body, 403, "M_FORBIDDEN")

	for _, q := range []string{"?dir=f", "?ts=1", "?ts=x&dir=f", "?ts=1&dir=up", "?ts=-5&dir=b"} {
		code, body := ts.do(userA, "GET", v1+room+"/timestamp_to_event"+q, nil)
		if code != 400 || (body["errcode"] != "M_INVALID_PARAM" && body["errcode"] != "M_MISSING_PARAM") {
			t.Fatalf("%s: %d %v", q, code, body)
		}
	}
}
