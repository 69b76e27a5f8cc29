package main

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/storage"
)

// dbState is every table's row count plus the stream position.
func dbState(t *testing.T, a *App) string {
	t.Helper()
	ctx := context.Background()
	rows, err := a.db.Query(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%_fts%'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	sort.Strings(tables)
	var b strings.Builder
	for _, tb := range tables {
		var n int
		if err := a.db.QueryRow(ctx, `SELECT count(*) FROM "`+tb+`"`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%d ", tb, n)
	}
	var pos int64
	a.db.QueryRow(ctx, `SELECT position FROM stream_position`).Scan(&pos)
	fmt.Fprintf(&b, "position=%d", pos)
	return b.String()
}

// TestNoPartialWrites fails each storage step of register, createRoom,
// join, send and keys/upload in turn: after each failure the database must
// equal its state before the request, and the operation must succeed once
// no step fails.
func TestNoPartialWrites(t *testing.T) {
	app, srv := newTestApp(t)
	owner := registerUser(t, srv.URL, "owner")
	code, raw := request(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", owner, `{"preset":"public_chat"}`)
	if code != 200 {
		t.Fatal(raw)
	}
	room := between(raw, `"room_id":"`, `"`)
	joiner := registerUser(t, srv.URL, "joiner")

	n := 0
	ops := []struct {
		name string
		run  func() (int, string)
	}{
		{"register", func() (int, string) {
			n++
			return request(t, "POST", srv.URL+"/_matrix/client/v3/register", "", fmt.Sprintf(`{"username":"new%d","password":"correct horse battery staple","auth":{"type":"m.login.dummy"}}`, n))
		}},
		{"createRoom", func() (int, string) {
			return request(t, "POST", srv.URL+"/_matrix/client/v3/createRoom", owner, `{"preset":"private_chat","name":"x","topic":"y","invite":["@joiner:localhost"]}`)
		}},
		{"join", func() (int, string) {
			return request(t, "POST", srv.URL+"/_matrix/client/v3/join/"+room, joiner, `{}`)
		}},
		{"send", func() (int, string) {
			n++
			return request(t, "PUT", srv.URL+fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/f%d", room, n), owner, `{"msgtype":"m.text","body":"x"}`)
		}},
		{"keys/upload", func() (int, string) {
			n++
			return request(t, "POST", srv.URL+"/_matrix/client/v3/keys/upload", owner, fmt.Sprintf(`{"one_time_keys":{"curve25519:A%d":"%s","curve25519:B%d":"%s"}}`, n, fakeKey(n), n, fakeKey(n+1000)))
		}},
	}
	for _, op := range ops {
		for step := 1; ; step++ {
			before := dbState(t, app)
			failed := false
			app.db.SetFaultHook(func(s int) error {
				if s == step {
					failed = true
					return storage.ErrInjected
				}
				return nil
			})
			code, raw := op.run()
			app.db.SetFaultHook(nil)
			if !failed {
				if code != 200 {
					t.Fatalf("%s without a fault: %d %s", op.name, code, raw)
				}
				t.Logf("%s: %d storage steps, each failure left nothing behind", op.name, step-1)
				break
			}
			if code == 200 {
				t.Fatalf("%s: step %d failed but the request succeeded", op.name, step)
			}
			if after := dbState(t, app); after != before {
				t.Fatalf("%s: failing step %d left a partial write:\nbefore %s\nafter  %s", op.name, step, before, after)
			}
			if step > 100 {
				t.Fatalf("%s: more than 100 steps", op.name)
			}
		}
	}
}

// fakeKey is a well-formed (unpadded base64, 32 bytes) curve25519 key.
func fakeKey(n int) string {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, uint64(n))
	return base64.RawStdEncoding.EncodeToString(b)
}
