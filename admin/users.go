package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// userJSON is an account as Synapse's user admin API shows it. Fields
// Chatalot has no use for keep Synapse's neutral values (no guests, no
// shadow-bans, no user types, no third-party IDs).
func (s *Service) userJSON(u auth.UserInfo, full bool) gin.H {
	fl := s.flagsOf(u.UserID)
	nullable := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	var seen any
	if u.LastSeenTS > 0 {
		seen = u.LastSeenTS
	}
	out := gin.H{
		"name":          string(u.UserID),
		"is_guest":      false,
		"admin":         u.IsAdmin,
		"user_type":     nil,
		"deactivated":   u.Deactivated,
		"erased":        fl.Erased,
		"shadow_banned": false,
		"displayname":   nullable(u.DisplayName),
		"avatar_url":    nullable(u.AvatarURL),
		"creation_ts":   u.CreatedTS,
		"last_seen_ts":  seen,
		"locked":        fl.Locked,
		"suspended":     fl.Suspended,
		"approved":      true,
	}
	if full {
		out["threepids"] = []any{}
		out["external_ids"] = []any{}
		out["appservice_id"] = nil
		out["consent_server_notice_sent"] = nil
		out["consent_version"] = nil
		out["consent_ts"] = nil
	}
	return out
}

// userOrders are the order_by values of GET /v2/users, as less functions.
var userOrders = map[string]func(a, b auth.UserInfo, fa, fb userFlags) int{
	"name":          func(a, b auth.UserInfo, _, _ userFlags) int { return 0 },
	"is_guest":      func(a, b auth.UserInfo, _, _ userFlags) int { return 0 },
	"user_type":     func(a, b auth.UserInfo, _, _ userFlags) int { return 0 },
	"shadow_banned": func(a, b auth.UserInfo, _, _ userFlags) int { return 0 },
	"admin":         func(a, b auth.UserInfo, _, _ userFlags) int { return cmpBool(a.IsAdmin, b.IsAdmin) },
	"deactivated":   func(a, b auth.UserInfo, _, _ userFlags) int { return cmpBool(a.Deactivated, b.Deactivated) },
	"locked":        func(_, _ auth.UserInfo, fa, fb userFlags) int { return cmpBool(fa.Locked, fb.Locked) },
	"displayname":   func(a, b auth.UserInfo, _, _ userFlags) int { return strings.Compare(a.DisplayName, b.DisplayName) },
	"avatar_url":    func(a, b auth.UserInfo, _, _ userFlags) int { return strings.Compare(a.AvatarURL, b.AvatarURL) },
	"creation_ts":   func(a, b auth.UserInfo, _, _ userFlags) int { return cmpInt(a.CreatedTS, b.CreatedTS) },
	"last_seen_ts":  func(a, b auth.UserInfo, _, _ userFlags) int { return cmpInt(a.LastSeenTS, b.LastSeenTS) },
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// GET /_synapse/admin/v2/users: every local account, filtered, sorted and
// paged (from, limit, user_id, name, guests, admins, deactivated, locked,
// order_by, dir).
func (s *Service) listUsers(c *gin.Context) error {
	from, limit, err := paging(c)
	if err != nil {
		return err
	}
	admins, err := boolParam(c, "admins")
	if err != nil {
		return err
	}
	deactivated, err := boolParam(c, "deactivated")
	if err != nil {
		return err
	}
	locked, err := boolParam(c, "locked")
	if err != nil {
		return err
	}
	if _, err := boolParam(c, "guests"); err != nil {
		return err
	}
	backwards, err := dirParam(c, "f")
	if err != nil {
		return err
	}
	orderBy := c.DefaultQuery("order_by", "name")
	less, known := userOrders[orderBy]
	if !known {
		return spec.InvalidParam("unknown order_by %q", orderBy)
	}
	all, err := s.auth.Users(c.Request.Context())
	if err != nil {
		return err
	}
	name, idPart := c.Query("name"), c.Query("user_id")
	type row struct {
		u auth.UserInfo
		f userFlags
	}
	var rows []row
	for _, u := range all {
		f := s.flagsOf(u.UserID)
		switch {
		case admins != nil && u.IsAdmin != *admins,
			u.Deactivated && (deactivated == nil || !*deactivated),
			f.Locked && (locked == nil || !*locked),
			name != "" && !lowerContains(u.UserID.Localpart(), name) && !lowerContains(u.DisplayName, name),
			name == "" && idPart != "" && !lowerContains(string(u.UserID), idPart):
			continue
		}
		rows = append(rows, row{u, f})
	}
	// Ties are broken by user ID, ascending, whatever the direction.
	sort.SliceStable(rows, func(i, j int) bool {
		c := less(rows[i].u, rows[j].u, rows[i].f, rows[j].f)
		if backwards {
			c = -c
		}
		if c != 0 {
			return c < 0
		}
		return rows[i].u.UserID < rows[j].u.UserID
	})
	if backwards && orderBy == "name" {
		for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
			rows[i], rows[j] = rows[j], rows[i]
		}
	}
	pg, next := page(rows, from, limit)
	users := make([]gin.H, len(pg))
	for i, r := range pg {
		users[i] = s.userJSON(r.u, false)
	}
	out := gin.H{"users": users, "total": len(rows)}
	if next >= 0 {
		out["next_token"] = strconv.Itoa(next)
	}
	c.JSON(http.StatusOK, out)
	return nil
}

// GET /_synapse/admin/v2/users/{userId}: one account.
func (s *Service) getUser(c *gin.Context) error {
	u, err := s.existingUser(c)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, s.userJSON(u, true))
	return nil
}

// putUserRequest is the body of PUT /v2/users/{userId}; absent fields are
// left as they are.
type putUserRequest struct {
	Password      *string            `json:"password"`
	LogoutDevices *bool              `json:"logout_devices"`
	Displayname   *string            `json:"displayname"`
	AvatarURL     *string            `json:"avatar_url"`
	Threepids     *[]json.RawMessage `json:"threepids"`
	ExternalIDs   *[]json.RawMessage `json:"external_ids"`
	Admin         *bool              `json:"admin"`
	Deactivated   *bool              `json:"deactivated"`
	Locked        *bool              `json:"locked"`
	UserType      json.RawMessage    `json:"user_type"`
}

// validate refuses what Chatalot cannot store, before anything changes.
func (s *Service) validate(req *putUserRequest) error {
	if req.Threepids != nil && len(*req.Threepids) > 0 {
		return spec.InvalidParam("this server keeps no third-party identifiers (threepids)")
	}
	if req.ExternalIDs != nil && len(*req.ExternalIDs) > 0 {
		return spec.InvalidParam("this server has no external identity providers (external_ids)")
	}
	if len(req.UserType) > 0 && string(req.UserType) != "null" {
		return spec.InvalidParam("this server has no user types (user_type must be null)")
	}
	if req.Password != nil && *req.Password != "" {
		if err := s.auth.CheckNewPassword(*req.Password); err != nil {
			return err
		}
	}
	if req.Displayname != nil {
		if err := auth.ValidateProfileField("displayname", *req.Displayname); err != nil {
			return err
		}
	}
	if req.AvatarURL != nil {
		if err := auth.ValidateProfileField("avatar_url", *req.AvatarURL); err != nil {
			return err
		}
	}
	return nil
}

// changedFields names the fields a request sets, for the audit log (names
// and flags only: never the password or the profile's text).
func (req *putUserRequest) changedFields() map[string]any {
	var fields []string
	d := map[string]any{}
	for name, set := range map[string]bool{"password": req.Password != nil, "displayname": req.Displayname != nil, "avatar_url": req.AvatarURL != nil} {
		if set {
			fields = append(fields, name)
		}
	}
	for name, v := range map[string]*bool{"admin": req.Admin, "deactivated": req.Deactivated, "locked": req.Locked, "logout_devices": req.LogoutDevices} {
		if v != nil {
			fields = append(fields, name)
			d[name] = *v
		}
	}
	sort.Strings(fields)
	d["fields"] = fields
	return d
}

// PUT /_synapse/admin/v2/users/{userId}: create an account (201) or modify
// one (200); answers the account.
func (s *Service) putUser(c *gin.Context) error {
	user, err := s.userParam(c)
	if err != nil {
		return err
	}
	var req putUserRequest
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if err := s.validate(&req); err != nil {
		return err
	}
	ctx := c.Request.Context()
	info, found, err := s.auth.User(ctx, user)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if !found {
		err = s.createUser(ctx, actor(c), user, &req)
		status = http.StatusCreated
	} else {
		err = s.modifyUser(ctx, actor(c), info, &req, auth.DeviceFrom(c).DeviceID)
	}
	if err != nil {
		return err
	}
	info, _, err = s.auth.User(ctx, user)
	if err != nil {
		return err
	}
	c.JSON(status, s.userJSON(info, true))
	return nil
}

func (s *Service) createUser(ctx context.Context, who Actor, user spec.UserID, req *putUserRequest) error {
	if user.Localpart() != strings.ToLower(user.Localpart()) {
		return spec.NewError(spec.ErrInvalidUsername, "new user IDs must be lower-case")
	}
	if err := s.checkNewName(user.Localpart()); err != nil {
		return err
	}
	password := ""
	if req.Password != nil {
		password = *req.Password
	}
	admin := req.Admin != nil && *req.Admin
	details := req.changedFields()
	actx, finish := s.audit(ctx, who, "create_user", string(user), details, nil)
	_, err := s.auth.CreateUser(actx, user.Localpart(), password, admin)
	if err == nil && req.Displayname != nil && *req.Displayname != "" {
		err = s.auth.SetProfile(actx, user, "displayname", *req.Displayname)
	}
	if err == nil && req.AvatarURL != nil && *req.AvatarURL != "" {
		err = s.auth.SetProfile(actx, user, "avatar_url", *req.AvatarURL)
	}
	if err == nil && req.Locked != nil && *req.Locked {
		err = s.setFlagTx(actx, user, "locked", true)
	}
	if err == nil && req.Deactivated != nil && *req.Deactivated {
		err = s.auth.Deactivate(actx, user, false)
	}
	return finish(err)
}

func (s *Service) modifyUser(ctx context.Context, who Actor, info auth.UserInfo, req *putUserRequest, callerDevice string) error {
	user := info.UserID
	if who.User == user && req.Admin != nil && !*req.Admin {
		return spec.InvalidParam("you may not demote yourself")
	}
	if who.User == user && req.Deactivated != nil && *req.Deactivated {
		return spec.InvalidParam("you may not deactivate yourself here")
	}
	if who.User == user && req.Locked != nil && *req.Locked {
		return spec.InvalidParam("you may not lock yourself")
	}
	if info.Deactivated {
		if req.Deactivated == nil || *req.Deactivated {
			if req.Password != nil || req.Displayname != nil || req.AvatarURL != nil || (req.Admin != nil && *req.Admin) {
				return spec.InvalidParam("the account is deactivated: reactivate it first (deactivated: false, with a password)")
			}
		} else if req.Password == nil || *req.Password == "" {
			return spec.MissingParam("a password is required to reactivate an account")
		}
	}
	actx, finish := s.audit(ctx, who, "modify_user", string(user), req.changedFields(), nil)
	err := func() error {
		if info.Deactivated && req.Deactivated != nil && !*req.Deactivated {
			if err := s.auth.Reactivate(actx, user, *req.Password); err != nil {
				return err
			}
			if err := s.setFlagTx(actx, user, "erased", false); err != nil {
				return err
			}
		} else if req.Password != nil {
			logout := req.LogoutDevices == nil || *req.LogoutDevices
			keep := ""
			if who.User == user {
				keep = callerDevice
			}
			if err := s.auth.SetPassword(actx, user, *req.Password, logout, keep); err != nil {
				return err
			}
		}
		if req.Displayname != nil && !info.Deactivated {
			if err := s.auth.SetProfile(actx, user, "displayname", *req.Displayname); err != nil {
				return err
			}
		}
		if req.AvatarURL != nil && !info.Deactivated {
			if err := s.auth.SetProfile(actx, user, "avatar_url", *req.AvatarURL); err != nil {
				return err
			}
		}
		if req.Admin != nil && *req.Admin != info.IsAdmin {
			if err := s.auth.SetAdmin(actx, user, *req.Admin); err != nil {
				return err
			}
		}
		if req.Locked != nil && *req.Locked != s.flagsOf(user).Locked {
			if err := s.setFlagTx(actx, user, "locked", *req.Locked); err != nil {
				return err
			}
		}
		if req.Deactivated != nil && *req.Deactivated && !info.Deactivated {
			if err := s.auth.Deactivate(actx, user, false); err != nil {
				return err
			}
		}
		return nil
	}()
	return finish(err)
}

// setFlagTx sets an account flag in its own write (which may carry an
// audit row through ctx) and in memory after the commit.
func (s *Service) setFlagTx(ctx context.Context, user spec.UserID, flag string, v bool) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := setFlag(tx, user, flag, v); err != nil {
			return err
		}
		tx.AfterCommit(func() { s.applyFlag(user, flag, v) })
		return nil
	})
}

func (s *Service) applyFlag(user spec.UserID, flag string, v bool) {
	s.updateFlags(user, func(f *userFlags) {
		switch flag {
		case "locked":
			f.Locked = v
		case "suspended":
			f.Suspended = v
		case "erased":
			f.Erased = v
		}
	})
}

// GET /_synapse/admin/v1/users/{userId}/admin
func (s *Service) getAdmin(c *gin.Context) error {
	u, err := s.existingUser(c)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"admin": u.IsAdmin && !u.Deactivated})
	return nil
}

// PUT /_synapse/admin/v1/users/{userId}/admin {"admin": bool}
func (s *Service) putAdmin(c *gin.Context) error {
	u, err := s.existingUser(c)
	if err != nil {
		return err
	}
	var req struct {
		Admin *bool `json:"admin"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.Admin == nil {
		return spec.MissingParam("admin is required")
	}
	if u.UserID == actor(c).User && !*req.Admin {
		return spec.InvalidParam("you may not demote yourself")
	}
	if err := s.SetAdmin(c.Request.Context(), actor(c), u.UserID, *req.Admin); err != nil {
		return err
	}
	answerOK(c)
	return nil
}

// SetAdmin grants or removes server admin rights (API and CLI).
func (s *Service) SetAdmin(ctx context.Context, who Actor, user spec.UserID, admin bool) error {
	actx, finish := s.audit(ctx, who, "set_admin", string(user), map[string]any{"admin": admin}, s.followupIfCLI("sessions", user, nil))
	return finish(s.auth.SetAdmin(actx, user, admin))
}

// POST /_synapse/admin/v1/deactivate/{userId} {"erase": bool}: deactivates
// the account (devices, tokens and account data go; it leaves every room);
// erase also erases it (erase.go), and the answer says what went, per
// table ("erased"). An account deactivated earlier can be erased this way
// too. Chatalot's addition: "dry_run": true, with erase, answers what an
// erasure would remove and changes nothing.
func (s *Service) deactivate(c *gin.Context) error {
	u, err := s.existingUser(c)
	if err != nil {
		return err
	}
	var req struct {
		Erase  bool `json:"erase"`
		DryRun bool `json:"dry_run"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if u.UserID == actor(c).User {
		return spec.InvalidParam("you may not deactivate your own account here; use the client API")
	}
	if req.DryRun && !req.Erase {
		return spec.InvalidParam("dry_run is for an erasure (erase: true)")
	}
	out := gin.H{"id_server_unbind_result": "success"}
	ctx := c.Request.Context()
	switch {
	case req.DryRun:
		e, err := s.Erase(ctx, actor(c), u.UserID, true)
		if err != nil {
			return err
		}
		out["erased"] = e
	case !u.Deactivated:
		report := &erasing{who: actor(c)}
		if req.Erase {
			// What the deactivation itself deletes is counted first.
			if report.before, err = s.erase(ctx, actor(c), u.UserID, true, false, nil); err != nil {
				return err
			}
		}
		if err := s.Deactivate(context.WithValue(ctx, eraseReportKey{}, report), actor(c), u.UserID, req.Erase); err != nil {
			return err
		}
		if req.Erase {
			out["erased"] = report.out
		}
	case req.Erase:
		e, err := s.Erase(ctx, actor(c), u.UserID, false)
		if err != nil {
			return err
		}
		out["erased"] = e
	}
	c.JSON(http.StatusOK, out)
	return nil
}

// Deactivate deactivates an account (API and CLI). In the CLI the rooms and
// keys follow-ups are queued for the server (cli.go).
func (s *Service) Deactivate(ctx context.Context, who Actor, user spec.UserID, erase bool) error {
	devices, err := s.deviceIDs(ctx, user)
	if err != nil {
		return err
	}
	extra := func(tx *storage.Tx) error {
		if erase {
			if err := setFlag(tx, user, "erased", true); err != nil {
				return err
			}
			tx.AfterCommit(func() { s.applyFlag(user, "erased", true) })
		}
		return s.followupIfCLI("deactivated", user, devices)(tx)
	}
	actx, finish := s.audit(ctx, who, "deactivate_user", string(user), map[string]any{"erase": erase}, extra)
	err = s.auth.Deactivate(actx, user, erase)
	s.forgetConnections(user)
	return finish(err)
}

// POST /_synapse/admin/v1/reset_password/{userId} {"new_password",
// "logout_devices"}: sets a new password; by default every device is
// logged out.
func (s *Service) resetPassword(c *gin.Context) error {
	u, err := s.existingUser(c)
	if err != nil {
		return err
	}
	var req struct {
		NewPassword   *string `json:"new_password"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.NewPassword == nil {
		return spec.MissingParam("new_password is required")
	}
	if u.Deactivated {
		return spec.NotFound("user %s is deactivated", u.UserID)
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	keep := ""
	if u.UserID == actor(c).User {
		keep = auth.DeviceFrom(c).DeviceID
	}
	if err := s.ResetPassword(c.Request.Context(), actor(c), u.UserID, *req.NewPassword, logout, keep); err != nil {
		return err
	}
	answerOK(c)
	return nil
}

// ResetPassword sets a user's password (API and CLI).
func (s *Service) ResetPassword(ctx context.Context, who Actor, user spec.UserID, password string, logout bool, keepDevice string) error {
	if err := s.auth.CheckNewPassword(password); err != nil {
		return err
	}
	devices, err := s.deviceIDs(ctx, user)
	if err != nil {
		return err
	}
	actx, finish := s.audit(ctx, who, "reset_password", string(user), map[string]any{"logout_devices": logout}, s.followupIfCLI("sessions", user, devices))
	return finish(s.auth.SetPassword(actx, user, password, logout, keepDevice))
}

// CreateUser creates an account (CLI); the API creates through PUT
// /v2/users/{userId}.
func (s *Service) CreateUser(ctx context.Context, who Actor, localpart, password string, admin bool) (spec.UserID, error) {
	if err := s.checkNewName(localpart); err != nil {
		return "", err
	}
	id := spec.NewUserID(strings.ToLower(localpart), s.server)
	actx, finish := s.audit(ctx, who, "create_user", string(id), map[string]any{"admin": admin, "fields": []string{"password"}}, nil)
	got, err := s.auth.CreateUser(actx, localpart, password, admin)
	return got, finish(err)
}

// checkNewName refuses, for a new account, the names kept for the server
// itself: the server-notices account, which the server creates without a
// password so that nobody can log in as the sender of notices, and the
// names registration refuses (admin, server, support…), which people could
// take for the server's own voice.
func (s *Service) checkNewName(localpart string) error {
	local := strings.ToLower(localpart)
	if local == strings.ToLower(s.cfg.NoticesUser) {
		return spec.NewError(spec.ErrUserInUse, "%q is the server-notices account (server_notices_user): the server creates it, without a password", local)
	}
	if s.auth.Reserved(local) {
		return spec.NewError(spec.ErrUserInUse, "%q is a reserved name (one people could take for the server itself): choose another", local)
	}
	return nil
}

// GET /_synapse/admin/v1/users/{userId}/joined_rooms
func (s *Service) joinedRooms(c *gin.Context) error {
	u, err := s.existingUser(c)
	if err != nil {
		return err
	}
	ids := s.rooms.JoinedRooms(u.UserID)
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	c.JSON(http.StatusOK, gin.H{"joined_rooms": ids, "total": len(ids)})
	return nil
}

// GET /_synapse/admin/v1/users/{userId}/memberships
func (s *Service) memberships(c *gin.Context) error {
	u, err := s.existingUser(c)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"memberships": s.rooms.RoomsOf(u.UserID)})
	return nil
}

// deviceJSON is a device as the admin API shows it: no address or user
// agent unless IP logging is on, and then only what memory holds.
func (s *Service) deviceJSON(user spec.UserID, d auth.DeviceInfo) gin.H {
	out := gin.H{"device_id": d.DeviceID, "user_id": string(user), "dehydrated": false}
	if d.DisplayName != nil {
		out["display_name"] = *d.DisplayName
	}
	if d.LastSeenTS != nil {
		out["last_seen_ts"] = *d.LastSeenTS
	}
	if conn, ok := s.connection(user, d.DeviceID); ok {
		out["last_seen_ip"] = conn.IP
		out["last_seen_user_agent"] = conn.UserAgent
	}
	return out
}

// existingUserDevices is the user of the path, who must exist, and their
// devices.
func (s *Service) existingUserDevices(c *gin.Context) (spec.UserID, []auth.DeviceInfo, error) {
	u, err := s.existingUser(c)
	if err != nil {
		return "", nil, err
	}
	devs, err := s.auth.Devices(c.Request.Context(), u.UserID)
	return u.UserID, devs, err
}

// GET /_synapse/admin/v2/users/{userId}/devices
func (s *Service) listDevices(c *gin.Context) error {
	user, devs, err := s.existingUserDevices(c)
	if err != nil {
		return err
	}
	out := make([]gin.H, len(devs))
	for i, d := range devs {
		out[i] = s.deviceJSON(user, d)
	}
	c.JSON(http.StatusOK, gin.H{"devices": out, "total": len(out)})
	return nil
}

// GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}
func (s *Service) getDevice(c *gin.Context) error {
	user, devs, err := s.existingUserDevices(c)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if d.DeviceID == c.Param("deviceId") {
			c.JSON(http.StatusOK, s.deviceJSON(user, d))
			return nil
		}
	}
	return spec.NotFound("no such device")
}

// DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}: logs the
// device out (its tokens and keys go); an unknown device is not an error.
func (s *Service) deleteDevice(c *gin.Context) error {
	u, err := s.existingUser(c)
	if err != nil {
		return err
	}
	if err := s.deleteDevices(c.Request.Context(), actor(c), u.UserID, []string{c.Param("deviceId")}); err != nil {
		return err
	}
	answerOK(c)
	return nil
}

// POST /_synapse/admin/v2/users/{userId}/delete_devices {"devices": […]}
func (s *Service) deleteDevicesHandler(c *gin.Context) error {
	u, err := s.existingUser(c)
	if err != nil {
		return err
	}
	var req struct {
		Devices *[]string `json:"devices"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.Devices == nil {
		return spec.MissingParam("devices is required")
	}
	if len(*req.Devices) > 1000 {
		return spec.InvalidParam("at most 1000 devices at once")
	}
	if err := s.deleteDevices(c.Request.Context(), actor(c), u.UserID, *req.Devices); err != nil {
		return err
	}
	answerOK(c)
	return nil
}

func (s *Service) deleteDevices(ctx context.Context, who Actor, user spec.UserID, ids []string) error {
	actx, finish := s.audit(ctx, who, "delete_devices", string(user), map[string]any{"devices": ids}, nil)
	return finish(s.auth.DeleteDevices(actx, user, ids...))
}

// GET /_synapse/admin/v1/whois/{userId} and GET
// /_matrix/client/v3/admin/whois/{userId}: the user's sessions. Chatalot
// keeps no IP addresses or user agents; with log_ip_addresses on, the last
// ones each session used since the server started are shown (memory only).
func (s *Service) whois(c *gin.Context) error {
	user, devs, err := s.existingUserDevices(c)
	if err != nil {
		return err
	}
	out := gin.H{}
	for _, d := range devs {
		conn := gin.H{}
		if d.LastSeenTS != nil {
			conn["last_seen"] = *d.LastSeenTS
		}
		if cn, ok := s.connection(user, d.DeviceID); ok {
			conn["ip"] = cn.IP
			conn["user_agent"] = cn.UserAgent
			conn["last_seen"] = cn.LastSeen
		}
		out[d.DeviceID] = gin.H{"sessions": []gin.H{{"connections": []gin.H{conn}}}}
	}
	c.JSON(http.StatusOK, gin.H{"user_id": string(user), "devices": out})
	return nil
}

// GET /_matrix/client/v3/admin/whois/{userId}: as above; the spec also lets
// users look themselves up.
func (s *Service) whoisClient(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	if !dev.IsAdmin && c.Param("userId") != string(dev.UserID) {
		return spec.Forbidden("you are not a server admin")
	}
	s.whois(c)
	return nil
}
