package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/chatalot/chatalot/keys"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// EDUs: the ephemeral half of a transaction. Inbound, each EDU is handed to
// the handler of its edu_type (eduHandlers); one that is malformed, or that
// speaks for a user of another server than the origin, is logged and
// dropped: an EDU has no answer, and one bad EDU must not cost the
// transaction's PDUs or the other EDUs. Outbound, the reliable EDUs (those
// E2EE needs: a lost to-device message is a message no one can decrypt)
// are rows of federation_outbound_edus, queued in the transaction of the
// change they announce and sent with the destination's PDUs, with the same
// backoff.

// Keys is what federation needs of the E2EE directory (keys.Service).
type Keys interface {
	// ReceiveToDevice delivers a remote user's to-device messages to this
	// server's devices, once per message ID.
	ReceiveToDevice(ctx context.Context, sender spec.UserID, evType, messageID string, messages map[spec.UserID]map[string]json.RawMessage) error
	// ReceiveDeviceListUpdate and ReceiveSigningKeyUpdate apply a remote
	// user's device-list or cross-signing change to the cached copy.
	ReceiveDeviceListUpdate(ctx context.Context, u keys.DeviceListUpdate) error
	ReceiveSigningKeyUpdate(ctx context.Context, u keys.SigningKeyUpdate) error
	// QueryForServer, ClaimForServer and UserDevices answer another
	// server about this server's users.
	QueryForServer(ctx context.Context, users map[spec.UserID][]string) (*keys.QueryResult, error)
	ClaimForServer(ctx context.Context, claims []keys.Claim) (map[spec.UserID]map[string]map[string]json.RawMessage, error)
	UserDevices(ctx context.Context, user spec.UserID) (*keys.UserDevices, error)
}

// eduHandler handles one inbound EDU's content from origin.
type eduHandler func(s *Service, ctx context.Context, origin spec.ServerName, content json.RawMessage) error

// eduHandlers are the EDU types this server understands, by edu_type;
// others are ignored, as the spec asks.
var eduHandlers = map[string]eduHandler{
	"m.direct_to_device":   (*Service).directToDevice,
	"m.device_list_update": (*Service).deviceListUpdate,
	"m.signing_key_update": (*Service).signingKeyUpdate,
	"m.typing":             (*Service).typingEDU,
	"m.receipt":            (*Service).receiptEDU,
	"m.presence":           (*Service).presenceEDU,
}

// errBadEDU marks an EDU refused for its content (logged at info, not as
// a failure of this server).
var errBadEDU = errors.New("bad EDU")

func badEDU(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadEDU, fmt.Sprintf(format, args...))
}

// receiveEDUs runs each EDU of a transaction through its handler.
func (s *Service) receiveEDUs(ctx context.Context, origin spec.ServerName, edus []json.RawMessage) {
	for _, raw := range edus {
		var edu struct {
			Type    string          `json:"edu_type"`
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &edu); err != nil || len(edu.Content) == 0 || edu.Content[0] != '{' {
			s.log.Info().Str("origin", string(origin)).Msg("federation: dropped a malformed EDU")
			continue
		}
		h := eduHandlers[edu.Type]
		if h == nil {
			continue
		}
		if err := h(s, ctx, origin, edu.Content); err != nil {
			ev := s.log.Warn()
			if errors.Is(err, errBadEDU) {
				ev = s.log.Info()
			}
			ev.Str("origin", string(origin)).Str("edu_type", edu.Type).Err(err).Msg("federation: dropped an EDU")
		}
	}
}

// fromOrigin checks that a user an EDU speaks for is the origin's.
func fromOrigin(origin spec.ServerName, user string) (spec.UserID, error) {
	u, err := spec.ParseUserID(user)
	if err != nil {
		return "", badEDU("user ID %q: %v", user, err)
	}
	if u.Server() != origin {
		return "", badEDU("%s speaks for %s, a user of another server", origin, u)
	}
	return u, nil
}

// m.direct_to_device: to-device messages of a remote user for this
// server's users.
func (s *Service) directToDevice(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return badEDU("m.direct_to_device: %v", err)
	}
	sender, err := fromOrigin(origin, c.Sender)
	if err != nil {
		return err
	}
	if c.Type == "" || len(c.Type) > 255 || c.MessageID == "" || len(c.MessageID) > 255 {
		return badEDU("m.direct_to_device: type and message_id are required")
	}
	msgs := map[spec.UserID]map[string]json.RawMessage{}
	for u, devs := range c.Messages {
		uid, err := spec.ParseUserID(u)
		if err != nil || uid.Server() != s.name {
			continue // not a user of this server: not ours to deliver
		}
		for d, m := range devs {
			if len(m) == 0 || m[0] != '{' {
				return badEDU("m.direct_to_device: the message for %s %s is not an object", u, d)
			}
		}
		msgs[uid] = devs
	}
	if len(msgs) == 0 {
		return nil
	}
	return s.e2ee.ReceiveToDevice(ctx, sender, c.Type, c.MessageID, msgs)
}

// m.device_list_update: a remote user's device was added, changed or
// deleted.
func (s *Service) deviceListUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var u keys.DeviceListUpdate
	if err := json.Unmarshal(content, &u); err != nil {
		return badEDU("m.device_list_update: %v", err)
	}
	if _, err := fromOrigin(origin, string(u.UserID)); err != nil {
		return err
	}
	if u.DeviceID == "" || len(u.DeviceID) > 255 {
		return badEDU("m.device_list_update: device_id is required")
	}
	return s.e2ee.ReceiveDeviceListUpdate(ctx, u)
}

// m.signing_key_update: a remote user's cross-signing keys changed.
func (s *Service) signingKeyUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var u keys.SigningKeyUpdate
	if err := json.Unmarshal(content, &u); err != nil {
		return badEDU("m.signing_key_update: %v", err)
	}
	if _, err := fromOrigin(origin, string(u.UserID)); err != nil {
		return err
	}
	return s.e2ee.ReceiveSigningKeyUpdate(ctx, u)
}

// QueueEDU queues a reliable EDU for dest inside tx, the transaction of
// the change it announces: it is sent if and only if the change commits,
// and survives a restart until dest accepts it. A destination this server
// does not talk to gets nothing.
func (p *Peers) QueueEDU(tx *storage.Tx, dest spec.ServerName, eduType string, content any) error {
	if !p.Allowed(dest) {
		return nil
	}
	b, err := json.Marshal(content)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(`INSERT INTO federation_outbound_edus (destination, id, edu_type, content) VALUES ($1, $2, $3, $4)`,
		string(dest), tx.NextPosition(), eduType, string(b)); err != nil {
		return fmt.Errorf("queue an EDU for federation: %w", err)
	}
	tx.AfterCommit(func() {
		if s := p.service(); s != nil {
			s.queue(dest).poke(false)
		}
	})
	return nil
}

// noKeys is the E2EE directory of a federation built without one.
type noKeys struct{}

func (noKeys) ReceiveToDevice(context.Context, spec.UserID, string, string, map[spec.UserID]map[string]json.RawMessage) error {
	return nil
}
func (noKeys) ReceiveDeviceListUpdate(context.Context, keys.DeviceListUpdate) error { return nil }
func (noKeys) ReceiveSigningKeyUpdate(context.Context, keys.SigningKeyUpdate) error { return nil }
func (noKeys) QueryForServer(context.Context, map[spec.UserID][]string) (*keys.QueryResult, error) {
	return &keys.QueryResult{}, nil
}
func (noKeys) ClaimForServer(context.Context, []keys.Claim) (map[spec.UserID]map[string]map[string]json.RawMessage, error) {
	return nil, nil
}
func (noKeys) UserDevices(_ context.Context, u spec.UserID) (*keys.UserDevices, error) {
	return &keys.UserDevices{UserID: u, Devices: []keys.RemoteDevice{}}, nil
}
