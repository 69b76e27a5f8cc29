package rooms

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
)

// Server-side search (client-server API, "Server Side Search") over what the
// server can read: m.room.message bodies sent while the room was not
// encrypted, room names and topics. Ciphertext (m.room.encrypted) is never
// indexed, so it is never pretended to be searched.
//
// The index is the project's own, in plain SQL tables (searchindex.go): for
// each event, its words folded (lower case, no diacritics) with their
// counts. It keeps no second copy of the text. It is written in the
// transaction that stores the event, and a redaction deletes the event's
// words at once. Results are only events the user may see, in rooms they
// have been in: the candidates the index returns are filtered by history
// visibility before anything (even the count) is answered.

// searchKeys maps a searchable key to the event type it is read from.
var searchKeys = map[string]string{
	"content.body":  spec.MRoomMessage,
	"content.name":  spec.MRoomName,
	"content.topic": spec.MRoomTopic,
}

// searchTerms splits a search term into words as the index cuts them,
// without repeats, at most 16. Each is matched as a prefix; no client
// input is ever read as query syntax.
func searchTerms(term string) []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range splitWords(term) {
		if len(w) > maxWordBytes || seen[w] {
			continue
		}
		seen[w] = true
		out = append(out, w)
		if len(out) == 16 {
			break
		}
	}
	return out
}

// SearchCriteria is the room_events category of a search request.
type SearchCriteria struct {
	SearchTerm   *string          `json:"search_term"`
	Keys         []string         `json:"keys"`
	Filter       *RoomEventFilter `json:"filter"`
	OrderBy      string           `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    *struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

// searchToken is a search's pagination token: how many results were
// returned so far, in the whole search or in one group. It is URL-safe
// base64 JSON, tagged so that other endpoints' tokens are refused.
type searchToken struct {
	Kind   string `json:"k"`
	Offset int    `json:"o"`
	Group  string `json:"g,omitempty"` // "room_id" or "sender"
	Value  string `json:"v,omitempty"`
}

func (t searchToken) String() string {
	t.Kind = "search"
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func parseSearchToken(s string) (searchToken, error) {
	var t searchToken
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(raw, &t) != nil || t.Kind != "search" || t.Offset < 0 ||
		(t.Group != "" && t.Group != "room_id" && t.Group != "sender") {
		return searchToken{}, spec.InvalidParam("unknown pagination token")
	}
	return t, nil
}

// searchHit is one visible match.
type searchHit struct {
	position int64
	id       spec.EventID
	room     spec.RoomID
	sender   spec.UserID
	rank     float64
}

// maxSearchCandidates bounds the matches one search considers.
const maxSearchCandidates = 5000

// Search runs the room_events search for a user and returns the response's
// room_events object.
func (s *Service) Search(ctx context.Context, user spec.UserID, device string, c *SearchCriteria, nextBatch string) (map[string]any, error) {
	sq, err := parseSearch(c, nextBatch)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"results": []any{}, "count": 0, "highlights": sq.words}
	if sq.words == nil {
		out["highlights"] = []string{}
	}
	access := s.searchableRooms(user, c.Filter, sq.tok)
	if len(sq.words) == 0 || len(access) == 0 || len(sq.types) == 0 {
		return out, nil
	}
	hits, err := s.searchHits(ctx, user, access, sq)
	if err != nil {
		return nil, err
	}
	out["count"] = len(hits)
	start := min(sq.tok.Offset, len(hits))
	end := min(start+sq.limit, len(hits))
	pageHits := hits[start:end]
	// A full page gets a next_batch even when it holds the last hits: the
	// spec only makes an absent next_batch mean "no more", and clients
	// (and the Matrix suite) page until a page comes back without one.
	if end < len(hits) || len(pageHits) == sq.limit {
		out["next_batch"] = searchToken{Offset: end, Group: sq.tok.Group, Value: sq.tok.Value}.String()
	}
	evs, kept, err := s.loadHits(ctx, pageHits)
	if err != nil {
		return nil, err
	}
	run := &searchRun{s: s, user: user, device: device, access: access, c: c}
	if out["results"], err = run.results(ctx, evs, kept); err != nil {
		return nil, err
	}
	if len(sq.groupBy) > 0 {
		out["groups"] = searchGroups(sq.groupBy, kept, hits, end)
	}
	if c.IncludeState {
		state := map[string]any{}
		for _, ev := range evs {
			room := ev.PDU.RoomID()
			if _, done := state[string(room)]; done {
				continue
			}
			st, err := s.stateFor(ctx, access[room])
			if err != nil {
				return nil, err
			}
			state[string(room)] = clientState(st)
		}
		out["state"] = state
	}
	return out, nil
}

// parseSearch checks the criteria and the next_batch token.
func parseSearch(c *SearchCriteria, nextBatch string) (searchQuery, error) {
	var sq searchQuery
	if c.SearchTerm == nil {
		return sq, spec.MissingParam("search_term is required")
	}
	sq.types = []string{}
	if len(c.Keys) == 0 {
		sq.types = []string{spec.MRoomMessage, spec.MRoomName, spec.MRoomTopic}
	}
	for _, k := range c.Keys {
		t, ok := searchKeys[k]
		if !ok {
			return sq, spec.InvalidParam("keys: %q cannot be searched (content.body, content.name and content.topic can)", k)
		}
		if !contains(sq.types, t) {
			sq.types = append(sq.types, t)
		}
	}
	switch c.OrderBy {
	case "", "rank":
	case "recent":
		sq.recent = true
	default:
		return sq, spec.InvalidParam("order_by must be rank or recent")
	}
	if c.Groupings != nil {
		for _, g := range c.Groupings.GroupBy {
			if g.Key != "room_id" && g.Key != "sender" {
				return sq, spec.InvalidParam("groupings can be by room_id or sender")
			}
			if !contains(sq.groupBy, g.Key) {
				sq.groupBy = append(sq.groupBy, g.Key)
			}
		}
	}
	if err := c.Filter.Validate(); err != nil {
		return sq, err
	}
	sq.filter = c.Filter
	sq.limit = 10
	if c.Filter != nil && c.Filter.Limit != nil && *c.Filter.Limit > 0 {
		sq.limit = min(*c.Filter.Limit, 100)
	}
	if nextBatch != "" {
		t, err := parseSearchToken(nextBatch)
		if err != nil {
			return sq, err
		}
		sq.tok = t
	}
	sq.words = searchTerms(*c.SearchTerm)
	return sq, nil
}

// searchableRooms are the rooms the user has been in and may still read
// (up to a leave), within the filter and the token's room group.
func (s *Service) searchableRooms(user spec.UserID, f *RoomEventFilter, tok searchToken) map[spec.RoomID]*access {
	out := map[spec.RoomID]*access{}
	for id := range s.RoomsOf(user) {
		if !f.MatchesRoom(id) || (tok.Group == "room_id" && string(id) != tok.Value) {
			continue
		}
		if a, err := s.readAccess(user, id); err == nil {
			out[id] = a
		}
	}
	return out
}

// loadHits loads the events of a page of hits; a hit whose event is gone
// (purged meanwhile) is left out.
func (s *Service) loadHits(ctx context.Context, hits []searchHit) ([]*Event, []searchHit, error) {
	ids := make([]spec.EventID, len(hits))
	for i, h := range hits {
		ids[i] = h.id
	}
	loaded, err := s.eventsByID(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	var evs []*Event
	var kept []searchHit
	for _, h := range hits {
		if ev := loaded[h.id]; ev != nil {
			evs = append(evs, ev)
			kept = append(kept, h)
		}
	}
	return evs, kept, nil
}

// searchRun is a search request being answered: who asks (and from which
// device, for the client format), the rooms they may search, the criteria.
type searchRun struct {
	s      *Service
	user   spec.UserID
	device string
	access map[spec.RoomID]*access
	c      *SearchCriteria
}

// results renders the page's results (evs, with their hits), with their
// context if asked.
func (run *searchRun) results(ctx context.Context, evs []*Event, hits []searchHit) ([]any, error) {
	rendered, err := run.s.RenderEvents(ctx, run.user, run.device, evs)
	if err != nil {
		return nil, err
	}
	results := make([]any, len(evs))
	for i, ev := range evs {
		res := map[string]any{"rank": hits[i].rank, "result": rendered[i]}
		if run.c.EventContext != nil {
			ctxObj, err := run.eventContext(ctx, ev)
			if err != nil {
				return nil, err
			}
			res["context"] = ctxObj
		}
		results[i] = res
	}
	return results, nil
}

// searchGroups groups the page's hits by each key asked for (room_id,
// sender), with a next_batch for a group that has more after the page; all
// is every hit of the search and end where the page ends in it.
func searchGroups(groupBy []string, page, all []searchHit, end int) map[string]any {
	groups := map[string]any{}
	for _, key := range groupBy {
		value := func(h searchHit) string {
			if key == "room_id" {
				return string(h.room)
			}
			return string(h.sender)
		}
		byValue := map[string]map[string]any{}
		for _, h := range page {
			v := value(h)
			g := byValue[v]
			if g == nil {
				g = map[string]any{"results": []string{}, "order": len(byValue) + 1}
				byValue[v] = g
				// More of this group after the page? Its own offset is
				// how many of its results the pages so far held.
				done, more := 0, false
				for i, x := range all {
					if value(x) != v {
						continue
					}
					if i < end {
						done++
					} else {
						more = true
						break
					}
				}
				if more {
					g["next_batch"] = searchToken{Offset: done, Group: key, Value: v}.String()
				}
			}
			g["results"] = append(g["results"].([]string), string(h.id))
		}
		groups[key] = byValue
	}
	return groups
}

// searchQuery is one search, as parseSearch reads it from the request.
type searchQuery struct {
	words, types []string // the query's words, the event types searched
	filter       *RoomEventFilter
	recent       bool        // order_by recent: newest first, not by rank
	tok          searchToken // next_batch: where the page starts, in which group
	groupBy      []string    // room_id, sender
	limit        int         // results per page
}

// searchHits returns every match the user may see in the rooms of access,
// in order (capped), scoped to the token's group.
func (s *Service) searchHits(ctx context.Context, user spec.UserID, access map[spec.RoomID]*access, sq searchQuery) ([]searchHit, error) {
	types, f, tok := sq.types, sq.filter, sq.tok
	matches, args := wordMatches(sq.words)
	if s.db.Dialect() == storage.Postgres {
		matches, args = tsvectorMatches(sq.words)
	}
	rooms := make([]string, 0, len(access))
	for id := range access {
		rooms = append(rooms, string(id))
	}
	sort.Strings(rooms)
	var roomFilter string
	if len(rooms) <= maxINList {
		roomFilter = ` AND e.room_id IN (` + placeholders(len(args)+1, len(rooms)) + `)`
		for _, r := range rooms {
			args = append(args, r)
		}
	}
	typeFilter := ` AND e.type IN (` + placeholders(len(args)+1, len(types)) + `)`
	for _, t := range types {
		args = append(args, t)
	}
	order := ` ORDER BY m.score DESC, e.position DESC`
	if sq.recent {
		order = ` ORDER BY e.position DESC`
	}
	// The word index answers the events that have every word and their
	// score (higher is better); the rest is the events table.
	hasURL := `json_type(e.json, '$.content.url') = 'text'`
	if s.db.Dialect() == storage.Postgres {
		hasURL = `jsonb_typeof(e.json::jsonb -> 'content' -> 'url') = 'string'`
	}
	q := `SELECT e.position, e.event_id, e.room_id, e.type, e.sender, m.score,
			CASE WHEN ` + hasURL + ` THEN 1 ELSE 0 END
		FROM (` + matches + `) m
		JOIN events e ON e.position = m.position
		WHERE e.redacted_by IS NULL` + roomFilter + typeFilter + order + fmt.Sprintf(` LIMIT %d`, maxSearchCandidates)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var hits []searchHit
	for rows.Next() {
		var h searchHit
		var id, room, typ, sender string
		var hasURL int
		if err := rows.Scan(&h.position, &id, &room, &typ, &sender, &h.rank, &hasURL); err != nil {
			return nil, err
		}
		h.id, h.room, h.sender = spec.EventID(id), spec.RoomID(room), spec.UserID(sender)
		a := access[h.room]
		if a == nil || h.position > a.upTo || !a.r.canSeePlain(user, h.position) {
			continue
		}
		if !matchesSearchFilter(f, typ, h.sender, hasURL == 1) {
			continue
		}
		if tok.Group == "sender" && string(h.sender) != tok.Value {
			continue
		}
		hits = append(hits, h)
	}
	return hits, rows.Err()
}

// matchesSearchFilter is RoomEventFilter.Matches for what the search reads
// of an event (rooms are filtered before).
func matchesSearchFilter(f *RoomEventFilter, typ string, sender spec.UserID, hasURL bool) bool {
	if f == nil {
		return true
	}
	if contains(f.NotSenders, string(sender)) || (f.Senders != nil && !contains(f.Senders, string(sender))) {
		return false
	}
	for _, t := range f.NotTypes {
		if Glob(t, typ) {
			return false
		}
	}
	if f.Types != nil {
		ok := false
		for _, t := range f.Types {
			ok = ok || Glob(t, typ)
		}
		if !ok {
			return false
		}
	}
	return f.ContainsURL == nil || *f.ContainsURL == hasURL
}

// eventContext is a result's event_context: visible events around it, and
// the senders' profiles at the time if asked.
func (run *searchRun) eventContext(ctx context.Context, ev *Event) (map[string]any, error) {
	s, user, device, c := run.s, run.user, run.device, run.c
	a := run.access[ev.PDU.RoomID()]
	before, after := 5, 5
	if c.EventContext.BeforeLimit != nil {
		before = *c.EventContext.BeforeLimit
	}
	if c.EventContext.AfterLimit != nil {
		after = *c.EventContext.AfterLimit
	}
	before, after = min(max(before, 0), 20), min(max(after, 0), 20)
	room := ev.PDU.RoomID()
	var evsBefore, evsAfter []*Event
	start, end := Token(ev.Position-1), Token(ev.Position)
	if before > 0 {
		p, err := s.Messages(ctx, user, room, MessagesRequest{From: &start, Backwards: true, Limit: before})
		if err != nil {
			return nil, err
		}
		evsBefore = p.Events
		if len(evsBefore) > 0 {
			start = Token(evsBefore[len(evsBefore)-1].Position - 1)
		}
	}
	if after > 0 {
		p, err := s.Messages(ctx, user, room, MessagesRequest{From: &end, Limit: after})
		if err != nil {
			return nil, err
		}
		evsAfter = p.Events
		if len(evsAfter) > 0 {
			end = Token(evsAfter[len(evsAfter)-1].Position)
		}
	}
	rb, err := s.RenderEvents(ctx, user, device, evsBefore)
	if err != nil {
		return nil, err
	}
	ra, err := s.RenderEvents(ctx, user, device, evsAfter)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"start": start.String(), "end": end.String(), "events_before": rb, "events_after": ra}
	if c.EventContext.IncludeProfile {
		senders := map[spec.UserID]bool{ev.PDU.Sender(): true}
		for _, e := range append(append([]*Event{}, evsBefore...), evsAfter...) {
			senders[e.PDU.Sender()] = true
		}
		state, err := s.stateAt(ctx, room, min(ev.Position, a.upTo))
		if err != nil {
			return nil, err
		}
		profiles := map[string]any{}
		for _, st := range state {
			sk, _ := st.PDU.StateKey()
			if st.PDU.Type() != spec.MRoomMember || !senders[spec.UserID(sk)] {
				continue
			}
			p := map[string]string{}
			if n := st.PDU.Content().Get("displayname"); n.Type == gjson.String {
				p["displayname"] = n.Str
			}
			if u := st.PDU.Content().Get("avatar_url"); u.Type == gjson.String {
				p["avatar_url"] = u.Str
			}
			profiles[sk] = p
		}
		out["profile_info"] = profiles
	}
	return out, nil
}

// POST /_matrix/client/v3/search: full-text search of the room events the
// caller may see.
func (h *handlers) search(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	var body struct {
		SearchCategories *struct {
			RoomEvents *SearchCriteria `json:"room_events"`
		} `json:"search_categories"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	if body.SearchCategories == nil {
		return spec.MissingParam("search_categories is required")
	}
	cats := map[string]any{}
	if rc := body.SearchCategories.RoomEvents; rc != nil {
		res, err := h.s.Search(c.Request.Context(), dev.UserID, dev.DeviceID, rc, c.Query("next_batch"))
		if err != nil {
			return err
		}
		cats["room_events"] = res
	}
	c.JSON(http.StatusOK, gin.H{"search_categories": cats})
	return nil
}
