package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// federationFailure is what "failures" holds for a server Chatalot cannot
// reach: federation is off.
var federationFailure = gin.H{"status": 503, "message": "federation is off on this server"}

// timeoutOf reads a request's optional "timeout" (milliseconds).
func timeoutOf(m map[string]json.RawMessage) (time.Duration, error) {
	raw, ok := m["timeout"]
	if !ok || isNull(raw) {
		return queryTimeout(0), nil
	}
	var ms int64
	if err := json.Unmarshal(raw, &ms); err != nil {
		return 0, spec.BadJSON("timeout must be an integer")
	}
	return queryTimeout(ms), nil
}

// POST /_matrix/client/v3/keys/query: the device keys and cross-signing keys
// (with the signatures the caller may see) of the users asked for.
func (s *Service) handleQuery(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	m, err := readObjectBody(c, s.cfg.MaxKeyUploadBytes)
	if err != nil {
		return err
	}
	req, err := requiredObject(m, "device_keys")
	if err != nil {
		return err
	}
	if len(req) > s.cfg.MaxQueryUsers {
		return spec.TooLarge("at most %d users may be queried at once", s.cfg.MaxQueryUsers)
	}
	users := map[spec.UserID][]string{}
	for u, devsRaw := range req {
		uid, err := spec.ParseUserID(u)
		if err != nil {
			return spec.InvalidParam("device_keys: %q is not a user ID", u)
		}
		var devs []string
		if !isNull(devsRaw) {
			if devs, err = strList(devsRaw, "device_keys."+u); err != nil {
				return err
			}
		}
		users[uid] = devs
	}
	timeout, err := timeoutOf(m)
	if err != nil {
		return err
	}
	res, err := s.QueryWithin(c.Request.Context(), dev.UserID, users, timeout)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, res)
	return nil
}

// QueryResult is the /keys/query response.
type QueryResult struct {
	Failures        map[string]any                             `json:"failures"`
	DeviceKeys      map[spec.UserID]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[spec.UserID]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[spec.UserID]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[spec.UserID]json.RawMessage            `json:"user_signing_keys"`
}

// Query answers /keys/query for requester: for each user, the device keys of
// the devices asked for (all when the list is empty) and the cross-signing
// keys. The requester sees signatures made by the user's own keys and
// devices, their own signatures, and the user-signing key only of
// themself; signatures made by other users' user-signing keys stay hidden
// (they would reveal who verified whom).
func (s *Service) Query(ctx context.Context, requester spec.UserID, users map[spec.UserID][]string) (*QueryResult, error) {
	return s.QueryWithin(ctx, requester, users, remoteTimeout)
}

// QueryWithin is Query waiting at most timeout for other servers: remote
// users' keys come from the cache of their device lists or from their
// servers, and a server that does not answer in time is in "failures".
func (s *Service) QueryWithin(ctx context.Context, requester spec.UserID, users map[spec.UserID][]string, timeout time.Duration) (*QueryResult, error) {
	res := newQueryResult()
	remote := map[spec.ServerName]map[spec.UserID][]string{}
	for u, devs := range users {
		if !s.isLocal(u) {
			if remote[u.Server()] == nil {
				remote[u.Server()] = map[spec.UserID][]string{}
			}
			remote[u.Server()][u] = devs
			continue
		}
		if err := s.queryUser(ctx, requester, u, devs, res); err != nil {
			return nil, err
		}
	}
	if len(remote) > 0 {
		if err := s.queryRemote(ctx, remote, timeout, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func newQueryResult() *QueryResult {
	return &QueryResult{
		Failures:        map[string]any{},
		DeviceKeys:      map[spec.UserID]map[string]json.RawMessage{},
		MasterKeys:      map[spec.UserID]json.RawMessage{},
		SelfSigningKeys: map[spec.UserID]json.RawMessage{},
		UserSigningKeys: map[spec.UserID]json.RawMessage{},
	}
}

// userSignatures are the stored signatures on a user's keys, by target key.
type userSignatures map[string]map[string]map[string]string // target → signer user → signer key ID → signature

func (s *Service) signaturesOn(ctx context.Context, u spec.UserID) (userSignatures, error) {
	rows, err := s.db.Query(ctx, `SELECT target_key, signer_user, signer_key_id, signature FROM key_signatures WHERE target_user = $1`, string(u))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := userSignatures{}
	for rows.Next() {
		var target, signer, keyID, sig string
		if err := rows.Scan(&target, &signer, &keyID, &sig); err != nil {
			return nil, err
		}
		if out[target] == nil {
			out[target] = map[string]map[string]string{}
		}
		if out[target][signer] == nil {
			out[target][signer] = map[string]string{}
		}
		out[target][signer][keyID] = sig
	}
	return out, rows.Err()
}

// visible keeps the signatures on target made by user u themself, and by
// the requester when othersAllowed (a master key signed by the requester's
// user-signing key).
func (us userSignatures) visible(target string, u, requester spec.UserID, othersAllowed bool) map[string]map[string]string {
	out := map[string]map[string]string{}
	for signer, sigs := range us[target] {
		if signer == string(u) || (othersAllowed && signer == string(requester)) {
			out[signer] = sigs
		}
	}
	return out
}

func (s *Service) queryUser(ctx context.Context, requester, u spec.UserID, devs []string, res *QueryResult) error {
	sigs, err := s.signaturesOn(ctx, u)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, d := range devs {
		want[d] = true
	}
	rows, err := s.db.Query(ctx, `SELECT k.device_id, k.key_json, d.display_name FROM device_keys k
		JOIN key_devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
		WHERE k.user_id = $1`, string(u))
	if err != nil {
		return err
	}
	defer rows.Close()
	out := map[string]json.RawMessage{}
	for rows.Next() {
		var d, kj, name string
		if err := rows.Scan(&d, &kj, &name); err != nil {
			return err
		}
		if len(want) > 0 && !want[d] {
			continue
		}
		// Device names are shown only to their owner: to everyone else they
		// are metadata ("Alice's work laptop") with no use for encryption.
		var unsigned map[string]any
		if requester == u && name != "" {
			unsigned = map[string]any{"device_display_name": name}
		}
		obj, err := mergeSignatures([]byte(kj), sigs.visible(d, u, requester, false), unsigned)
		if err != nil {
			return err
		}
		out[d] = obj
	}
	if err := rows.Err(); err != nil {
		return err
	}
	res.DeviceKeys[u] = out

	xs, err := s.crossSigningKeys(ctx, u)
	if err != nil {
		return err
	}
	for usage, k := range xs {
		if usage == usageUser && requester != u {
			continue
		}
		obj, err := mergeSignatures([]byte(k.json), sigs.visible(k.pub, u, requester, usage == usageMaster), nil)
		if err != nil {
			return err
		}
		switch usage {
		case usageMaster:
			res.MasterKeys[u] = obj
		case usageSelf:
			res.SelfSigningKeys[u] = obj
		case usageUser:
			res.UserSigningKeys[u] = obj
		}
	}
	return nil
}

// POST /_matrix/client/v3/keys/claim: claim one one-time key (or the
// fallback key) per device asked for.
func (s *Service) handleClaim(c *gin.Context) error {
	m, err := readObjectBody(c, s.cfg.MaxKeyUploadBytes)
	if err != nil {
		return err
	}
	req, err := requiredObject(m, "one_time_keys")
	if err != nil {
		return err
	}
	var claims []Claim
	for u, devsRaw := range req {
		uid, err := spec.ParseUserID(u)
		if err != nil {
			return spec.InvalidParam("one_time_keys: %q is not a user ID", u)
		}
		devs, err := strMap(devsRaw, "one_time_keys."+u)
		if err != nil {
			return err
		}
		for d, alg := range devs {
			if err := checkDeviceID(d); err != nil {
				return err
			}
			if err := checkName("algorithm", alg); err != nil {
				return err
			}
			claims = append(claims, Claim{User: uid, DeviceID: d, Algorithm: alg})
		}
	}
	if len(claims) > s.cfg.MaxQueryUsers {
		return spec.TooLarge("at most %d keys may be claimed at once", s.cfg.MaxQueryUsers)
	}
	timeout, err := timeoutOf(m)
	if err != nil {
		return err
	}
	keys, failures, err := s.ClaimWithin(c.Request.Context(), claims, timeout)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"one_time_keys": keys, "failures": failures})
	return nil
}

// Claim asks for a key of Algorithm for one device.
type Claim struct {
	User      spec.UserID
	DeviceID  string
	Algorithm string
}

// Claim hands out one key per claim: the oldest one-time key, deleted as it
// is handed out, or when none is left the device's fallback key, marked
// used. All claims run in one write: the single ordered writer guarantees
// that a one-time key is handed out at most once, however many claims race.
// A device with no key of the algorithm is left out of the result.
func (s *Service) Claim(ctx context.Context, claims []Claim) (map[spec.UserID]map[string]map[string]json.RawMessage, map[string]any, error) {
	return s.ClaimWithin(ctx, claims, remoteTimeout)
}

// ClaimWithin is Claim waiting at most timeout for other servers, which
// claim their users' keys; one that does not answer is in "failures".
func (s *Service) ClaimWithin(ctx context.Context, claims []Claim, timeout time.Duration) (map[spec.UserID]map[string]map[string]json.RawMessage, map[string]any, error) {
	failures := map[string]any{}
	var local, remote []Claim
	for _, cl := range claims {
		if !s.isLocal(cl.User) {
			remote = append(remote, cl)
			continue
		}
		local = append(local, cl)
	}
	keys, err := s.claimLocal(ctx, local)
	if err != nil {
		return nil, nil, err
	}
	if len(remote) > 0 {
		s.claimRemote(ctx, remote, timeout, keys, failures)
	}
	return keys, failures, nil
}

// claimLocal claims keys of local devices in one write.
func (s *Service) claimLocal(ctx context.Context, local []Claim) (map[spec.UserID]map[string]map[string]json.RawMessage, error) {
	keys := map[spec.UserID]map[string]map[string]json.RawMessage{}
	sort.Slice(local, func(i, j int) bool {
		if local[i].User != local[j].User {
			return local[i].User < local[j].User
		}
		return local[i].DeviceID < local[j].DeviceID
	})
	err := s.db.Write(ctx, func(tx *storage.Tx) error {
		touched := map[devKey]bool{}
		for _, cl := range local {
			id, kj, err := claimOne(tx, cl)
			if err != nil {
				return err
			}
			if id == "" {
				continue
			}
			touched[devKey{cl.User, cl.DeviceID}] = true
			if keys[cl.User] == nil {
				keys[cl.User] = map[string]map[string]json.RawMessage{}
			}
			keys[cl.User][cl.DeviceID] = map[string]json.RawMessage{cl.Algorithm + ":" + id: json.RawMessage(kj)}
		}
		for k := range touched {
			counts, unused, err := readCounts(tx, k)
			if err != nil {
				return err
			}
			tx.AfterCommit(func() { s.setCounts(k, counts, unused) })
			if err := s.countsChanged(tx, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return keys, nil
}

// claimOne takes one key for a claim inside a write; id is "" when the
// device has none.
func claimOne(tx *storage.Tx, cl Claim) (id, keyJSON string, err error) {
	u := string(cl.User)
	err = tx.QueryRow(`SELECT key_id, key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
		ORDER BY seq, key_id LIMIT 1`, u, cl.DeviceID, cl.Algorithm).Scan(&id, &keyJSON)
	if err == nil {
		_, err = tx.Exec(`DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
			u, cl.DeviceID, cl.Algorithm, id)
		return id, keyJSON, err
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", "", err
	}
	// Fallback keys are handed out again and again until the device
	// replaces them; "used" tells the device (through /sync) to do so.
	err = tx.QueryRow(`UPDATE fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
		RETURNING key_id, key_json`, u, cl.DeviceID, cl.Algorithm).Scan(&id, &keyJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", nil
	}
	return id, keyJSON, err
}
