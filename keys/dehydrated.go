package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Dehydrated devices (MSC3814, under org.matrix.msc3814.v1 as current
// Element clients use it): a device whose private keys are stored encrypted
// (with a key from secret storage) in device_data, so that room keys sent
// while none of the user's devices is online still reach the user. The
// server stores device_data opaquely and queues to-device messages for the
// device like for any other.

// dehydratedEventsBatch is how many to-device messages one
// …/dehydrated_device/{deviceId}/events response carries.
const dehydratedEventsBatch = 100

// dehydrated returns the user's dehydrated device ID and data, or "".
func (s *Service) dehydrated(ctx context.Context, user spec.UserID) (id, data string, err error) {
	err = s.db.QueryRow(ctx, `SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1`, string(user)).Scan(&id, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", nil
	}
	return id, data, err
}

// PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device:
// replace the user's dehydrated device with a new one, its device keys and
// its one-time and fallback keys, in one request.
func (s *Service) handlePutDehydrated(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	m, err := readObjectBody(c, s.cfg.MaxKeyUploadBytes)
	if err != nil {
		return err
	}
	id, err := requiredStr(m, "device_id", "the request body")
	if err != nil {
		return err
	}
	if err := checkDeviceID(id); err != nil {
		return err
	}
	data, ok := m["device_data"]
	if !ok || isNull(data) {
		return spec.MissingParam("device_data is required")
	}
	if data[0] != '{' {
		return spec.BadJSON("device_data must be an object")
	}
	name, _, err := str(m, "initial_device_display_name", "the request body")
	if err != nil {
		return err
	}
	if raw, ok := m["device_keys"]; !ok || isNull(raw) {
		return spec.MissingParam("device_keys is required: a dehydrated device must support encryption")
	}
	in, err := s.parseUpload(c.Request.Context(), m, dev.UserID, id)
	if err != nil {
		return err
	}
	if err := s.PutDehydratedDevice(c.Request.Context(), dev.UserID, id, name, data, in); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"device_id": id})
	return nil
}

// PutDehydratedDevice replaces the user's dehydrated device. The old one is
// deleted (with its queued messages); the new one gets a device row through
// Deps.Devices (when wired) and its keys here.
func (s *Service) PutDehydratedDevice(ctx context.Context, user spec.UserID, id, name string, data json.RawMessage, in *uploadIn) error {
	var exists int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM key_devices WHERE user_id = $1 AND device_id = $2`,
		string(user), id).Scan(&exists); err != nil {
		return err
	}
	if exists > 0 {
		return spec.InvalidParam("device ID %s is already in use", id)
	}
	old, _, err := s.dehydrated(ctx, user)
	if err != nil {
		return err
	}
	if old != "" {
		if err := s.deleteDevice(ctx, user, old); err != nil {
			return err
		}
	}
	if s.devices != nil {
		if err := s.devices.CreateDehydratedDevice(ctx, user, id, name); err != nil {
			return err
		}
	}
	watchers := s.watchers(user)
	k := devKey{user, id}
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(`INSERT INTO key_devices (user_id, device_id, display_name) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name`,
			string(user), id, name); err != nil {
			return err
		}
		if _, err := s.storeUpload(tx, k, in, watchers); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES ($1, $2, $3)
			ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data`,
			string(user), id, string(data))
		return err
	})
}

// deleteDevice deletes a device everywhere: through the accounts package
// when wired (which calls DeviceDeleted), else here only.
func (s *Service) deleteDevice(ctx context.Context, user spec.UserID, id string) error {
	if s.devices != nil {
		return s.devices.DeleteDevices(ctx, user, id)
	}
	return s.DeviceDeleted(ctx, user, id)
}

// GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device.
func (s *Service) handleGetDehydrated(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	id, data, err := s.dehydrated(c.Request.Context(), dev.UserID)
	if err != nil {
		return err
	}
	if id == "" {
		return spec.NotFound("no dehydrated device")
	}
	c.JSON(http.StatusOK, gin.H{"device_id": id, "device_data": json.RawMessage(data)})
	return nil
}

// DELETE /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device.
func (s *Service) handleDeleteDehydrated(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	id, _, err := s.dehydrated(c.Request.Context(), dev.UserID)
	if err != nil {
		return err
	}
	if id == "" {
		return spec.NotFound("no dehydrated device")
	}
	if err := s.deleteDevice(c.Request.Context(), dev.UserID, id); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"device_id": id})
	return nil
}

// POST /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events:
// the to-device messages queued for the dehydrated device, in batches.
// Unlike /sync, a batch is not deleted when the next is asked for (MSC3814):
// if rehydration is interrupted another device can start again. They go
// when the dehydrated device is replaced or deleted.
func (s *Service) handleDehydratedEvents(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	id, _, err := s.dehydrated(c.Request.Context(), dev.UserID)
	if err != nil {
		return err
	}
	if id == "" || id != c.Param("deviceId") {
		return spec.Forbidden("that is not your dehydrated device")
	}
	m, err := readObjectBody(c, s.cfg.MaxKeyUploadBytes)
	if err != nil {
		return err
	}
	var since int64
	if tok, ok, err := str(m, "next_batch", "the request body"); err != nil {
		return err
	} else if ok {
		if since, err = strconv.ParseInt(tok, 10, 64); err != nil || since < 0 {
			return spec.InvalidParam("invalid next_batch")
		}
	}
	rows, err := s.db.Query(c.Request.Context(), `SELECT position, message FROM to_device_messages
		WHERE user_id = $1 AND device_id = $2 AND position > $3 ORDER BY position LIMIT $4`,
		string(dev.UserID), id, since, dehydratedEventsBatch)
	if err != nil {
		return err
	}
	defer rows.Close()
	evs := []json.RawMessage{}
	next := since
	for rows.Next() {
		var msg string
		if err := rows.Scan(&next, &msg); err != nil {
			return err
		}
		evs = append(evs, json.RawMessage(msg))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"events": evs, "next_batch": strconv.FormatInt(next, 10)})
	return nil
}
