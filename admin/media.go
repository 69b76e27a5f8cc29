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

// mediaParams reads serverName and mediaId: this server's media, or
// another server's whose copy is cached here (media/remote.go), as
// Synapse's media admin API takes either (400 M_INVALID_PARAM for a server
// name that is not one).
func (s *Service) mediaParams(c *gin.Context) (spec.ServerName, string, error) {
	server, err := spec.ParseServerName(c.Param("serverName"))
	if err != nil {
		return "", "", spec.InvalidParam("invalid server name: %v", err)
	}
	id := c.Param("mediaId")
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return "", "", spec.InvalidParam("invalid media ID")
	}
	return server, id, nil
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
		"last_access_ts":       lastAccessTS(i),
		"quarantined_by":       s.quarantinedBy(ctx, i),
		"safe_from_quarantine": false,
	}
}

// lastAccessTS is Synapse's last_access_ts: the last download (ms, to the
// hour), or null if there was none since the upload.
func lastAccessTS(i media.Info) any {
	if i.LastAccess.IsZero() {
		return nil
	}
	return i.LastAccess.UnixMilli()
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
func (s *Service) quarantine(c *gin.Context) error { return s.setQuarantine(c, true) }

// POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}
func (s *Service) unquarantine(c *gin.Context) error { return s.setQuarantine(c, false) }

func (s *Service) setQuarantine(c *gin.Context, q bool) error {
	server, id, err := s.mediaParams(c)
	if err != nil {
		return err
	}
	if err := s.SetQuarantined(c.Request.Context(), actor(c), server, id, q); err != nil {
		return err
	}
	answerOK(c)
	return nil
}

// GET /_synapse/admin/v1/media/{serverName}/{mediaId}
func (s *Service) getMedia(c *gin.Context) error {
	server, id, err := s.mediaParams(c)
	if err != nil {
		return err
	}
	info, err := s.media.Get(c.Request.Context(), server, id)
	if err != nil {
		return err
	}
	out := s.mediaJSON(c.Request.Context(), info)
	out["user_id"], out["media_origin"] = string(info.Uploader), nil
	if server != s.server {
		// A cached copy: no uploader here, and the origin it came from.
		out["user_id"], out["media_origin"] = nil, string(server)
	}
	c.JSON(http.StatusOK, gin.H{"media_info": out})
	return nil
}

// DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}: this server's
// media only, as Synapse's (cached copies go with purge_media_cache and
// media retention).
func (s *Service) deleteMedia(c *gin.Context) error {
	server, id, err := s.mediaParams(c)
	if err != nil {
		return err
	}
	if server != s.server {
		return spec.NewError(spec.ErrUnknown, "Can only delete local media").WithStatus(http.StatusBadRequest)
	}
	// Looked up first: a delete of nothing is an error, not an action.
	if _, err := s.media.Get(c.Request.Context(), server, id); err != nil {
		return err
	}
	actx, finish := s.audit(c.Request.Context(), actor(c), "delete_media", mxc(server, id), nil, nil)
	if err := finish(s.media.Delete(actx, server, id)); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"deleted_media": []string{id}, "total": 1})
	return nil
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
func (s *Service) userMedia(c *gin.Context) (spec.UserID, []media.Info, int, int, error) {
	u, err := s.existingUser(c)
	if err != nil {
		return "", nil, 0, 0, err
	}
	from, limit, err := paging(c)
	if err != nil {
		return "", nil, 0, 0, err
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
		return "", nil, 0, 0, spec.InvalidParam("unknown order_by %q", orderBy)
	}
	backwards, err := dirParam(c, def)
	if err != nil {
		return "", nil, 0, 0, err
	}
	all, err := s.media.ListUserMedia(c.Request.Context(), u.UserID)
	if err != nil {
		return "", nil, 0, 0, err
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
	return u.UserID, pg, len(all), next, nil
}

// GET /_synapse/admin/v1/users/{userId}/media
func (s *Service) listUserMedia(c *gin.Context) error {
	_, list, total, next, err := s.userMedia(c)
	if err != nil {
		return err
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
	return nil
}

// DELETE /_synapse/admin/v1/users/{userId}/media: deletes the page of the
// user's media the same parameters select (100 by default).
func (s *Service) deleteUserMedia(c *gin.Context) error {
	user, list, _, _, err := s.userMedia(c)
	if err != nil {
		return err
	}
	ids := make([]string, len(list))
	for i, m := range list {
		ids[i] = m.MediaID
	}
	actx, finish := s.audit(c.Request.Context(), actor(c), "delete_user_media", string(user), map[string]any{"media_ids": ids}, nil)
	deleted := []string{}
	for _, m := range list {
		if e := s.media.Delete(actx, m.ServerName, m.MediaID); e == nil {
			deleted = append(deleted, m.MediaID)
		} else if !isNotFound(e) {
			err = e
			break
		}
	}
	if err := finish(err); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"deleted_media": deleted, "total": len(deleted)})
	return nil
}

func isNotFound(err error) bool {
	var me *spec.Error
	return errors.As(err, &me) && me.Code == spec.ErrNotFound
}
