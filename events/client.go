package events

import (
	"bytes"
	"strings"

	"github.com/chatalot/chatalot/spec"
)

// ClientEvent returns the event in the client-server API's ClientEvent
// format: content, event_id, origin_server_ts, room_id, sender, state_key
// (state events only), type and, when given and not empty, unsigned, which
// must be a canonical JSON object such as MarshalCanonical returns. The bytes
// are cut from the stored canonical JSON, never re-marshalled, and the result
// is canonical.
//
// A redaction carries "redacts" both top-level and in content whatever the
// room version: room version 11 moved it into content, and the spec asks
// servers to serve it in both places for older and newer clients alike.
// The result without unsigned data is cached on the PDU: callers must not
// modify it.
func ClientEvent(p *PDU, unsigned []byte) []byte {
	c := p.client.Load()
	if c == nil {
		out := clientEvent(p, true)
		c = &out
		p.client.Store(c)
	}
	if len(unsigned) == 0 || bytes.Equal(unsigned, []byte("{}")) {
		return *c
	}
	// "unsigned" sorts after every other key, so it goes last: the cached
	// form need not be cut from the PDU again.
	base := *c
	out := make([]byte, 0, len(base)+len(unsigned)+12)
	out = append(out, base[:len(base)-1]...)
	out = append(out, `,"unsigned":`...)
	out = append(out, unsigned...)
	return append(out, '}')
}

func clientEvent(p *PDU, withRoomID bool) []byte {
	f := clientFieldsOf(p.raw)
	content := f.content
	var redacts []byte
	if p.typ == spec.MRoomRedaction && p.redacts != "" {
		redacts, _ = appendString(nil, string(p.redacts))
		if _, ok := member(content, "redacts"); !ok {
			if c, ok := withMember(content, "redacts", redacts); ok {
				content = c
			}
		}
	}
	w := objWriter{buf: make([]byte, 0, len(p.raw)+64)}
	w.raw("content", content)
	w.raw("event_id", quoteID(string(p.id)))
	w.raw("origin_server_ts", f.ts)
	if redacts != nil {
		w.raw("redacts", redacts)
	}
	if withRoomID {
		w.raw("room_id", quoteID(string(p.roomID)))
	}
	w.raw("sender", f.sender)
	if f.stateKey != nil {
		w.raw("state_key", f.stateKey)
	}
	w.raw("type", f.typ)
	return w.close()
}

// clientFields are the raw top-level members of a PDU that the client
// formats copy as they are.
type clientFields struct {
	content, ts, sender, stateKey, typ []byte
}

func clientFieldsOf(raw []byte) clientFields {
	var f clientFields
	it := iterObject(raw)
	for it.next() {
		switch string(it.key) {
		case "content":
			f.content = it.val
		case "origin_server_ts":
			f.ts = it.val
		case "sender":
			f.sender = it.val
		case "state_key":
			f.stateKey = it.val
		case "type":
			f.typ = it.val
		}
	}
	return f
}

// StrippedState returns the stripped state event sent with invites and knocks
// (client-server API, "Stripped state"): content, sender, state_key and type.
func StrippedState(p *PDU) []byte {
	f := clientFieldsOf(p.raw)
	w := objWriter{buf: make([]byte, 0, 256)}
	w.raw("content", f.content)
	w.raw("sender", f.sender)
	if f.stateKey != nil {
		w.raw("state_key", f.stateKey)
	}
	w.raw("type", f.typ)
	return w.close()
}

// OwnMemberState is how a user's own member event (their invite, or their
// knock) appears in their invite_state or knock_state: the client format
// without room_id (the room is the key it is listed under), so that it keeps
// event_id and origin_server_ts, which clients show ("invited 2 hours ago")
// and which the reference server sends. It is the user's own event, so
// nothing is revealed that they would not see on joining. The other stripped
// events keep the spec's four keys.
func OwnMemberState(p *PDU) []byte { return clientEvent(p, false) }

// quoteID quotes an identifier. IDs in a PDU came from valid JSON or were
// built by the server, so they are valid UTF-8.
func quoteID(s string) []byte {
	b, _ := appendString(make([]byte, 0, len(s)+2), s)
	return b
}

// FilterFields keeps only the listed fields of a canonical client event, as a
// filter's event_fields asks (client-server API, "Filtering"): each entry is
// a dot-separated path such as "content.body", where "\." is a literal dot
// and "\\" a literal backslash. An empty list keeps everything. Objects on a
// path appear only if the path's last field exists.
func FilterFields(clientEvent []byte, fields []string) []byte {
	if len(fields) == 0 {
		return clientEvent
	}
	root := &fieldNode{}
	for _, f := range fields {
		n := root
		for _, part := range splitField(f) {
			if n.all {
				break
			}
			if n.children == nil {
				n.children = map[string]*fieldNode{}
			}
			c, ok := n.children[part]
			if !ok {
				c = &fieldNode{}
				n.children[part] = c
			}
			n = c
		}
		n.all, n.children = true, nil
	}
	out, _ := filterObject(clientEvent, root)
	if out == nil {
		return []byte("{}")
	}
	return out
}

type fieldNode struct {
	all      bool // keep the whole value
	children map[string]*fieldNode
}

// filterObject returns obj restricted to the tree n, or nil if nothing is
// kept.
func filterObject(obj []byte, n *fieldNode) ([]byte, bool) {
	w := objWriter{}
	it := iterObject(obj)
	var key []byte
	for it.next() {
		k := it.key
		if bytes.IndexByte(k, '\\') >= 0 {
			key = unescapeKey(key[:0], k)
			k = key
		}
		c, ok := n.children[string(k)]
		if !ok {
			continue
		}
		if c.all {
			w.rawKey(it.key, it.val)
			continue
		}
		if isObject(it.val) {
			if sub, ok := filterObject(it.val, c); ok {
				w.rawKey(it.key, sub)
			}
		}
	}
	if w.n == 0 {
		return nil, false
	}
	return w.close(), true
}

// splitField splits a field path on unescaped dots and removes the escapes.
func splitField(f string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(f); i++ {
		switch {
		case f[i] == '\\' && i+1 < len(f) && (f[i+1] == '.' || f[i+1] == '\\'):
			cur.WriteByte(f[i+1])
			i++
		case f[i] == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(f[i])
		}
	}
	return append(parts, cur.String())
}
