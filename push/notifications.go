package push

import (
	"context"
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

// notificationsQuery is the query of GET /notifications.
type notificationsQuery struct {
	from          int64 // positions below it; next_token of the last page
	limit         int
	onlyHighlight bool
}

func parseNotificationsQuery(c *gin.Context) (notificationsQuery, error) {
	q := notificationsQuery{from: int64(1<<63 - 1), limit: defaultNotificationsLimit}
	if v := c.Query("from"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return q, spec.InvalidParam("from must be a token from next_token")
		}
		q.from = n
	}
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return q, spec.InvalidParam("limit must be a non-negative integer")
		}
		q.limit = min(n, maxNotificationsLimit)
	}
	switch c.Query("only") {
	case "":
	case "highlight":
		q.onlyHighlight = true
	default:
		return q, spec.InvalidParam("only must be highlight")
	}
	return q, nil
}

// GET /_matrix/client/v3/notifications: the events the user was notified
// about, newest first, paginated by position; only=highlight keeps the
// highlights. An event the user can no longer see is left out.
func (s *Service) getNotifications(c *gin.Context) error {
	user := auth.DeviceFrom(c).UserID
	q, err := parseNotificationsQuery(c)
	if err != nil {
		return err
	}
	out := []gin.H{}
	if q.limit == 0 {
		c.JSON(http.StatusOK, gin.H{"notifications": out})
		return nil
	}
	nid, known := s.ids.user(user)
	if !known {
		c.JSON(http.StatusOK, gin.H{"notifications": out}) // never notified
		return nil
	}
	list, err := s.notified(c.Request.Context(), nid, q)
	if err != nil {
		return err
	}
	next := ""
	if len(list) > q.limit {
		list = list[:q.limit]
		next = strconv.FormatInt(list[len(list)-1].pos, 10)
	}
	for _, r := range list {
		if n := s.renderNotification(c.Request.Context(), user, r); n != nil {
			out = append(out, n)
		}
	}
	resp := gin.H{"notifications": out}
	if next != "" {
		resp["next_token"] = next
	}
	c.JSON(http.StatusOK, resp)
	return nil
}

// notifiedRow is one notification of a user, as stored.
type notifiedRow struct {
	room      spec.RoomID
	event     spec.EventID
	pos       int64
	thread    string
	highlight bool
	actions   string
	ts        int64
}

// notified reads a page of the user's notifications, newest first, with
// one more row than the limit to tell whether there is a next page.
func (s *Service) notified(ctx context.Context, nid int64, q notificationsQuery) ([]notifiedRow, error) {
	// Both tables, each limited first: the user may have many rows.
	rows, err := s.db.Query(ctx, `SELECT e.room_id, e.event_id, n.position, e.thread_id, n.flags & 1, a.actions, e.ts
		FROM (
			SELECT * FROM (SELECT position, actions_id, flags FROM push_notified
				WHERE user_nid = $1 AND position < $2 AND (flags & 1 <> 0 OR $3) ORDER BY position DESC LIMIT $4) AS done
			UNION ALL
			SELECT * FROM (SELECT position, actions_id, flags FROM push_staged_rows
				WHERE user_nid = $1 AND position < $2 AND (flags & 1 <> 0 OR $3) ORDER BY position DESC LIMIT $4) AS staged
		) n JOIN push_events e ON e.position = n.position JOIN push_actions a ON a.id = n.actions_id
		ORDER BY n.position DESC LIMIT $4`,
		nid, q.from, !q.onlyHighlight, q.limit+1)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var list []notifiedRow
	for rows.Next() {
		var r notifiedRow
		if err := rows.Scan(&r.room, &r.event, &r.pos, &r.thread, &r.highlight, &r.actions, &r.ts); err != nil {
			return nil, err
		}
		list = append(list, r)
	}
	return list, rows.Err()
}

// renderNotification renders one notification, or nil when the user can
// no longer see its event.
func (s *Service) renderNotification(ctx context.Context, user spec.UserID, r notifiedRow) gin.H {
	var pdu *events.PDU
	if ev, err := s.rooms.Event(ctx, user, r.room, r.event); err == nil && ev != nil {
		pdu = ev.PDU
	} else if own := s.rooms.CurrentState(r.room, spec.MRoomMember, string(user)); own != nil && own.EventID() == r.event {
		pdu = own // an invite: the user's own member event, visible to them
	} else {
		return nil
	}
	return gin.H{
		"actions": json.RawMessage(r.actions),
		"event":   json.RawMessage(events.ClientEvent(pdu, nil)),
		"read":    s.isRead(user, r.room, r.thread, r.pos),
		"room_id": r.room,
		"ts":      r.ts,
	}
}
