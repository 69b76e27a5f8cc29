package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
)

// Peers is this server's side of talking to other servers: signed
// requests, their keys, the allow and deny lists, and the joins in
// progress. It needs no room, so it is built before rooms, which joins
// remote rooms through it (rooms.RemoteServers); Service, built after
// rooms, answers other servers and sends to them through it.
type Peers struct {
	name spec.ServerName
	key  events.SigningKey
	cfg  Config
	http *http.Client
	// stream is http without its overall timeout, for bodies streamed by
	// the caller (media), which bounds them by its context instead.
	stream *http.Client
	// plain fetches the https URLs remote servers redirect media to: they
	// are ordinary web addresses, not server names to resolve.
	plain *http.Client
	keys  *ownKeys
	fetch *KeyFetcher // other servers' keys (keys.remote)
	log   zerolog.Logger

	joinsMu sync.Mutex
	joins   map[spec.RoomID]chan struct{} // joins of remote rooms in progress

	// senders is the Service whose per-destination senders send the EDUs
	// queued through Peers (by keys and others built before it); nil until
	// New. Reliable EDUs queued before then wait in their table for Start;
	// ephemeral ones are dropped.
	outMu   sync.Mutex
	senders *Service
}

// service is the Service once built, or nil.
func (p *Peers) service() *Service {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	return p.senders
}

// NewPeers builds the client side of federation over db (where other
// servers' keys are kept).
func NewPeers(db *storage.DB, key events.SigningKey, cfg Config, log zerolog.Logger) (*Peers, error) {
	tlsConf, err := TLSConfig(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("federation_ca_file: %w", err)
	}
	res := &Resolver{HTTP: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}}
	client := NewHTTPClient(res, tlsConf)
	plain := &http.Client{
		Timeout:   2 * time.Minute,
		Transport: &http.Transport{TLSClientConfig: tlsConf, TLSHandshakeTimeout: 10 * time.Second},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" || len(via) >= 3 {
				return fmt.Errorf("federation: redirect to %s refused", req.URL.Scheme)
			}
			return nil
		},
	}
	fetch := &KeyFetcher{HTTP: client, Store: keyStore{db}}
	return &Peers{
		name: spec.ServerName(key.ServerName), key: key, cfg: cfg, http: client, stream: &http.Client{Transport: client.Transport}, plain: plain, log: log,
		keys:  &ownKeys{name: key.ServerName, keyID: key.KeyID, pub: key.Private.Public().(ed25519.PublicKey), remote: fetch},
		fetch: fetch,
		joins: map[spec.RoomID]chan struct{}{},
	}, nil
}

// Allowed reports whether this server talks to server at all.
func (p *Peers) Allowed(server spec.ServerName) bool {
	if server == p.name || slices.Contains(p.cfg.Deny, server) {
		return false
	}
	return len(p.cfg.Allow) == 0 || slices.Contains(p.cfg.Allow, server)
}

// NotaryKeys is server's key response, as server signed it, for this
// server to relay as a notary (server.Notary): nil when this server does
// not talk to server (nothing is fetched for it) or cannot get its keys.
func (p *Peers) NotaryKeys(ctx context.Context, server spec.ServerName, minValid time.Time) []byte {
	if !p.Allowed(server) {
		return nil
	}
	return p.fetch.Response(ctx, string(server), minValid)
}

// VerifyKey is a server's verify key valid at a time: this server's own
// without a request, another's through the key fetcher.
func (p *Peers) VerifyKey(ctx context.Context, server, keyID string, at time.Time) (ed25519.PublicKey, error) {
	return p.keys.VerifyKey(ctx, server, keyID, at)
}

// MakeJoin asks srv for the template of user's join of room (make_join),
// offering every room version this server supports.
func (p *Peers) MakeJoin(ctx context.Context, srv spec.ServerName, room spec.RoomID, user spec.UserID) (json.RawMessage, spec.RoomVersion, error) {
	q := url.Values{}
	for n := 1; spec.RoomVersion(fmt.Sprint(n)).Supported(); n++ {
		q.Add("ver", fmt.Sprint(n))
	}
	path := "/_matrix/federation/v1/make_join/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(user)) + "?" + q.Encode()
	body, err := p.request(ctx, http.MethodGet, srv, path, nil)
	if err != nil {
		return nil, "", err
	}
	var mj struct {
		Event       json.RawMessage  `json:"event"`
		RoomVersion spec.RoomVersion `json:"room_version"`
	}
	if err := json.Unmarshal(body, &mj); err != nil {
		return nil, "", fmt.Errorf("make_join: %w", err)
	}
	if mj.RoomVersion == "" {
		mj.RoomVersion = "1" // the spec's default when a resident leaves it out
	}
	return mj.Event, mj.RoomVersion, nil
}

// SendJoin sends the signed join to srv (send_join v2) and returns the
// join as the resident answered it (co-signed by the resident in a
// restricted room; nil if it sent none), and the room's state and auth
// chain.
func (p *Peers) SendJoin(ctx context.Context, srv spec.ServerName, room spec.RoomID, join *events.PDU) (event json.RawMessage, state, authChain []json.RawMessage, err error) {
	path := "/_matrix/federation/v2/send_join/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(join.EventID()))
	body, err := p.request(ctx, http.MethodPut, srv, path, join.JSON())
	if err != nil {
		return nil, nil, nil, err
	}
	var sj struct {
		Event     json.RawMessage   `json:"event"`
		State     []json.RawMessage `json:"state"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	if err := json.Unmarshal(body, &sj); err != nil {
		return nil, nil, nil, fmt.Errorf("send_join: %w", err)
	}
	return sj.Event, sj.State, sj.AuthChain, nil
}

// joinWait bounds how long a transaction waits for a join in progress.
const joinWait = 30 * time.Second

// Joining records a join of room in progress until done is called: the
// resident may send the room's next events before this server has stored
// the room, and they must not be dropped as events of an unknown room.
func (p *Peers) Joining(room spec.RoomID) (done func()) {
	p.joinsMu.Lock()
	defer p.joinsMu.Unlock()
	if _, ok := p.joins[room]; ok {
		return func() {} // another join of the room is in progress: it ends the wait
	}
	ch := make(chan struct{})
	p.joins[room] = ch
	return func() {
		p.joinsMu.Lock()
		delete(p.joins, room)
		p.joinsMu.Unlock()
		close(ch)
	}
}

// awaitJoin waits until a join of room in progress ends, if there is one.
func (p *Peers) awaitJoin(ctx context.Context, room spec.RoomID) {
	p.joinsMu.Lock()
	ch := p.joins[room]
	p.joinsMu.Unlock()
	if ch == nil {
		return
	}
	select {
	case <-ch:
	case <-time.After(joinWait):
	case <-ctx.Done():
	}
}

// maxResponse bounds what a remote server may answer.
const maxResponse = 64 << 20

// request makes a signed federation request and returns the response body
// of a 200; another status is an error carrying the remote's answer.
func (p *Peers) request(ctx context.Context, method string, dest spec.ServerName, path string, body []byte) ([]byte, error) {
	resp, err := p.do(ctx, method, dest, path, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &remoteError{status: resp.StatusCode, body: b, what: method + " " + path}
	}
	return b, nil
}

// Get makes a signed GET of path on dest and returns the response as it
// comes, whatever its status, for a caller that streams the body (media
// downloads); the caller closes it.
func (p *Peers) Get(ctx context.Context, dest spec.ServerName, path string) (*http.Response, error) {
	return p.send(ctx, p.stream, http.MethodGet, dest, path, nil)
}

// GetURL makes an unsigned GET of an https URL a remote server sent this
// one to (a media download's Location); the caller closes the body.
func (p *Peers) GetURL(ctx context.Context, rawURL string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	if req.URL.Scheme != "https" {
		return nil, fmt.Errorf("federation: only https URLs, not %s", req.URL.Scheme)
	}
	return p.plain.Do(req)
}

// do sends a signed federation request.
func (p *Peers) do(ctx context.Context, method string, dest spec.ServerName, path string, body []byte) (*http.Response, error) {
	return p.send(ctx, p.http, method, dest, path, body)
}

func (p *Peers) send(ctx context.Context, client *http.Client, method string, dest spec.ServerName, path string, body []byte) (*http.Response, error) {
	if !p.Allowed(dest) {
		return nil, spec.Forbidden("federation with %s is not allowed by this server's configuration", dest)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+string(dest)+path, rd)
	if err != nil {
		return nil, err
	}
	auth, err := Sign(Request{Method: method, URI: req.URL.RequestURI(), Origin: string(p.name), Destination: string(dest), Content: body}, p.key)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", auth)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return client.Do(req)
}

// remoteError is a remote server's refusal.
type remoteError struct {
	status int
	body   []byte
	what   string
}

func (e *remoteError) Error() string {
	msg := string(e.body)
	if len(msg) > 300 {
		msg = msg[:300]
	}
	return fmt.Sprintf("%s: status %d: %s", e.what, e.status, msg)
}
