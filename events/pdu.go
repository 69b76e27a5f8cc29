// Package events holds one event as data: canonical JSON, hashes and event
// IDs, ed25519 signing and verification, the redaction algorithm per room
// version and the client format. Pure functions; no I/O.
package events

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// PDU is one event of a room's DAG as the server stores it: its exact
// canonical JSON bytes (with hashes and signatures) and the fields the server
// reads often, parsed once. A PDU is immutable; the bytes are never
// re-marshalled (that would break the signature).
type PDU struct {
	raw      []byte
	id       spec.EventID
	version  spec.RoomVersion
	roomID   spec.RoomID
	typ      string
	stateKey *string
	sender   spec.UserID
	depth    int64
	ts       int64
	prev     []spec.EventID
	auth     []spec.EventID
	redacts  spec.EventID

	// client caches ClientEvent without unsigned data: the same event is
	// rendered for every member who syncs it.
	client atomic.Pointer[[]byte]
}

// JSON returns the event's canonical JSON as stored and signed. Callers must not modify it.
func (p *PDU) JSON() []byte { return p.raw }

// EventID is the event's ID: the reference hash from room version 3, the
// event's own "event_id" in versions 1 and 2.
func (p *PDU) EventID() spec.EventID { return p.id }

// ReferenceHash is the event's reference hash (server-server API,
// "Calculating the reference hash for an event"). From room version 3 the
// event ID is that hash; in versions 1 and 2, whose events name their
// prev_events and auth_events with it, it is computed from the event.
func (p *PDU) ReferenceHash() ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	if !p.version.EventIDInEvent() {
		enc := base64.RawURLEncoding
		if !p.version.URLSafeEventIDs() {
			enc = base64.RawStdEncoding
		}
		if n, err := enc.Strict().Decode(sum[:], []byte(p.id[1:])); err == nil && n == sha256.Size {
			return sum, nil
		}
	}
	return referenceHash(p.raw, p.version)
}

// Version is the room version the event was parsed for.
func (p *PDU) Version() spec.RoomVersion { return p.version }

// RoomID is the room of the event. For a v12 create event, which carries no
// room_id, it is the ID derived from the event ID.
func (p *PDU) RoomID() spec.RoomID { return p.roomID }

// Type is the event type.
func (p *PDU) Type() string { return p.typ }

// StateKey returns the state key, and whether the event is a state event.
func (p *PDU) StateKey() (string, bool) {
	if p.stateKey == nil {
		return "", false
	}
	return *p.stateKey, true
}

// IsState reports whether the event has a state_key.
func (p *PDU) IsState() bool { return p.stateKey != nil }

// Sender is the user who sent the event.
func (p *PDU) Sender() spec.UserID { return p.sender }

// Depth is the event's depth in the DAG.
func (p *PDU) Depth() int64 { return p.depth }

// OriginServerTS is the sender's timestamp in milliseconds.
func (p *PDU) OriginServerTS() int64 { return p.ts }

// PrevEvents are the DAG edges to the event's predecessors.
func (p *PDU) PrevEvents() []spec.EventID { return p.prev }

// AuthEvents are the events that authorise this one.
func (p *PDU) AuthEvents() []spec.EventID { return p.auth }

// Redacts is the event a redaction targets: top-level "redacts" before v11,
// content.redacts from v11 on. Empty for other events.
func (p *PDU) Redacts() spec.EventID { return p.redacts }

// Content returns the event's content for reading with gjson.
func (p *PDU) Content() gjson.Result { return gjson.GetBytes(p.raw, "content") }

// Get reads any field of the event with a gjson path.
func (p *PDU) Get(path string) gjson.Result { return gjson.GetBytes(p.raw, path) }

// Size limits of the client-server API ("Size limits"): the whole event in
// federation format, and the identifiers and strings inside it.
const (
	MaxEventSize = 65536
	maxIDLength  = 255
	// The event format caps prev_events at 20 and auth_events at 10.
	maxPrevEvents = 20
	maxAuthEvents = 10
)

// ParsePDU validates an event in federation format for room version v and
// parses it. The input must be strict JSON (Canonical's rules, relaxed for
// numbers before version 6: see canonicalEvent) of at most MaxEventSize
// bytes once canonical, with the fields and types the version's event format
// requires; the stored bytes are its canonical form without "unsigned",
// which no stored PDU carries. The event ID is computed from the reference
// hash, or read from "event_id" in versions 1 and 2. Hashes and signatures
// are checked for shape here, not verified: see CheckContentHash and
// VerifyEvent. Errors are *spec.Error.
func ParsePDU(raw []byte, v spec.RoomVersion) (*PDU, error) {
	if !v.Supported() {
		return nil, spec.NewError(spec.ErrUnsupportedRoomVersion, "unsupported room version %q", v)
	}
	c, err := canonicalEvent(raw, v)
	if err != nil {
		return nil, err
	}
	if _, ok := member(c, "unsigned"); ok {
		if c, ok = without(c, "unsigned"); !ok {
			return nil, spec.BadJSON("event is not a JSON object")
		}
	}
	if len(c) > MaxEventSize {
		return nil, spec.TooLarge("event is larger than %d bytes", MaxEventSize)
	}
	if v.EventIDInEvent() {
		return parseFields(c, v, "") // the ID is the event's own
	}
	sum, err := referenceHash(c, v)
	if err != nil {
		return nil, err
	}
	return parseFields(c, v, eventIDFromHash(sum, v))
}

// LoadPDU parses an event the server stored itself, whose bytes are the
// canonical JSON returned by PDU.JSON and whose ID is known: it skips the
// canonical re-encoding and the reference hash, but still checks every field
// it reads. Never use it for bytes from a client or another server.
func LoadPDU(raw []byte, v spec.RoomVersion, id spec.EventID) (*PDU, error) {
	if !v.Supported() {
		return nil, spec.NewError(spec.ErrUnsupportedRoomVersion, "unsupported room version %q", v)
	}
	if !validEventID(string(id)) {
		return nil, spec.BadJSON("invalid event ID")
	}
	return parseFields(raw, v, id)
}

// parseFields reads and checks the fields of a canonical event in one pass.
// In room versions 1 and 2 the event's "event_id" must equal id, or gives
// the ID when id is empty.
func parseFields(c []byte, v spec.RoomVersion, id spec.EventID) (*PDU, error) {
	if len(c) > MaxEventSize {
		return nil, spec.TooLarge("event is larger than %d bytes", MaxEventSize)
	}
	r := fieldReader{p: &PDU{raw: c, id: id, version: v}, id: id, v1Format: v.EventIDInEvent()}
	it := iterObject(c)
	for it.next() {
		if err := r.read(it.key, it.val); err != nil {
			return nil, err
		}
	}
	if it.bad {
		return nil, spec.BadJSON("event is not a JSON object")
	}
	if err := r.checkRequired(); err != nil {
		return nil, err
	}
	if err := r.setRoomID(); err != nil {
		return nil, err
	}
	if err := r.setRedacts(); err != nil {
		return nil, err
	}
	return r.p, nil
}

// fieldBit marks a top-level field of an event as seen.
type fieldBit uint16

const (
	hType fieldBit = 1 << iota
	hSender
	hContent
	hDepth
	hTS
	hPrev
	hAuth
	hHashes
	hSigs
	hRoom
	hEventID
)

// requiredFields are the fields every event format requires.
var requiredFields = []struct {
	bit  fieldBit
	name string
}{
	{hType, "type"}, {hSender, "sender"}, {hContent, "content"}, {hDepth, "depth"},
	{hTS, "origin_server_ts"}, {hPrev, "prev_events"}, {hAuth, "auth_events"},
	{hHashes, "hashes"}, {hSigs, "signatures"},
}

// fieldReader is parseFields' state: the PDU being filled in, the fields
// seen, and those read once all are known (content, redacts, room_id).
type fieldReader struct {
	p        *PDU
	id       spec.EventID // the ID the caller knows, or ""
	v1Format bool         // room versions 1 and 2: the event carries its ID
	have     fieldBit

	content, redactsTop, roomID []byte
}

// read checks one top-level field and stores what the PDU keeps of it.
// Unknown fields are kept in the bytes and otherwise ignored.
func (r *fieldReader) read(key, val []byte) error {
	p := r.p
	var err error
	switch string(key) {
	case "auth_events":
		r.have |= hAuth
		p.auth, err = eventIDList(val, "auth_events", maxAuthEvents, r.v1Format)
	case "content":
		r.have |= hContent
		if !isObject(val) {
			return spec.BadJSON("content must be an object")
		}
		r.content = val
	case "depth":
		r.have |= hDepth
		p.depth, err = nonNegative(val, "depth")
	case "event_id":
		r.have |= hEventID
		err = r.readEventID(val)
	case "hashes":
		r.have |= hHashes
		err = checkHashesShape(val)
	case "origin_server_ts":
		r.have |= hTS
		p.ts, err = nonNegative(val, "origin_server_ts")
	case "prev_events":
		r.have |= hPrev
		p.prev, err = eventIDList(val, "prev_events", maxPrevEvents, r.v1Format)
	case "redacts":
		r.redactsTop = val
	case "room_id":
		r.have |= hRoom
		r.roomID = val
	case "sender":
		r.have |= hSender
		p.sender, err = senderID(val)
	case "signatures":
		r.have |= hSigs
		err = checkSignaturesShape(val)
	case "state_key":
		var s string
		if s, err = shortString(val, "state_key"); err == nil {
			p.stateKey = &s
		}
	case "type":
		r.have |= hType
		p.typ, err = shortString(val, "type")
	}
	return err
}

// readEventID reads the "event_id" that events of room versions 1 and 2
// carry; it must be the ID the caller knows, if any.
func (r *fieldReader) readEventID(val []byte) error {
	if !r.v1Format {
		// Room versions 3+ derive the ID; a stored "event_id" would be
		// covered by the reference hash and could mislead readers.
		return spec.BadJSON("event_id must not be part of the event")
	}
	own, err := v1EventID(val)
	if err == nil && r.id != "" && own != r.id {
		err = spec.BadJSON("event_id does not match the event's ID")
	}
	r.p.id = own
	return err
}

// checkRequired refuses an event without a field its format requires.
func (r *fieldReader) checkRequired() error {
	for _, f := range requiredFields {
		if r.have&f.bit == 0 {
			return spec.BadJSON("event has no %s", f.name)
		}
	}
	if r.v1Format && r.have&hEventID == 0 {
		return spec.BadJSON("event has no event_id")
	}
	return nil
}

// setRoomID sets the event's room ID: its room_id, or for a room version
// 12 create event (MSC4291), which has none, its event ID with the "!"
// sigil.
func (r *fieldReader) setRoomID() error {
	p := r.p
	if p.version.AtLeast12() && p.typ == spec.MRoomCreate {
		if r.have&hRoom != 0 {
			return spec.BadJSON("a room version 12 create event must not have a room_id")
		}
		rid, err := RoomIDFromCreateEventID(r.id)
		if err != nil {
			return spec.BadJSON("invalid event ID")
		}
		p.roomID = rid
		return nil
	}
	if r.have&hRoom == 0 {
		return spec.BadJSON("event has no room_id")
	}
	s, err := idString(r.roomID, "room_id", '!')
	if err != nil {
		return err
	}
	p.roomID = spec.RoomID(s)
	return nil
}

// setRedacts sets the event a redaction targets: "redacts" moved into
// content in v11 (MSC2174); before, it is top-level.
func (r *fieldReader) setRedacts() error {
	p := r.p
	if p.typ != spec.MRoomRedaction {
		return nil
	}
	raw := r.redactsTop
	if p.version.AtLeast11() {
		raw, _ = member(r.content, "redacts")
	}
	if raw == nil {
		return nil
	}
	s, err := idString(raw, "redacts", '$')
	if err != nil {
		return err
	}
	p.redacts = spec.EventID(s)
	return nil
}

// senderID reads "sender": a user ID, checked here only for its sigil,
// length and server part.
func senderID(raw []byte) (spec.UserID, error) {
	s, err := idString(raw, "sender", '@')
	if err == nil && strings.IndexByte(s, ':') < 2 {
		err = spec.BadJSON("sender is not a user ID")
	}
	return spec.UserID(s), err
}

// shortString reads a string field limited to the identifier size, such
// as "type" and "state_key".
func shortString(raw []byte, field string) (string, error) {
	s, ok := unquote(raw)
	if !ok || !isString(raw) {
		return "", spec.BadJSON("%s must be a string", field)
	}
	if len(s) > maxIDLength {
		return "", spec.BadJSON("%s is longer than %d bytes", field, maxIDLength)
	}
	return s, nil
}

// idString reads a string identifier that must start with sigil and fit the
// identifier size limit. The full grammar is the spec package's business.
func idString(raw []byte, field string, sigil byte) (string, error) {
	s, ok := unquote(raw)
	if !ok || !isString(raw) {
		return "", spec.BadJSON("%s must be a string", field)
	}
	if len(s) < 2 || s[0] != sigil || len(s) > maxIDLength {
		return "", spec.BadJSON("%s is not a valid identifier", field)
	}
	return s, nil
}

func validEventID(s string) bool {
	return len(s) >= 2 && s[0] == '$' && len(s) <= maxIDLength
}

// eventIDList reads prev_events or auth_events: event IDs, or in room
// versions 1 and 2 (pairs) [event ID, {"sha256": reference hash}] pairs. The
// hash object is only checked for shape: nothing in the protocol verifies
// it, and servers in the wild send {} (so "sha256" is optional here).
func eventIDList(raw []byte, field string, max int, pairs bool) ([]spec.EventID, error) {
	if !isArray(raw) {
		return nil, spec.BadJSON("%s must be an array of event IDs", field)
	}
	var ids []spec.EventID
	it := iterArray(raw)
	for it.next() {
		item := it.val
		if pairs {
			var err error
			if item, err = eventRefPair(item, field); err != nil {
				return nil, err
			}
		}
		s, err := idString(item, field, '$')
		if err != nil {
			return nil, err
		}
		ids = append(ids, spec.EventID(s))
	}
	if it.bad {
		return nil, spec.BadJSON("%s must be an array of event IDs", field)
	}
	if len(ids) > max {
		return nil, spec.BadJSON("%s has more than %d entries", field, max)
	}
	return ids, nil
}

// eventRefPair checks a room version 1 or 2 [event ID, hashes] pair and
// returns the event ID's JSON.
func eventRefPair(raw []byte, field string) ([]byte, error) {
	bad := spec.BadJSON("%s must be an array of [event ID, hashes] pairs", field)
	if !isArray(raw) {
		return nil, bad
	}
	var parts [][]byte
	it := iterArray(raw)
	for it.next() {
		parts = append(parts, it.val)
	}
	if it.bad || len(parts) != 2 || !isString(parts[0]) || !isObject(parts[1]) {
		return nil, bad
	}
	if h, ok := member(parts[1], "sha256"); ok && !isString(h) {
		return nil, bad
	}
	return parts[0], nil
}

func nonNegative(raw []byte, field string) (int64, error) {
	n, ok := parseInt(raw)
	if !ok || n < 0 {
		return 0, spec.BadJSON("%s must be a non-negative integer", field)
	}
	return n, nil
}

// checkHashesShape requires {"sha256": "<base64>", …}.
func checkHashesShape(raw []byte) error {
	if !isObject(raw) {
		return spec.BadJSON("hashes must be an object")
	}
	h, ok := member(raw, "sha256")
	if !ok || !isString(h) {
		return spec.BadJSON("hashes must have a sha256 string")
	}
	return nil
}

// checkSignaturesShape requires {"server": {"alg:id": "<base64>"}, …}.
func checkSignaturesShape(raw []byte) error {
	if !isObject(raw) {
		return spec.BadJSON("signatures must be an object")
	}
	servers := iterObject(raw)
	for servers.next() {
		if !isObject(servers.val) {
			return spec.BadJSON("signatures must map servers to objects")
		}
		keys := iterObject(servers.val)
		for keys.next() {
			if !isString(keys.val) {
				return spec.BadJSON("signatures must be strings")
			}
		}
		if keys.bad {
			return spec.BadJSON("signatures must map servers to objects")
		}
	}
	if servers.bad {
		return spec.BadJSON("signatures must be an object")
	}
	return nil
}

// ProtoEvent is an event the server is about to create.
type ProtoEvent struct {
	Type     string
	StateKey *string // nil for a message event
	Sender   spec.UserID
	// RoomID is empty for a room version 12 create event, whose room ID is
	// derived from its event ID.
	RoomID         spec.RoomID
	Content        []byte // a JSON object, canonical (as ReadContent returns); nil means {}
	PrevEvents     []spec.EventID
	AuthEvents     []spec.EventID
	Depth          int64
	OriginServerTS int64
	// Redacts is the target of an m.room.redaction: written top-level before
	// room version 11 and into content from 11 on.
	Redacts spec.EventID
	// ReferenceHashes holds the reference hash (PDU.ReferenceHash) of each
	// event PrevEvents and AuthEvents name. Only room versions 1 and 2 need
	// it: their events list each of those events with its hash.
	ReferenceHashes map[spec.EventID][sha256.Size]byte
}

// Build writes the federation-format event for p in room version v, adds the
// content hash, signs it with key, and returns it parsed. Events before room
// version 11 carry "origin"; from version 11 on, where redaction drops it
// (MSC3989), it is left out. In versions 1 and 2 the event gets its own
// "event_id", $opaque:server, the opaque part derived from a hash of the
// rest of the event (locally unique, as the format asks: two events of one
// room differ at least in prev_events or depth). Unsigned data is never
// part of the result. The sender must belong to the signing server.
func Build(p ProtoEvent, v spec.RoomVersion, key SigningKey) (*PDU, error) {
	if !v.Supported() {
		return nil, spec.NewError(spec.ErrUnsupportedRoomVersion, "unsupported room version %q", v)
	}
	if err := key.check(); err != nil {
		return nil, err
	}
	if i := strings.IndexByte(string(p.Sender), ':'); i < 0 || string(p.Sender[i+1:]) != key.ServerName {
		return nil, spec.Internal("sender does not belong to the signing server")
	}
	if p.Depth < 0 || p.Depth > maxSafeInt || p.OriginServerTS < 0 || p.OriginServerTS > maxSafeInt {
		return nil, spec.BadJSON("depth and origin_server_ts must be non-negative safe integers")
	}
	content := p.Content
	if len(content) == 0 {
		content = []byte("{}")
	}
	content, err := CanonicalObject(content)
	if err != nil {
		return nil, err
	}
	v12Create := v.AtLeast12() && p.Type == spec.MRoomCreate
	if v12Create != (p.RoomID == "") {
		if v12Create {
			return nil, spec.BadJSON("a room version 12 create event has no room_id")
		}
		return nil, spec.BadJSON("event has no room_id")
	}
	if p.Redacts != "" {
		if p.Type != spec.MRoomRedaction {
			return nil, spec.BadJSON("only m.room.redaction events have redacts")
		}
		if v.AtLeast11() {
			id, ok := appendString(nil, string(p.Redacts))
			if ok {
				if old, has := member(content, "redacts"); has && string(old) != string(id) {
					return nil, spec.BadJSON("content.redacts does not match the redacted event")
				}
				content, ok = withMember(content, "redacts", id)
			}
			if !ok {
				return nil, spec.BadJSON("invalid redacts")
			}
		}
	}

	w := objWriter{buf: make([]byte, 0, len(content)+512)}
	ok := true
	str := func(s string) []byte {
		b, good := appendString(nil, s)
		ok = ok && good
		return b
	}
	v1Format := v.EventIDInEvent()
	refs := func(ids []spec.EventID) []byte {
		if v1Format {
			return refPairArray(ids, p.ReferenceHashes, &ok)
		}
		return idArray(ids, &ok)
	}
	w.raw("auth_events", refs(p.AuthEvents))
	w.raw("content", content)
	w.raw("depth", strconv.AppendInt(nil, p.Depth, 10))
	if !v.AtLeast11() {
		w.raw("origin", str(key.ServerName))
	}
	w.raw("origin_server_ts", strconv.AppendInt(nil, p.OriginServerTS, 10))
	w.raw("prev_events", refs(p.PrevEvents))
	if p.Redacts != "" && !v.AtLeast11() {
		w.raw("redacts", str(string(p.Redacts)))
	}
	if !v12Create {
		w.raw("room_id", str(string(p.RoomID)))
	}
	w.raw("sender", str(string(p.Sender)))
	if p.StateKey != nil {
		w.raw("state_key", str(*p.StateKey))
	}
	w.raw("type", str(p.Type))
	if !ok {
		return nil, spec.BadJSON("event fields must be valid UTF-8, with a reference hash for every event named")
	}
	ev := w.close()
	if v1Format {
		var err error
		if ev, err = withV1EventID(ev, key.ServerName); err != nil {
			return nil, err
		}
	}
	signed, redacted, err := signEvent(ev, v, key)
	if err != nil {
		return nil, err
	}
	if v1Format {
		return parseFields(signed, v, "")
	}
	// The bytes signed are exactly the input of the reference hash.
	return parseFields(signed, v, eventIDFromHash(sha256.Sum256(redacted), v))
}

// withV1EventID adds a room version 1 or 2 "event_id" to an event being
// built: $, 24 characters of URL-safe base64 of the SHA-256 of the event so
// far, and the server name.
func withV1EventID(ev []byte, server string) ([]byte, error) {
	sum := sha256.Sum256(ev)
	id := "$" + base64.RawURLEncoding.EncodeToString(sum[:18]) + ":" + server
	q, ok := appendString(nil, id)
	if ok {
		ev, ok = withMember(ev, "event_id", q)
	}
	if !ok || !validV1EventID(id) {
		return nil, spec.BadJSON("cannot make an event ID")
	}
	return ev, nil
}

// refPairArray writes [[event ID, {"sha256": reference hash}], …] for room
// versions 1 and 2.
func refPairArray(ids []spec.EventID, hashes map[spec.EventID][sha256.Size]byte, ok *bool) []byte {
	b := []byte{'['}
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		sum, have := hashes[id]
		*ok = *ok && have
		b = append(b, '[')
		var good bool
		b, good = appendString(b, string(id))
		*ok = *ok && good
		b = append(b, `,{"sha256":"`...)
		b = base64.RawStdEncoding.AppendEncode(b, sum[:])
		b = append(b, `"}]`...)
	}
	return append(b, ']')
}

func idArray(ids []spec.EventID, ok *bool) []byte {
	b := []byte{'['}
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		var good bool
		b, good = appendString(b, string(id))
		*ok = *ok && good
	}
	return append(b, ']')
}

// Redacted returns the event as redacted by its room version's algorithm. The
// event ID is unchanged: the reference hash is computed over the redacted
// form.
func (p *PDU) Redacted() (*PDU, error) {
	r, err := redactCanonical(p.raw, p.version)
	if err != nil {
		return nil, err
	}
	return parseFields(r, p.version, p.id)
}
