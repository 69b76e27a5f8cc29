package events

import (
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

// benchEvent is a typical 1 KiB event as a client or server sends it:
// pretty-printed, keys out of order, some escapes.
var benchEvent = func() []byte {
	body := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 12)
	return []byte(`{
  "type": "m.room.message",
  "sender": "@alice:example.org",
  "room_id": "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ",
  "origin_server_ts": 1700000000003,
  "depth": 12345,
  "prev_events": ["$rkoXW1mD-1YZu7j6_iXxNWEmkaa9D6qC8cgAr4OcZFM"],
  "auth_events": ["$37iwD-DyT01UTC3QaO2Ot9nDS1G-rmVcGz0DYMPzG6c", "$MgAxfY093SssN5F2y9EjlGkQxbQRQyEsbbH52Bna1yc", "$t2xGc0aJBO7HsrbmLXi60wxmibSvJ1NIIz8SbI2oyA4"],
  "content": {
    "msgtype": "m.text",
    "body": "` + body + `\n\u00e9t\u00e9 \u2603",
    "m.mentions": {"user_ids": ["@bob:example.org"]},
    "format": "org.matrix.custom.html",
    "formatted_body": "<b>hello<\/b>"
  },
  "hashes": {"sha256": "mIQFyhasv5ZfqpoIpVJ9ayoZZ/po7OP/7K70yB1qvZc"},
  "signatures": {"example.org": {"ed25519:1": "qf1G98WvJhKo3F24rK7ZJ6Vk7eqco7f/XifwD1zyBbC+noa8TPGjFaeX07FBGG4VoTHylggxeRYJKuntHvf2AA"}}
}`)
}()

func BenchmarkCanonical(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchEvent)))
	for b.Loop() {
		if _, err := Canonical(benchEvent); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCanonicalAlreadyCanonical(b *testing.B) {
	c, err := Canonical(benchEvent)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(c)))
	for b.Loop() {
		if _, err := Canonical(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuild(b *testing.B) {
	key := testKey(b, "example.org")
	content, err := CanonicalObject([]byte(`{"msgtype":"m.text","body":"` + strings.Repeat("x", 600) + `"}`))
	if err != nil {
		b.Fatal(err)
	}
	proto := ProtoEvent{Type: "m.room.message", Sender: "@alice:example.org",
		RoomID: "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ", Content: content,
		PrevEvents: []spec.EventID{"$rkoXW1mD-1YZu7j6_iXxNWEmkaa9D6qC8cgAr4OcZFM"},
		AuthEvents: []spec.EventID{"$37iwD-DyT01UTC3QaO2Ot9nDS1G-rmVcGz0DYMPzG6c", "$MgAxfY093SssN5F2y9EjlGkQxbQRQyEsbbH52Bna1yc"},
		Depth:      12345, OriginServerTS: 1700000000003}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(proto, spec.RoomV12, key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParsePDU(b *testing.B) {
	raw := []byte(buildVectors[5].json)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParsePDU(raw, spec.RoomV12); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClientEvent(b *testing.B) {
	p, err := ParsePDU([]byte(buildVectors[5].json), spec.RoomV12)
	if err != nil {
		b.Fatal(err)
	}
	unsigned := []byte(`{"age":5,"transaction_id":"abc"}`)
	b.ReportAllocs()
	for b.Loop() {
		ClientEvent(p, unsigned)
	}
}
