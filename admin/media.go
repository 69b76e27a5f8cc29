package admin

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/chatalot/chatalot/media"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Media administration: quarantine (hide from every download without
// deleting, to look into a report), delete, and a user's uploads.

// mediaParams reads serverName and mediaId: this server's media only
// (400 M_INVALID_PARAM otherwise).
func (s *Service) mediaParams(c *gin.Context) (spec.ServerName, string, bool) {
	server, id := spec.ServerName(c.Param("serverName")), c.Param("mediaId")
	if server != s.server {
		c.Error(spec.InvalidParam("only media of this server (%s) can be managed here", s.server))
		return "", "", false
	}
	if id == "" || strings.ContainsAny(id, "/\x00") {
		c.Error(spec.InvalidParam("invalid media ID"))
		return "", "", false
	}
	return server, id, true
}

func mxc(server spec.ServerName, id string) string { return "mxc://" + string(server) + "/" + id }

// quarantinedBy is the admin who last quarantined the media, from the
// audit log.
func (s *Service) quarantinedBy(ctx context.Context, i media.Info) any {
	if !i.Quarantined {
		return nil
	}
	var who string
	err := s.db.QueryRow(ctx, `SELECT actor FROM admin_audit_log WHERE target = $1 AND action = 'quarantine_media' ORDER BY id DESC LIMIT 1`, i.URI()).Scan(&who)
	if errors.Is(err, sql.ErrNoRows) || err != nil {
		return "unknown"
	}
	return who
}

func (s *Service) mediaJSON(ctx context.Context, i media.Info) gin.H {
	return gin.H{
		"media_id":             i.MediaID,
		"media_type":           i.ContentType,
		"media_length":         i.Size,
		"upload_name":          nilIfEmpty(i.Filename),
		"created_ts":           i.CreatedAt.UnixMilli(),
		"last_access_ts":       nil,
		"quarantined_by":       s.quarantinedBy(ctx, i),
		"safe_from_quarantine": false,
	}
}

// SetQuarantined quarantines or releases one piece of media.
func (s *Service) SetQuarantined(ctx context.Context, who Actor, server spec.ServerName, id string, quarantined bool) error {
	action := "quarantine_media"
	if !quarantined {
		action = "unquarantine_media"
	}
	actx, finish := s.audit(ctx, who, action, mxc(server, id), nil, nil)
	return finish(s.media.Quarantine(actx, server, id, quarantined))
}

// POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}
func (s *Service) quarantine(c *gin.Context) { s.setQuarantine(c, true) }

// POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}
func (s *Service) unquarantine(c *gin.Context) { s.setQuarantine(c, false) }

func (s *Service) setQuarantine(c *gin.Context, q bool) {
	server, id, ok := s.mediaParams(c)
	if !ok {
		return
	}
	if err := s.SetQuarantined(c.Request.Context(), actor(c), server, id, q); err != nil {
		c.Error(err)
		return
	}
	answerOK(c)
}

// GET /_synapse/admin/v1/media/{serverName}/{mediaId}
func (s *Service) getMedia(c *gin.Context) {
	server, id, ok := s.mediaParams(c)
	if !ok {
		return
	}
	info, err := s.media.Get(c.Request.Context(), server, id)
	if err != nil {
		c.Error(err)
		return
	}
	out := s.mediaJSON(c.Request.Context(), info)
	out["user_id"] = string(info.Uploader)
	c.JSON(http.StatusOK, gin.H{"media_info": out})
}

// DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}
func (s *Service) deleteMedia(c *gin.Context) {
	server, id, ok := s.mediaParams(c)
	if !ok {
		return
	}
	// Looked up first: a delete of nothing is an error, not an action.
	if _, err := s.media.Get(c.Request.Context(), server, id); err != nil {
		c.Error(err)
		return
	}
	actx, finish := s.audit(c.Request.Context(), actor(c), "delete_media", mxc(server, id), nil, nil)
	if err := finish(s.media.Delete(actx, server, id)); err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"deleted_media": []string{id}, "total": 1})
}

// mediaOrders are the order_by values of a user's media list.
var mediaOrders = map[string]func(a, b media.Info) int{
	"media_id":             func(a, b media.Info) int { return 0 },
	"upload_name":          func(a, b media.Info) int { return strings.Compare(a.Filename, b.Filename) },
	"created_ts":           func(a, b media.Info) int { return a.CreatedAt.Compare(b.CreatedAt) },
	"last_access_ts":       func(a, b media.Info) int { return 0 },
	"media_length":         func(a, b media.Info) int { return cmpInt(a.Size, b.Size) },
	"media_type":           func(a, b media.Info) int { return strings.Compare(a.ContentType, b.ContentType) },
	"quarantined_by":       func(a, b media.Info) int { return cmpBool(a.Quarantined, b.Quarantined) },
	"safe_from_quarantine": func(a, b media.Info) int { return 0 },
}

// userMedia reads the user and the list parameters, and returns the
// selected page of the user's media and the total.
func (s *Service) userMedia(c *gin.Context) (spec.UserID, []media.Info, int, int, bool) {
	u, ok := s.existingUser(c)
	if !ok {
		return "", nil, 0, 0, false
	}
	from, limit, ok := paging(c)
	if !ok {
		return "", nil, 0, 0, false
	}
	orderBy, hasOrder := c.GetQuery("order_by")
	_, hasDir := c.GetQuery("dir")
	def := "f"
	if !hasOrder && !hasDir {
		orderBy, def = "created_ts", "b" // newest first
	}
	if orderBy == "" {
		orderBy = "created_ts"
	}
	less, known := mediaOrders[orderBy]
	if !known {
		c.Error(spec.InvalidParam("unknown order_by %q", orderBy))
		return "", nil, 0, 0, false
	}
	backwards, ok := dirParam(c, def)
	if !ok {
		return "", nil, 0, 0, false
	}
	all, err := s.media.ListUserMedia(c.Request.Context(), u.UserID)
	if err != nil {
		c.Error(err)
		return "", nil, 0, 0, false
	}
	sort.SliceStable(all, func(i, j int) bool {
		c := less(all[i], all[j])
		if backwards {
			c = -c
		}
		if c != 0 {
			return c < 0
		}
		return all[i].MediaID < all[j].MediaID
	})
	pg, next := page(all, from, limit)
	return u.UserID, pg, len(all), next, true
}

// GET /_synapse/admin/v1/users/{userId}/media
func (s *Service) listUserMedia(c *gin.Context) {
	_, list, total, next, ok := s.userMedia(c)
	if !ok {
		return
	}
	out := make([]gin.H, len(list))
	for i, m := range list {
		out[i] = s.mediaJSON(c.Request.Context(), m)
	}
	resp := gin.H{"media": out, "total": total}
	if next >= 0 {
		resp["next_token"] = next
	}
	c.JSON(http.StatusOK, resp)
}

// DELETE /_synapse/admin/v1/users/{userId}/media: deletes the page of the
// user's media the same parameters select (100 by default).
func (s *Service) deleteUserMedia(c *gin.Context) {
	user, list, _, _, ok := s.userMedia(c)
	if !ok {
		return
	}
	ids := make([]string, len(list))
	for i, m := range list {
		ids[i] = m.MediaID
	}
	actx, finish := s.audit(c.Request.Context(), actor(c), "delete_user_media", string(user), map[string]any{"media_ids": ids}, nil)
	deleted := []string{}
	var err error
	for _, m := range list {
		if e := s.media.Delete(actx, m.ServerName, m.MediaID); e == nil {
			deleted = append(deleted, m.MediaID)
		} else if !isNotFound(e) {
			err = e
			break
		}
	}
	if err := finish(err); err != nil {
		c.Error(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"deleted_media": deleted, "total": len(deleted)})
}

func isNotFound(err error) bool {
	var me *spec.Error
	return errors.As(err, &me) && me.Code == spec.ErrNotFound
}
