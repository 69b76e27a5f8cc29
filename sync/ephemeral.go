package sync

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	stdsync "sync"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
	"github.com/gin-gonic/gin"
)

// typingState is who is typing in which room. It lives only in memory:
// typing is never persisted.
type typingState struct {
	mu      stdsync.Mutex
	rooms   map[spec.RoomID]map[spec.UserID]*time.Timer
	changed map[spec.RoomID]int64 // serial of the room's last typing change
}

func newTypingState() *typingState {
	return &typingState{rooms: map[spec.RoomID]map[spec.UserID]*time.Timer{}, changed: map[spec.RoomID]int64{}}
}

// maxTypingTimeout caps how long a typing notice lasts without renewal.
const maxTypingTimeout = 2 * time.Minute

// setTyping starts or stops a typing notice; a notice ends by itself after
// its timeout. A local user's goes to the room's other servers, with its
// end (a remote user's comes from its server: RemoteTyping).
func (s *Service) setTyping(room spec.RoomID, user spec.UserID, typing bool, timeout time.Duration, local bool) {
	if local && s.out != nil {
		s.out.Typing(room, user, typing)
	}
	t := s.typing
	t.mu.Lock()
	users := t.rooms[room]
	if users == nil {
		users = map[spec.UserID]*time.Timer{}
		t.rooms[room] = users
	}
	old, was := users[user]
	if was {
		old.Stop()
		delete(users, user)
	}
	if typing {
		users[user] = time.AfterFunc(timeout, func() {
			if s.expireTyping(room, user) && local && s.out != nil {
				s.out.Typing(room, user, false)
			}
		})
	}
	changed := typing != was
	if changed {
		t.changed[room] = s.nextSerial()
	}
	t.mu.Unlock()
	if changed {
		s.notifier.Notify(0, wake.InRoom(wake.Typing, room), s.rooms.JoinedMembers(room)...)
	}
}

// RemoteTyping records the typing of another server's user, as its server
// sent it (federation, m.typing).
func (s *Service) RemoteTyping(room spec.RoomID, user spec.UserID, typing bool, timeout time.Duration) {
	s.setTyping(room, user, typing, timeout, false)
}

// expireTyping ends a typing notice at its timeout; it reports whether the
// notice was still on.
func (s *Service) expireTyping(room spec.RoomID, user spec.UserID) bool {
	t := s.typing
	t.mu.Lock()
	_, ok := t.rooms[room][user]
	if ok {
		delete(t.rooms[room], user)
		t.changed[room] = s.nextSerial()
	}
	t.mu.Unlock()
	if ok {
		s.notifier.Notify(0, wake.InRoom(wake.Typing, room), s.rooms.JoinedMembers(room)...)
	}
	return ok
}

// typingSince returns the room's m.typing event if it changed after serial.
func (s *Service) typingSince(room spec.RoomID, serial int64, initial bool) json.RawMessage {
	t := s.typing
	t.mu.Lock()
	defer t.mu.Unlock()
	if !initial && t.changed[room] <= serial {
		return nil
	}
	ids := make([]string, 0, len(t.rooms[room]))
	for u := range t.rooms[room] {
		ids = append(ids, string(u))
	}
	if initial && len(ids) == 0 {
		return nil
	}
	sort.Strings(ids)
	b, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": ids}})
	return b
}

// PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
func (s *Service) putTyping(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	room, err := spec.ParseRoomID(c.Param("roomId"))
	if err != nil {
		return spec.InvalidParam("room ID: %v", err)
	}
	if c.Param("userId") != string(dev.UserID) {
		return spec.Forbidden("you can only set your own typing state")
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	if body.Typing == nil {
		return spec.BadJSON("typing is required")
	}
	if s.rooms.Membership(dev.UserID, room) != spec.Join {
		return spec.Forbidden("you are not joined to room %s", room)
	}
	timeout := 30 * time.Second
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			return spec.BadJSON("timeout must not be negative")
		}
		timeout = time.Duration(min(*body.Timeout, int64(maxTypingTimeout/time.Millisecond))) * time.Millisecond
	}
	s.setTyping(room, dev.UserID, *body.Typing, timeout, true)
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// receiptState remembers, per room, the position of its latest receipt so
// that a sync with nothing new reads nothing.
type receiptState struct {
	mu     stdsync.Mutex
	latest map[spec.RoomID]int64
	loaded bool
}

func newReceiptState() *receiptState { return &receiptState{latest: map[spec.RoomID]int64{}} }

func (s *Service) loadReceiptPositions(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `SELECT room_id, max(position) FROM receipts GROUP BY room_id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	s.receipts.mu.Lock()
	defer s.receipts.mu.Unlock()
	for rows.Next() {
		var id string
		var pos int64
		if err := rows.Scan(&id, &pos); err != nil {
			return err
		}
		// A follower (follow.go) may have seen a later one.
		s.receipts.latest[spec.RoomID(id)] = max(s.receipts.latest[spec.RoomID(id)], pos)
	}
	s.receipts.loaded = true
	return rows.Err()
}

// Init loads what sync keeps in memory.
func (s *Service) Init(ctx context.Context) error { return s.loadReceiptPositions(ctx) }

func (s *Service) receiptPosition(room spec.RoomID) int64 {
	s.receipts.mu.Lock()
	defer s.receipts.mu.Unlock()
	return s.receipts.latest[room]
}

// receiptStored makes a committed receipt known, at its position, and
// wakes the users who see it: the room's members, or for a private one its
// user.
func (s *Service) receiptStored(room spec.RoomID, user spec.UserID, typ string, pos int64) {
	s.receipts.mu.Lock()
	s.receipts.latest[room] = max(s.receipts.latest[room], pos)
	s.receipts.mu.Unlock()
	if typ == "m.read.private" {
		s.notifier.Notify(pos, wake.InRoom(wake.Receipts, room), user)
		return
	}
	s.notifier.Notify(pos, wake.InRoom(wake.Receipts, room), s.rooms.JoinedMembers(room)...)
}

var receiptTypes = map[string]bool{"m.read": true, "m.read.private": true, "m.fully_read": true}

// storeReceipt records a receipt (only the latest per user, type and
// thread is kept) and wakes the room.
func (s *Service) storeReceipt(ctx context.Context, user spec.UserID, room spec.RoomID, typ string, eventID spec.EventID, threadID string) error {
	if typ == "m.fully_read" {
		content, _ := events.MarshalCanonical(map[string]string{"event_id": string(eventID)})
		return s.acct.SetAccountData(ctx, user, room, "m.fully_read", content)
	}
	ev, err := s.rooms.Event(ctx, user, room, eventID)
	if err != nil {
		return err
	}
	ts := time.Now().UnixMilli()
	if err := s.writeReceipt(ctx, user, room, typ, eventID, threadID, ts); err != nil {
		return err
	}
	if typ == "m.read" && s.out != nil {
		s.out.Receipt(room, user, eventID, threadID, ts) // private receipts stay here
	}
	if s.unread == nil {
		return nil
	}
	// m.read and m.read.private both clear the notifications up to the
	// event (push module, "Marking notifications as read"). The receipt is
	// stored either way; a failure here only leaves the counts behind.
	if err := s.unread.ReceiptRead(ctx, user, room, eventID, ev.Position, threadID); err != nil {
		s.log.Warn().Err(err).Msg("sync: could not clear notifications for a receipt")
	}
	return nil
}

// RemoteReceipt records the public read receipt of another server's user,
// as its server sent it (federation, m.receipt).
func (s *Service) RemoteReceipt(ctx context.Context, room spec.RoomID, user spec.UserID, eventID spec.EventID, thread string, ts int64) error {
	if _, err := s.rooms.Event(ctx, user, room, eventID); err != nil {
		return err
	}
	if thread != "main" {
		if _, err := spec.ParseEventID(thread); err != nil {
			thread = ""
		}
	}
	if ts <= 0 {
		ts = time.Now().UnixMilli()
	}
	return s.writeReceipt(ctx, user, room, "m.read", eventID, thread, ts)
}

// writeReceipt stores a receipt, the latest per user, type and thread, and
// wakes the room.
func (s *Service) writeReceipt(ctx context.Context, user spec.UserID, room spec.RoomID, typ string, eventID spec.EventID, threadID string, ts int64) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		pos := tx.NextPosition()
		if _, err := tx.Exec(`INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, position)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, position = excluded.position`,
			string(room), string(user), typ, threadID, string(eventID), ts, pos); err != nil {
			return err
		}
		tx.AfterCommit(func() { s.receiptStored(room, user, typ, pos) })
		return nil
	})
}

// receiptsSince returns the room's m.receipt event with receipts in
// (since, until] (all current receipts when since is 0) that the viewer
// may see: private receipts only their own.
func (s *Service) receiptsSince(ctx context.Context, viewer spec.UserID, room spec.RoomID, since, until int64) (json.RawMessage, error) {
	if s.receiptPosition(room) <= since {
		return nil, nil
	}
	rows, err := s.db.Query(ctx, `SELECT user_id, receipt_type, thread_id, event_id, ts FROM receipts
		WHERE room_id = $1 AND position > $2 AND position <= $3`, string(room), since, until)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	content := map[string]map[string]map[string]map[string]any{}
	n := 0
	for rows.Next() {
		var user, typ, thread, eventID string
		var ts int64
		if err := rows.Scan(&user, &typ, &thread, &eventID, &ts); err != nil {
			return nil, err
		}
		if typ == "m.read.private" && user != string(viewer) {
			continue
		}
		byType := content[eventID]
		if byType == nil {
			byType = map[string]map[string]map[string]any{}
			content[eventID] = byType
		}
		if byType[typ] == nil {
			byType[typ] = map[string]map[string]any{}
		}
		r := map[string]any{"ts": ts}
		if thread != "" {
			r["thread_id"] = thread
		}
		byType[typ][user] = r
		n++
	}
	if err := rows.Err(); err != nil || n == 0 {
		return nil, err
	}
	b, err := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
	return b, err
}

// POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}
func (s *Service) postReceipt(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	room, err := spec.ParseRoomID(c.Param("roomId"))
	if err != nil {
		return spec.InvalidParam("room ID: %v", err)
	}
	typ := c.Param("receiptType")
	if !receiptTypes[typ] {
		return spec.InvalidParam("receipt type must be m.read, m.read.private or m.fully_read")
	}
	eventID, err := spec.ParseEventID(c.Param("eventId"))
	if err != nil {
		return spec.InvalidParam("event ID: %v", err)
	}
	var body struct {
		ThreadID *string `json:"thread_id"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	thread := ""
	if body.ThreadID != nil {
		thread = *body.ThreadID
		switch {
		case thread == "":
			return spec.InvalidParam("thread_id must be a non-empty string")
		case typ == "m.fully_read":
			return spec.InvalidParam("m.fully_read receipts have no thread_id")
		case thread != "main":
			if _, err := spec.ParseEventID(thread); err != nil {
				return spec.InvalidParam("thread_id must be \"main\" or an event ID")
			}
		}
	}
	if s.rooms.Membership(dev.UserID, room) != spec.Join {
		return spec.Forbidden("you are not joined to room %s", room)
	}
	if thread != "" {
		// Threaded read receipts: the event must be in the thread named,
		// or relate to its root.
		ok, err := s.receiptFitsThread(c.Request.Context(), room, eventID, thread)
		if err != nil {
			return err
		}
		if !ok {
			return spec.InvalidParam("event %s is not related to thread %s", eventID, thread)
		}
	}
	if err := s.storeReceipt(c.Request.Context(), dev.UserID, room, typ, eventID, thread); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// receiptFitsThread reports whether a threaded receipt may name the thread:
// the event is in it, or relates to its root.
func (s *Service) receiptFitsThread(ctx context.Context, room spec.RoomID, eventID spec.EventID, thread string) (bool, error) {
	in, err := s.rooms.ThreadOf(ctx, room, eventID)
	if err != nil || in == thread {
		return in == thread, err
	}
	if thread == "main" {
		return false, nil
	}
	return s.rooms.RelatesTo(ctx, room, eventID, spec.EventID(thread))
}

// POST /_matrix/client/v3/rooms/{roomId}/read_markers
func (s *Service) postReadMarkers(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	room, err := spec.ParseRoomID(c.Param("roomId"))
	if err != nil {
		return spec.InvalidParam("room ID: %v", err)
	}
	var body map[string]*string
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	if s.rooms.Membership(dev.UserID, room) != spec.Join {
		return spec.Forbidden("you are not joined to room %s", room)
	}
	for _, typ := range []string{"m.fully_read", "m.read", "m.read.private"} {
		v := body[typ]
		if v == nil {
			continue
		}
		id, err := spec.ParseEventID(*v)
		if err != nil {
			return spec.InvalidParam("%s: %v", typ, err)
		}
		if typ == "m.fully_read" {
			if _, err := s.rooms.Event(c.Request.Context(), dev.UserID, room, id); err != nil {
				return err
			}
		}
		if err := s.storeReceipt(c.Request.Context(), dev.UserID, room, typ, id, ""); err != nil {
			return err
		}
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}
