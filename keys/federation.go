package keys

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// E2EE across servers. Outbound, a local user's to-device messages for a
// remote user, and every change of a local user's devices or cross-signing
// keys, are queued as EDUs for the servers concerned in the transaction
// that stores the change (RemoteKeys.QueueEDU), so that they go if and only
// if the change commits. Inbound, remote users' device lists are kept in
// remote_device_lists once fetched (while they share a room with a local
// user, whose server then sends this one their updates), updated by
// m.device_list_update EDUs that follow on from the cached stream ID, and
// resynced through /user/devices when one is missing.

// RemoteKeys is what keys needs of federation (federation.Peers). Each
// query returns the remote's answer body as it came.
type RemoteKeys interface {
	QueryKeys(ctx context.Context, server spec.ServerName, users map[spec.UserID][]string) ([]byte, error)
	ClaimKeys(ctx context.Context, server spec.ServerName, claims map[spec.UserID]map[string]string) ([]byte, error)
	RemoteUserDevices(ctx context.Context, user spec.UserID) ([]byte, error)
	// QueueEDU queues a reliable EDU for dest inside tx.
	QueueEDU(tx *storage.Tx, dest spec.ServerName, eduType string, content any) error
}

// remoteTimeout bounds a query to another server when the client gives
// no timeout (the spec's default), and remoteMaxTimeout any query.
const (
	remoteTimeout    = 10 * time.Second
	remoteMaxTimeout = 20 * time.Second
)

// DeviceListUpdate is the content of an m.device_list_update EDU.
type DeviceListUpdate struct {
	UserID      spec.UserID     `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id,omitempty"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// SigningKeyUpdate is the content of an m.signing_key_update EDU.
type SigningKeyUpdate struct {
	UserID         spec.UserID     `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// UserDevices is the answer of /user/devices/{userId}.
type UserDevices struct {
	UserID         spec.UserID     `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	Devices        []RemoteDevice  `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// RemoteDevice is one device of a UserDevices answer.
type RemoteDevice struct {
	DeviceID    string          `json:"device_id"`
	Keys        json.RawMessage `json:"keys,omitempty"`
	DisplayName string          `json:"device_display_name,omitempty"`
}

// failure is a "failures" entry for a server that did not answer.
func failure(err error) map[string]any {
	return map[string]any{"status": 503, "message": err.Error()}
}

// queryTimeout is the client's timeout (milliseconds) as a duration.
func queryTimeout(ms int64) time.Duration {
	if ms <= 0 {
		return remoteTimeout
	}
	return min(time.Duration(ms)*time.Millisecond, remoteMaxTimeout)
}

// ---- Outbound ----

// remoteServers are the servers of the users among watchers, other than
// this one's: those to tell of a change.
func (s *Service) remoteServers(watchers []spec.UserID) []spec.ServerName {
	var out []spec.ServerName
	for _, u := range watchers {
		if srv := u.Server(); !s.isLocal(u) && !slices.Contains(out, srv) {
			out = append(out, srv)
		}
	}
	return out
}

// announceDevices queues an m.device_list_update for each of user's
// devices for the remote servers among watchers, inside the write that
// changed them. A device that no longer exists is announced deleted.
func (s *Service) announceDevices(tx *storage.Tx, watchers []spec.UserID, user spec.UserID, deviceIDs ...string) error {
	if s.fed == nil || s.cfg.ServerName == "" || !s.isLocal(user) {
		return nil
	}
	servers := s.remoteServers(watchers)
	if len(servers) == 0 {
		return nil
	}
	for _, d := range deviceIDs {
		up := DeviceListUpdate{UserID: user, DeviceID: d}
		var exists int
		err := tx.QueryRow(`SELECT 1 FROM key_devices WHERE user_id = $1 AND device_id = $2`, string(user), d).Scan(&exists)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			up.Deleted = true
		case err != nil:
			return err
		default:
			if up.Keys, err = txDeviceKeys(tx, user, d); err != nil {
				return err
			}
		}
		// Each update has its own stream ID and names the previous one:
		// a server that missed one resyncs.
		var prev int64
		if err := tx.QueryRow(`SELECT stream_id FROM device_list_streams WHERE user_id = $1`, string(user)).Scan(&prev); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		up.StreamID = tx.NextPosition()
		if prev != 0 {
			up.PrevID = []int64{prev}
		}
		if _, err := tx.Exec(`INSERT INTO device_list_streams (user_id, stream_id) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id`, string(user), up.StreamID); err != nil {
			return err
		}
		for _, srv := range servers {
			if err := s.fed.QueueEDU(tx, srv, "m.device_list_update", up); err != nil {
				return err
			}
		}
	}
	return nil
}

// announceSigningKeys queues an m.signing_key_update with user's current
// master and self-signing keys for the remote servers among watchers.
func (s *Service) announceSigningKeys(tx *storage.Tx, watchers []spec.UserID, user spec.UserID) error {
	if s.fed == nil || s.cfg.ServerName == "" || !s.isLocal(user) {
		return nil
	}
	servers := s.remoteServers(watchers)
	if len(servers) == 0 {
		return nil
	}
	xs, err := txCrossSigningKeys(tx, user)
	if err != nil {
		return err
	}
	up := SigningKeyUpdate{UserID: user}
	for usage, k := range xs {
		sigs, err := txOwnSignatures(tx, user, k.pub)
		if err != nil {
			return err
		}
		obj, err := mergeSignatures([]byte(k.json), sigs, nil)
		if err != nil {
			return err
		}
		switch usage {
		case usageMaster:
			up.MasterKey = obj
		case usageSelf:
			up.SelfSigningKey = obj
		}
	}
	for _, srv := range servers {
		if err := s.fed.QueueEDU(tx, srv, "m.signing_key_update", up); err != nil {
			return err
		}
	}
	return nil
}

// txDeviceKeys is a device's keys as other users see them (its own
// signatures and those of its user's keys), inside a write; nil if the
// device has uploaded none.
func txDeviceKeys(tx *storage.Tx, user spec.UserID, deviceID string) (json.RawMessage, error) {
	var kj string
	err := tx.QueryRow(`SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`, string(user), deviceID).Scan(&kj)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sigs, err := txOwnSignatures(tx, user, deviceID)
	if err != nil {
		return nil, err
	}
	return mergeSignatures([]byte(kj), sigs, nil)
}

// txOwnSignatures are the signatures by user's own keys on target.
func txOwnSignatures(tx *storage.Tx, user spec.UserID, target string) (map[string]map[string]string, error) {
	rows, err := tx.Query(`SELECT signer_key_id, signature FROM key_signatures WHERE target_user = $1 AND target_key = $2 AND signer_user = $1`,
		string(user), target)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]map[string]string{}
	for rows.Next() {
		var k, sig string
		if err := rows.Scan(&k, &sig); err != nil {
			return nil, err
		}
		if out[string(user)] == nil {
			out[string(user)] = map[string]string{}
		}
		out[string(user)][k] = sig
	}
	return out, rows.Err()
}

// queueToDevice queues the to-device messages for remote users, one
// m.direct_to_device per server, inside the write of SendToDevice.
func (s *Service) queueToDevice(tx *storage.Tx, sender spec.UserID, evType string, remote map[spec.UserID]map[string]json.RawMessage) error {
	byServer := map[spec.ServerName]map[spec.UserID]map[string]json.RawMessage{}
	for u, devs := range remote {
		if byServer[u.Server()] == nil {
			byServer[u.Server()] = map[spec.UserID]map[string]json.RawMessage{}
		}
		byServer[u.Server()][u] = devs
	}
	for srv, msgs := range byServer {
		// A stream position is unique for ever: the receiver keeps the
		// message ID to drop a transaction sent twice.
		edu := map[string]any{"sender": sender, "type": evType, "message_id": strconv.FormatInt(tx.NextPosition(), 10), "messages": msgs}
		if err := s.fed.QueueEDU(tx, srv, "m.direct_to_device", edu); err != nil {
			return err
		}
	}
	return nil
}

// ---- Answering other servers ----

// QueryForServer is /user/keys/query for another server: the keys of this
// server's users, as any other user sees them.
func (s *Service) QueryForServer(ctx context.Context, users map[spec.UserID][]string) (*QueryResult, error) {
	res := newQueryResult()
	for u, devs := range users {
		if !s.isLocal(u) {
			continue
		}
		if err := s.queryUser(ctx, "", u, devs, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// ClaimForServer is /user/keys/claim for another server: claims of this
// server's users' keys only.
func (s *Service) ClaimForServer(ctx context.Context, claims []Claim) (map[spec.UserID]map[string]map[string]json.RawMessage, error) {
	var local []Claim
	for _, cl := range claims {
		if s.isLocal(cl.User) {
			local = append(local, cl)
		}
	}
	return s.claimLocal(ctx, local)
}

// UserDevices is /user/devices for another server: a local user's devices
// with keys, their cross-signing keys, and the stream ID of the last
// m.device_list_update sent for them.
func (s *Service) UserDevices(ctx context.Context, user spec.UserID) (*UserDevices, error) {
	res := newQueryResult()
	if err := s.queryUser(ctx, "", user, nil, res); err != nil {
		return nil, err
	}
	out := &UserDevices{UserID: user, Devices: []RemoteDevice{}, MasterKey: res.MasterKeys[user], SelfSigningKey: res.SelfSigningKeys[user]}
	if err := s.db.QueryRow(ctx, `SELECT stream_id FROM device_list_streams WHERE user_id = $1`, string(user)).Scan(&out.StreamID); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	for d, k := range res.DeviceKeys[user] {
		out.Devices = append(out.Devices, RemoteDevice{DeviceID: d, Keys: k})
	}
	slices.SortFunc(out.Devices, func(a, b RemoteDevice) int {
		if a.DeviceID < b.DeviceID {
			return -1
		}
		return 1
	})
	return out, nil
}

// ReceiveToDevice delivers a remote user's to-device messages to local
// devices, once per message ID (kept as the sender's transaction ID, under
// no device).
func (s *Service) ReceiveToDevice(ctx context.Context, sender spec.UserID, evType, messageID string, messages map[spec.UserID]map[string]json.RawMessage) error {
	local := map[spec.UserID]map[string]json.RawMessage{}
	for u, devs := range messages {
		if s.isLocal(u) {
			local[u] = devs
		}
	}
	return s.SendToDevice(ctx, sender, "", evType, messageID, local)
}

// ---- The cache of remote device lists ----

// remoteList is a cached remote user's device list.
type remoteList struct {
	streamID       int64 // 0: unknown (fetched by /user/keys/query)
	devices        map[string]json.RawMessage
	master, selfSK json.RawMessage
}

func (s *Service) loadRemote(ctx context.Context, u spec.UserID) (*remoteList, error) {
	var devs, master, ssk string
	l := &remoteList{}
	err := s.db.QueryRow(ctx, `SELECT stream_id, devices, master_key, self_signing_key FROM remote_device_lists WHERE user_id = $1`,
		string(u)).Scan(&l.streamID, &devs, &master, &ssk)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(devs), &l.devices); err != nil {
		return nil, err
	}
	if master != "" {
		l.master = json.RawMessage(master)
	}
	if ssk != "" {
		l.selfSK = json.RawMessage(ssk)
	}
	return l, nil
}

func storeRemote(tx *storage.Tx, u spec.UserID, l *remoteList) error {
	devs, err := json.Marshal(l.devices)
	if err != nil {
		return err
	}
	_, err = tx.Exec(`INSERT INTO remote_device_lists (user_id, stream_id, devices, master_key, self_signing_key) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, devices = excluded.devices,
		master_key = excluded.master_key, self_signing_key = excluded.self_signing_key`,
		string(u), l.streamID, string(devs), string(l.master), string(l.selfSK))
	return err
}

// tracked reports whether this server hears of a remote user's device
// changes: the user shares a room with a local user. Only then is their
// list cached.
func (s *Service) tracked(u spec.UserID) bool {
	if s.rooms == nil {
		return false
	}
	for _, o := range s.rooms.UsersSharingRoomsWith(u) {
		if o != u && s.isLocal(o) {
			return true
		}
	}
	return false
}

// deviceKeysFor checks that a remote device-keys object is the one of
// user's device d.
func deviceKeysFor(raw json.RawMessage, user spec.UserID, d string) bool {
	var k struct {
		UserID   spec.UserID `json:"user_id"`
		DeviceID string      `json:"device_id"`
	}
	return json.Unmarshal(raw, &k) == nil && k.UserID == user && k.DeviceID == d
}

// crossSigningKeyFor checks that a remote cross-signing key is user's.
func crossSigningKeyFor(raw json.RawMessage, user spec.UserID) bool {
	var k struct {
		UserID spec.UserID `json:"user_id"`
	}
	return json.Unmarshal(raw, &k) == nil && k.UserID == user
}

// ReceiveDeviceListUpdate applies a remote user's device change. An update
// that follows on from the cached list is applied to it; one that does not
// (a missed update) drops the cached list, which is resynced in the
// background, so that no client is served a list known to be stale. Either
// way the local users sharing a room with the user see them in
// device_lists.changed.
func (s *Service) ReceiveDeviceListUpdate(ctx context.Context, u DeviceListUpdate) error {
	// A user who shares no room with a local one concerns no one here: a
	// server must not be able to fill this one's tables with strangers.
	if s.isLocal(u.UserID) || !s.tracked(u.UserID) {
		return nil
	}
	if err := checkDeviceID(u.DeviceID); err != nil {
		return err
	}
	if len(u.Keys) > 0 && !deviceKeysFor(u.Keys, u.UserID, u.DeviceID) {
		return fmt.Errorf("m.device_list_update: keys are not those of %s %s", u.UserID, u.DeviceID)
	}
	cached, err := s.loadRemote(ctx, u.UserID)
	if err != nil {
		return err
	}
	resync := false
	watchers := s.watchers(u.UserID)
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		switch {
		case cached == nil:
			// Nothing cached: the next query asks the user's server.
		case cached.streamID != 0 && u.StreamID > cached.streamID && slices.Contains(u.PrevID, cached.streamID):
			if u.Deleted {
				delete(cached.devices, u.DeviceID)
			} else if len(u.Keys) > 0 {
				cached.devices[u.DeviceID] = u.Keys
			}
			cached.streamID = u.StreamID
			if err := storeRemote(tx, u.UserID, cached); err != nil {
				return err
			}
		case u.StreamID <= cached.streamID:
			return nil // an update already applied (a transaction sent again)
		default:
			resync = true
			if _, err := tx.Exec(`DELETE FROM remote_device_lists WHERE user_id = $1`, string(u.UserID)); err != nil {
				return err
			}
		}
		return s.markChanged(tx, watchers, u.UserID)
	})
	if err == nil && resync {
		s.resyncRemote(u.UserID)
	}
	return err
}

// ReceiveSigningKeyUpdate applies a remote user's new cross-signing keys.
func (s *Service) ReceiveSigningKeyUpdate(ctx context.Context, u SigningKeyUpdate) error {
	if s.isLocal(u.UserID) || !s.tracked(u.UserID) {
		return nil
	}
	for _, k := range []json.RawMessage{u.MasterKey, u.SelfSigningKey} {
		if len(k) > 0 && !crossSigningKeyFor(k, u.UserID) {
			return fmt.Errorf("m.signing_key_update: a key is not %s's", u.UserID)
		}
	}
	cached, err := s.loadRemote(ctx, u.UserID)
	if err != nil {
		return err
	}
	watchers := s.watchers(u.UserID)
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if cached != nil {
			if len(u.MasterKey) > 0 {
				cached.master = u.MasterKey
			}
			if len(u.SelfSigningKey) > 0 {
				cached.selfSK = u.SelfSigningKey
			}
			if err := storeRemote(tx, u.UserID, cached); err != nil {
				return err
			}
		}
		return s.markChanged(tx, watchers, u.UserID)
	})
}

// resyncRemote fetches a remote user's whole list through /user/devices
// and caches it with its stream ID, in the background.
func (s *Service) resyncRemote(u spec.UserID) {
	if s.fed == nil {
		return
	}
	if _, busy := s.resyncs.LoadOrStore(u, true); busy {
		return
	}
	go func() {
		defer s.resyncs.Delete(u)
		ctx, cancel := context.WithTimeout(context.Background(), remoteTimeout)
		defer cancel()
		body, err := s.fed.RemoteUserDevices(ctx, u)
		if err != nil {
			s.log.Info().Str("user_id", string(u)).Err(err).Msg("keys: cannot resync a remote device list")
			return
		}
		var ud UserDevices
		if err := json.Unmarshal(body, &ud); err != nil || ud.UserID != u {
			s.log.Info().Str("user_id", string(u)).Msg("keys: a remote device list that is not the user's")
			return
		}
		l := &remoteList{streamID: ud.StreamID, devices: map[string]json.RawMessage{}}
		for _, d := range ud.Devices {
			if len(d.Keys) > 0 && deviceKeysFor(d.Keys, u, d.DeviceID) {
				l.devices[d.DeviceID] = d.Keys
			}
		}
		if len(ud.MasterKey) > 0 && crossSigningKeyFor(ud.MasterKey, u) {
			l.master = ud.MasterKey
		}
		if len(ud.SelfSigningKey) > 0 && crossSigningKeyFor(ud.SelfSigningKey, u) {
			l.selfSK = ud.SelfSigningKey
		}
		if !s.tracked(u) {
			return
		}
		_ = s.db.Write(ctx, func(tx *storage.Tx) error {
			var cur int64
			err := tx.QueryRow(`SELECT stream_id FROM remote_device_lists WHERE user_id = $1`, string(u)).Scan(&cur)
			if err == nil && cur >= l.streamID && cur != 0 {
				return nil // a newer list was cached meanwhile
			}
			return storeRemote(tx, u, l)
		})
	}()
}

// queryRemote fills res with the keys of remote users, grouped by server:
// from the cache, or from their server (all servers at once, each within
// the timeout). A server that fails is named in res.Failures.
func (s *Service) queryRemote(ctx context.Context, byServer map[spec.ServerName]map[spec.UserID][]string, timeout time.Duration, res *QueryResult) error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for srv, users := range byServer {
		ask := map[spec.UserID][]string{}
		for u, devs := range users {
			l, err := s.loadRemote(ctx, u)
			if err != nil {
				return err
			}
			if l == nil || !s.tracked(u) {
				ask[u] = devs
				continue
			}
			l.fill(u, devs, res)
		}
		if len(ask) == 0 {
			continue
		}
		if s.fed == nil {
			res.Failures[string(srv)] = federationFailure
			continue
		}
		wg.Add(1)
		go func(srv spec.ServerName, ask map[spec.UserID][]string) {
			defer wg.Done()
			qctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			body, err := s.fed.QueryKeys(qctx, srv, ask)
			var ans struct {
				DeviceKeys      map[spec.UserID]map[string]json.RawMessage `json:"device_keys"`
				MasterKeys      map[spec.UserID]json.RawMessage            `json:"master_keys"`
				SelfSigningKeys map[spec.UserID]json.RawMessage            `json:"self_signing_keys"`
			}
			if err == nil {
				err = json.Unmarshal(body, &ans)
			}
			if err != nil {
				mu.Lock()
				res.Failures[string(srv)] = failure(err)
				mu.Unlock()
				return
			}
			for u, devs := range ask {
				l := &remoteList{devices: map[string]json.RawMessage{}}
				for d, k := range ans.DeviceKeys[u] {
					if deviceKeysFor(k, u, d) {
						l.devices[d] = k
					}
				}
				if k := ans.MasterKeys[u]; len(k) > 0 && crossSigningKeyFor(k, u) {
					l.master = k
				}
				if k := ans.SelfSigningKeys[u]; len(k) > 0 && crossSigningKeyFor(k, u) {
					l.selfSK = k
				}
				mu.Lock()
				l.fill(u, devs, res)
				mu.Unlock()
				// Only a whole list of a user whose changes this server
				// hears of is worth keeping.
				if len(devs) == 0 && s.tracked(u) {
					_ = s.db.Write(ctx, func(tx *storage.Tx) error {
						var one int
						if err := tx.QueryRow(`SELECT 1 FROM remote_device_lists WHERE user_id = $1`, string(u)).Scan(&one); err == nil {
							return nil // cached meanwhile (a resync): keep its stream ID
						}
						return storeRemote(tx, u, l)
					})
				}
			}
		}(srv, ask)
	}
	wg.Wait()
	return nil
}

// fill adds the list's keys (the devices asked for, all when none) to res.
func (l *remoteList) fill(u spec.UserID, devs []string, res *QueryResult) {
	out := map[string]json.RawMessage{}
	for d, k := range l.devices {
		if len(devs) == 0 || slices.Contains(devs, d) {
			out[d] = k
		}
	}
	res.DeviceKeys[u] = out
	if len(l.master) > 0 {
		res.MasterKeys[u] = l.master
	}
	if len(l.selfSK) > 0 {
		res.SelfSigningKeys[u] = l.selfSK
	}
}

// claimRemote claims keys of remote users' devices from their servers,
// all at once, each within the timeout.
func (s *Service) claimRemote(ctx context.Context, claims []Claim, timeout time.Duration, keys map[spec.UserID]map[string]map[string]json.RawMessage, failures map[string]any) {
	byServer := map[spec.ServerName]map[spec.UserID]map[string]string{}
	for _, cl := range claims {
		srv := cl.User.Server()
		if byServer[srv] == nil {
			byServer[srv] = map[spec.UserID]map[string]string{}
		}
		if byServer[srv][cl.User] == nil {
			byServer[srv][cl.User] = map[string]string{}
		}
		byServer[srv][cl.User][cl.DeviceID] = cl.Algorithm
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for srv, ask := range byServer {
		if s.fed == nil {
			failures[string(srv)] = federationFailure
			continue
		}
		wg.Add(1)
		go func(srv spec.ServerName, ask map[spec.UserID]map[string]string) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			body, err := s.fed.ClaimKeys(cctx, srv, ask)
			var ans struct {
				OneTimeKeys map[spec.UserID]map[string]map[string]json.RawMessage `json:"one_time_keys"`
			}
			if err == nil {
				err = json.Unmarshal(body, &ans)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[string(srv)] = failure(err)
				return
			}
			for u, devs := range ask {
				for d := range devs {
					if k, ok := ans.OneTimeKeys[u][d]; ok && len(k) == 1 {
						if keys[u] == nil {
							keys[u] = map[string]map[string]json.RawMessage{}
						}
						keys[u][d] = k
					}
				}
			}
		}(srv, ask)
	}
	wg.Wait()
}

// announceSignatures announces the keys that uploaded signatures changed
// as other servers see them: a user's own signatures on their devices and
// cross-signing keys (a signature on another user's key is seen only by
// its signer, and announces nothing).
func (s *Service) announceSignatures(tx *storage.Tx, watchers []spec.UserID, rows []sigRow) error {
	devices := map[spec.UserID][]string{}
	signing := map[spec.UserID]bool{}
	for _, r := range rows {
		if r.targetUser != r.signerUser {
			continue
		}
		var one int
		err := tx.QueryRow(`SELECT 1 FROM key_devices WHERE user_id = $1 AND device_id = $2`, string(r.targetUser), r.targetKey).Scan(&one)
		switch {
		case err == nil:
			if !slices.Contains(devices[r.targetUser], r.targetKey) {
				devices[r.targetUser] = append(devices[r.targetUser], r.targetKey)
			}
		case errors.Is(err, sql.ErrNoRows):
			signing[r.targetUser] = true
		default:
			return err
		}
	}
	for u, devs := range devices {
		if err := s.announceDevices(tx, watchers, u, devs...); err != nil {
			return err
		}
	}
	for u := range signing {
		if err := s.announceSigningKeys(tx, watchers, u); err != nil {
			return err
		}
	}
	return nil
}

// PrepareCommit implements rooms.CommitHook: a remote user's cached device
// list is dropped when they join a room here, and those of a room's remote
// members when a local user joins it. While no local user shared a room
// with them, their server sent this one no updates, so a list kept from
// an earlier shared room may be stale; the next query fetches it afresh.
func (s *Service) PrepareCommit(room spec.RoomID, evs []*rooms.Event, state rooms.RoomState) func(*storage.Tx) error {
	var drop []spec.UserID
	for _, ev := range evs {
		sk, ok := ev.PDU.StateKey()
		if !ok || ev.PDU.Type() != spec.MRoomMember || ev.PDU.Content().Get("membership").String() != spec.Join {
			continue
		}
		u := spec.UserID(sk)
		if !s.isLocal(u) {
			drop = append(drop, u)
			continue
		}
		for _, m := range state.Joined() {
			if !s.isLocal(m) {
				drop = append(drop, m)
			}
		}
	}
	if len(drop) == 0 {
		return nil
	}
	return func(tx *storage.Tx) error {
		args := make([][]any, len(drop))
		for i, u := range drop {
			args[i] = []any{string(u)}
		}
		return tx.ExecMany(`DELETE FROM remote_device_lists WHERE user_id = $1`, args)
	}
}
