package rooms_test

import (
	"net/url"
	"testing"
)

// TestRequiredPolicyRefusesEveryPlaintext attacks the "required" encryption
// policy with the plaintext that used to get past it (issue 19, item 6):
// polls, call signalling with its SDP, locations, custom types, message
// types sent as state, and event types with control characters. Only
// m.room.encrypted and the documented clear types (reactions, redactions)
// are accepted as message events; nothing refused is stored.
func TestRequiredPolicyRefusesEveryPlaintext(t *testing.T) {
	ts := newTestServer(t, "required")
	const alice = "@alice:test"
	id := ts.CreateRoom(alice, nil)
	room := url.PathEscape(id)
	before := ts.db.Position()
	refused := []struct {
		path   string
		body   map[string]any
		status int
		code   string
	}{
		{"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "secret"}, 403, "M_FORBIDDEN"},
		{"/send/m.sticker/2", map[string]any{"body": "secret", "url": "mxc://test/x"}, 403, "M_FORBIDDEN"},
		{"/send/m.poll.start/3", map[string]any{"m.poll": map[string]any{"question": map[string]any{"m.text": "secret?"}}}, 403, "M_FORBIDDEN"},
		{"/send/org.matrix.msc3381.poll.start/4", map[string]any{"org.matrix.msc3381.poll.start": map[string]any{"question": map[string]any{"body": "secret?"}}}, 403, "M_FORBIDDEN"},
		{"/send/m.call.invite/5", map[string]any{"call_id": "c", "version": "1", "lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": "v=0 secret"}}, 403, "M_FORBIDDEN"},
		{"/send/m.location/6", map[string]any{"body": "secret place", "geo_uri": "geo:51.5,0.1"}, 403, "M_FORBIDDEN"},
		{"/send/com.example.custom/7", map[string]any{"text": "secret"}, 403, "M_FORBIDDEN"},
		{"/send/m.key.verification.request/8", map[string]any{"body": "secret"}, 403, "M_FORBIDDEN"},
		{"/send/m.room.message%00/9", map[string]any{"msgtype": "m.text", "body": "secret"}, 400, "M_INVALID_PARAM"},
		{"/send/m.room.message%0A/10", map[string]any{"msgtype": "m.text", "body": "secret"}, 400, "M_INVALID_PARAM"},
		{"/state/m.room.message/", map[string]any{"msgtype": "m.text", "body": "secret"}, 403, "M_FORBIDDEN"},
		{"/state/m.sticker/x", map[string]any{"body": "secret"}, 403, "M_FORBIDDEN"},
		{"/state/m.poll.start/", map[string]any{"m.poll": map[string]any{}}, 403, "M_FORBIDDEN"},
		{"/state/org.matrix.msc3381.poll.start/", map[string]any{}, 403, "M_FORBIDDEN"},
		{"/state/m.call.invite/", map[string]any{"offer": map[string]any{"sdp": "v=0 secret"}}, 403, "M_FORBIDDEN"},
		{"/state/m.location/", map[string]any{"body": "secret place"}, 403, "M_FORBIDDEN"},
		{"/state/m.room.message%00/", map[string]any{"body": "secret"}, 400, "M_INVALID_PARAM"},
	}
	for _, r := range refused {
		code, body := ts.do(alice, "PUT", v3+room+r.path, r.body)
		if code != r.status || body["errcode"] != r.code {
			t.Errorf("PUT %s: %d %v, want %d %s", r.path, code, body, r.status, r.code)
		}
	}
	if ts.db.Position() != before {
		t.Fatalf("refused sends moved the stream from %d to %d", before, ts.db.Position())
	}
	code, body := ts.do(alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{
		"initial_state": []any{map[string]any{"type": "m.room.message", "state_key": "", "content": map[string]any{"body": "secret"}}}})
	if code != 403 || body["errcode"] != "M_FORBIDDEN" {
		t.Errorf("createRoom with a message as initial_state: %d %v", code, body)
	}

	// What the policy lets through: ciphertext, a reaction to it, its
	// redaction, and custom state.
	enc := ts.sendType(alice, room, "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "sender_key": "k", "session_id": "s", "device_id": "D"})
	ts.sendType(alice, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": enc, "key": "👍"}})
	ts.must(alice, "PUT", v3+room+"/redact/"+url.PathEscape(enc)+"/r1", map[string]any{})
	ts.putState(alice, room, "org.example.widget", "w", map[string]any{"url": "https://example.org"})

	// Outside the policy the same types are accepted.
	open := newTestServer(t, "optional")
	plain := url.PathEscape(open.CreateRoom(alice, nil))
	open.sendType(alice, plain, "m.poll.start", map[string]any{"m.poll": map[string]any{}})
	code, body = open.do(alice, "PUT", v3+plain+"/send/m.room.message%00/1", map[string]any{"body": "x"})
	if code != 400 || body["errcode"] != "M_INVALID_PARAM" {
		t.Errorf("a NUL in an event type under optional: %d %v", code, body)
	}
}
