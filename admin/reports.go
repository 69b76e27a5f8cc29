package admin

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Event reports are stored by rooms (the client-server API's "Reporting
// content"); admins read and close them here.

func (s *Service) reportJSON(ctx context.Context, r rooms.Report, ev *rooms.Event) gin.H {
	out := gin.H{
		"id":              r.ID,
		"received_ts":     r.ReceivedTS,
		"room_id":         string(r.RoomID),
		"event_id":        string(r.EventID),
		"user_id":         string(r.Reporter),
		"reason":          r.Reason,
		"score":           nil,
		"sender":          nil,
		"name":            nil,
		"canonical_alias": nil,
	}
	if ev != nil {
		out["sender"] = string(ev.PDU.Sender())
	}
	if room, found, err := s.rooms.AdminRoom(ctx, r.RoomID); err == nil && found {
		out["name"] = nilIfEmpty(room.Name)
		out["canonical_alias"] = nilIfEmpty(room.CanonicalAlias)
	}
	return out
}

// GET /_synapse/admin/v1/event_reports (from, limit, dir (default b: newest
// first), user_id and room_id (contained), sender_user_id (exact)).
func (s *Service) listReports(c *gin.Context) error {
	from, limit, err := paging(c)
	if err != nil {
		return err
	}
	backwards, err := dirParam(c, "b")
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	all, _, err := s.rooms.ListReports(ctx, rooms.ReportFilter{Kind: rooms.ReportEvent, Limit: 1 << 30, Oldest: !backwards})
	if err != nil {
		return err
	}
	reporter, room, sender := c.Query("user_id"), c.Query("room_id"), c.Query("sender_user_id")
	type item struct {
		r  rooms.Report
		ev *rooms.Event
	}
	var list []item
	for _, r := range all {
		if reporter != "" && !strings.Contains(string(r.Reporter), reporter) || room != "" && !strings.Contains(string(r.RoomID), room) {
			continue
		}
		it := item{r: r}
		if sender != "" {
			ev, err := s.rooms.ReportedEvent(ctx, &r)
			if err != nil {
				return err
			}
			if ev == nil || string(ev.PDU.Sender()) != sender {
				continue
			}
			it.ev = ev
		}
		list = append(list, it)
	}
	pg, next := page(list, from, limit)
	out := make([]gin.H, len(pg))
	for i, it := range pg {
		if it.ev == nil {
			it.ev, _ = s.rooms.ReportedEvent(ctx, &it.r)
		}
		out[i] = s.reportJSON(ctx, it.r, it.ev)
	}
	resp := gin.H{"event_reports": out, "total": len(list)}
	if next >= 0 {
		resp["next_token"] = next
	}
	c.JSON(http.StatusOK, resp)
	return nil
}

// reportParam reads reportId: 400 M_INVALID_PARAM unless a positive
// integer, 404 M_NOT_FOUND for no event report of that ID.
func (s *Service) reportParam(c *gin.Context) (*rooms.Report, error) {
	id, err := strconv.ParseInt(c.Param("reportId"), 10, 64)
	if err != nil || id < 1 {
		return nil, spec.InvalidParam("the report ID must be a positive integer")
	}
	r, err := s.rooms.GetReport(c.Request.Context(), id)
	if err != nil {
		return nil, err
	}
	if r == nil || r.Kind != rooms.ReportEvent {
		return nil, spec.NotFound("event report %d not found", id)
	}
	return r, nil
}

// GET /_synapse/admin/v1/event_reports/{reportId}: one report with the
// reported event as stored (ciphertext stays ciphertext). Reading it is
// recorded in the audit log, as the admin sees a user's event.
func (s *Service) getReport(c *gin.Context) error {
	r, err := s.reportParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	ev, err := s.rooms.ReportedEvent(ctx, r)
	if err != nil {
		return err
	}
	if err := s.record(ctx, actor(c), "view_event_report", strconv.FormatInt(r.ID, 10), map[string]any{"event_id": string(r.EventID)}, nil); err != nil {
		return err
	}
	out := s.reportJSON(ctx, *r, ev)
	out["event_json"] = nil
	if ev != nil {
		out["event_json"] = rawJSON(ev.PDU.JSON())
	}
	c.JSON(http.StatusOK, out)
	return nil
}

// DELETE /_synapse/admin/v1/event_reports/{reportId}: closes a report.
func (s *Service) deleteReport(c *gin.Context) error {
	r, err := s.reportParam(c)
	if err != nil {
		return err
	}
	actx, finish := s.audit(c.Request.Context(), actor(c), "delete_event_report", strconv.FormatInt(r.ID, 10), map[string]any{"event_id": string(r.EventID)}, nil)
	found, err := s.rooms.DeleteReport(actx, r.ID)
	if err == nil && !found {
		err = spec.NotFound("event report %d not found", r.ID)
	}
	if err := finish(err); err != nil {
		return err
	}
	answerOK(c)
	return nil
}
