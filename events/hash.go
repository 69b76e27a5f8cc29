package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"strings"

	"github.com/chatalot/chatalot/spec"
)

// ContentHash computes the content hash of an event (server-server API,
// "Calculating the content hash for an event"): SHA-256 of the canonical
// event without "unsigned", "signatures" and "hashes".
func ContentHash(event []byte) ([sha256.Size]byte, error) {
	c, err := CanonicalObject(event)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return contentHash(c)
}

func contentHash(ev []byte) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	h := sha256.New()
	if !hashWithout(h, ev, "hashes", "signatures", "unsigned") {
		return sum, spec.BadJSON("event is not a JSON object")
	}
	h.Sum(sum[:0])
	return sum, nil
}

// hashWithout writes the canonical object obj, minus the named members, to h
// without building the intermediate object.
func hashWithout(h hash.Hash, obj []byte, keys ...string) bool {
	it := iterObject(obj)
	n := 0
	var sep = [1]byte{'{'}
	for it.next() {
		if contains(keys, it.key) {
			continue
		}
		if n > 0 {
			sep[0] = ','
		}
		n++
		h.Write(sep[:])
		h.Write(it.mem)
	}
	if it.bad {
		return false
	}
	if n == 0 {
		h.Write([]byte{'{'})
	}
	h.Write([]byte{'}'})
	return true
}

// AddContentHash returns the event with hashes.sha256 set to its content hash,
// encoded as unpadded base64 (server-server API, "Adding hashes and signatures
// to outgoing events"). Other members of "hashes" are kept.
func AddContentHash(event []byte) ([]byte, error) {
	c, err := CanonicalObject(event)
	if err != nil {
		return nil, err
	}
	return addContentHash(c)
}

func addContentHash(ev []byte) ([]byte, error) {
	sum, err := contentHash(ev)
	if err != nil {
		return nil, err
	}
	hashes := []byte("{}")
	if old, ok := member(ev, "hashes"); ok {
		if !isObject(old) {
			return nil, spec.BadJSON("hashes must be an object")
		}
		hashes = old
	}
	enc := make([]byte, 0, 48)
	enc = append(enc, '"')
	enc = base64.RawStdEncoding.AppendEncode(enc, sum[:])
	enc = append(enc, '"')
	hashes, ok := withMember(hashes, "sha256", enc)
	if !ok {
		return nil, spec.BadJSON("hashes must be an object")
	}
	out, ok := withMember(ev, "hashes", hashes)
	if !ok {
		return nil, spec.BadJSON("event is not a JSON object")
	}
	return out, nil
}

// CheckContentHash reports an error unless the event's hashes.sha256 matches
// its content hash. Padded base64 is accepted. When it fails, the spec says
// to use the redacted event instead of the one received.
func CheckContentHash(event []byte) error {
	c, err := CanonicalObject(event)
	if err != nil {
		return err
	}
	return checkContentHash(c)
}

func checkContentHash(ev []byte) error {
	hashes, ok := member(ev, "hashes")
	if !ok || !isObject(hashes) {
		return spec.BadJSON("event has no hashes object")
	}
	raw, ok := member(hashes, "sha256")
	if !ok || !isString(raw) {
		return spec.BadJSON("event has no sha256 content hash")
	}
	s, _ := unquote(raw)
	want, err := decodeBase64(s)
	if err != nil || len(want) != sha256.Size {
		return spec.BadJSON("content hash is not valid base64 of a SHA-256 sum")
	}
	got, err := contentHash(ev)
	if err != nil {
		return err
	}
	if !bytes.Equal(got[:], want) {
		return spec.BadJSON("content hash does not match the event")
	}
	return nil
}

// ReferenceHash computes the reference hash of an event for room version v
// (server-server API, "Calculating the reference hash for an event"): redact,
// drop "signatures" and "unsigned", SHA-256 of the canonical JSON.
func ReferenceHash(event []byte, v spec.RoomVersion) ([sha256.Size]byte, error) {
	c, err := canonicalEvent(event, v)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return referenceHash(c, v)
}

func referenceHash(ev []byte, v spec.RoomVersion) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	r, err := redactCanonical(ev, v)
	if err != nil {
		return sum, err
	}
	h := sha256.New()
	if !hashWithout(h, r, "signatures", "unsigned") {
		return sum, spec.BadJSON("event is not a JSON object")
	}
	h.Sum(sum[:0])
	return sum, nil
}

// EventID computes the event ID of an event in room version v: "$" and the
// reference hash in unpadded base64, URL-safe from version 4 (rooms/v3,
// v4+ "Event IDs"). In versions 1 and 2 the event carries its ID: it is
// read from "event_id".
func EventID(event []byte, v spec.RoomVersion) (spec.EventID, error) {
	if v.EventIDInEvent() {
		c, err := canonicalEvent(event, v)
		if err != nil {
			return "", err
		}
		raw, ok := member(c, "event_id")
		if !ok {
			return "", spec.BadJSON("event has no event_id")
		}
		id, err := v1EventID(raw)
		return id, err
	}
	sum, err := ReferenceHash(event, v)
	if err != nil {
		return "", err
	}
	return eventIDFromHash(sum, v), nil
}

func eventIDFromHash(sum [sha256.Size]byte, v spec.RoomVersion) spec.EventID {
	b := make([]byte, 0, 44)
	b = append(b, '$')
	if v.URLSafeEventIDs() {
		b = base64.RawURLEncoding.AppendEncode(b, sum[:])
	} else {
		b = base64.RawStdEncoding.AppendEncode(b, sum[:]) // v3
	}
	return spec.EventID(b)
}

// v1EventID reads the "event_id" of a room version 1 or 2 event:
// $opaque:server, the server being the one that created the event
// (rooms/v1 "Event IDs").
func v1EventID(raw []byte) (spec.EventID, error) {
	s, err := idString(raw, "event_id", '$')
	if err != nil {
		return "", err
	}
	if !validV1EventID(s) {
		return "", spec.BadJSON("event_id is not $opaque:server")
	}
	return spec.EventID(s), nil
}

func validV1EventID(s string) bool {
	i := strings.IndexByte(s, ':')
	if i < 2 || !validEventID(s) {
		return false
	}
	_, err := spec.ParseServerName(s[i+1:])
	return err == nil
}

// EventIDServer is the server name of a room version 1 or 2 event ID
// ($opaque:server), or "" for an ID without one.
func EventIDServer(id spec.EventID) spec.ServerName {
	s := string(id)
	i := strings.IndexByte(s, ':')
	if i < 0 || !validV1EventID(s) {
		return ""
	}
	return spec.ServerName(s[i+1:])
}

// RoomIDFromCreateEventID derives a room version 12 room ID from the event ID
// of the room's m.room.create event: the same hash with the "!" sigil
// (appendices, "Room IDs").
func RoomIDFromCreateEventID(id spec.EventID) (spec.RoomID, error) {
	s := string(id)
	if !strings.HasPrefix(s, "$") || len(s) != 44 {
		return "", spec.InvalidParam("not a reference-hash event ID")
	}
	if _, err := base64.RawURLEncoding.Strict().DecodeString(s[1:]); err != nil {
		return "", spec.InvalidParam("not a reference-hash event ID")
	}
	return spec.RoomID("!" + s[1:]), nil
}

// decodeBase64 decodes standard base64, padded or not, as the appendix asks
// decoders to accept both.
func decodeBase64(s string) ([]byte, error) {
	if strings.HasSuffix(s, "==") {
		s = s[:len(s)-2]
	} else if strings.HasSuffix(s, "=") {
		s = s[:len(s)-1]
	}
	if strings.ContainsAny(s, "\r\n") {
		return nil, base64.CorruptInputError(0) // the decoder would skip these silently
	}
	return base64.RawStdEncoding.Strict().DecodeString(s)
}
