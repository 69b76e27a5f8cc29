package admin

import (
	"context"
	"net/http"
	"strings"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Account moderation (client-server API "Account locking" and "Account
// suspension"): a locked account gets 401 M_USER_LOCKED (soft_logout) on
// every request but logout, and no new access token; a suspended account
// may read, leave, log out and manage its keys, but not join, invite,
// send, change state or its profile, upload, or redact others' events: 403
// M_USER_SUSPENDED. auth asks CheckRequest and CheckLogin (policy.go); both
// answer from memory.

// errLocked is the spec's answer to a locked account.
func errLocked() *spec.Error {
	return spec.NewError(spec.ErrUserLocked, "this account has been locked").With("soft_logout", true)
}

func errSuspended() *spec.Error {
	return spec.NewError(spec.ErrUserSuspended, "you cannot perform this action while suspended")
}

// apiPrefixes are stripped from a route before it is classified.
var apiPrefixes = []string{"/_matrix/client/v3/", "/_matrix/client/r0/", "/_matrix/client/v1/", "/_matrix/client/unstable/"}

func isLogout(route string) bool {
	for _, p := range apiPrefixes {
		if rest, ok := strings.CutPrefix(route, p); ok {
			return rest == "logout" || rest == "logout/all"
		}
	}
	return false
}

// suspendedMayNot classifies a request by its route's shape (not its
// parameter names, which belong to other packages): what changes rooms,
// profiles or media is refused; reading, leaving, keys, receipts and
// account management are not.
func (s *Service) suspendedMayNot(c *gin.Context, user spec.UserID) bool {
	var events StoredEvents
	if s.rooms != nil {
		events = s.rooms
	}
	return suspendedMayNot(c, user, events)
}

// StoredEvents finds a stored event by its ID alone (rooms), for the
// redactions a suspended account may still make.
type StoredEvents interface {
	StoredEvent(ctx context.Context, id spec.EventID) (*rooms.Event, error)
}

func suspendedMayNot(c *gin.Context, user spec.UserID, events StoredEvents) bool {
	method, route := c.Request.Method, c.FullPath()
	if method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions {
		return false
	}
	if strings.HasPrefix(route, "/_matrix/media/") {
		return true // uploads
	}
	rest := ""
	for _, p := range apiPrefixes {
		if r, ok := strings.CutPrefix(route, p); ok {
			rest = r
			break
		}
	}
	segs := strings.Split(rest, "/")
	switch segs[0] {
	case "createRoom", "join", "knock":
		return true
	case "profile", "directory":
		return method == http.MethodPut || method == http.MethodDelete || method == http.MethodPost
	case "rooms":
		if len(segs) < 3 {
			return false
		}
		switch segs[2] {
		case "join", "invite", "kick", "ban", "unban", "send", "state", "upgrade":
			return true
		case "redact":
			return !redactsOwnEvent(c, user, events)
		}
	}
	return false
}

// redactsOwnEvent reports whether a redaction targets one of the user's
// own events: /rooms/{roomId}/redact/{eventId}/{txnId}, read by position.
func redactsOwnEvent(c *gin.Context, user spec.UserID, events StoredEvents) bool {
	if events == nil || len(c.Params) < 2 {
		return false
	}
	ev, err := events.StoredEvent(c.Request.Context(), spec.EventID(c.Params[1].Value))
	return err == nil && ev != nil && ev.PDU.Sender() == user
}

// moderationTarget checks the target of the spec's lock and suspend
// endpoints: a local (400 M_INVALID_PARAM), existing and active (404
// M_NOT_FOUND) account that is neither the caller nor another admin (403
// M_FORBIDDEN).
func (s *Service) moderationTarget(c *gin.Context) (spec.UserID, error) {
	u, err := s.existingUser(c)
	if err != nil {
		return "", err
	}
	if u.Deactivated {
		return "", spec.NotFound("user %s is deactivated", u.UserID)
	}
	if u.UserID == actor(c).User {
		return "", spec.Forbidden("you cannot lock or suspend your own account")
	}
	if u.IsAdmin {
		return "", spec.Forbidden("%s is a server admin", u.UserID)
	}
	return u.UserID, nil
}

// SetLocked locks or unlocks an account.
func (s *Service) SetLocked(ctx context.Context, who Actor, user spec.UserID, locked bool) error {
	action := "lock_user"
	if !locked {
		action = "unlock_user"
	}
	return s.record(ctx, who, action, string(user), nil, func(tx *storage.Tx) error {
		if err := setFlag(tx, user, "locked", locked); err != nil {
			return err
		}
		tx.AfterCommit(func() { s.applyFlag(user, "locked", locked) })
		return nil
	})
}

// SetSuspended suspends or unsuspends an account.
func (s *Service) SetSuspended(ctx context.Context, who Actor, user spec.UserID, suspended bool) error {
	action := "suspend_user"
	if !suspended {
		action = "unsuspend_user"
	}
	return s.record(ctx, who, action, string(user), nil, func(tx *storage.Tx) error {
		if err := setFlag(tx, user, "suspended", suspended); err != nil {
			return err
		}
		tx.AfterCommit(func() { s.applyFlag(user, "suspended", suspended) })
		return nil
	})
}

// GET /_matrix/client/v1/admin/lock/{userId}: an admin reads anyone's lock
// status, their own and other admins' included (reading changes nothing);
// any user may read their own. Anyone else's is refused before the lookup,
// so that it tells nobody whether an account exists (the spec's rule
// against user enumeration).
func (s *Service) getLock(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	if !dev.IsAdmin && c.Param("userId") != string(dev.UserID) {
		return spec.Forbidden("you are not a server admin: you may read your own lock status only")
	}
	u, err := s.existingUser(c)
	if err != nil {
		return err
	}
	if u.Deactivated {
		return spec.NotFound("user %s is deactivated", u.UserID)
	}
	c.JSON(http.StatusOK, gin.H{"locked": s.flagsOf(u.UserID).Locked})
	return nil
}

// PUT /_matrix/client/v1/admin/lock/{userId} {"locked": bool}
func (s *Service) putLock(c *gin.Context) error {
	u, err := s.moderationTarget(c)
	if err != nil {
		return err
	}
	var req struct {
		Locked *bool `json:"locked"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.Locked == nil {
		return spec.MissingParam("locked is required")
	}
	if err := s.SetLocked(c.Request.Context(), actor(c), u, *req.Locked); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"locked": *req.Locked})
	return nil
}

// GET /_matrix/client/v1/admin/suspend/{userId}
func (s *Service) getSuspend(c *gin.Context) error {
	u, err := s.moderationTarget(c)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"suspended": s.flagsOf(u).Suspended})
	return nil
}

// PUT /_matrix/client/v1/admin/suspend/{userId} {"suspended": bool}
func (s *Service) putSuspend(c *gin.Context) error {
	u, err := s.moderationTarget(c)
	if err != nil {
		return err
	}
	var req struct {
		Suspended *bool `json:"suspended"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.Suspended == nil {
		return spec.MissingParam("suspended is required")
	}
	if err := s.SetSuspended(c.Request.Context(), actor(c), u, *req.Suspended); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"suspended": *req.Suspended})
	return nil
}

// PUT /_synapse/admin/v1/suspend/{userId} {"suspend": bool}: Synapse's
// shape of the same, answering {"user_<id>_suspended": bool}.
func (s *Service) putSuspendSynapse(c *gin.Context) error {
	u, err := s.moderationTarget(c)
	if err != nil {
		return err
	}
	var req struct {
		Suspend *bool `json:"suspend"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.Suspend == nil {
		return spec.MissingParam("suspend is required")
	}
	if err := s.SetSuspended(c.Request.Context(), actor(c), u, *req.Suspend); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"user_" + string(u) + "_suspended": *req.Suspend})
	return nil
}
