package auth

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Profile limits. The spec caps a whole profile at 64 KiB; Chatalot keeps
// two short fields.
const (
	maxDisplayNameLength = 256  // characters
	maxAvatarURLLength   = 1000 // bytes
)

// profileKeys are the fields users can set.
var profileKeys = map[string]string{"displayname": "displayname", "avatar_url": "avatar_url"}

func (s *Service) loadProfile(ctx context.Context, user spec.UserID) (displayName, avatarURL string, err error) {
	return NewUserReader(s.db).Profile(ctx, user)
}

// UserReader answers the questions about accounts that other packages ask
// while acting (a join copies the profile; admin's guard asks whether a user
// is deactivated). It holds nothing but the database, so it can be built
// before auth.Service and given to the packages auth itself is built from
// (rooms).
type UserReader struct{ db *storage.DB }

// NewUserReader reads accounts from db.
func NewUserReader(db *storage.DB) *UserReader { return &UserReader{db: db} }

// Profile returns a local user's display name and avatar URL; M_NOT_FOUND
// for unknown or deactivated users.
func (r *UserReader) Profile(ctx context.Context, user spec.UserID) (displayName, avatarURL string, err error) {
	var dn, av sql.NullString
	err = r.db.QueryRow(ctx, `SELECT displayname, avatar_url FROM users WHERE user_id = $1 AND NOT deactivated`, string(user)).Scan(&dn, &av)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", spec.NotFound("profile not found")
	}
	return dn.String, av.String, err
}

// IsDeactivated reports whether the account is deactivated (false if it
// never existed).
func (r *UserReader) IsDeactivated(ctx context.Context, user spec.UserID) (bool, error) {
	u, found, err := loadUser(dbQuerier{r.db, ctx}, user)
	return found && u.Deactivated, err
}

// profileUser parses the userId path parameter.
func profileUser(c *gin.Context) (spec.UserID, error) {
	id, err := spec.ParseUserID(c.Param("userId"))
	if err != nil {
		return "", spec.InvalidParam("invalid user ID: %s", err.(*spec.Error).Message)
	}
	return id, nil
}

// chargeProfileChange takes the profile limit's tokens for a change: one
// per room the user is joined to, as each gets a new member event.
func (s *Service) chargeProfileChange(c *gin.Context, user spec.UserID) error {
	cost := 1
	if s.rooms != nil {
		cost = max(cost, len(s.rooms.JoinedRooms(user)))
	}
	if err := s.limiter.AllowUserCost(c, DeviceFrom(c), RateProfile, cost); err != nil {
		return err
	}
	return nil
}

// profileReader is the middleware of profile lookups: an access token is
// required unless profile_lookup is open.
func (s *Service) profileReader() gin.HandlerFunc {
	if s.cfg.ProfileLookup == ProfileLookupOpen {
		return func(c *gin.Context) { c.Next() }
	}
	return s.Middleware()
}

// readableProfile loads the profile of the userId parameter if the caller
// may read it: always their own; with shared_rooms, only of users the user
// directory would show them (joined to a room they are joined to, or to a
// public or world-readable room). Others get the spec's 403 ("unwilling to
// disclose whether the user exists"), the same for unknown users, so that
// the answer enumerates nobody.
func (s *Service) readableProfile(c *gin.Context) (displayName, avatarURL string, err error) {
	id, err := profileUser(c)
	if err != nil {
		return "", "", err
	}
	if s.cfg.ProfileLookup == ProfileLookupSharedRooms {
		me := DeviceFrom(c).UserID // behind Middleware
		if me != id && (s.rooms == nil || !s.rooms.InDirectoryOf(me, id)) {
			return "", "", spec.Forbidden("you do not share a room with this user")
		}
	}
	if id.Server() != s.serverName && s.remote != nil {
		return s.remote.QueryProfile(c.Request.Context(), id) // another server's user
	}
	return s.loadProfile(c.Request.Context(), id)
}

// GET /_matrix/client/v3/profile/{userId}: a local user's display name and
// avatar, for whoever profile_lookup lets read it. Remote, unknown and
// deactivated users are 404 to those who may look.
func (s *Service) getProfile(c *gin.Context) error {
	dn, av, err := s.readableProfile(c)
	if err != nil {
		return err
	}
	out := gin.H{}
	if dn != "" {
		out["displayname"] = dn
	}
	if av != "" {
		out["avatar_url"] = av
	}
	c.JSON(http.StatusOK, out)
	return nil
}

// GET /_matrix/client/v3/profile/{userId}/{keyName}: one field; 404 when
// it is not set.
func (s *Service) getProfileField(c *gin.Context) error {
	key := c.Param("keyName")
	dn, av, err := s.readableProfile(c)
	if err != nil {
		return err
	}
	if _, ok := profileKeys[key]; !ok {
		return spec.NotFound("profile field not found")
	}
	v := dn
	if key == "avatar_url" {
		v = av
	}
	if v == "" {
		return spec.NotFound("profile field not found")
	}
	c.JSON(http.StatusOK, gin.H{key: v})
	return nil
}

// PUT /_matrix/client/v3/profile/{userId}/{keyName}: sets the caller's own
// display name or avatar URL (an empty string clears it).
func (s *Service) putProfileField(c *gin.Context) error {
	id, key, err := s.ownProfileField(c)
	if err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	raw, present := body[key]
	if !present {
		return spec.MissingParam("the body must contain %q", key)
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil || string(raw) == "null" {
		return spec.BadJSON("%s must be a string", key)
	}
	if err := s.chargeProfileChange(c, id); err != nil {
		return err
	}
	if err := s.setProfileField(c.Request.Context(), id, key, v); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// DELETE /_matrix/client/v3/profile/{userId}/{keyName}: clears a field.
func (s *Service) deleteProfileField(c *gin.Context) error {
	id, key, err := s.ownProfileField(c)
	if err != nil {
		return err
	}
	if err := s.chargeProfileChange(c, id); err != nil {
		return err
	}
	if err := s.setProfileField(c.Request.Context(), id, key, ""); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// ownProfileField checks that the caller changes their own profile and a
// field they may change.
func (s *Service) ownProfileField(c *gin.Context) (spec.UserID, string, error) {
	id, err := profileUser(c)
	if err != nil {
		return "", "", err
	}
	if id != DeviceFrom(c).UserID {
		return "", "", spec.Forbidden("you can only change your own profile")
	}
	key := c.Param("keyName")
	if len(key) > 255 {
		return "", "", spec.NewError(spec.ErrKeyTooLarge, "profile keys are at most 255 bytes")
	}
	if _, ok := profileKeys[key]; !ok {
		return "", "", spec.Forbidden("only displayname and avatar_url can be set on this server")
	}
	return id, key, nil
}

// validateProfileField checks a display name or avatar URL.
func validateProfileField(key, v string) error {
	switch key {
	case "displayname":
		if !utf8.ValidString(v) || utf8.RuneCountInString(v) > maxDisplayNameLength {
			return spec.InvalidParam("displayname must be at most %d characters", maxDisplayNameLength)
		}
		if strings.ContainsRune(v, 0) {
			return spec.InvalidParam("displayname must not contain NUL")
		}
	case "avatar_url":
		if v == "" {
			return nil
		}
		if len(v) > maxAvatarURLLength {
			return spec.InvalidParam("avatar_url must be at most %d bytes", maxAvatarURLLength)
		}
		rest, ok := strings.CutPrefix(v, "mxc://")
		server, media, ok2 := strings.Cut(rest, "/")
		if !ok || !ok2 || server == "" || media == "" || !printable(v) {
			return spec.InvalidParam("avatar_url must be an mxc:// URI")
		}
	default:
		return spec.Forbidden("unknown profile field")
	}
	return nil
}

// SetProfile sets a user's display name or avatar URL ("displayname" or
// "avatar_url"), then tells rooms so it can update memberships.
func (s *Service) setProfileField(ctx context.Context, user spec.UserID, key, value string) error {
	if err := validateProfileField(key, value); err != nil {
		return err
	}
	col := profileKeys[key]
	var dn, av sql.NullString
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		return tx.QueryRow(`UPDATE users SET `+col+` = $1 WHERE user_id = $2 AND NOT deactivated RETURNING displayname, avatar_url`,
			nullString(value), string(user)).Scan(&dn, &av)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return spec.NotFound("profile not found")
	}
	if err != nil {
		return err
	}
	s.profiles.set(user, dn.String, av.String)
	if s.rooms != nil {
		if err := s.rooms.ProfileChanged(context.WithoutCancel(ctx), user, dn.String, av.String); err != nil {
			return err
		}
	}
	return nil
}

// SetProfile sets a user's display name or avatar URL for other packages
// (admin API); key is "displayname" or "avatar_url".
func (s *Service) SetProfile(ctx context.Context, user spec.UserID, key, value string) error {
	if _, ok := profileKeys[key]; !ok {
		return spec.InvalidParam("unknown profile field")
	}
	return s.setProfileField(ctx, user, key, value)
}
