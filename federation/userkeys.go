package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/gin-gonic/gin"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/keys"
	"github.com/chatalot/chatalot/spec"
)

// The E2EE queries between servers. A server learns about a user's keys
// only if it has a member in a room the user is joined to: nothing in the
// spec asks this server to publish the devices of strangers, and refusing
// keeps who has which devices from anyone who merely knows a user ID.

// QueryKeys asks server for the device and cross-signing keys of its users
// (POST /_matrix/federation/v1/user/keys/query) and returns the answer.
func (p *Peers) QueryKeys(ctx context.Context, server spec.ServerName, users map[spec.UserID][]string) ([]byte, error) {
	req := map[spec.UserID][]string{}
	for u, d := range users {
		if d == nil {
			d = []string{}
		}
		req[u] = d
	}
	body, _ := json.Marshal(map[string]any{"device_keys": req})
	return p.request(ctx, http.MethodPost, server, "/_matrix/federation/v1/user/keys/query", body)
}

// ClaimKeys claims one-time keys of server's users' devices
// (POST /_matrix/federation/v1/user/keys/claim): user → device → algorithm.
func (p *Peers) ClaimKeys(ctx context.Context, server spec.ServerName, claims map[spec.UserID]map[string]string) ([]byte, error) {
	body, _ := json.Marshal(map[string]any{"one_time_keys": claims})
	return p.request(ctx, http.MethodPost, server, "/_matrix/federation/v1/user/keys/claim", body)
}

// RemoteUserDevices asks a user's server for the user's devices and the
// stream ID of that list (GET /_matrix/federation/v1/user/devices/{userId}).
func (p *Peers) RemoteUserDevices(ctx context.Context, user spec.UserID) ([]byte, error) {
	return p.request(ctx, http.MethodGet, user.Server(), "/_matrix/federation/v1/user/devices/"+url.PathEscape(string(user)), nil)
}

// sharesRoom reports whether origin has a member joined to a room the
// local user is joined to.
func (s *Service) sharesRoom(user spec.UserID, origin spec.ServerName) bool {
	if user.Server() != s.name {
		return false
	}
	for _, u := range s.rooms.UsersSharingRoomsWith(user) {
		if u.Server() == origin {
			return true
		}
	}
	return false
}

// POST /_matrix/federation/v1/user/keys/query: the keys of this server's
// users that share a room with the origin; others are left out, as unknown
// users are.
func (s *Service) userKeysQuery(c *gin.Context) error {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.DeviceKeys == nil {
		return spec.BadJSON("device_keys is required")
	}
	origin := spec.ServerName(Origin(c))
	users := map[spec.UserID][]string{}
	for u, devs := range req.DeviceKeys {
		uid, err := spec.ParseUserID(u)
		if err != nil {
			return spec.InvalidParam("device_keys: %q is not a user ID", u)
		}
		if s.sharesRoom(uid, origin) {
			users[uid] = devs
		}
	}
	res, err := s.e2ee.QueryForServer(c.Request.Context(), users)
	if err != nil {
		return err
	}
	out := gin.H{"device_keys": nonNil(res.DeviceKeys)}
	if len(res.MasterKeys) > 0 {
		out["master_keys"] = res.MasterKeys
	}
	if len(res.SelfSigningKeys) > 0 {
		out["self_signing_keys"] = res.SelfSigningKeys
	}
	c.JSON(http.StatusOK, out)
	return nil
}

func nonNil[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return map[K]V{}
	}
	return m
}

// POST /_matrix/federation/v1/user/keys/claim: one key per device asked
// for, of this server's users that share a room with the origin.
func (s *Service) userKeysClaim(c *gin.Context) error {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.OneTimeKeys == nil {
		return spec.BadJSON("one_time_keys is required")
	}
	origin := spec.ServerName(Origin(c))
	var claims []keys.Claim
	for u, devs := range req.OneTimeKeys {
		uid, err := spec.ParseUserID(u)
		if err != nil {
			return spec.InvalidParam("one_time_keys: %q is not a user ID", u)
		}
		if !s.sharesRoom(uid, origin) {
			continue
		}
		for d, alg := range devs {
			if d == "" || len(d) > 255 || alg == "" || len(alg) > 255 {
				return spec.InvalidParam("one_time_keys.%s: bad device ID or algorithm", u)
			}
			claims = append(claims, keys.Claim{User: uid, DeviceID: d, Algorithm: alg})
		}
	}
	if len(claims) > maxClaims {
		return spec.TooLarge("at most %d keys may be claimed at once", maxClaims)
	}
	got, err := s.e2ee.ClaimForServer(c.Request.Context(), claims)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"one_time_keys": nonNil(got)})
	return nil
}

// maxClaims bounds one claim request.
const maxClaims = 10000

// GET /_matrix/federation/v1/user/devices/{userId}: a local user's devices
// and the stream ID of the list, for a server sharing a room with them.
func (s *Service) userDevices(c *gin.Context) error {
	user, err := spec.ParseUserID(param(c, "userId"))
	if err != nil {
		return spec.InvalidParam("user ID: %v", err)
	}
	if user.Server() != s.name {
		return spec.InvalidParam("%s is not a user of this server", user)
	}
	if !s.sharesRoom(user, spec.ServerName(Origin(c))) {
		return spec.Forbidden("%s shares no room with %s", Origin(c), user)
	}
	d, err := s.e2ee.UserDevices(c.Request.Context(), user)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, d)
	return nil
}
