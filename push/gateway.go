package push

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/chatalot/chatalot/spec"
	"github.com/tidwall/gjson"
)

// Delivery to push gateways (push gateway API, POST /_matrix/push/v1/notify).
//
// Each pusher has its own queue and, while the queue is not empty, its own
// goroutine that sends one notification at a time and retries a failed one
// with exponential backoff. Queues are in memory and bounded: a gateway
// that stays down loses its oldest notifications rather than growing the
// server's memory, and a restart forgets what was pending — a push is a
// nudge to sync, and the counts a client syncs are always right. Nothing
// here is waited on by sending or syncing: enqueue only appends.

const (
	maxQueuedPerPusher = 100
	maxBackoff         = 5 * time.Minute
	gatewayTimeout     = 15 * time.Second
)

// delivery is one notification waiting for one pusher.
type delivery struct {
	n      *notificationRow
	unread int64     // the user's unread count when it was queued (the badge)
	since  time.Time // first attempt, for the retry limit
}

type pusherQueue struct {
	items   []*delivery
	running bool
}

type dispatcher struct {
	s      *Service
	client *http.Client

	mu     sync.Mutex
	byUser map[spec.UserID]map[pusherKey]*pusher
	queues map[pusherKey]*pusherQueue

	// committed are notifications whose events are committed but not yet
	// published: a gateway told now could not read the event back (the
	// full format) nor a client sync it. They go out on publish. Only the
	// writer goroutine touches it.
	committed []*notificationRow
}

func newDispatcher(s *Service) *dispatcher {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !s.cfg.AllowPrivateGateways {
		dialer.Control = dialControl
	}
	transport := &http.Transport{
		Proxy:                 nil, // a proxy would dial for us and bypass the address check
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: gatewayTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &dispatcher{
		s: s,
		client: &http.Client{
			Transport:     transport,
			Timeout:       gatewayTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		byUser: map[spec.UserID]map[pusherKey]*pusher{},
		queues: map[pusherKey]*pusherQueue{},
	}
}

// put adds or replaces a pusher; pending notifications go to its new URL.
func (d *dispatcher) put(p *pusher) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.byUser[p.user]
	if m == nil {
		m = map[pusherKey]*pusher{}
		d.byUser[p.user] = m
	}
	m[p.key()] = p
}

// remove forgets a pusher and what was pending for it.
func (d *dispatcher) remove(k pusherKey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if m := d.byUser[k.user]; m != nil {
		delete(m, k)
		if len(m) == 0 {
			delete(d.byUser, k.user)
		}
	}
	if q := d.queues[k]; q != nil {
		q.items = nil
	}
}

// pushersOf returns the user's pushers in a stable order.
func (d *dispatcher) pushersOf(user spec.UserID) []*pusher {
	d.mu.Lock()
	list := make([]*pusher, 0, len(d.byUser[user]))
	for _, p := range d.byUser[user] {
		list = append(list, p)
	}
	d.mu.Unlock()
	sortPushers(list)
	return list
}

// hold keeps committed notifications until their position is published
// (call from an after-commit hook).
func (d *dispatcher) hold(rows []*notificationRow) { d.committed = append(d.committed, rows...) }

// published hands the held notifications to the pushers; storage calls it
// on the writer goroutine once the committed position moved.
func (d *dispatcher) published(int64) {
	for _, n := range d.committed {
		d.enqueue(n)
	}
	clear(d.committed)
	d.committed = d.committed[:0]
}

// enqueue hands a notification to each of the user's pushers. It takes two
// short locks and never waits.
func (d *dispatcher) enqueue(n *notificationRow) {
	d.mu.Lock()
	has := len(d.byUser[n.user]) > 0
	d.mu.Unlock()
	if !has {
		return
	}
	item := &delivery{n: n, unread: d.s.totalUnread(n.user), since: d.s.now()}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range d.byUser[n.user] {
		q := d.queues[k]
		if q == nil {
			q = &pusherQueue{}
			d.queues[k] = q
		}
		q.items = append(q.items, item)
		if len(q.items) > maxQueuedPerPusher {
			q.items = q.items[len(q.items)-maxQueuedPerPusher:]
		}
		if !q.running {
			q.running = true
			go d.run(k)
		}
	}
}

type sendResult int

const (
	sent sendResult = iota
	retry
	drop
	rejected
)

// run delivers one pusher's queue, oldest first, until it is empty.
func (d *dispatcher) run(k pusherKey) {
	backoff := d.s.cfg.RetryBackoff
	for {
		select {
		case <-d.s.stopping:
			return // what is pending is dropped: a restart forgets it anyway
		default:
		}
		d.mu.Lock()
		q := d.queues[k]
		p := d.byUser[k.user][k]
		if q == nil || p == nil || len(q.items) == 0 {
			delete(d.queues, k)
			d.mu.Unlock()
			return
		}
		item := q.items[0]
		d.mu.Unlock()

		res := d.send(p, item)
		if res == retry && d.s.now().Sub(item.since) >= d.s.cfg.RetryLimit {
			res = drop
		}
		switch res {
		case rejected:
			// The gateway says the pushkey is no longer valid: the spec
			// asks servers to stop and remove the pusher.
			if err := d.s.deletePusher(context.Background(), k); err != nil {
				d.s.log.Warn().Err(err).Msg("push: could not remove a pusher its gateway rejected")
			}
			continue
		case retry:
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-d.s.stopping:
				t.Stop()
				return
			}
			backoff = min(2*backoff, maxBackoff, max(d.s.cfg.RetryLimit, d.s.cfg.RetryBackoff))
			continue
		case drop:
			d.s.log.Warn().Str("gateway", hostOf(p.url)).Msg("push: gave up a notification")
		}
		backoff = d.s.cfg.RetryBackoff
		d.mu.Lock()
		if q := d.queues[k]; q != nil && len(q.items) > 0 && q.items[0] == item {
			q.items = q.items[1:]
		}
		d.mu.Unlock()
	}
}

// send makes one attempt.
func (d *dispatcher) send(p *pusher, item *delivery) sendResult {
	ctx, cancel := context.WithTimeout(context.Background(), gatewayTimeout)
	defer cancel()
	body, err := d.payload(ctx, p, item)
	if err != nil {
		return drop
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return drop
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		d.s.log.Debug().Err(err).Str("gateway", hostOf(p.url)).Msg("push: gateway unreachable; will retry")
		return retry
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		for _, r := range gjson.GetBytes(raw, "rejected").Array() {
			if r.Str == p.pushkey {
				return rejected
			}
		}
		return sent
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		d.s.log.Debug().Int("status", resp.StatusCode).Str("gateway", hostOf(p.url)).Msg("push: gateway failed; will retry")
		return retry
	default:
		d.s.log.Warn().Int("status", resp.StatusCode).Str("gateway", hostOf(p.url)).Msg("push: gateway refused a notification")
		return drop
	}
}

// payload builds the /notify body. The event_id_only format — the default,
// whatever the pusher asks, unless the admin allows the full format — has
// the event and room IDs, the unread count, a priority and the device: no
// content, no sender, no room name. It is all a client needs to sync.
func (d *dispatcher) payload(ctx context.Context, p *pusher, item *delivery) ([]byte, error) {
	n := item.n
	o := outcomeOf("", n.actions)
	dev := map[string]any{
		"app_id": p.appID, "pushkey": p.pushkey, "pushkey_ts": p.pushkeyTS, "data": dataWithoutURL(p.data),
	}
	if len(o.Tweaks) > 0 {
		dev["tweaks"] = o.Tweaks
	}
	counts := map[string]any{}
	if item.unread > 0 {
		counts["unread"] = item.unread // zero counts are left out
	}
	prio := "low"
	if _, sound := o.Tweaks["sound"]; sound || o.Highlight || n.eventType == spec.MRoomEncrypted {
		prio = "high"
	}
	note := map[string]any{
		"event_id": n.event, "room_id": n.room, "counts": counts, "prio": prio, "devices": []any{dev},
	}
	if d.s.cfg.FullFormat && p.format != "event_id_only" {
		d.addEventDetails(ctx, note, n)
	}
	return json.Marshal(map[string]any{"notification": note})
}

// addEventDetails adds the full format's fields: what the event is, who sent
// it and where.
func (d *dispatcher) addEventDetails(ctx context.Context, note map[string]any, n *notificationRow) {
	ev, err := d.s.rooms.Event(ctx, n.user, n.room, n.event)
	if err != nil || ev == nil {
		return
	}
	pdu := ev.PDU
	note["type"] = pdu.Type()
	note["sender"] = pdu.Sender()
	if c := pdu.Content(); c.IsObject() {
		note["content"] = json.RawMessage(c.Raw)
	}
	if name := d.s.displayName(n.room, pdu.Sender()); name != "" {
		note["sender_display_name"] = name
	}
	if st := d.s.rooms.CurrentState(n.room, spec.MRoomName, ""); st != nil {
		if name := st.Content().Get("name").Str; name != "" {
			note["room_name"] = name
		}
	}
	if st := d.s.rooms.CurrentState(n.room, spec.MRoomCanonicalAlias, ""); st != nil {
		if alias := st.Content().Get("alias").Str; alias != "" {
			note["room_alias"] = alias
		}
	}
	if sk, ok := pdu.StateKey(); ok && pdu.Type() == spec.MRoomMember {
		note["user_is_target"] = sk == string(n.user)
	}
}

// dataWithoutURL is the pusher's data as the gateway receives it: all of it
// but the url.
func dataWithoutURL(data json.RawMessage) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	gjson.ParseBytes(data).ForEach(func(k, v gjson.Result) bool {
		if k.Str != "url" {
			out[k.Str] = json.RawMessage(v.Raw)
		}
		return true
	})
	return out
}

// hostOf names a gateway in logs by its host only.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Host
}
