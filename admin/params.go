package admin

import (
	"net/http"
	"strconv"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// requireAdmin answers 403 M_FORBIDDEN to callers who are not server
// admins; it runs after the auth middleware, so a request without a valid
// token has already had its 401. It checks before anything is looked up,
// so that a non-admin learns nothing (not even whether a user exists).
var requireAdmin = api.Middleware(func(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	if dev == nil || !dev.IsAdmin {
		return spec.Forbidden("you are not a server admin")
	}
	return nil
})

// actor is the admin making the request.
func actor(c *gin.Context) Actor { return Actor{User: auth.DeviceFrom(c).UserID} }

// userParam parses the userId path parameter: 400 M_INVALID_PARAM if it is
// not a user ID or not one of this server's.
func (s *Service) userParam(c *gin.Context) (spec.UserID, error) {
	u, err := spec.ParseUserID(c.Param("userId"))
	if err != nil {
		return "", spec.InvalidParam("%q is not a valid user ID", c.Param("userId"))
	}
	if u.Server() != s.server {
		return "", spec.InvalidParam("%s is not a user of this server", u)
	}
	return u, nil
}

// existingUser is userParam for an account that exists (deactivated or
// not): 404 M_NOT_FOUND otherwise.
func (s *Service) existingUser(c *gin.Context) (auth.UserInfo, error) {
	u, err := s.userParam(c)
	if err != nil {
		return auth.UserInfo{}, err
	}
	info, found, err := s.auth.User(c.Request.Context(), u)
	if err != nil {
		return info, err
	}
	if !found {
		return info, spec.NotFound("user %s not found", u)
	}
	return info, nil
}

// roomParam parses the roomId path parameter: 400 M_INVALID_PARAM if it is
// not a room ID.
func roomParam(c *gin.Context) (spec.RoomID, error) {
	id, err := spec.ParseRoomID(c.Param("roomId"))
	if err != nil {
		return "", spec.InvalidParam("%q is not a valid room ID", c.Param("roomId"))
	}
	return id, nil
}

// paging reads from (default 0) and limit (default 100): non-negative
// integers, else 400 M_INVALID_PARAM. A from past the end is not an error:
// the page is empty.
func paging(c *gin.Context) (from, limit int, err error) {
	from, err = intParam(c, "from", 0)
	if err != nil {
		return 0, 0, err
	}
	limit, err = intParam(c, "limit", 100)
	if err != nil {
		return 0, 0, err
	}
	return from, min(limit, maxPage), nil
}

// maxPage bounds a page, whatever the limit asked.
const maxPage = 1000

func intParam(c *gin.Context, name string, def int) (int, error) {
	v, present := c.GetQuery(name)
	if !present {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, spec.InvalidParam("query parameter %s must be a non-negative integer", name)
	}
	return n, nil
}

// boolParam reads an optional "true"/"false" query parameter.
func boolParam(c *gin.Context, name string) (*bool, error) {
	v, present := c.GetQuery(name)
	if !present {
		return nil, nil
	}
	switch v {
	case "true":
		b := true
		return &b, nil
	case "false":
		b := false
		return &b, nil
	}
	return nil, spec.InvalidParam("query parameter %s must be true or false", name)
}

// dirParam reads dir: f (forwards, the default unless def says b) or b.
func dirParam(c *gin.Context, def string) (backwards bool, err error) {
	v := c.DefaultQuery("dir", def)
	switch v {
	case "f":
		return false, nil
	case "b":
		return true, nil
	}
	return false, spec.InvalidParam("query parameter dir must be f or b")
}

// page slices a sorted list for from and limit; next is the offset of the
// next page, or -1 at the end.
func page[T any](list []T, from, limit int) (out []T, next int) {
	if from >= len(list) || limit == 0 {
		return []T{}, -1
	}
	end := min(from+limit, len(list))
	next = -1
	if end < len(list) {
		next = end
	}
	return list[from:end], next
}

// answerOK answers {} with 200.
func answerOK(c *gin.Context) { c.JSON(http.StatusOK, gin.H{}) }
