package rooms

import (
	"context"
	"database/sql"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Reporting content (client-server API, "Reporting Content"): reports of
// events, rooms and users are stored in content_reports for the server's
// admins, who read them through the admin API (ListReports, GetReport,
// DeleteReport). The reporter learns nothing from the answer: room and user
// reports are accepted whether or not the room or user exists, and an event
// report answers 404 alike for unknown events and events the reporter may
// not see.

// Report kinds.
const (
	ReportEvent = "event"
	ReportRoom  = "room"
	ReportUser  = "user"
)

// maxReportReason bounds a report's reason, in characters.
const maxReportReason = 2000

// Report is one stored report.
type Report struct {
	ID         int64        `json:"id"`
	ReceivedTS int64        `json:"received_ts"`
	Reporter   spec.UserID  `json:"reporter"`
	Kind       string       `json:"kind"` // ReportEvent, ReportRoom or ReportUser
	RoomID     spec.RoomID  `json:"room_id,omitempty"`
	EventID    spec.EventID `json:"event_id,omitempty"`
	UserID     spec.UserID  `json:"user_id,omitempty"`
	Reason     string       `json:"reason"`
}

func checkReason(reason string) error {
	if utf8.RuneCountInString(reason) > maxReportReason {
		return spec.InvalidParam("the reason is longer than %d characters", maxReportReason)
	}
	return nil
}

// storeReport assigns the next report ID (the single writer makes max+1
// safe) and stores the report.
func (s *Service) storeReport(ctx context.Context, r Report) error {
	r.ReceivedTS = s.now().UnixMilli()
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := tx.QueryRow(`SELECT COALESCE(max(id), 0) + 1 FROM content_reports`).Scan(&r.ID); err != nil {
			return err
		}
		nullable := func(s string) any {
			if s == "" {
				return nil
			}
			return s
		}
		_, err := tx.Exec(`INSERT INTO content_reports (id, received_ts, reporter, kind, room_id, event_id, user_id, reason)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, r.ID, r.ReceivedTS, string(r.Reporter), r.Kind,
			nullable(string(r.RoomID)), nullable(string(r.EventID)), nullable(string(r.UserID)), r.Reason)
		return err
	})
}

// ReportEventContent reports an event. The reporter must be joined to the
// room and able to see the event (client-server API v1.8).
func (s *Service) ReportEventContent(ctx context.Context, reporter spec.UserID, room spec.RoomID, id spec.EventID, reason string) error {
	if err := checkReason(reason); err != nil {
		return err
	}
	notFound := spec.NotFound("the event was not found or you are not joined to the room")
	r := s.room(room)
	if r == nil || r.cur.Load().membership(reporter) != spec.Join {
		return notFound
	}
	ev, err := s.eventByID(ctx, id)
	if err != nil {
		return err
	}
	if ev == nil || ev.PDU.RoomID() != room || !r.canSee(reporter, ev) {
		return notFound
	}
	return s.storeReport(ctx, Report{Reporter: reporter, Kind: ReportEvent, RoomID: room, EventID: id, Reason: reason})
}

// ReportRoomContent reports a room; the reporter need not be in it.
func (s *Service) ReportRoomContent(ctx context.Context, reporter spec.UserID, room spec.RoomID, reason string) error {
	if err := checkReason(reason); err != nil {
		return err
	}
	return s.storeReport(ctx, Report{Reporter: reporter, Kind: ReportRoom, RoomID: room, Reason: reason})
}

// ReportUserContent reports a user; the reporter need not share a room.
func (s *Service) ReportUserContent(ctx context.Context, reporter, user spec.UserID, reason string) error {
	if err := checkReason(reason); err != nil {
		return err
	}
	return s.storeReport(ctx, Report{Reporter: reporter, Kind: ReportUser, UserID: user, Reason: reason})
}

// ReportFilter selects reports for the admin API.
type ReportFilter struct {
	Kind     string      // "" for every kind
	RoomID   spec.RoomID // "" for any room
	Reporter spec.UserID // "" for any reporter
	From     int         // offset of the first report
	Limit    int         // 0: 100
	Oldest   bool        // oldest first; newest first by default
}

const reportColumns = `id, received_ts, reporter, kind, room_id, event_id, user_id, reason FROM content_reports`

func scanReports(rows *sql.Rows) ([]Report, error) {
	defer rows.Close()
	out := []Report{}
	for rows.Next() {
		var r Report
		var reporter, kind, reason string
		var room, event, user sql.NullString
		if err := rows.Scan(&r.ID, &r.ReceivedTS, &reporter, &kind, &room, &event, &user, &reason); err != nil {
			return nil, err
		}
		r.Reporter, r.Kind, r.Reason = spec.UserID(reporter), kind, reason
		r.RoomID, r.EventID, r.UserID = spec.RoomID(room.String), spec.EventID(event.String), spec.UserID(user.String)
		out = append(out, r)
	}
	return out, rows.Err()
}

// ListReports returns a page of reports and how many match the filter.
func (s *Service) ListReports(ctx context.Context, f ReportFilter) ([]Report, int, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	where, args := ` WHERE 1 = 1`, []any{}
	for _, c := range []struct{ col, val string }{{"kind", f.Kind}, {"room_id", string(f.RoomID)}, {"reporter", string(f.Reporter)}} {
		if c.val != "" {
			args = append(args, c.val)
			where += ` AND ` + c.col + ` = $` + strconv.Itoa(len(args))
		}
	}
	var total int
	if err := s.db.QueryRow(ctx, `SELECT count(*) FROM content_reports`+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	order := ` ORDER BY id DESC`
	if f.Oldest {
		order = ` ORDER BY id`
	}
	q := `SELECT ` + reportColumns + where + order + ` LIMIT ` + strconv.Itoa(f.Limit) + ` OFFSET ` + strconv.Itoa(max(f.From, 0))
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, 0, err
	}
	list, err := scanReports(rows)
	return list, total, err
}

// GetReport returns one report, or nil if there is none with that ID.
func (s *Service) GetReport(ctx context.Context, id int64) (*Report, error) {
	rows, err := s.db.Query(ctx, `SELECT `+reportColumns+` WHERE id = $1`, id)
	if err != nil {
		return nil, err
	}
	list, err := scanReports(rows)
	if err != nil || len(list) == 0 {
		return nil, err
	}
	return &list[0], nil
}

// DeleteReport deletes a report (once handled); it reports whether there
// was one.
func (s *Service) DeleteReport(ctx context.Context, id int64) (bool, error) {
	var found bool
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(`DELETE FROM content_reports WHERE id = $1`, id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		found = n > 0
		return err
	})
	return found, err
}

// ReportedEvent returns a reported event as stored (ciphertext stays
// ciphertext; a redacted event is redacted), for the admin reviewing the
// report; nil if it is unknown.
func (s *Service) ReportedEvent(ctx context.Context, r *Report) (*Event, error) {
	if r == nil || r.Kind != ReportEvent {
		return nil, nil
	}
	ev, err := s.eventByID(ctx, r.EventID)
	if err != nil || ev == nil || ev.PDU.RoomID() != r.RoomID {
		return nil, err
	}
	return ev, nil
}

// readReason reads {"reason": …}; without a reason it is "".
func readReason(c *gin.Context) (string, error) {
	reason, err := readReasonMember(c)
	if err != nil || reason == nil {
		return "", err
	}
	return *reason, nil
}

// readRequiredReason reads {"reason": …}, which must have a reason (it may
// be empty).
func readRequiredReason(c *gin.Context) (string, error) {
	reason, err := readReasonMember(c)
	if err != nil {
		return "", err
	}
	if reason == nil {
		return "", spec.MissingParam("reason is required (it may be empty)")
	}
	return *reason, nil
}

func readReasonMember(c *gin.Context) (*string, error) {
	var body struct {
		Reason *string `json:"reason"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		return nil, err
	}
	return body.Reason, nil
}

// POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}: report an event
// of a room the caller is joined to.
func (h *handlers) reportEvent(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	room, eid, err := roomEventParams(c)
	if err != nil {
		return err
	}
	reason, err := readReason(c)
	if err != nil {
		return err
	}
	if err := h.s.ReportEventContent(c.Request.Context(), dev.UserID, room, eid, reason); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// POST /_matrix/client/v3/rooms/{roomId}/report: report a room.
func (h *handlers) reportRoom(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	room, err := roomIDParam(c)
	if err != nil {
		return err
	}
	reason, err := readRequiredReason(c)
	if err != nil {
		return err
	}
	if err := h.s.ReportRoomContent(c.Request.Context(), dev.UserID, room, reason); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// POST /_matrix/client/v3/users/{userId}/report: report a user.
func (h *handlers) reportUser(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	user, err := spec.ParseUserID(c.Param("userId"))
	if err != nil {
		return spec.InvalidParam("user ID: %v", err)
	}
	reason, err := readRequiredReason(c)
	if err != nil {
		return err
	}
	if err := h.s.ReportUserContent(c.Request.Context(), dev.UserID, user, reason); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}
