package sync

import (
	"encoding/json"
	"strconv"

	"github.com/chatalot/chatalot/spec"
)

// This file decodes a sliding sync request (MSC4186, "simplified sliding
// sync") into slidingQuery, the form the engine (sliding.go) works on. The
// unstable form that matrix-rust-sdk and matrix-js-sdk send today is the
// one decoder here; the form merged into the spec (/v4/sync, required_state
// as include/exclude) would be a second decoder producing the same query.

// Bounds on one request: far above what any client sends, low enough that
// a hostile body cannot make a request expensive.
const (
	maxSlidingLists         = 100
	maxSlidingRanges        = 100
	maxSlidingRequiredState = 200
	maxSlidingSubscriptions = 1000
	maxSlidingTimelineLimit = 1000
	maxSlidingNameLength    = 256
)

// slidingQuery is one decoded request.
type slidingQuery struct {
	connID string
	lists  map[string]*slidingList
	// listOrder is the lists' names, sorted, for a stable build.
	listOrder []string
	subs      map[spec.RoomID]roomConfig
	unsub     []spec.RoomID
	ext       slidingExtensions
	shape     string // see connState.shape
}

// slidingList is one list of the request: a window on the user's rooms
// sorted by recency.
type slidingList struct {
	ranges  [][2]int64
	config  roomConfig
	filters listFilters
}

// roomConfig is what the client asks to see of each room: how many
// timeline events and which state.
type roomConfig struct {
	timelineLimit int
	required      requiredState
}

// requiredState is the state the client asks for: exact (type, state_key)
// pairs, and the wildcards of MSC4186 ("*" for any, "$ME" for the user,
// "$LAZY" for the members whose events the timeline shows).
type requiredState struct {
	all     bool               // ["*", "*"]
	anyKey  map[string]bool    // [type, "*"]
	anyType map[string]bool    // ["*", key]
	exact   map[[2]string]bool // [type, key], "$ME" resolved at match time
	lazy    bool               // ["m.room.member", "$LAZY"]
	// entries are the pairs as asked, in order: a room sent under other
	// entries is sent again in full.
	entries [][2]string
	sorted  []string // the entries as sorted strings (sortKeys)
}

// listFilters are the list filters the SDKs send.
type listFilters struct {
	isDM, isEncrypted, isInvite *bool
	roomTypes, notRoomTypes     []*string // nil entry: a room without a type
	hasRoomTypes                bool
	spaces                      []spec.RoomID
	tags, notTags               []string
}

// slidingExtensions are the extensions asked for.
type slidingExtensions struct {
	toDevice    *toDeviceExt
	e2ee        bool
	accountData *roomScope
	receipts    *roomScope
	typing      *roomScope
}

type toDeviceExt struct {
	since int64
	limit int
}

// roomScope is which rooms an extension covers: the rooms in the windows of
// the named lists and the named subscriptions; nil means every one.
type roomScope struct {
	lists map[string]bool // nil: every list
	rooms map[spec.RoomID]bool
	// allRooms: every subscription ("*", or no "rooms" key).
	allRooms bool
}

// The wire form of the unstable request body.
type wireSlidingRequest struct {
	ConnID            *string                         `json:"conn_id"`
	TxnID             *string                         `json:"txn_id"`
	Lists             map[string]wireSlidingList      `json:"lists"`
	RoomSubscriptions map[string]wireRoomSubscription `json:"room_subscriptions"`
	UnsubscribeRooms  []string                        `json:"unsubscribe_rooms"`
	Extensions        *wireExtensions                 `json:"extensions"`
}

type wireSlidingList struct {
	Ranges        [][]int64    `json:"ranges"`
	RequiredState [][]string   `json:"required_state"`
	TimelineLimit *int64       `json:"timeline_limit"`
	Filters       *wireFilters `json:"filters"`
}

type wireRoomSubscription struct {
	RequiredState [][]string `json:"required_state"`
	TimelineLimit *int64     `json:"timeline_limit"`
}

type wireFilters struct {
	IsDM         *bool     `json:"is_dm"`
	IsEncrypted  *bool     `json:"is_encrypted"`
	IsInvite     *bool     `json:"is_invite"`
	RoomTypes    []*string `json:"room_types"`
	NotRoomTypes []*string `json:"not_room_types"`
	Spaces       []string  `json:"spaces"`
	Tags         []string  `json:"tags"`
	NotTags      []string  `json:"not_tags"`
}

type wireExtensions struct {
	ToDevice *struct {
		Enabled *bool   `json:"enabled"`
		Since   *string `json:"since"`
		Limit   *int64  `json:"limit"`
	} `json:"to_device"`
	E2EE *struct {
		Enabled *bool `json:"enabled"`
	} `json:"e2ee"`
	AccountData *wireScopedExt `json:"account_data"`
	Receipts    *wireScopedExt `json:"receipts"`
	Typing      *wireScopedExt `json:"typing"`
}

type wireScopedExt struct {
	Enabled *bool     `json:"enabled"`
	Lists   *[]string `json:"lists"`
	Rooms   *[]string `json:"rooms"`
}

// decodeUnstable turns the unstable request body into a query; the body's
// JSON shape has been checked by api.DecodeJSON.
func decodeUnstable(w *wireSlidingRequest, body []byte) (*slidingQuery, error) {
	q := &slidingQuery{lists: map[string]*slidingList{}, subs: map[spec.RoomID]roomConfig{}}
	if w.ConnID != nil {
		if len(*w.ConnID) > maxSlidingNameLength {
			return nil, spec.InvalidParam("conn_id is too long")
		}
		q.connID = *w.ConnID
	}
	if len(w.Lists) > maxSlidingLists {
		return nil, spec.InvalidParam("at most %d lists", maxSlidingLists)
	}
	for name, wl := range w.Lists {
		if name == "" || len(name) > maxSlidingNameLength {
			return nil, spec.InvalidParam("a list name must have 1 to %d bytes", maxSlidingNameLength)
		}
		l, err := decodeList(name, wl)
		if err != nil {
			return nil, err
		}
		q.lists[name] = l
		q.listOrder = append(q.listOrder, name)
	}
	sortStrings(q.listOrder)
	if len(w.RoomSubscriptions) > maxSlidingSubscriptions {
		return nil, spec.InvalidParam("at most %d room subscriptions", maxSlidingSubscriptions)
	}
	for raw, ws := range w.RoomSubscriptions {
		id, err := spec.ParseRoomID(raw)
		if err != nil {
			return nil, spec.InvalidParam("room_subscriptions: %q is not a room ID", truncate(raw))
		}
		cfg, err := decodeConfig("room_subscriptions."+string(id), ws.RequiredState, ws.TimelineLimit)
		if err != nil {
			return nil, err
		}
		q.subs[id] = cfg
	}
	if len(w.UnsubscribeRooms) > maxSlidingSubscriptions {
		return nil, spec.InvalidParam("at most %d rooms in unsubscribe_rooms", maxSlidingSubscriptions)
	}
	for _, raw := range w.UnsubscribeRooms {
		id, err := spec.ParseRoomID(raw)
		if err != nil {
			return nil, spec.InvalidParam("unsubscribe_rooms: %q is not a room ID", truncate(raw))
		}
		q.unsub = append(q.unsub, id)
	}
	if err := q.decodeExtensions(w.Extensions); err != nil {
		return nil, err
	}
	q.shape = requestShape(w, body)
	return q, nil
}

func decodeList(name string, wl wireSlidingList) (*slidingList, error) {
	l := &slidingList{}
	if len(wl.Ranges) > maxSlidingRanges {
		return nil, spec.InvalidParam("lists.%s: at most %d ranges", truncate(name), maxSlidingRanges)
	}
	for _, r := range wl.Ranges {
		if len(r) != 2 {
			return nil, spec.InvalidParam("lists.%s: a range is [start, end]", truncate(name))
		}
		if r[0] < 0 || r[1] < 0 {
			return nil, spec.InvalidParam("lists.%s: a range cannot be negative", truncate(name))
		}
		if r[0] > r[1] {
			return nil, spec.InvalidParam("lists.%s: a range's start is after its end", truncate(name))
		}
		l.ranges = append(l.ranges, [2]int64{r[0], r[1]})
	}
	cfg, err := decodeConfig("lists."+name, wl.RequiredState, wl.TimelineLimit)
	if err != nil {
		return nil, err
	}
	l.config = cfg
	if f := wl.Filters; f != nil {
		l.filters = listFilters{isDM: f.IsDM, isEncrypted: f.IsEncrypted, isInvite: f.IsInvite,
			roomTypes: f.RoomTypes, notRoomTypes: f.NotRoomTypes, hasRoomTypes: f.RoomTypes != nil,
			tags: f.Tags, notTags: f.NotTags}
		for _, raw := range f.Spaces {
			id, err := spec.ParseRoomID(raw)
			if err != nil {
				return nil, spec.InvalidParam("lists.%s.filters.spaces: %q is not a room ID", truncate(name), truncate(raw))
			}
			l.filters.spaces = append(l.filters.spaces, id)
		}
		if len(f.Spaces) > maxSlidingSubscriptions || len(f.Tags)+len(f.NotTags) > maxSlidingRequiredState ||
			len(f.RoomTypes)+len(f.NotRoomTypes) > maxSlidingRequiredState {
			return nil, spec.InvalidParam("lists.%s.filters: too many entries", truncate(name))
		}
	}
	return l, nil
}

func decodeConfig(where string, rs [][]string, limit *int64) (roomConfig, error) {
	var cfg roomConfig
	if limit != nil {
		if *limit < 0 {
			return cfg, spec.InvalidParam("%s.timeline_limit cannot be negative", truncate(where))
		}
		cfg.timelineLimit = int(min(*limit, maxSlidingTimelineLimit))
	}
	if len(rs) > maxSlidingRequiredState {
		return cfg, spec.InvalidParam("%s.required_state: at most %d entries", truncate(where), maxSlidingRequiredState)
	}
	for _, e := range rs {
		if len(e) != 2 {
			return cfg, spec.InvalidParam("%s.required_state: an entry is [type, state_key]", truncate(where))
		}
		cfg.required.add(e[0], e[1])
	}
	cfg.required.sortKeys()
	return cfg, nil
}

func (q *slidingQuery) decodeExtensions(w *wireExtensions) error {
	if w == nil {
		return nil
	}
	if t := w.ToDevice; t != nil && t.Enabled != nil && *t.Enabled {
		ext := &toDeviceExt{limit: 100}
		if t.Since != nil && *t.Since != "" {
			n, err := strconv.ParseInt(*t.Since, 10, 64)
			if err != nil || n < 0 {
				return spec.InvalidParam("extensions.to_device.since is not a token this server gave")
			}
			ext.since = n
		}
		if t.Limit != nil {
			if *t.Limit <= 0 {
				return spec.InvalidParam("extensions.to_device.limit must be positive")
			}
			ext.limit = int(min(*t.Limit, 1000))
		}
		q.ext.toDevice = ext
	}
	q.ext.e2ee = w.E2EE != nil && w.E2EE.Enabled != nil && *w.E2EE.Enabled
	var err error
	if q.ext.accountData, err = q.scope("account_data", w.AccountData); err != nil {
		return err
	}
	if q.ext.receipts, err = q.scope("receipts", w.Receipts); err != nil {
		return err
	}
	q.ext.typing, err = q.scope("typing", w.Typing)
	return err
}

// scope reads an extension's lists and rooms. A missing key means every
// list (every subscription); "*" means the same. A list the request does
// not have is refused: the client would wait for data that never comes.
func (q *slidingQuery) scope(name string, w *wireScopedExt) (*roomScope, error) {
	if w == nil || w.Enabled == nil || !*w.Enabled {
		return nil, nil
	}
	sc := &roomScope{}
	if w.Lists != nil {
		if len(*w.Lists) > maxSlidingLists {
			return nil, spec.InvalidParam("extensions.%s.lists: too many entries", name)
		}
		sc.lists = map[string]bool{}
		for _, l := range *w.Lists {
			if l == "*" {
				sc.lists = nil
				break
			}
			if q.lists[l] == nil {
				return nil, spec.InvalidParam("extensions.%s.lists: the request has no list %q", name, truncate(l))
			}
			sc.lists[l] = true
		}
	}
	if w.Rooms == nil {
		sc.allRooms = true
		return sc, nil
	}
	if len(*w.Rooms) > maxSlidingSubscriptions {
		return nil, spec.InvalidParam("extensions.%s.rooms: too many entries", name)
	}
	sc.rooms = map[spec.RoomID]bool{}
	for _, r := range *w.Rooms {
		if r == "*" {
			sc.allRooms = true
			continue
		}
		id, err := spec.ParseRoomID(r)
		if err != nil {
			return nil, spec.InvalidParam("extensions.%s.rooms: %q is not a room ID", name, truncate(r))
		}
		sc.rooms[id] = true
	}
	return sc, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// requestShape is the request as asked, without to-device's since (it moves
// with every answer) and the transaction ID. Without either, it is the body
// itself: a client repeats the same bytes, and two spellings of one request
// only cost a build.
func requestShape(w *wireSlidingRequest, body []byte) string {
	if w.TxnID == nil && (w.Extensions == nil || w.Extensions.ToDevice == nil || w.Extensions.ToDevice.Since == nil) {
		return string(body)
	}
	c := *w
	c.TxnID = nil
	if c.Extensions != nil {
		e := *c.Extensions
		if e.ToDevice != nil {
			td := *e.ToDevice
			td.Since = nil
			e.ToDevice = &td
		}
		c.Extensions = &e
	}
	b, _ := json.Marshal(c) // map keys are sorted: the same request, the same shape
	return string(b)
}
