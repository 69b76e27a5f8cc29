package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// maxKeyObjectBytes bounds one one-time or fallback key object.
const maxKeyObjectBytes = 4 << 10

// deviceKeysIn is a validated device-keys object.
type deviceKeysIn struct {
	ed25519, curve25519 string
	json                []byte // canonical, with the self-signature
}

// keyIn is a validated one-time or fallback key.
type keyIn struct {
	alg, id string
	json    []byte // canonical JSON value (an object, or a string for unsigned keys)
}

// uploadIn is a validated /keys/upload (or dehydrated device) request.
type uploadIn struct {
	device    *deviceKeysIn
	oneTime   []keyIn
	fallbacks []keyIn
	signing   string // the ed25519 key signed keys were verified with
}

// POST /_matrix/client/v3/keys/upload: publish the caller's device keys
// (self-signed, naming the caller), one-time keys and fallback keys.
func (s *Service) handleUpload(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	m, err := readObjectBody(c, s.cfg.MaxKeyUploadBytes)
	if err != nil {
		return err
	}
	in, err := s.parseUpload(c.Request.Context(), m, dev.UserID, dev.DeviceID)
	if err != nil {
		return err
	}
	counts, err := s.Upload(c.Request.Context(), dev.UserID, dev.DeviceID, in)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"one_time_key_counts": counts})
	return nil
}

// parseUpload validates the device_keys, one_time_keys and fallback_keys
// members of an upload for device deviceID of user. Signed one-time and
// fallback keys are verified against the device's ed25519 key (from this
// upload or stored).
func (s *Service) parseUpload(ctx context.Context, m map[string]json.RawMessage, user spec.UserID, deviceID string) (*uploadIn, error) {
	in := &uploadIn{}
	if raw, ok := m["device_keys"]; ok && !isNull(raw) {
		dk, err := parseDeviceKeys(raw, user, deviceID)
		if err != nil {
			return nil, err
		}
		in.device = dk
	}
	signing := ""
	if in.device != nil {
		signing = in.device.ed25519
	} else {
		stored, err := s.storedDeviceKey(ctx, user, deviceID)
		if err != nil {
			return nil, err
		}
		signing = stored
	}
	var err error
	if raw, ok := m["one_time_keys"]; ok && !isNull(raw) {
		if in.oneTime, err = parseKeys(raw, "one_time_keys", user, deviceID, signing); err != nil {
			return nil, err
		}
	}
	if raw, ok := m["fallback_keys"]; ok && !isNull(raw) {
		if in.fallbacks, err = parseKeys(raw, "fallback_keys", user, deviceID, signing); err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, k := range in.fallbacks {
			if seen[k.alg] {
				return nil, spec.InvalidParam("fallback_keys holds more than one %s key", k.alg)
			}
			seen[k.alg] = true
		}
	}
	if len(in.oneTime) > s.cfg.MaxOneTimeKeys {
		return nil, spec.TooLarge("at most %d one-time keys may be uploaded at once", s.cfg.MaxOneTimeKeys)
	}
	in.signing = signing
	return in, nil
}

// storedDeviceKey returns the stored ed25519 key of a device, or "".
func (s *Service) storedDeviceKey(ctx context.Context, user spec.UserID, deviceID string) (string, error) {
	var ed string
	err := s.db.QueryRow(ctx, `SELECT ed25519 FROM device_keys WHERE user_id = $1 AND device_id = $2`,
		string(user), deviceID).Scan(&ed)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return ed, err
}

// parseDeviceKeys validates a device-keys object: it must name user and
// deviceID, hold the device's ed25519 and curve25519 keys under key IDs of
// that device, and carry a valid signature by that ed25519 key.
func parseDeviceKeys(raw json.RawMessage, user spec.UserID, deviceID string) (*deviceKeysIn, error) {
	m, err := object(raw, "device_keys")
	if err != nil {
		return nil, err
	}
	// A DeviceKeys object without one of its required keys is malformed
	// JSON (M_BAD_JSON: "missing required keys"), not a missing request
	// parameter. (Missing signatures are M_INVALID_SIGNATURE, below.)
	for _, k := range []string{"user_id", "device_id", "algorithms", "keys"} {
		if _, ok := m[k]; !ok {
			return nil, spec.BadJSON("device_keys.%s is required", k)
		}
	}
	u, err := requiredStr(m, "user_id", "device_keys")
	if err != nil {
		return nil, err
	}
	d, err := requiredStr(m, "device_id", "device_keys")
	if err != nil {
		return nil, err
	}
	if u != string(user) {
		return nil, spec.InvalidParam("device_keys.user_id must be the authenticated user %s", user)
	}
	if d != deviceID {
		return nil, spec.InvalidParam("device_keys.device_id must be the authenticated device %s", deviceID)
	}
	algRaw, ok := m["algorithms"]
	if !ok {
		return nil, spec.MissingParam("device_keys.algorithms is required")
	}
	if _, err := strList(algRaw, "device_keys.algorithms"); err != nil {
		return nil, err
	}
	keysRaw, ok := m["keys"]
	if !ok {
		return nil, spec.MissingParam("device_keys.keys is required")
	}
	keys, err := strMap(keysRaw, "device_keys.keys")
	if err != nil {
		return nil, err
	}
	for id := range keys {
		alg, dev, ok := strings.Cut(id, ":")
		if !ok || alg == "" || dev != deviceID {
			return nil, spec.InvalidParam("device_keys.keys: key ID %q must be <algorithm>:%s", id, deviceID)
		}
	}
	ed := keys["ed25519:"+deviceID]
	curve := keys["curve25519:"+deviceID]
	if !canonicalKey(ed) {
		return nil, spec.InvalidParam("device_keys.keys must hold the device's ed25519 key as unpadded base64")
	}
	if !canonicalKey(curve) {
		return nil, spec.InvalidParam("device_keys.keys must hold the device's curve25519 key as unpadded base64")
	}
	if _, err := signaturesOf(m, "device_keys"); err != nil {
		return nil, err
	}
	if err := verify(raw, user, "ed25519:"+deviceID, ed); err != nil {
		return nil, spec.NewError(spec.ErrInvalidSignature, "device_keys must be signed by the device's own ed25519 key")
	}
	return &deviceKeysIn{ed25519: ed, curve25519: curve, json: raw}, nil
}

// parseKeys validates a map of one-time or fallback keys. Keys of a
// "signed_" algorithm must be objects signed by the device's ed25519 key.
func parseKeys(raw json.RawMessage, what string, user spec.UserID, deviceID, signing string) ([]keyIn, error) {
	m, err := object(raw, what)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]keyIn, 0, len(m))
	for _, id := range ids {
		v := m[id]
		alg, kid, ok := strings.Cut(id, ":")
		if !ok || checkName("algorithm", alg) != nil || checkName("key ID", kid) != nil {
			return nil, spec.InvalidParam("%s: key ID %q must be <algorithm>:<key ID>", what, id)
		}
		if len(v) > maxKeyObjectBytes {
			return nil, spec.TooLarge("%s: key %s is over %d bytes", what, id, maxKeyObjectBytes)
		}
		switch {
		case len(v) > 0 && v[0] == '"':
			if strings.HasPrefix(alg, "signed_") {
				return nil, spec.InvalidParam("%s: key %s must be a signed key object", what, id)
			}
			var k string
			_ = json.Unmarshal(v, &k)
			if alg == "curve25519" && !canonicalKey(k) {
				return nil, spec.InvalidParam("%s: key %s is not an unpadded base64 curve25519 key", what, id)
			}
		case len(v) > 0 && v[0] == '{':
			km, err := object(v, what+"."+id)
			if err != nil {
				return nil, err
			}
			k, err := requiredStr(km, "key", what+"."+id)
			if err != nil {
				return nil, err
			}
			if strings.HasSuffix(alg, "curve25519") && !canonicalKey(k) {
				return nil, spec.InvalidParam("%s: key %s is not an unpadded base64 curve25519 key", what, id)
			}
			if strings.HasPrefix(alg, "signed_") {
				if signing == "" {
					return nil, spec.InvalidParam("%s: upload the device keys before (or with) signed keys", what)
				}
				if _, err := signaturesOf(km, what+"."+id); err != nil {
					return nil, err
				}
				if err := verify(v, user, "ed25519:"+deviceID, signing); err != nil {
					return nil, spec.NewError(spec.ErrInvalidSignature, "%s: key %s is not signed by the device's ed25519 key", what, id)
				}
			}
		default:
			return nil, spec.BadJSON("%s: key %s must be a string or an object", what, id)
		}
		out = append(out, keyIn{alg: alg, id: kid, json: v})
	}
	return out, nil
}

// Upload stores a validated upload for a device and returns the device's
// one-time key counts. Everything is written in one transaction: a refused
// part (changed identity keys, a reused one-time key ID, too many keys)
// leaves nothing stored.
func (s *Service) Upload(ctx context.Context, user spec.UserID, deviceID string, in *uploadIn) (map[string]int, error) {
	var watchers []spec.UserID
	if in.device != nil {
		watchers = s.watchers(user)
	}
	k := devKey{user, deviceID}
	var counts map[string]int
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		counts, err = s.storeUpload(tx, k, in, watchers)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := map[string]int{"signed_curve25519": 0}
	for alg, n := range counts {
		out[alg] = n
	}
	return out, nil
}

// storeUpload writes an upload inside a transaction.
func (s *Service) storeUpload(tx *storage.Tx, k devKey, in *uploadIn, watchers []spec.UserID) (map[string]int, error) {
	user, deviceID := string(k.user), k.device
	if err := ensureDevice(tx, k.user, deviceID); err != nil {
		return nil, err
	}
	var storedEd, storedCurve, storedJSON string
	err := tx.QueryRow(`SELECT ed25519, curve25519, key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`,
		user, deviceID).Scan(&storedEd, &storedCurve, &storedJSON)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	hasStored := err == nil
	if in.device != nil {
		switch {
		case !hasStored:
			if _, err := tx.Exec(`INSERT INTO device_keys (user_id, device_id, ed25519, curve25519, key_json)
				VALUES ($1, $2, $3, $4, $5)`, user, deviceID, in.device.ed25519, in.device.curve25519, string(in.device.json)); err != nil {
				return nil, err
			}
			if err := s.announceDevices(tx, watchers, k.user, deviceID); err != nil {
				return nil, err
			}
			if err := s.markChanged(tx, watchers, k.user); err != nil {
				return nil, err
			}
		case storedEd != in.device.ed25519 || storedCurve != in.device.curve25519:
			// Other users' clients pin a device's identity keys; a change
			// would look like an attack. A new identity is a new device.
			return nil, spec.InvalidParam("the identity keys of device %s cannot change; log in as a new device", deviceID)
		case storedJSON != string(in.device.json):
			if _, err := tx.Exec(`UPDATE device_keys SET key_json = $1 WHERE user_id = $2 AND device_id = $3`,
				string(in.device.json), user, deviceID); err != nil {
				return nil, err
			}
			if err := s.announceDevices(tx, watchers, k.user, deviceID); err != nil {
				return nil, err
			}
			if err := s.markChanged(tx, watchers, k.user); err != nil {
				return nil, err
			}
		}
		storedEd = in.device.ed25519
	}
	// parseUpload verified signed keys against the key it read then; the
	// identity key cannot change, but check that it is still that one.
	for _, key := range append(append([]keyIn{}, in.oneTime...), in.fallbacks...) {
		if strings.HasPrefix(key.alg, "signed_") && (storedEd == "" || storedEd != in.signing) {
			return nil, spec.InvalidParam("upload the device keys before (or with) signed keys")
		}
	}
	if len(in.oneTime) > 0 {
		if err := s.storeOneTimeKeys(tx, k, in.oneTime); err != nil {
			return nil, err
		}
	}
	for _, f := range in.fallbacks {
		// Re-uploading the same fallback key keeps its "used" flag; a new
		// key replaces the old one and is unused.
		if _, err := tx.Exec(`INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
			VALUES ($1, $2, $3, $4, $5, FALSE)
			ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
				key_id = excluded.key_id, key_json = excluded.key_json,
				used = fallback_keys.used AND fallback_keys.key_id = excluded.key_id AND fallback_keys.key_json = excluded.key_json`,
			user, deviceID, f.alg, f.id, string(f.json)); err != nil {
			return nil, err
		}
	}
	counts, unused, err := readCounts(tx, k)
	if err != nil {
		return nil, err
	}
	tx.AfterCommit(func() { s.setCounts(k, counts, unused) })
	if len(in.oneTime) > 0 || len(in.fallbacks) > 0 {
		if err := s.countsChanged(tx, k); err != nil {
			return nil, err
		}
	}
	return counts, nil
}

func (s *Service) storeOneTimeKeys(tx *storage.Tx, k devKey, keys []keyIn) error {
	user, deviceID := string(k.user), k.device
	var seq int64
	if err := tx.QueryRow(`SELECT COALESCE(MAX(seq), 0) FROM one_time_keys WHERE user_id = $1 AND device_id = $2`,
		user, deviceID).Scan(&seq); err != nil {
		return err
	}
	seq++ // all keys of one upload are equivalent: they share a seq
	added := map[string]int{}
	for _, key := range keys {
		var old string
		err := tx.QueryRow(`SELECT key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
			user, deviceID, key.alg, key.id).Scan(&old)
		switch {
		case err == nil && old == string(key.json):
			continue // a retried upload
		case err == nil:
			return spec.InvalidParam("one-time key %s:%s already exists with another value", key.alg, key.id)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if _, err := tx.Exec(`INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, seq, key_json)
			VALUES ($1, $2, $3, $4, $5, $6)`, user, deviceID, key.alg, key.id, seq, string(key.json)); err != nil {
			return err
		}
		added[key.alg]++
	}
	for alg := range added {
		var n int
		if err := tx.QueryRow(`SELECT COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`,
			user, deviceID, alg).Scan(&n); err != nil {
			return err
		}
		if n > s.cfg.MaxOneTimeKeys {
			return spec.TooLarge("a device may hold at most %d unclaimed %s keys", s.cfg.MaxOneTimeKeys, alg)
		}
	}
	return nil
}
