package push

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

const (
	defaultNotificationsLimit = 50
	maxNotificationsLimit     = 1000
)

// GET /_matrix/client/v3/notifications: the events the user was notified
// about, newest first, paginated by position; only=highlight keeps the
// highlights. An event the user can no longer see is left out.
func (s *Service) getNotifications(c *gin.Context) {
	user := auth.DeviceFrom(c).UserID
	from := int64(1<<63 - 1)
	if v := c.Query("from"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			c.Error(spec.InvalidParam("from must be a token from next_token"))
			return
		}
		from = n
	}
	limit := defaultNotificationsLimit
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			c.Error(spec.InvalidParam("limit must be a non-negative integer"))
			return
		}
		limit = min(n, maxNotificationsLimit)
	}
	onlyHighlight := false
	switch c.Query("only") {
	case "":
	case "highlight":
		onlyHighlight = true
	default:
		c.Error(spec.InvalidParam("only must be highlight"))
		return
	}
	out := []gin.H{}
	if limit == 0 {
		c.JSON(http.StatusOK, gin.H{"notifications": out})
		return
	}
	nid, known := s.ids.user(user)
	if !known {
		c.JSON(http.StatusOK, gin.H{"notifications": out}) // never notified
		return
	}
	// One more row than asked tells whether there is a next page.
	// Both tables, each limited first: the user may have many rows.
	rows, err := s.db.Query(c.Request.Context(), `SELECT e.room_id, e.event_id, n.position, e.thread_id, n.flags & 1, a.actions, e.ts
		FROM (
			SELECT * FROM (SELECT position, actions_id, flags FROM push_notified
				WHERE user_nid = $1 AND position < $2 AND (flags & 1 <> 0 OR $3) ORDER BY position DESC LIMIT $4)
			UNION ALL
			SELECT * FROM (SELECT position, actions_id, flags FROM push_staged_rows
				WHERE user_nid = $1 AND position < $2 AND (flags & 1 <> 0 OR $3) ORDER BY position DESC LIMIT $4)
		) n JOIN push_events e ON e.position = n.position JOIN push_actions a ON a.id = n.actions_id
		ORDER BY n.position DESC LIMIT $4`,
		nid, from, !onlyHighlight, limit+1)
	if err != nil {
		c.Error(err)
		return
	}
	type row struct {
		room      spec.RoomID
		event     spec.EventID
		pos       int64
		thread    string
		highlight bool
		actions   string
		ts        int64
	}
	var list []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.room, &r.event, &r.pos, &r.thread, &r.highlight, &r.actions, &r.ts); err != nil {
			rows.Close()
			c.Error(err)
			return
		}
		list = append(list, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		c.Error(err)
		return
	}
	next := ""
	if len(list) > limit {
		list = list[:limit]
		next = strconv.FormatInt(list[len(list)-1].pos, 10)
	}
	for _, r := range list {
		var pdu *events.PDU
		if ev, err := s.rooms.Event(c.Request.Context(), user, r.room, r.event); err == nil && ev != nil {
			pdu = ev.PDU
		} else if own := s.rooms.CurrentState(r.room, spec.MRoomMember, string(user)); own != nil && own.EventID() == r.event {
			pdu = own // an invite: the user's own member event, visible to them
		} else {
			continue
		}
		out = append(out, gin.H{
			"actions": json.RawMessage(r.actions),
			"event":   json.RawMessage(events.ClientEvent(pdu, nil)),
			"read":    s.isRead(user, r.room, r.thread, r.pos),
			"room_id": r.room,
			"ts":      r.ts,
		})
	}
	resp := gin.H{"notifications": out}
	if next != "" {
		resp["next_token"] = next
	}
	c.JSON(http.StatusOK, resp)
}
