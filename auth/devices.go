package auth

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// deviceJSON is a device as the device management API shows it. Every
// field is always present, null when unknown, as clients expect: in
// particular last_seen_ip is always null, since Chatalot keeps no IP
// history.
type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name"`
	LastSeenIP  *string `json:"last_seen_ip"`
	LastSeenTS  *int64  `json:"last_seen_ts"`
}

func (s *Service) devicesJSON(ctx context.Context, user spec.UserID, deviceID string) ([]deviceJSON, error) {
	rows, err := s.listDevices(ctx, user, deviceID)
	if err != nil {
		return nil, err
	}
	seen := s.tokens.lastSeen(user)
	out := make([]deviceJSON, 0, len(rows))
	for _, r := range rows {
		d := deviceJSON{DeviceID: r.DeviceID}
		if r.DisplayName.Valid {
			name := r.DisplayName.String
			d.DisplayName = &name
		}
		ts := r.LastSeenTS.Int64
		if m := seen[r.DeviceID]; m > ts {
			ts = m
		}
		if ts > 0 {
			d.LastSeenTS = &ts
		}
		out = append(out, d)
	}
	return out, nil
}

// GET /_matrix/client/v3/devices: the caller's devices.
func (s *Service) getDevices(c *gin.Context) error {
	devs, err := s.devicesJSON(c.Request.Context(), DeviceFrom(c).UserID, "")
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"devices": devs})
	return nil
}

// GET /_matrix/client/v3/devices/{deviceId}: one of the caller's devices.
func (s *Service) getDevice(c *gin.Context) error {
	id := c.Param("deviceId")
	devs, err := s.devicesJSON(c.Request.Context(), DeviceFrom(c).UserID, id)
	if err != nil {
		return err
	}
	if len(devs) == 0 || id == "" {
		return spec.NotFound("no such device")
	}
	c.JSON(http.StatusOK, devs[0])
	return nil
}

// PUT /_matrix/client/v3/devices/{deviceId}: renames one of the caller's
// devices. Creating devices this way is for application services only.
func (s *Service) putDevice(c *gin.Context) error {
	dev := DeviceFrom(c)
	id := c.Param("deviceId")
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.DisplayName != nil {
		if err := checkDeviceFields("", *req.DisplayName); err != nil {
			return err
		}
	}
	err := s.db.Write(c.Request.Context(), func(tx *storage.Tx) error {
		var res interface{ RowsAffected() (int64, error) }
		var err error
		if req.DisplayName != nil {
			res, err = tx.Exec(`UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3`, nullString(*req.DisplayName), string(dev.UserID), id)
		} else {
			res, err = tx.Exec(`UPDATE devices SET device_id = device_id WHERE user_id = $1 AND device_id = $2`, string(dev.UserID), id)
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return spec.NotFound("no such device")
		}
		return nil
	})
	if err != nil {
		return err
	}
	if req.DisplayName != nil && s.devices != nil {
		if err := s.devices.DeviceUpdated(context.WithoutCancel(c.Request.Context()), dev.UserID, id, *req.DisplayName); err != nil {
			s.log.Error().Err(err).Msg("device-updated hook failed")
		}
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// DELETE /_matrix/client/v3/devices/{deviceId}: deletes a device and
// revokes its tokens, after re-entering the password (UIA).
func (s *Service) deleteDevice(c *gin.Context) error {
	dev := DeviceFrom(c)
	finish, err := s.reauthenticateBody(c, dev)
	if err != nil {
		return err
	}
	if err := s.DeleteDevices(c.Request.Context(), dev.UserID, c.Param("deviceId")); err != nil {
		return err
	}
	finish()
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// POST /_matrix/client/v3/delete_devices: deletes several devices (UIA).
func (s *Service) deleteDevices(c *gin.Context) error {
	dev := DeviceFrom(c)
	body, err := api.ReadBody(c, 0)
	if err != nil {
		return err
	}
	var req struct {
		Devices *[]string `json:"devices"`
	}
	if err := api.DecodeJSON(body, &req); err != nil {
		return err
	}
	if req.Devices == nil {
		return spec.MissingParam("devices is required")
	}
	if len(*req.Devices) > 1000 {
		return spec.InvalidParam("at most 1000 devices at once")
	}
	finish, err := s.Reauthenticate(c, dev, body)
	if err != nil {
		return err
	}
	if err := s.DeleteDevices(c.Request.Context(), dev.UserID, *req.Devices...); err != nil {
		return err
	}
	finish()
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// DeleteDevices deletes devices of a user and revokes their tokens in one
// transaction; devices that do not exist are skipped. Then keys is told, so
// the devices' E2EE keys go too.
func (s *Service) DeleteDevices(ctx context.Context, user spec.UserID, deviceIDs ...string) error {
	return s.removeDevices(ctx, user, false, deviceIDs...)
}

// removeDevices is DeleteDevices; with everywhere (log out everywhere) the
// account's other grants are revoked in the same transaction.
func (s *Service) removeDevices(ctx context.Context, user spec.UserID, everywhere bool, deviceIDs ...string) error {
	var deleted []string
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		deleted = deleted[:0]
		if everywhere {
			if err := s.revokeGrants(tx, user); err != nil {
				return err
			}
		}
		for _, id := range deviceIDs {
			ok, err := deleteDevice(tx, user, id)
			if err != nil {
				return err
			}
			if ok {
				deleted = append(deleted, id)
				if err := s.deleteDeviceAccountData(tx, user, id); err != nil {
					return err
				}
			}
		}
		return s.forgetTokensOnCommit(tx, user, deleted)
	})
	if err != nil {
		return err
	}
	return s.devicesDeleted(ctx, user, deleted)
}

// forgetTokensOnCommit drops the cached tokens of the deleted devices once
// tx commits, here and on the other nodes of a cluster, so that none of
// them is accepted again.
func (s *Service) forgetTokensOnCommit(tx *storage.Tx, user spec.UserID, deleted []string) error {
	if len(deleted) == 0 {
		return nil
	}
	tx.AfterCommit(func() {
		for _, id := range deleted {
			s.tokens.removeDevice(user, id)
		}
	})
	return s.changed(tx, changeTokens, user)
}

func (s *Service) devicesDeleted(ctx context.Context, user spec.UserID, ids []string) error {
	if s.devices == nil {
		return nil
	}
	var errs []error
	for _, id := range ids {
		if err := s.devices.DeviceDeleted(context.WithoutCancel(ctx), user, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CreateDehydratedDevice creates a device with no access token, for a
// dehydrated device (MSC3814) that keys manages; it fails if the user
// already has a device with that ID. keys records the device itself, so no
// hook is called.
func (s *Service) CreateDehydratedDevice(ctx context.Context, user spec.UserID, deviceID, displayName string) error {
	if deviceID == "" {
		return spec.InvalidParam("device_id is required")
	}
	if err := checkDeviceFields(deviceID, displayName); err != nil {
		return err
	}
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		u, found, err := loadUser(tx, user)
		if err != nil {
			return err
		}
		if !found || u.Deactivated {
			return spec.NotFound("no such user")
		}
		existed, err := insertDevice(tx, user, deviceID, displayName, time.Now().UnixMilli())
		if err != nil {
			return err
		}
		if existed {
			return spec.InvalidParam("device ID %q is already in use", deviceID)
		}
		return nil
	})
}

// DeviceEvents is a list of device hooks that is itself a DeviceHooks. It
// is built before auth and before its members, so that auth is given its
// hooks at construction while the members that use auth (keys re-checks
// passwords through it; push keeps m.push_rules in its account data) join
// the list while they are being built, after auth. Members join before
// serving.
type DeviceEvents struct {
	mu    sync.RWMutex
	hooks []DeviceHooks
}

// Join adds a hook that hears of every later device change.
func (e *DeviceEvents) Join(h DeviceHooks) {
	e.mu.Lock()
	e.hooks = append(e.hooks, h)
	e.mu.Unlock()
}

func (e *DeviceEvents) each(f func(DeviceHooks) error) error {
	e.mu.RLock()
	hooks := e.hooks
	e.mu.RUnlock()
	var errs []error
	for _, h := range hooks {
		errs = append(errs, f(h))
	}
	return errors.Join(errs...)
}

// DeviceAdded tells every member.
func (e *DeviceEvents) DeviceAdded(ctx context.Context, user spec.UserID, deviceID, displayName string) error {
	return e.each(func(h DeviceHooks) error { return h.DeviceAdded(ctx, user, deviceID, displayName) })
}

// DeviceUpdated tells every member.
func (e *DeviceEvents) DeviceUpdated(ctx context.Context, user spec.UserID, deviceID, displayName string) error {
	return e.each(func(h DeviceHooks) error { return h.DeviceUpdated(ctx, user, deviceID, displayName) })
}

// DeviceDeleted tells every member, each whatever the others answered.
func (e *DeviceEvents) DeviceDeleted(ctx context.Context, user spec.UserID, deviceID string) error {
	return e.each(func(h DeviceHooks) error { return h.DeviceDeleted(ctx, user, deviceID) })
}

func (s *Service) deviceIDs(ctx context.Context, user spec.UserID) ([]string, error) {
	rows, err := s.listDevices(ctx, user, "")
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.DeviceID
	}
	return ids, nil
}
