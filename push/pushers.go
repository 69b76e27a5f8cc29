package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
)

// pusher is one HTTP pusher: where to send a user's notifications.
type pusher struct {
	user              spec.UserID
	appID             string
	pushkey           string
	kind              string
	appDisplayName    string
	deviceDisplayName string
	profileTag        string
	lang              string
	data              json.RawMessage // as the client gave it, url included
	deviceID          string
	pushkeyTS         int64 // seconds

	url    string // data.url
	format string // data.format
}

type pusherKey struct {
	user    spec.UserID
	appID   string
	pushkey string
}

func (p *pusher) key() pusherKey { return pusherKey{p.user, p.appID, p.pushkey} }

// Limits from the spec (app_id, pushkey) and of our own (the rest).
const (
	maxAppIDChars   = 64
	maxPushkeyBytes = 512
	maxPusherText   = 512
	maxPusherData   = 4096
	notifyPath      = "/_matrix/push/v1/notify"
)

func (s *Service) loadPushers(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name,
		profile_tag, lang, data, device_id, pushkey_ts FROM pushers`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		p := &pusher{}
		var data string
		if err := rows.Scan(&p.user, &p.appID, &p.pushkey, &p.kind, &p.appDisplayName, &p.deviceDisplayName,
			&p.profileTag, &p.lang, &data, &p.deviceID, &p.pushkeyTS); err != nil {
			return err
		}
		p.data = json.RawMessage(data)
		p.url, p.format = gjson.Get(data, "url").Str, gjson.Get(data, "format").Str
		s.gateways.put(p)
	}
	return rows.Err()
}

// GET /_matrix/client/v3/pushers
func (s *Service) getPushers(c *gin.Context) error {
	list := s.gateways.pushersOf(auth.DeviceFrom(c).UserID)
	out := make([]gin.H, 0, len(list))
	for _, p := range list {
		h := gin.H{
			"pushkey": p.pushkey, "kind": p.kind, "app_id": p.appID, "app_display_name": p.appDisplayName,
			"device_display_name": p.deviceDisplayName, "lang": p.lang, "data": p.data,
		}
		if p.profileTag != "" {
			h["profile_tag"] = p.profileTag
		}
		out = append(out, h)
	}
	c.JSON(http.StatusOK, gin.H{"pushers": out})
	return nil
}

// POST /_matrix/client/v3/pushers/set: creates or replaces the pusher with
// this app_id and pushkey, or deletes it with kind null. Without append,
// the same app_id and pushkey of other users are removed.
func (s *Service) setPusher(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	var body map[string]json.RawMessage
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	p, remove, appendPusher, err := s.parsePusher(body)
	if err != nil {
		return err
	}
	p.user, p.deviceID = dev.UserID, dev.DeviceID
	if remove {
		err = s.deletePusher(c.Request.Context(), p.key())
	} else {
		p.pushkeyTS = s.now().Unix()
		err = s.storePusher(c.Request.Context(), p, appendPusher)
	}
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}

// parsePusher validates a /pushers/set body: remove for kind null, else
// the pusher to store and whether it is added beside the same app_id and
// pushkey of other users (append).
func (s *Service) parsePusher(body map[string]json.RawMessage) (p *pusher, remove, appendPusher bool, err error) {
	if err := missingParams(body, "kind", "app_id", "pushkey"); err != nil {
		return nil, false, false, err
	}
	p = &pusher{}
	if p.appID, err = bodyString(body, "app_id", true); err != nil {
		return nil, false, false, err
	}
	if p.pushkey, err = bodyString(body, "pushkey", true); err != nil {
		return nil, false, false, err
	}
	switch {
	case p.appID == "" || utf8.RuneCountInString(p.appID) > maxAppIDChars:
		return nil, false, false, spec.InvalidParam("app_id must be 1-%d characters", maxAppIDChars)
	case p.pushkey == "" || len(p.pushkey) > maxPushkeyBytes:
		return nil, false, false, spec.InvalidParam("pushkey must be 1-%d bytes", maxPushkeyBytes)
	}
	if gjson.ParseBytes(body["kind"]).Type == gjson.Null {
		return p, true, false, nil
	}
	if p.kind, err = bodyString(body, "kind", true); err != nil {
		return nil, false, false, err
	}
	if p.kind != "http" {
		return nil, false, false, spec.InvalidParam("unsupported pusher kind %q: only http pushers are supported", p.kind)
	}
	if err := missingParams(body, "app_display_name", "device_display_name", "lang", "data"); err != nil {
		return nil, false, false, err
	}
	for name, dst := range map[string]*string{"app_display_name": &p.appDisplayName, "device_display_name": &p.deviceDisplayName,
		"lang": &p.lang, "profile_tag": &p.profileTag} {
		if *dst, err = bodyString(body, name, false); err != nil {
			return nil, false, false, err
		}
		if len(*dst) > maxPusherText {
			return nil, false, false, spec.InvalidParam("%s is over %d bytes", name, maxPusherText)
		}
	}
	if raw, ok := body["append"]; ok {
		if json.Unmarshal(raw, &appendPusher) != nil {
			return nil, false, false, spec.BadJSON("append must be a boolean")
		}
	}
	if err := p.setData(body["data"]); err != nil {
		return nil, false, false, err
	}
	if err := s.checkGatewayURL(p.url); err != nil {
		return nil, false, false, err
	}
	return p, false, appendPusher, nil
}

// missingParams names, in one error, the keys of names the body lacks.
func missingParams(body map[string]json.RawMessage, names ...string) error {
	var missing []string
	for _, name := range names {
		if _, ok := body[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return spec.MissingParam("missing parameters: %s", strings.Join(missing, ", "))
	}
	return nil
}

// bodyString reads a string member of the body; absent is "" unless it
// is required.
func bodyString(body map[string]json.RawMessage, name string, required bool) (string, error) {
	raw, ok := body[name]
	if !ok {
		if required {
			return "", spec.MissingParam("missing parameter: %s", name)
		}
		return "", nil
	}
	v := gjson.ParseBytes(raw)
	if v.Type != gjson.String {
		return "", spec.BadJSON("%s must be a string", name)
	}
	return v.Str, nil
}

// setData checks an http pusher's data object and keeps it compacted,
// with its url (required) and format (event_id_only, if given).
func (p *pusher) setData(raw json.RawMessage) error {
	data := gjson.ParseBytes(raw)
	if !data.IsObject() {
		return spec.BadJSON("data must be an object")
	}
	if len(data.Raw) > maxPusherData {
		return spec.InvalidParam("data is over %d bytes", maxPusherData)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(data.Raw)); err != nil {
		return spec.BadJSON("data must be an object")
	}
	p.data = buf.Bytes()
	u := data.Get("url")
	if !u.Exists() {
		return spec.MissingParam("data.url is required for http pushers")
	}
	if u.Type != gjson.String {
		return spec.BadJSON("data.url must be a string")
	}
	p.url = u.Str
	if f := data.Get("format"); f.Exists() {
		if f.Type != gjson.String || f.Str != "event_id_only" {
			return spec.InvalidParam("data.format must be \"event_id_only\" when given")
		}
		p.format = f.Str
	}
	return nil
}

func (s *Service) storePusher(ctx context.Context, p *pusher, appendPusher bool) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(`INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name,
			profile_tag, lang, data, device_id, pushkey_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind, app_display_name = excluded.app_display_name,
			device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag, lang = excluded.lang,
			data = excluded.data, device_id = excluded.device_id, pushkey_ts = excluded.pushkey_ts`,
			string(p.user), p.appID, p.pushkey, p.kind, p.appDisplayName, p.deviceDisplayName, p.profileTag, p.lang,
			string(p.data), p.deviceID, p.pushkeyTS); err != nil {
			return err
		}
		var removed []pusherKey
		// Memory follows the database in commit order.
		tx.AfterCommit(func() {
			s.gateways.put(p)
			for _, k := range removed {
				s.gateways.remove(k)
			}
		})
		if appendPusher {
			return nil
		}
		// The same app and pushkey now belong to this user only: a device
		// that changed hands stops receiving the previous user's pushes.
		rows, err := tx.Query(`DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3 RETURNING user_id`,
			p.appID, p.pushkey, string(p.user))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				return err
			}
			removed = append(removed, pusherKey{spec.UserID(u), p.appID, p.pushkey})
		}
		return rows.Err()
	})
}

// DeviceDeleted removes the pushers a device set: a phone that logged out
// gets no more notifications for the account. Called by auth once the
// device is gone (through the server's device hooks).
func (s *Service) DeviceDeleted(ctx context.Context, user spec.UserID, deviceID string) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		rows, err := tx.Query(`DELETE FROM pushers WHERE user_id = $1 AND device_id = $2 RETURNING app_id, pushkey`, string(user), deviceID)
		if err != nil {
			return err
		}
		defer rows.Close()
		var gone []pusherKey
		for rows.Next() {
			k := pusherKey{user: user}
			if err := rows.Scan(&k.appID, &k.pushkey); err != nil {
				return err
			}
			gone = append(gone, k)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		tx.AfterCommit(func() {
			for _, k := range gone {
				s.gateways.remove(k)
			}
		})
		return nil
	})
}

func (s *Service) deletePusher(ctx context.Context, k pusherKey) error {
	return s.db.Write(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(`DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, string(k.user), k.appID, k.pushkey); err != nil {
			return err
		}
		tx.AfterCommit(func() { s.gateways.remove(k) })
		return nil
	})
}

// --- SSRF ------------------------------------------------------------------

// The gateway URL is chosen by a user, and the server will POST to it. So
// that nobody can use the server to reach what only it can reach (its own
// admin ports, the LAN, a cloud metadata service), gateways must be public.
// When the pusher is set, only the URL's form is checked (and an address
// literal's range): a name is not resolved then, since what it resolves to
// at set time proves nothing about later (DNS rebinding) and a gateway may
// be unreachable from here for a while. The check that counts is made on
// every connection, against the address actually dialled (dialControl).
// Redirects are not followed and no proxy from the environment is used.
// AllowPrivateGateways turns this off for tests and LAN deployments, and
// also allows plain http.

// checkGatewayURL validates a pusher's URL.
func (s *Service) checkGatewayURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return spec.InvalidParam("data.url must be an absolute URL")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && s.cfg.AllowPrivateGateways:
	default:
		return spec.InvalidParam("data.url must be an https URL")
	}
	if u.User != nil {
		return spec.InvalidParam("data.url must not contain credentials")
	}
	if u.Path != notifyPath {
		return spec.InvalidParam("data.url must have the path %s", notifyPath)
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if !s.cfg.AllowPrivateGateways && !publicAddr(ip) {
			return spec.InvalidParam("data.url points at a non-public address")
		}
		return nil
	}
	if _, err := spec.ParseServerName(host); err != nil {
		return spec.InvalidParam("data.url has an invalid host name")
	}
	// RFC 6761: localhost names are always loopback; no need to dial.
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if !s.cfg.AllowPrivateGateways && (name == "localhost" || strings.HasSuffix(name, ".localhost")) {
		return spec.InvalidParam("data.url points at a non-public address")
	}
	return nil
}

// nonPublic are the ranges a gateway may not be in, beyond what netip
// classifies (loopback, private, link-local, multicast, unspecified).
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: may embed a private IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4: may embed a private IPv4 address
}

// publicAddr reports whether an address is one a gateway may have.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// dialControl refuses, at connect time, any address that is not public.
func dialControl(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("push gateway address %q: %w", address, err)
	}
	if !publicAddr(ap.Addr()) {
		return fmt.Errorf("push gateway address is not public")
	}
	return nil
}

// sortPushers orders a user's pushers for a stable GET /pushers.
func sortPushers(list []*pusher) {
	sort.Slice(list, func(i, j int) bool {
		if list[i].appID != list[j].appID {
			return list[i].appID < list[j].appID
		}
		return list[i].pushkey < list[j].pushkey
	})
}
