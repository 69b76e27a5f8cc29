package admin

import (
	"net/http"
	"strconv"

	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// GET /.well-known/matrix/support: the admin contacts and support page from
// the configuration; 404 when neither is set, as the spec says.
func (s *Service) support(c *gin.Context) error {
	if len(s.cfg.Contacts) == 0 && s.cfg.SupportPage == "" {
		return spec.NotFound("no support information is configured")
	}
	out := gin.H{}
	if len(s.cfg.Contacts) > 0 {
		out["contacts"] = s.cfg.Contacts
	}
	if s.cfg.SupportPage != "" {
		out["support_page"] = s.cfg.SupportPage
	}
	c.JSON(http.StatusOK, out)
	return nil
}

// GET /_synapse/admin/v1/server_version
func (s *Service) serverVersion(c *gin.Context) error {
	c.JSON(http.StatusOK, gin.H{"server_version": "Chatalot " + s.cfg.Version})
	return nil
}

// GET /_synapse/admin/v1/chatalot/audit_log (Chatalot's own): the audit
// log, newest first by default (from, limit, dir, actor, action, target).
func (s *Service) auditLog(c *gin.Context) error {
	from, limit, err := paging(c)
	if err != nil {
		return err
	}
	backwards, err := dirParam(c, "b")
	if err != nil {
		return err
	}
	list, total, err := s.AuditLog(c.Request.Context(), AuditFilter{
		Actor: c.Query("actor"), Action: c.Query("action"), Target: c.Query("target"),
		From: from, Limit: limit, Oldest: !backwards,
	})
	if err != nil {
		return err
	}
	if limit == 0 {
		list = []AuditEntry{}
	}
	out := gin.H{"entries": list, "total": total}
	if limit > 0 && from+len(list) < total {
		out["next_token"] = strconv.Itoa(from + len(list))
	}
	c.JSON(http.StatusOK, out)
	return nil
}
