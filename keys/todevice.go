package keys

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/chatalot/chatalot/sync/wake"
	"github.com/gin-gonic/gin"
)

// txnLifetime is how long a sendToDevice transaction ID is remembered.
// Clients retry within seconds or minutes; a day is ample.
const txnLifetime = 24 * time.Hour

// PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}: queue a message
// for devices, idempotently per (sender device, txnId). Device "*" means all
// of the user's devices.
func (s *Service) handleSendToDevice(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	evType, txnID := c.Param("eventType"), c.Param("txnId")
	if err := checkName("event type", evType); err != nil {
		return err
	}
	if err := checkName("transaction ID", txnID); err != nil {
		return err
	}
	m, err := readObjectBody(c, s.cfg.MaxToDeviceBytes)
	if err != nil {
		return err
	}
	users, err := requiredObject(m, "messages")
	if err != nil {
		return err
	}
	msgs := map[spec.UserID]map[string]json.RawMessage{}
	cost := 0 // one per recipient device named, or user for "*"
	for u, devsRaw := range users {
		uid, err := spec.ParseUserID(u)
		if err != nil {
			return spec.InvalidParam("messages: %q is not a user ID", u)
		}
		devs, err := object(devsRaw, "messages."+u)
		if err != nil {
			return err
		}
		for d, content := range devs {
			if d != "*" {
				if err := checkDeviceID(d); err != nil {
					return err
				}
			}
			if len(content) == 0 || content[0] != '{' {
				return spec.BadJSON("messages.%s.%s must be an object", u, d)
			}
			if len(content) > s.cfg.MaxToDeviceMessageBytes {
				return spec.TooLarge("a to-device message is over %d bytes", s.cfg.MaxToDeviceMessageBytes)
			}
		}
		cost += len(devs)
		// Without federation there is no way to reach other servers: their
		// messages are dropped, as for a device that does not exist.
		if s.isLocal(uid) || s.fed != nil {
			msgs[uid] = devs
		}
	}
	if err := s.limiter.AllowUserCost(c, dev, auth.RateToDevice, cost); err != nil {
		return err
	}
	if err := s.SendToDevice(c.Request.Context(), dev.UserID, dev.DeviceID, evType, txnID, msgs); err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// toDeviceMessage is what /sync delivers in to_device.events.
type toDeviceMessage struct {
	Type    string          `json:"type"`
	Sender  spec.UserID     `json:"sender"`
	Content json.RawMessage `json:"content"`
}

var sendCount atomic.Int64

// SendToDevice queues messages (user → device ID or "*" → content) from a
// sender device, once per txnID. All the messages of one request share one
// stream position. Messages for devices that do not exist are dropped; a
// device listed by ID wins over "*" for that device. Messages for users of
// other servers are queued for their servers in the same write.
func (s *Service) SendToDevice(ctx context.Context, sender spec.UserID, senderDevice, evType, txnID string, msgs map[spec.UserID]map[string]json.RawMessage) error {
	recipients := make([]spec.UserID, 0, len(msgs))
	remote := map[spec.UserID]map[string]json.RawMessage{}
	for u, devs := range msgs {
		if !s.isLocal(u) {
			if s.fed != nil {
				remote[u] = devs
			}
			continue
		}
		recipients = append(recipients, u)
	}
	sort.Slice(recipients, func(i, j int) bool { return recipients[i] < recipients[j] })
	now := time.Now()
	prune := sendCount.Add(1)%1000 == 1
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		res, err := tx.Exec(`INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, string(sender), senderDevice, txnID, now.UnixMilli())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // a retried transaction: already queued
		}
		if prune {
			if _, err := tx.Exec(`DELETE FROM to_device_txns WHERE created_ts < $1`, now.Add(-txnLifetime).UnixMilli()); err != nil {
				return err
			}
		}
		if len(remote) > 0 {
			if err := s.queueToDevice(tx, sender, evType, remote); err != nil {
				return err
			}
		}
		var pos int64
		delivered := map[devKey]bool{}
		var woken []wakeDevice
		for _, u := range recipients {
			existing, err := txDevices(tx, u)
			if err != nil {
				return err
			}
			targets := map[string]json.RawMessage{}
			if all, ok := msgs[u]["*"]; ok {
				for _, d := range existing {
					targets[d] = all
				}
			}
			known := map[string]bool{}
			for _, d := range existing {
				known[d] = true
			}
			for d, content := range msgs[u] {
				if d != "*" && known[d] {
					targets[d] = content
				}
			}
			if len(targets) == 0 {
				continue
			}
			if pos == 0 {
				pos = tx.NextPosition()
			}
			for d, content := range targets {
				msg, err := encode(toDeviceMessage{Type: evType, Sender: sender, Content: content})
				if err != nil {
					return spec.BadJSON("invalid message content")
				}
				if _, err := tx.Exec(`INSERT INTO to_device_messages (user_id, device_id, position, message) VALUES ($1, $2, $3, $4)`,
					string(u), d, pos, string(msg)); err != nil {
					return err
				}
				delivered[devKey{u, d}] = true
			}
			w := wakeDevice{user: u}
			if len(targets) == 1 {
				for d := range targets {
					w.device = d // a message for one device wakes its connections only
				}
			}
			woken = append(woken, w)
		}
		if pos == 0 {
			return nil
		}
		tx.AfterCommit(func() {
			s.mu.Lock()
			for k := range delivered {
				s.stateLocked(k).pending = pos
			}
			s.mu.Unlock()
			if s.notify != nil {
				for _, w := range woken {
					s.notify.Notify(pos, wake.Change{Kind: wake.ToDevice, Device: w.device}, w.user)
				}
			}
		})
		return nil
	})
}

// txDevices lists a user's devices inside a write.
func txDevices(tx *storage.Tx, u spec.UserID) ([]string, error) {
	rows, err := tx.Query(`SELECT device_id FROM key_devices WHERE user_id = $1 ORDER BY device_id`, string(u))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ToDevicePosition is the highest stream position of a message still queued
// for the device, or 0. It reads memory only: a sync whose since is at or
// above it has no to-device messages to read.
func (s *Service) ToDevicePosition(user spec.UserID, deviceID string) int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if st := s.devs[devKey{user, deviceID}]; st != nil {
		return st.pending
	}
	return 0
}

// ToDevice returns, in order, the messages ({type, sender, content}) queued
// for a device with a position in (since, until], at most limit of them
// when limit > 0 (limit <= 0: all). last is the position the device has
// been served up to: the position of the last message returned when the
// limit cut the list short, else until. Messages are deleted only when
// acknowledged (AckToDevice), so a response lost on the way is delivered
// again.
//
// A caller that passes a limit must not acknowledge past last: messages in
// (last, until] were not delivered, and acknowledging them would delete
// them unread.
func (s *Service) ToDevice(ctx context.Context, user spec.UserID, deviceID string, since, until int64, limit int) ([]json.RawMessage, int64, error) {
	if s.ToDevicePosition(user, deviceID) <= since || until <= since {
		return nil, until, nil
	}
	q := `SELECT position, message FROM to_device_messages
		WHERE user_id = $1 AND device_id = $2 AND position > $3 AND position <= $4
		ORDER BY position`
	args := []any{string(user), deviceID, since, until}
	if limit > 0 {
		q += ` LIMIT $5`
		args = append(args, limit)
	}
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var msgs []json.RawMessage
	var pos int64
	for rows.Next() {
		var m string
		if err := rows.Scan(&pos, &m); err != nil {
			return nil, 0, err
		}
		msgs = append(msgs, json.RawMessage(m))
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	if limit > 0 && len(msgs) == limit {
		return msgs, pos, nil
	}
	return msgs, until, nil
}

// AckToDevice deletes a device's messages at or below upTo: the client's
// sync with since ≥ upTo proves it stored them. It costs nothing when there
// is nothing to delete.
func (s *Service) AckToDevice(ctx context.Context, user spec.UserID, deviceID string, upTo int64) error {
	k := devKey{user, deviceID}
	s.mu.RLock()
	st := s.devs[k]
	skip := st == nil || st.pending == 0 || upTo <= st.acked
	s.mu.RUnlock()
	if skip {
		return nil
	}
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(`DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND position <= $3`,
			string(user), deviceID, upTo); err != nil {
			return err
		}
		tx.AfterCommit(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			st := s.devs[k]
			if st == nil {
				return
			}
			if upTo > st.acked {
				st.acked = upTo
			}
			if st.pending <= upTo {
				st.pending = 0
			}
		})
		return nil
	})
}

// wakeDevice is whom a to-device send wakes: a recipient, and the one
// device its messages are for ("" when they are for several).
type wakeDevice struct {
	user   spec.UserID
	device string
}
