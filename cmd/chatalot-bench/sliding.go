package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Issue 22: "a 500-room account's first room-list response (range 0–19,
// timeline 1) costs no more server CPU than a /v3/sync of 20 rooms; an empty
// long-poll answers from memory". The sliding scenario sets the server's
// CPU per request of Element X's room-list connection beside /v3/sync's:
// the first answer of a connection for an account in -rooms rooms (500 in
// growth), an initial /v3/sync (timeline limit 1) of an account in 20 rooms,
// and empty answers of both.
const (
	slidingSmallRooms = 20
	slidingFirstReps  = 100
	slidingEmptyReps  = 500
	slidingPath       = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
	filterTimeline1   = `{"room":{"timeline":{"limit":1}}}`
)

// slidingRoomList is the first request of matrix-rust-sdk's room-list
// connection (the same body as cmd/chatalot/testdata/sliding_sync_rust_sdk.json,
// from crates/matrix-sdk-ui/src/room_list_service/mod.rs of SDK 0.18.0).
var slidingRoomList = json.RawMessage(`{"conn_id":"room-list","lists":{"all_rooms":{"ranges":[[0,19]],
"required_state":[["m.room.name",""],["m.room.encryption",""],["m.room.member","$LAZY"],["m.room.member","$ME"],
["m.room.topic",""],["m.room.avatar",""],["m.room.canonical_alias",""],["m.room.power_levels",""],
["org.matrix.msc3401.call.member","*"],["m.room.join_rules",""],["m.room.tombstone",""],["m.room.create",""],
["m.room.history_visibility",""],["io.element.functional_members",""],["m.space.parent","*"],["m.space.child","*"],
["org.matrix.msc3672.beacon_info","*"]],"filters":{},"timeline_limit":1}},
"extensions":{"account_data":{"enabled":true},"receipts":{"enabled":true,"rooms":["*"]},"typing":{"enabled":true}}}`)

// slidingAnswer is the part of an answer the benchmark checks.
type slidingAnswer struct {
	Pos   string                                `json:"pos"`
	Lists map[string]struct{ Count int }        `json:"lists"`
	Rooms map[string]struct{ Timeline []Event } `json:"rooms"`
}

// SlidingSync makes one sliding sync request; pos "" starts a connection.
func (c *Client) SlidingSync(ctx context.Context, pos string, body json.RawMessage) (*slidingAnswer, error) {
	q := url.Values{"timeout": {"0"}}
	if pos != "" {
		q.Set("pos", pos)
	}
	var out slidingAnswer
	if err := c.do(ctx, http.MethodPost, slidingPath, q, body, &out); err != nil {
		return nil, err
	}
	if out.Pos == "" {
		return nil, fmt.Errorf("POST %s: no pos in the answer", slidingPath)
	}
	return &out, nil
}

func runSliding(r *Run) error {
	users, err := r.register("sliding", 2)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	big, small := users[0], users[1]
	r.logf("creating %d + %d rooms with a message each", r.p.Rooms, slidingSmallRooms)
	for i := 0; i < r.p.Rooms+slidingSmallRooms; i++ {
		c := big
		if i >= r.p.Rooms {
			c = small
		}
		id, err := c.CreateRoom(r.ctx)
		if err != nil {
			return fmt.Errorf("createRoom: %w", err)
		}
		if _, err := c.Send(r.ctx, id, int64(i)); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}

	phase := func(prefix string, reps int, unit string, one func() error) error {
		var lat latencies
		w, err := begin(r.ctx, r.srv)
		if err != nil {
			return err
		}
		for range reps {
			if err := lat.timed(one); err != nil {
				return fmt.Errorf("%s: %w", prefix, err)
			}
		}
		u, err := w.end(r.ctx)
		if err != nil {
			return err
		}
		r.res.addLatency(prefix, lat.sorted())
		r.res.addUsage(prefix, u, reps, unit)
		return nil
	}

	r.logf("initial /v3/sync of %d rooms", slidingSmallRooms)
	var since string
	err = phase("v3_initial_20_rooms_", slidingFirstReps, "sync", func() error {
		resp, err := small.Sync(r.ctx, "", 0, filterTimeline1)
		if err != nil {
			return err
		}
		if len(resp.Rooms.Join) != slidingSmallRooms {
			return fmt.Errorf("%d rooms in the initial sync, want %d", len(resp.Rooms.Join), slidingSmallRooms)
		}
		since = resp.NextBatch
		return nil
	})
	if err != nil {
		return err
	}
	err = phase("v3_empty_", slidingEmptyReps, "sync", func() error {
		resp, err := small.Sync(r.ctx, since, 0, filterTimeline1)
		if err != nil {
			return err
		}
		since = resp.NextBatch
		return nil
	})
	if err != nil {
		return err
	}

	r.logf("first room-list answers for %d rooms", r.p.Rooms)
	var pos string
	want := min(20, r.p.Rooms)
	err = phase("sliding_first_"+strconv.Itoa(r.p.Rooms)+"_rooms_", slidingFirstReps, "request", func() error {
		a, err := big.SlidingSync(r.ctx, "", slidingRoomList)
		if err != nil {
			return err
		}
		if len(a.Rooms) != want || a.Lists["all_rooms"].Count != r.p.Rooms {
			return fmt.Errorf("%d rooms of %d, want %d of %d", len(a.Rooms), a.Lists["all_rooms"].Count, want, r.p.Rooms)
		}
		for id, room := range a.Rooms {
			if len(room.Timeline) != 1 {
				return fmt.Errorf("room %s: %d timeline events, want 1", id, len(room.Timeline))
			}
		}
		pos = a.Pos
		return nil
	})
	if err != nil {
		return err
	}
	err = phase("sliding_empty_", slidingEmptyReps, "request", func() error {
		a, err := big.SlidingSync(r.ctx, pos, slidingRoomList)
		if err != nil {
			return err
		}
		if len(a.Rooms) != 0 {
			return fmt.Errorf("an empty answer carried %d rooms", len(a.Rooms))
		}
		pos = a.Pos
		return nil
	})
	if err != nil {
		return err
	}
	r.res.add("rooms", float64(r.p.Rooms))
	return nil
}
