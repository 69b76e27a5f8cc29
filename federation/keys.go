package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/chatalot/chatalot/events"
)

// ServerKey is one verify key of a remote server. ValidUntil is when the
// key stops being trusted for new signatures; an old key has Expired set
// instead (it was valid only before then).
type ServerKey struct {
	Public     ed25519.PublicKey
	ValidUntil time.Time
	Expired    time.Time // zero unless the key was listed in old_verify_keys
}

// KeyStore persists fetched keys so that a restart does not refetch them.
type KeyStore interface {
	LoadKey(ctx context.Context, server, keyID string) (ServerKey, bool, error)
	StoreKey(ctx context.Context, server, keyID string, k ServerKey) error
}

// KeyFetcher is a KeySource for remote servers: keys come from the store or
// memory, else from the server itself (GET /_matrix/key/v2/server), else
// from the notaries (POST /_matrix/key/v2/query). Every response must be
// signed by the server it describes.
type KeyFetcher struct {
	HTTP       *http.Client // a federation client (NewHTTPClient)
	Store      KeyStore     // optional
	Notaries   []string     // server names trusted to vouch for others' keys
	NotaryKeys KeySource    // keys of the notaries; required with Notaries
	now        func() time.Time

	mu    sync.Mutex
	cache map[string]ServerKey // server + "\x00" + key ID
	// raw is each server's last key response fetched from it, as it signed
	// it: what this server relays when asked as a notary.
	raw map[string]rawKeys
}

type rawKeys struct {
	body       []byte
	validUntil time.Time
}

const maxKeyResponse = 1 << 20

func (f *KeyFetcher) clock() time.Time {
	if f.now != nil {
		return f.now()
	}
	return time.Now()
}

// VerifyKey returns the key of server with keyID that may verify a signature
// made at the given time.
func (f *KeyFetcher) VerifyKey(ctx context.Context, server, keyID string, at time.Time) (ed25519.PublicKey, error) {
	if k, ok := f.cached(ctx, server, keyID); ok && usable(k, at) {
		return k.Public, nil
	}
	if err := f.fetchDirect(ctx, server); err != nil && len(f.Notaries) == 0 {
		return nil, err
	}
	if k, ok := f.cached(ctx, server, keyID); ok && usable(k, at) {
		return k.Public, nil
	}
	for _, n := range f.Notaries {
		if err := f.fetchNotary(ctx, n, server, keyID); err != nil {
			continue
		}
		if k, ok := f.cached(ctx, server, keyID); ok && usable(k, at) {
			return k.Public, nil
		}
	}
	return nil, fmt.Errorf("no valid key %s for %s", keyID, server)
}

func usable(k ServerKey, at time.Time) bool {
	if !k.Expired.IsZero() {
		return at.Before(k.Expired)
	}
	return at.Before(k.ValidUntil)
}

func (f *KeyFetcher) cached(ctx context.Context, server, keyID string) (ServerKey, bool) {
	f.mu.Lock()
	k, ok := f.cache[server+"\x00"+keyID]
	f.mu.Unlock()
	if ok || f.Store == nil {
		return k, ok
	}
	k, ok, err := f.Store.LoadKey(ctx, server, keyID)
	if err != nil || !ok {
		return ServerKey{}, false
	}
	f.remember(server, keyID, k)
	return k, true
}

func (f *KeyFetcher) remember(server, keyID string, k ServerKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cache == nil {
		f.cache = map[string]ServerKey{}
	}
	f.cache[server+"\x00"+keyID] = k
}

func (f *KeyFetcher) fetchDirect(ctx context.Context, server string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+server+"/_matrix/key/v2/server", nil)
	if err != nil {
		return err
	}
	body, err := f.do(req)
	if err != nil {
		return err
	}
	if err := f.accept(ctx, server, body); err != nil {
		return err
	}
	var v struct {
		ValidUntilTS int64 `json:"valid_until_ts"`
	}
	_ = json.Unmarshal(body, &v) // accept has parsed it
	f.mu.Lock()
	if f.raw == nil {
		f.raw = map[string]rawKeys{}
	}
	f.raw[server] = rawKeys{body: body, validUntil: time.UnixMilli(v.ValidUntilTS)}
	f.mu.Unlock()
	return nil
}

// Response is server's key response as it signed it, valid until at least
// minValid: the one last fetched from it, else one fetched now. When the
// server cannot be reached the last one is returned even if it is older
// (the spec lets a notary answer for servers that are offline); nil when
// there is none.
func (f *KeyFetcher) Response(ctx context.Context, server string, minValid time.Time) []byte {
	f.mu.Lock()
	r, ok := f.raw[server]
	f.mu.Unlock()
	if ok && !r.validUntil.Before(minValid) {
		return r.body
	}
	if err := f.fetchDirect(ctx, server); err != nil {
		return r.body
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.raw[server].body
}

func (f *KeyFetcher) fetchNotary(ctx context.Context, notary, server, keyID string) error {
	q, _ := json.Marshal(map[string]any{"server_keys": map[string]any{server: map[string]any{keyID: map[string]any{}}}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+notary+"/_matrix/key/v2/query", strings.NewReader(string(q)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	body, err := f.do(req)
	if err != nil {
		return err
	}
	var resp struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return err
	}
	for _, sk := range resp.ServerKeys {
		// The notary must vouch for what it relays, and the server must have
		// signed it too (accept checks the latter).
		if err := f.checkNotarySig(ctx, notary, sk); err != nil {
			continue
		}
		_ = f.accept(ctx, server, sk)
	}
	return nil
}

func (f *KeyFetcher) checkNotarySig(ctx context.Context, notary string, obj []byte) error {
	if f.NotaryKeys == nil {
		return fmt.Errorf("no keys for notaries")
	}
	var s struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(obj, &s); err != nil {
		return err
	}
	for keyID := range s.Signatures[notary] {
		pub, err := f.NotaryKeys.VerifyKey(ctx, notary, keyID, f.clock())
		if err != nil {
			continue
		}
		if events.VerifyJSON(obj, notary, keyID, pub) == nil {
			return nil
		}
	}
	return fmt.Errorf("not signed by notary %s", notary)
}

func (f *KeyFetcher) do(req *http.Request) ([]byte, error) {
	resp, err := f.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: status %d", req.Method, req.URL.Path, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeyResponse+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxKeyResponse {
		return nil, fmt.Errorf("key response too large")
	}
	return body, nil
}

// accept checks a server keys object (spec "Publishing Keys") and caches
// its keys: it must name server, and be signed by every key it lists in
// verify_keys.
func (f *KeyFetcher) accept(ctx context.Context, server string, body []byte) error {
	var keys struct {
		ServerName string `json:"server_name"`
		VerifyKeys map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
		OldVerifyKeys map[string]struct {
			Key       string `json:"key"`
			ExpiredTS int64  `json:"expired_ts"`
		} `json:"old_verify_keys"`
		ValidUntilTS int64 `json:"valid_until_ts"`
	}
	if err := json.Unmarshal(body, &keys); err != nil {
		return err
	}
	if keys.ServerName != server {
		return fmt.Errorf("keys are for %q, not %q", keys.ServerName, server)
	}
	if len(keys.VerifyKeys) == 0 {
		return fmt.Errorf("%s lists no verify keys", server)
	}
	validUntil := time.UnixMilli(keys.ValidUntilTS)
	// Spec (room versions 5+): treat valid_until_ts as at most 7 days ahead.
	if max := f.clock().Add(7 * 24 * time.Hour); validUntil.After(max) {
		validUntil = max
	}
	fresh := map[string]ServerKey{}
	for id, vk := range keys.VerifyKeys {
		pub, err := decodeKey(vk.Key)
		if err != nil {
			return fmt.Errorf("key %s of %s: %w", id, server, err)
		}
		if err := events.VerifyJSON(body, server, id, pub); err != nil {
			return fmt.Errorf("key %s of %s is not self-signed: %w", id, server, err)
		}
		fresh[id] = ServerKey{Public: pub, ValidUntil: validUntil}
	}
	for id, ok := range keys.OldVerifyKeys {
		if _, dup := fresh[id]; dup {
			continue
		}
		pub, err := decodeKey(ok.Key)
		if err != nil {
			continue
		}
		fresh[id] = ServerKey{Public: pub, Expired: time.UnixMilli(ok.ExpiredTS)}
	}
	for id, k := range fresh {
		f.remember(server, id, k)
		if f.Store != nil {
			if err := f.Store.StoreKey(ctx, server, id, k); err != nil {
				return err
			}
		}
	}
	return nil
}

func decodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not a base64 ed25519 key")
	}
	return b, nil
}
