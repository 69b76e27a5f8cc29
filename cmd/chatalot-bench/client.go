package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"
)

// newHTTPClient is shared by every simulated user: one connection pool, big
// enough that each long-poll keeps its own connection and nothing waits for
// a free one.
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns:        0, // no limit
		MaxIdleConnsPerHost: 10000,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// Client is one Matrix user talking plain HTTP to the client-server API.
type Client struct {
	hc      *http.Client
	base    string
	UserID  string
	Token   string
	retries *atomic.Int64 // 429 answers retried, shared by all clients of a run
}

// APIError is a non-2xx answer.
type APIError struct {
	Method, Path string
	Status       int
	ErrCode      string `json:"errcode"`
	Message      string `json:"error"`
	RetryAfterMs int64  `json:"retry_after_ms"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %d %s %s", e.Method, e.Path, e.Status, e.ErrCode, e.Message)
}

// do sends one request; in and out are JSON (either may be nil). A 429 is
// retried after the time the server asks for, and counted.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute) // a stuck server must not hang the run
		defer cancel()
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
		if err != nil {
			return err
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		if resp.StatusCode/100 == 2 {
			err := decodeBody(resp.Body, out)
			resp.Body.Close()
			if err != nil {
				return fmt.Errorf("%s %s: decode: %w", method, path, err)
			}
			return nil
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		e := &APIError{Method: method, Path: path, Status: resp.StatusCode}
		if json.Unmarshal(raw, e) != nil {
			e.Message = truncate(string(raw), 200)
		}
		if resp.StatusCode != http.StatusTooManyRequests || attempt >= 100 {
			return e
		}
		c.retries.Add(1)
		wait := time.Duration(max(e.RetryAfterMs, 10)) * time.Millisecond
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(wait, 5*time.Second)):
		}
	}
}

func decodeBody(r io.Reader, out any) error {
	if out == nil {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	if d, ok := out.(rawDecoder); ok {
		raw, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		return d.decodeRaw(raw)
	}
	return json.NewDecoder(r).Decode(out)
}

// rawDecoder is a response the load generator reads without
// encoding/json: /sync, which 1,000 receivers read after every message, so
// that the generator's own CPU stays small next to the server's.
type rawDecoder interface {
	decodeRaw(raw []byte) error
}

const benchPassword = "chatalot-bench-password"

// register creates the account username with m.login.dummy (open
// registration) and returns a client logged in as it.
func register(ctx context.Context, hc *http.Client, base string, retries *atomic.Int64, username string) (*Client, error) {
	c := &Client{hc: hc, base: base, retries: retries}
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	in := map[string]any{"username": username, "password": benchPassword, "auth": map[string]string{"type": "m.login.dummy"}}
	if err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/register", nil, in, &out); err != nil {
		return nil, err
	}
	if out.AccessToken == "" {
		return nil, fmt.Errorf("register %s: no access_token in the answer", username)
	}
	c.UserID, c.Token = out.UserID, out.AccessToken
	return c, nil
}

// CreateRoom creates a public room (anyone may join) and returns its ID.
func (c *Client) CreateRoom(ctx context.Context) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	in := map[string]any{"preset": "public_chat"}
	if err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/createRoom", nil, in, &out); err != nil {
		return "", err
	}
	return out.RoomID, nil
}

// Join joins a room by ID.
func (c *Client) Join(ctx context.Context, roomID string) error {
	return c.do(ctx, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(roomID), nil, map[string]any{}, nil)
}

// benchMark is what every benchmark message carries in its content so that
// a receiver can tell the message and its send time. Microseconds, because
// canonical JSON allows integers only up to 2^53.
type benchMark struct {
	Seq    int64 `json:"seq"`
	SentUs int64 `json:"sent_us"`
}

const benchKey = "org.chatalot.bench"

var txnCounter atomic.Int64

// Send sends an m.text message with seq and the send time, and returns the
// event ID.
func (c *Client) Send(ctx context.Context, roomID string, seq int64) (string, error) {
	now := time.Now().UnixMicro()
	content := map[string]any{
		"msgtype": "m.text",
		"body":    "bench message " + strconv.FormatInt(seq, 10),
		benchKey:  benchMark{Seq: seq, SentUs: now},
	}
	txn := "b" + strconv.FormatInt(txnCounter.Add(1), 10)
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + txn
	var out struct {
		EventID string `json:"event_id"`
	}
	if err := c.do(ctx, http.MethodPut, path, nil, content, &out); err != nil {
		return "", err
	}
	if out.EventID == "" {
		return "", fmt.Errorf("PUT %s: no event_id in the answer", path)
	}
	return out.EventID, nil
}

// Event is the part of a client-format event the benchmark reads.
type Event struct {
	Type     string          `json:"type"`
	EventID  string          `json:"event_id"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// Bench returns the benchmark mark of a message sent by this tool.
func (e *Event) Bench() (benchMark, bool) {
	if e.Type != "m.room.message" {
		return benchMark{}, false
	}
	m := gjson.GetBytes(e.Content, `org\.chatalot\.bench`)
	seq, sent := m.Get("seq"), m.Get("sent_us")
	if !m.IsObject() || seq.Type != gjson.Number || sent.Type != gjson.Number {
		return benchMark{}, false
	}
	return benchMark{Seq: seq.Int(), SentUs: sent.Int()}, true
}

// JoinedMember reports the user a state event says is joined.
func (e *Event) JoinedMember() (string, bool) {
	if e.Type != "m.room.member" || e.StateKey == nil {
		return "", false
	}
	var c struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(e.Content, &c) != nil || c.Membership != "join" {
		return "", false
	}
	return *e.StateKey, true
}

// SyncResponse is the part of a /sync answer the benchmark reads.
type SyncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]JoinedRoom `json:"join"`
	} `json:"rooms"`
}

// JoinedRoom is one room of rooms.join.
type JoinedRoom struct {
	Timeline struct {
		Events    []Event `json:"events"`
		Limited   bool    `json:"limited"`
		PrevBatch string  `json:"prev_batch"`
	} `json:"timeline"`
	State struct {
		Events []Event `json:"events"`
	} `json:"state"`
}

// Filters, inline in the query string.
const (
	filterTimeline20     = `{"room":{"timeline":{"limit":20}}}`
	filterTimeline20Lazy = `{"room":{"timeline":{"limit":20},"state":{"lazy_load_members":true}}}`
	// A receiver of a busy room asks for big timelines so that an incremental
	// sync is never "limited" (which would leave a gap it must not have).
	filterReceiverInitial = `{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}`
	filterReceiver        = `{"room":{"timeline":{"limit":1000},"state":{"lazy_load_members":true}}}`
)

// decodeRaw reads the parts of a /sync response the scenarios use, each
// object in one pass over its keys (a gjson Get per field would rescan the
// object for every field).
func (s *SyncResponse) decodeRaw(raw []byte) error {
	if !gjson.ValidBytes(raw) {
		return fmt.Errorf("not JSON")
	}
	gjson.ParseBytes(raw).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "next_batch":
			s.NextBatch = v.Str
		case "rooms":
			v.Get("join").ForEach(func(id, room gjson.Result) bool {
				if s.Rooms.Join == nil {
					s.Rooms.Join = map[string]JoinedRoom{}
				}
				s.Rooms.Join[id.Str] = decodeJoinedRoom(room)
				return true
			})
		}
		return true
	})
	return nil
}

func decodeJoinedRoom(room gjson.Result) JoinedRoom {
	var jr JoinedRoom
	room.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "timeline":
			v.ForEach(func(k, v gjson.Result) bool {
				switch k.Str {
				case "events":
					jr.Timeline.Events = decodeEvents(v)
				case "limited":
					jr.Timeline.Limited = v.Bool()
				case "prev_batch":
					jr.Timeline.PrevBatch = v.Str
				}
				return true
			})
		case "state":
			jr.State.Events = decodeEvents(v.Get("events"))
		}
		return true
	})
	return jr
}

func decodeEvents(list gjson.Result) []Event {
	var out []Event
	list.ForEach(func(_, ev gjson.Result) bool {
		var e Event
		ev.ForEach(func(k, v gjson.Result) bool {
			switch k.Str {
			case "type":
				e.Type = v.Str
			case "event_id":
				e.EventID = v.Str
			case "sender":
				e.Sender = v.Str
			case "state_key":
				if v.Type == gjson.String {
					sk := v.Str
					e.StateKey = &sk
				}
			case "content":
				e.Content = json.RawMessage(v.Raw)
			}
			return true
		})
		out = append(out, e)
		return true
	})
	return out
}

// Sync calls /sync; since "" is an initial sync; timeout is the long-poll.
func (c *Client) Sync(ctx context.Context, since string, timeout time.Duration, filter string) (*SyncResponse, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	if filter != "" {
		q.Set("filter", filter)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+60*time.Second)
	defer cancel()
	var out SyncResponse
	if err := c.do(ctx, http.MethodGet, "/_matrix/client/v3/sync", q, nil, &out); err != nil {
		return nil, err
	}
	if out.NextBatch == "" {
		return nil, fmt.Errorf("GET /sync: no next_batch in the answer")
	}
	return &out, nil
}

// MessagesResponse is a /messages page.
type MessagesResponse struct {
	Chunk []Event `json:"chunk"`
	Start string  `json:"start"`
	End   string  `json:"end"`
}

// Messages fetches one page backwards from the token from.
func (c *Client) Messages(ctx context.Context, roomID, from string, limit int) (*MessagesResponse, error) {
	q := url.Values{"dir": {"b"}, "limit": {strconv.Itoa(limit)}}
	if from != "" {
		q.Set("from", from)
	}
	var out MessagesResponse
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/messages"
	if err := c.do(ctx, http.MethodGet, path, q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
