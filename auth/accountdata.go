package auth

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
)

// Account data: per-user configuration, global or per room, that /sync
// delivers. Each change takes a stream position; a type's latest content
// replaces the previous one, so "changes since a position" is one query.

// serverManagedTypes cannot be set through the account data API (the spec
// requires 405 M_BAD_JSON); their own endpoints set them.
var serverManagedTypes = map[string]bool{"m.fully_read": true, "m.push_rules": true}

const maxAccountDataType = 255

// loadAccountDataMemory loads what auth keeps in memory of account data:
// each user's latest position and ignore list.
func (s *Service) loadAccountDataMemory(query rowsQuerier) error {
	rows, err := query(`SELECT user_id, max(position) FROM account_data GROUP BY user_id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var u spec.UserID
		var pos int64
		if err := rows.Scan(&u, &pos); err != nil {
			return err
		}
		s.accountDataPos[u] = pos
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = query(`SELECT user_id, content FROM account_data WHERE room_id = '' AND type = $1`, ignoredUserList)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var u spec.UserID
		var content string
		if err := rows.Scan(&u, &content); err != nil {
			return err
		}
		s.ignored[u] = parseIgnored(content)
	}
	return rows.Err()
}

const ignoredUserList = "m.ignored_user_list"

// parseIgnored reads the users of an m.ignored_user_list content (nil when
// there are none).
func parseIgnored(content string) map[spec.UserID]bool {
	var users map[spec.UserID]bool
	gjson.Get(content, "ignored_users").ForEach(func(k, _ gjson.Result) bool {
		if users == nil {
			users = map[spec.UserID]bool{}
		}
		users[spec.UserID(k.Str)] = true
		return true
	})
	return users
}

// deletedContent is what a deleted type of account data keeps (MSC3391): an
// incremental /sync tells the user's other devices of the deletion with
// this empty content; an initial /sync and GET leave it out.
const deletedContent = "{}"

func (s *Service) accountDataBetween(ctx context.Context, user spec.UserID, since, until int64) ([]json.RawMessage, map[spec.RoomID][]json.RawMessage, error) {
	q := `SELECT room_id, type, content FROM account_data WHERE user_id = $1 AND position > $2 AND position <= $3 ORDER BY position`
	if since == 0 {
		q = `SELECT room_id, type, content FROM account_data WHERE user_id = $1 AND position > $2 AND position <= $3 AND content <> '` +
			deletedContent + `' ORDER BY position`
	}
	rows, err := s.db.Query(ctx, q, string(user), since, until)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var global []json.RawMessage
	var rooms map[spec.RoomID][]json.RawMessage
	for rows.Next() {
		var room, typ, content string
		if err := rows.Scan(&room, &typ, &content); err != nil {
			return nil, nil, err
		}
		ev := accountDataEvent(typ, content)
		if room == "" {
			global = append(global, ev)
			continue
		}
		if rooms == nil {
			rooms = map[spec.RoomID][]json.RawMessage{}
		}
		rooms[spec.RoomID(room)] = append(rooms[spec.RoomID(room)], ev)
	}
	return global, rooms, rows.Err()
}

func accountDataEvent(typ, content string) json.RawMessage {
	t, _ := json.Marshal(typ)
	var b bytes.Buffer
	b.WriteString(`{"type":`)
	b.Write(t)
	b.WriteString(`,"content":`)
	b.WriteString(content)
	b.WriteString(`}`)
	return b.Bytes()
}

// SetAccountData stores account data content (a JSON object) for a user,
// globally (room "") or for a room, at a new stream position, and wakes
// the user's syncs. Server-managed types are allowed here: this is how their
// own endpoints (read markers, push rules) store them.
func (s *Service) SetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string, content json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Compact(&buf, content); err != nil || buf.Len() == 0 || buf.Bytes()[0] != '{' {
		return spec.BadJSON("account data content must be a JSON object")
	}
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		return s.putAccountData(tx, user, room, typ, buf.String())
	})
}

// DeleteAccountData deletes one type of account data (MSC3391); deleting
// what is not there is not an error.
func (s *Service) DeleteAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		return s.deleteAccountData(tx, user, room, typ)
	})
}

// deleteAccountData leaves the deleted marker at a new stream position,
// unless the type is absent or already deleted (nothing for /sync to say).
func (s *Service) deleteAccountData(tx *storage.Tx, user spec.UserID, room spec.RoomID, typ string) error {
	var content string
	err := tx.QueryRow(`SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		string(user), string(room), typ).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && content == deletedContent) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.putAccountData(tx, user, room, typ, deletedContent)
}

// localNotificationSettings are the account data types that hold one
// device's notification settings (MSC3890), by device ID: they go with the
// device.
var localNotificationSettings = []string{
	"org.matrix.msc3890.local_notification_settings.",
	"m.local_notification_settings.",
}

func (s *Service) deleteDeviceAccountData(tx *storage.Tx, user spec.UserID, deviceID string) error {
	for _, prefix := range localNotificationSettings {
		if err := s.deleteAccountData(tx, user, "", prefix+deviceID); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) putAccountData(tx *storage.Tx, user spec.UserID, room spec.RoomID, typ, content string) error {
	pos := tx.NextPosition()
	_, err := tx.Exec(`INSERT INTO account_data (user_id, room_id, type, content, position) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, position = excluded.position`,
		string(user), string(room), typ, content, pos)
	if err != nil {
		return err
	}
	tx.AfterCommit(func() { s.accountDataStored(accountDataRow{user, room, typ, content, pos}) })
	return nil
}

// accountDataStored brings memory up to date with committed account data,
// this node's or another's (follow.go), and wakes the user's /sync.
func (s *Service) accountDataStored(r accountDataRow) {
	s.adMu.Lock()
	if r.pos > s.accountDataPos[r.user] {
		s.accountDataPos[r.user] = r.pos
	}
	if r.room == "" && r.typ == ignoredUserList {
		s.ignored[r.user] = parseIgnored(r.content)
	}
	s.adMu.Unlock()
	if s.notify != nil {
		s.notify.Notify(r.pos, wake.InRoom(wake.AccountData, r.room), r.user)
	}
}

// GetAccountData returns the content of one type of account data; found is
// false when none is set.
func (s *Service) GetAccountData(ctx context.Context, user spec.UserID, room spec.RoomID, typ string) (json.RawMessage, bool, error) {
	var content string
	err := s.db.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		string(user), string(room), typ).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && content == deletedContent) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return json.RawMessage(content), true, nil
}

// accountDataTarget parses and checks the path of an account data request:
// the user must be the caller, the room (if the route has one) a valid room
// ID.
func accountDataTarget(c *gin.Context) (spec.UserID, spec.RoomID, error) {
	dev := DeviceFrom(c)
	if c.Param("userId") != string(dev.UserID) {
		return "", "", spec.Forbidden("you can only access your own account data")
	}
	var room spec.RoomID
	if raw, withRoom := c.Params.Get("roomId"); withRoom {
		r, err := spec.ParseRoomID(raw)
		if err != nil {
			return "", "", spec.InvalidParam("invalid room ID")
		}
		room = r
	}
	return dev.UserID, room, nil
}

func accountDataType(c *gin.Context) (string, error) {
	typ := c.Param("type")
	if typ == "" || len(typ) > maxAccountDataType {
		return "", spec.InvalidParam("the account data type must be 1-%d bytes", maxAccountDataType)
	}
	return typ, nil
}

// GET /_matrix/client/v3/user/{userId}/account_data/{type}
// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
func (s *Service) getAccountData(c *gin.Context) error {
	user, room, err := accountDataTarget(c)
	if err != nil {
		return err
	}
	typ, err := accountDataType(c)
	if err != nil {
		return err
	}
	content, found, err := s.GetAccountData(c.Request.Context(), user, room, typ)
	if err != nil {
		return err
	}
	if !found {
		return spec.NotFound("account data not found")
	}
	c.Data(http.StatusOK, "application/json", content)
	return nil
}

// writableAccountData reads the target and type of an account-data write;
// types the server manages (m.fully_read, m.push_rules) are 405 M_BAD_JSON,
// as the spec requires. what says what cannot be done to them.
func writableAccountData(c *gin.Context, what string) (spec.UserID, spec.RoomID, string, error) {
	user, room, err := accountDataTarget(c)
	if err != nil {
		return "", "", "", err
	}
	typ, err := accountDataType(c)
	if err != nil {
		return "", "", "", err
	}
	if serverManagedTypes[typ] {
		return "", "", "", spec.BadJSON("%s is managed by the server and cannot be %s", typ, what).WithStatus(http.StatusMethodNotAllowed)
	}
	return user, room, typ, nil
}

// PUT /_matrix/client/v3/user/{userId}/account_data/{type}
// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
// The body is any JSON object; m.fully_read and m.push_rules are refused
// with 405 M_BAD_JSON as the spec requires.
func (s *Service) putAccountDataHandler(c *gin.Context) error {
	user, room, typ, err := writableAccountData(c, "set here")
	if err != nil {
		return err
	}
	body, err := api.ReadBody(c, 0)
	if err != nil {
		return err
	}
	var obj map[string]json.RawMessage
	if err := api.DecodeJSON(body, &obj); err != nil {
		return err
	}
	if obj == nil {
		return spec.BadJSON("the content must be a JSON object")
	}
	if len(obj) == 0 {
		// MSC3391: empty content is how clients delete account data.
		err = s.DeleteAccountData(c.Request.Context(), user, room, typ)
	} else {
		err = s.SetAccountData(c.Request.Context(), user, room, typ, body)
	}
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// DELETE /_matrix/client/unstable/org.matrix.msc3391/user/{userId}/account_data/{type}
// DELETE /_matrix/client/unstable/org.matrix.msc3391/user/{userId}/rooms/{roomId}/account_data/{type}
// MSC3391: deletes one type; the user's other devices see it as empty
// content in their next /sync.
func (s *Service) deleteAccountDataHandler(c *gin.Context) error {
	user, room, typ, err := writableAccountData(c, "deleted")
	if err != nil {
		return err
	}
	if err := s.DeleteAccountData(c.Request.Context(), user, room, typ); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// Room tags are the m.tag room account data: {"tags": {name: {order}}}.

const maxTagLength = 255

func decodeTags(content string) map[string]json.RawMessage {
	var ev struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	_ = json.Unmarshal([]byte(content), &ev)
	if ev.Tags == nil {
		ev.Tags = map[string]json.RawMessage{}
	}
	return ev.Tags
}

// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags
func (s *Service) getTags(c *gin.Context) error {
	user, room, err := accountDataTarget(c)
	if err != nil {
		return err
	}
	content, _, err := s.GetAccountData(c.Request.Context(), user, room, "m.tag")
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"tags": decodeTags(string(content))})
	return nil
}

// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}: adds or
// replaces a tag; the body is the tag's object ({"order": 0.5}).
func (s *Service) putTag(c *gin.Context) error {
	user, room, err := accountDataTarget(c)
	if err != nil {
		return err
	}
	tag := c.Param("tag")
	if tag == "" || len(tag) > maxTagLength {
		return spec.InvalidParam("a tag is 1-%d bytes", maxTagLength)
	}
	body, err := api.ReadBody(c, 0)
	if err != nil {
		return err
	}
	var info struct {
		Order *float64 `json:"order"`
	}
	if err := api.DecodeJSON(body, &info); err != nil {
		return err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		obj = map[string]json.RawMessage{}
	}
	value, _ := json.Marshal(obj)
	if err := s.changeTags(c.Request.Context(), user, room, func(tags map[string]json.RawMessage) bool {
		tags[tag] = value
		return true
	}); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}
func (s *Service) deleteTag(c *gin.Context) error {
	user, room, err := accountDataTarget(c)
	if err != nil {
		return err
	}
	tag := c.Param("tag")
	if err := s.changeTags(c.Request.Context(), user, room, func(tags map[string]json.RawMessage) bool {
		if _, ok := tags[tag]; !ok {
			return false
		}
		delete(tags, tag)
		return true
	}); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// changeTags reads, changes and writes m.tag in one write, so concurrent
// tag changes do not lose each other.
func (s *Service) changeTags(ctx context.Context, user spec.UserID, room spec.RoomID, change func(map[string]json.RawMessage) bool) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		var content string
		err := tx.QueryRow(`SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
			string(user), string(room), "m.tag").Scan(&content)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		tags := decodeTags(content)
		if !change(tags) {
			return nil
		}
		out, err := json.Marshal(map[string]any{"tags": tags})
		if err != nil {
			return err
		}
		return s.putAccountData(tx, user, room, "m.tag", string(out))
	})
}
