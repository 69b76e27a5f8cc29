package sync

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	stdsync "sync"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Filter is the spec's Filter for /sync.
type Filter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	AccountData *EventFilter `json:"account_data,omitempty"`
	Presence    *EventFilter `json:"presence,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter filters non-room events (account data, presence).
type EventFilter struct {
	Limit      *int     `json:"limit,omitempty"`
	Types      []string `json:"types,omitempty"`
	NotTypes   []string `json:"not_types,omitempty"`
	Senders    []string `json:"senders,omitempty"`
	NotSenders []string `json:"not_senders,omitempty"`
}

// RoomFilter filters the rooms part of /sync.
type RoomFilter struct {
	Rooms        []string               `json:"rooms,omitempty"`
	NotRooms     []string               `json:"not_rooms,omitempty"`
	IncludeLeave bool                   `json:"include_leave,omitempty"`
	Timeline     *rooms.RoomEventFilter `json:"timeline,omitempty"`
	State        *rooms.RoomEventFilter `json:"state,omitempty"`
	Ephemeral    *rooms.RoomEventFilter `json:"ephemeral,omitempty"`
	AccountData  *rooms.RoomEventFilter `json:"account_data,omitempty"`
}

// maxFilterBytes bounds a stored or inline filter.
const maxFilterBytes = 16 << 10

// parseFilter decodes and validates a filter.
func parseFilter(raw []byte) (*Filter, error) {
	if len(raw) > maxFilterBytes {
		return nil, spec.TooLarge("the filter is over %d bytes", maxFilterBytes)
	}
	var f Filter
	if err := api.DecodeJSON(raw, &f); err != nil {
		return nil, err
	}
	switch f.EventFormat {
	case "", "client", "federation":
	default:
		return nil, spec.BadJSON("event_format must be client or federation")
	}
	if f.Room != nil {
		if err := rooms.ValidateRoomIDs(f.Room.Rooms, f.Room.NotRooms); err != nil {
			return nil, err
		}
		for _, rf := range []*rooms.RoomEventFilter{f.Room.Timeline, f.Room.State, f.Room.Ephemeral, f.Room.AccountData} {
			if err := rf.Validate(); err != nil {
				return nil, err
			}
		}
	}
	for _, ef := range []*EventFilter{f.AccountData, f.Presence} {
		if ef != nil && ef.Limit != nil && *ef.Limit < 0 {
			return nil, spec.BadJSON("filter limit must not be negative")
		}
	}
	return &f, nil
}

// Matches reports whether a non-room event of the type and sender passes.
func (f *EventFilter) Matches(typ string, sender spec.UserID) bool {
	if f == nil {
		return true
	}
	for _, t := range f.NotTypes {
		if rooms.Glob(t, typ) {
			return false
		}
	}
	if f.Types != nil {
		ok := false
		for _, t := range f.Types {
			if rooms.Glob(t, typ) {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	if sender != "" {
		for _, s := range f.NotSenders {
			if s == string(sender) {
				return false
			}
		}
		if f.Senders != nil {
			ok := false
			for _, s := range f.Senders {
				if s == string(sender) {
					ok = true
				}
			}
			return ok
		}
	}
	return true
}

// matchesRoom applies the room filter's rooms/not_rooms.
func (f *RoomFilter) matchesRoom(id spec.RoomID) bool {
	if f == nil {
		return true
	}
	for _, r := range f.NotRooms {
		if r == string(id) {
			return false
		}
	}
	if f.Rooms == nil {
		return true
	}
	for _, r := range f.Rooms {
		if r == string(id) {
			return true
		}
	}
	return false
}

// Schema holds the stored filters and the receipts.
var Schema = storage.Schema{Domain: "sync", Migrations: []string{`
CREATE TABLE filters (
	user_id   TEXT    NOT NULL,
	filter_id INTEGER NOT NULL,
	json      TEXT    NOT NULL,
	PRIMARY KEY (user_id, filter_id)
);
CREATE TABLE receipts (
	room_id      TEXT   NOT NULL,
	user_id      TEXT   NOT NULL,
	receipt_type TEXT   NOT NULL,
	thread_id    TEXT   NOT NULL,
	event_id     TEXT   NOT NULL,
	ts           BIGINT NOT NULL,
	position     BIGINT NOT NULL,
	PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_position ON receipts (room_id, position);`,
	// 2: the receipts by position alone, which a cluster node reads to
	// follow the receipts the other nodes store (follow.go).
	`CREATE INDEX receipts_stream ON receipts (position);`,
}}

// POST /_matrix/client/v3/user/{userId}/filter
func (s *Service) createFilter(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	if c.Param("userId") != string(dev.UserID) {
		return spec.Forbidden("you can only create filters for yourself")
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	f, err := parseFilter(body)
	if err != nil {
		return err
	}
	canonical, _ := json.Marshal(f)
	var id int64
	err = s.db.Write(c.Request.Context(), func(tx *storage.Tx) error {
		if err := tx.QueryRow(`SELECT coalesce(max(filter_id), -1) + 1 FROM filters WHERE user_id = $1`, string(dev.UserID)).Scan(&id); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO filters (user_id, filter_id, json) VALUES ($1, $2, $3)`, string(dev.UserID), id, string(canonical))
		return err
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"filter_id": strconv.FormatInt(id, 10)})
	return nil
}

// GET /_matrix/client/v3/user/{userId}/filter/{filterId}
func (s *Service) getFilter(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	if c.Param("userId") != string(dev.UserID) {
		return spec.Forbidden("you can only read your own filters")
	}
	raw, err := s.loadFilter(c.Request.Context(), dev.UserID, c.Param("filterId"))
	if err != nil {
		return err
	}
	c.Data(http.StatusOK, "application/json", raw)
	return nil
}

func (s *Service) loadFilter(ctx context.Context, user spec.UserID, id string) ([]byte, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n < 0 {
		return nil, spec.NotFound("no such filter")
	}
	var raw string
	err = s.db.QueryRow(ctx, `SELECT json FROM filters WHERE user_id = $1 AND filter_id = $2`, string(user), n).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, spec.NotFound("no such filter")
	}
	return []byte(raw), err
}

// resolveFilter reads the filter query parameter: a stored filter ID or
// inline JSON. Cached per user and ID, stored filters never change.
func (s *Service) resolveFilter(ctx context.Context, user spec.UserID, param string) (*Filter, error) {
	if param == "" {
		return &Filter{}, nil
	}
	if strings.HasPrefix(strings.TrimSpace(param), "{") {
		// Bots send the same inline filter with every long-poll.
		if f := s.inlineFilters.get(param); f != nil {
			return f, nil
		}
		f, err := parseFilter([]byte(param))
		if err != nil {
			return nil, spec.InvalidParam("filter: %s", errMessage(err))
		}
		s.inlineFilters.put(param, f)
		return f, nil
	}
	key := string(user) + "\x00" + param
	if f, ok := s.filterCache.Load(key); ok {
		return f.(*Filter), nil
	}
	raw, err := s.loadFilter(ctx, user, param)
	if err != nil {
		var me *spec.Error
		if errors.As(err, &me) {
			return nil, spec.InvalidParam("unknown filter %q", param)
		}
		return nil, err
	}
	f, err := parseFilter(raw)
	if err != nil {
		return nil, err
	}
	s.filterCache.Store(key, f)
	return f, nil
}

func errMessage(err error) string {
	var me *spec.Error
	if errors.As(err, &me) {
		return me.Message
	}
	return err.Error()
}

func readBody(c *gin.Context) ([]byte, error) {
	var raw json.RawMessage
	if err := api.ReadJSON(c, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// maxInlineFilters bounds the cache of parsed inline filters.
const maxInlineFilters = 256

// inlineFilterCache keeps parsed inline filters by their text; when full it
// starts over, which is enough for the few distinct filters clients use.
type inlineFilterCache struct {
	mu stdsync.Mutex
	m  map[string]*Filter
}

func (c *inlineFilterCache) get(text string) *Filter {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[text]
}

func (c *inlineFilterCache) put(text string, f *Filter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxInlineFilters {
		c.m = map[string]*Filter{}
	}
	c.m[text] = f
}
