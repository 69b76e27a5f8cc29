package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
)

// Relations between events (client-server API, "Forming relationships
// between events"): a child names its parent in content["m.relates_to"].
// The server indexes every child with a rel_type in event_relations when it
// stores the event, and reads the index for the /relations endpoints, the
// thread list and the aggregations it bundles into unsigned["m.relations"].
//
// Replies (m.in_reply_to without rel_type) are not relations for this API,
// as the spec says, and are not indexed.

// Relationship types the server aggregates or validates.
const (
	relThread     = "m.thread"
	relReplace    = "m.replace"
	relReference  = "m.reference"
	relAnnotation = "m.annotation"
)

// relation is the m.relates_to of an event as the server reads it.
type relation struct {
	relType string
	parent  spec.EventID
	key     string // the annotation key, for m.annotation
}

// relationOf reads a non-state event's content["m.relates_to"]. It reports
// false when there is no well-formed relationship with a rel_type: such
// relationships are ignored, as the spec asks.
func relationOf(p *events.PDU) (relation, bool) {
	if p.IsState() {
		return relation{}, false
	}
	return relationOfContent(p.Content())
}

func relationOfContent(content gjson.Result) (relation, bool) {
	rt := content.Get(`m\.relates_to`)
	if !rt.IsObject() {
		return relation{}, false
	}
	typ, id := rt.Get("rel_type"), rt.Get("event_id")
	if typ.Type != gjson.String || typ.Str == "" || len(typ.Str) > 255 || id.Type != gjson.String {
		return relation{}, false
	}
	parent, err := spec.ParseEventID(id.Str)
	if err != nil {
		return relation{}, false
	}
	rel := relation{relType: typ.Str, parent: parent}
	if rel.relType == relAnnotation {
		if k := rt.Get("key"); k.Type == gjson.String {
			rel.key = k.Str
		}
	}
	return rel, true
}

// checkSend validates what the auth rules do not see, before an event is
// built: the relationship of a message event, and the aliases of
// m.room.canonical_alias. The room's write lock is held.
func (s *Service) checkSend(r *liveRoom, req *sendReq) error {
	ctx, sender, typ := req.ctx, req.from.User, req.Type
	c := gjson.ParseBytes(contentOrEmpty(req.Content))
	if req.StateKey != nil {
		if typ == spec.MRoomCanonicalAlias && *req.StateKey == "" {
			return s.checkCanonicalAlias(ctx, r, c)
		}
		return nil
	}
	rel, ok := relationOfContent(c)
	if !ok {
		return nil
	}
	parent, err := s.eventByID(ctx, rel.parent)
	if err != nil {
		return err
	}
	// A relation to an event the sender cannot see in this room (another
	// room's, or unknown) is refused alike, so the answer tells nothing
	// about events elsewhere.
	if parent == nil || parent.PDU.RoomID() != r.id || !r.canSee(sender, parent) {
		return spec.InvalidParam("the related event %s is not an event of this room", rel.parent)
	}
	switch rel.relType {
	case relThread:
		// Threading, "Validation of m.thread relationships": a thread
		// cannot start from an event that is itself a child.
		if _, isChild := relationOf(parent.PDU); isChild {
			return spec.NewError(spec.ErrUnknown, "cannot start a thread from an event that has a relationship")
		}
	case relAnnotation:
		// Event annotations, "Avoiding duplicate annotations".
		var n int
		if err := s.db.QueryRow(ctx, `SELECT count(*) FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.annotation'
			AND type = $2 AND sender = $3 AND annotation_key = $4`, string(rel.parent), typ, string(sender), rel.key).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return spec.NewError(spec.ErrDuplicateAnnotation, "you already sent this annotation for this event")
		}
	}
	return nil
}

// canSeePlain is canSee for an event that is neither an m.room.member nor
// an m.room.history_visibility event, which is all the relations and search
// indexes hold: then only its position matters, so visibility is decided
// without loading the event.
func (r *liveRoom) canSeePlain(user spec.UserID, pos int64) bool {
	r.histMu.RLock()
	defer r.histMu.RUnlock()
	hist := r.members[user]
	return allowedBy(visibilityOf(valueBefore(r.visibility, pos)), valueBefore(hist, pos), hist, pos)
}

// placeholders returns "$from, $from+1, …" for n parameters.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(from + i))
	}
	return b.String()
}

// maxINList bounds the parameters of one IN (…) list.
const maxINList = 200

// eventsByID loads events by ID; unknown IDs are absent from the map.
func (s *Service) eventsByID(ctx context.Context, ids []spec.EventID) (map[spec.EventID]*Event, error) {
	out := make(map[spec.EventID]*Event, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), maxINList)
		args := make([]any, n)
		for i, id := range ids[:n] {
			args[i] = string(id)
		}
		evs, err := s.queryEvents(ctx, `WHERE e.event_id IN (`+placeholders(1, n)+`)`, args...)
		if err != nil {
			return nil, err
		}
		for _, ev := range evs {
			out[ev.PDU.EventID()] = ev
		}
		ids = ids[n:]
	}
	return out, nil
}

// childRow is one row of event_relations.
type childRow struct {
	id       spec.EventID
	room     spec.RoomID
	parent   spec.EventID
	relType  string
	typ      string
	sender   spec.UserID
	position int64
	ts       int64
}

const childColumns = `event_id, room_id, relates_to, rel_type, type, sender, position, origin_server_ts FROM event_relations`

func scanChildren(ctx context.Context, s *Service, query string, args ...any) ([]childRow, error) {
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []childRow
	for rows.Next() {
		var c childRow
		var id, room, parent, sender string
		if err := rows.Scan(&id, &room, &parent, &c.relType, &c.typ, &sender, &c.position, &c.ts); err != nil {
			return nil, err
		}
		c.id, c.room, c.parent, c.sender = spec.EventID(id), spec.RoomID(room), spec.EventID(parent), spec.UserID(sender)
		out = append(out, c)
	}
	return out, rows.Err()
}

// childrenOf returns the children of parents with one of relTypes (any if
// none), oldest first.
func (s *Service) childrenOf(ctx context.Context, parents []spec.EventID, relTypes ...string) ([]childRow, error) {
	var out []childRow
	for len(parents) > 0 {
		n := min(len(parents), maxINList)
		args := make([]any, 0, n+len(relTypes))
		for _, id := range parents[:n] {
			args = append(args, string(id))
		}
		q := `SELECT ` + childColumns + ` WHERE relates_to IN (` + placeholders(1, n) + `)`
		if len(relTypes) > 0 {
			q += ` AND rel_type IN (` + placeholders(n+1, len(relTypes)) + `)`
			for _, t := range relTypes {
				args = append(args, t)
			}
		}
		rows, err := scanChildren(ctx, s, q+` ORDER BY position`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
		parents = parents[n:]
	}
	sort.Slice(out, func(i, j int) bool { return out[i].position < out[j].position })
	return out, nil
}

// visibleChild reports whether the viewer may see a child of a parent in
// room r: the child must be in the parent's room (relations across rooms
// are ignored) and visible by history visibility.
func visibleChild(r *liveRoom, viewer spec.UserID, c childRow) bool {
	return r != nil && c.room == r.id && r.canSeePlain(viewer, c.position)
}

// bundledRelation reports whether bundled aggregations count children of
// this rel_type.
func bundledRelation(relType string) bool {
	return relType == relThread || relType == relReplace || relType == relReference
}

// mayHaveChildren reports whether a room may hold children that bundled
// aggregations count. The answer is looked up once and kept; apply marks
// the room when such a child arrives. A child committed while the look-up
// runs has either been seen by it or marks the room after it, so "none" is
// never kept over a child.
func (s *Service) mayHaveChildren(ctx context.Context, r *liveRoom) (bool, error) {
	switch r.children.Load() {
	case childrenSome:
		return true, nil
	case childrenNone:
		return false, nil
	}
	var some bool
	if err := s.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM event_relations WHERE room_id = $1 AND rel_type IN ($2, $3, $4))`,
		string(r.id), relThread, relReplace, relReference).Scan(&some); err != nil {
		return false, err
	}
	if some {
		r.children.Store(childrenSome)
	} else {
		r.children.CompareAndSwap(childrenUnknown, childrenNone)
	}
	return some, nil
}

// bundle is the aggregation of one event's children (unsigned.m.relations).
type bundle map[string]any

// possibleParents returns the IDs of the events that may have children to
// bundle, once each, and the events by ID: not state events, and not
// events of rooms that hold no such children (a child counts only in its
// parent's room, see visibleChild).
func (s *Service) possibleParents(ctx context.Context, evs []*Event) ([]spec.EventID, map[spec.EventID]*Event, error) {
	var parents []spec.EventID
	byID := map[spec.EventID]*Event{}
	withChildren := map[spec.RoomID]bool{}
	for _, ev := range evs {
		if ev == nil || ev.PDU.IsState() {
			continue
		}
		room := ev.PDU.RoomID()
		some, seen := withChildren[room]
		if !seen {
			if r := s.room(room); r != nil {
				var err error
				if some, err = s.mayHaveChildren(ctx, r); err != nil {
					return nil, nil, err
				}
			}
			withChildren[room] = some
		}
		if _, dup := byID[ev.PDU.EventID()]; some && !dup {
			byID[ev.PDU.EventID()] = ev
			parents = append(parents, ev.PDU.EventID())
		}
	}
	return parents, byID, nil
}

// bundles computes the bundled aggregations of events for a viewer: the
// m.thread summary, the latest valid m.replace and the m.reference chunk.
// m.annotation is not aggregated by the server (event annotations, "Server-
// side aggregation"). State events get no bundle, as the spec says.
func (s *Service) bundles(ctx context.Context, viewer spec.UserID, evs []*Event) (map[spec.EventID]bundle, error) {
	return s.bundlesOf(ctx, viewer, evs, bundledTypes)
}

// The rel_types bundled: the latest event of a thread gets its own bundle,
// without an m.thread part, which is also what keeps the recursion finite.
var (
	bundledTypes       = []string{relReplace, relReference, relThread}
	bundledTypesNested = []string{relReplace, relReference}
)

// bundlesOf is bundles for children of the given rel_types.
func (s *Service) bundlesOf(ctx context.Context, viewer spec.UserID, evs []*Event, types []string) (map[spec.EventID]bundle, error) {
	parents, byID, err := s.possibleParents(ctx, evs)
	if err != nil {
		return nil, err
	}
	if len(parents) == 0 {
		return nil, nil
	}
	children, err := s.childrenOf(ctx, parents, types...)
	if err != nil || len(children) == 0 {
		return nil, err
	}
	aggs, load, replaced := s.aggregate(viewer, children, byID)
	loaded, err := s.eventsByID(ctx, load)
	if err != nil {
		return nil, err
	}
	redactedParents, err := s.redactedAmong(ctx, replaced)
	if err != nil {
		return nil, err
	}
	// The latest events of threads get their own (nested) bundles.
	var latest []*Event
	for _, a := range aggs {
		if ev := loaded[a.threadLatest]; ev != nil {
			latest = append(latest, ev)
		}
	}
	var nestedBundles map[spec.EventID]bundle
	if len(latest) > 0 {
		if nestedBundles, err = s.bundlesOf(ctx, viewer, latest, bundledTypesNested); err != nil {
			return nil, err
		}
	}
	out := map[spec.EventID]bundle{}
	for id, a := range aggs {
		if b := a.bundle(byID[id].PDU, viewer, loaded, redactedParents[id], nestedBundles); len(b) > 0 {
			out[id] = b
		}
	}
	return out, nil
}

// aggregation is what the visible children of one parent add up to.
type aggregation struct {
	threadCount  int
	threadLatest spec.EventID
	participated bool
	replaces     []spec.EventID
	references   []spec.EventID
}

// aggregate adds up the children the viewer may see, per parent. It also
// returns the children to load (replacements, the latest event of each
// thread) and the parents with replacements (whose redaction voids them).
func (s *Service) aggregate(viewer spec.UserID, children []childRow, byID map[spec.EventID]*Event) (aggs map[spec.EventID]*aggregation, load, replaced []spec.EventID) {
	aggs = map[spec.EventID]*aggregation{}
	for _, c := range children {
		parent := byID[c.parent]
		r := s.room(parent.PDU.RoomID())
		if !visibleChild(r, viewer, c) {
			continue
		}
		a := aggs[c.parent]
		if a == nil {
			a = &aggregation{}
			aggs[c.parent] = a
		}
		switch c.relType {
		case relThread:
			a.threadCount++
			a.threadLatest = c.id // children are in position order
			if c.sender == viewer {
				a.participated = true
			}
		case relReplace:
			// Only the original sender's replacements of the same type
			// count (event replacements, "Validity of replacement events").
			if c.sender == parent.PDU.Sender() && c.typ == parent.PDU.Type() {
				if len(a.replaces) == 0 {
					replaced = append(replaced, c.parent)
				}
				a.replaces = append(a.replaces, c.id)
				load = append(load, c.id)
			}
		case relReference:
			a.references = append(a.references, c.id)
		}
	}
	for _, a := range aggs {
		if a.threadLatest != "" {
			load = append(load, a.threadLatest)
		}
	}
	return aggs, load, replaced
}

// bundle is the parent's unsigned["m.relations"] for the viewer; loaded
// holds the children aggregate asked to load.
func (a *aggregation) bundle(parent *events.PDU, viewer spec.UserID, loaded map[spec.EventID]*Event, parentRedacted bool, nested map[spec.EventID]bundle) bundle {
	b := bundle{}
	if a.threadCount > 0 {
		if ev := loaded[a.threadLatest]; ev != nil {
			b[relThread] = map[string]any{
				"latest_event":              json.RawMessage(renderWithBundle(ev, &Viewer{User: viewer}, nested[ev.PDU.EventID()])),
				"count":                     a.threadCount,
				"current_user_participated": a.participated || parent.Sender() == viewer,
			}
		}
	}
	if len(a.replaces) > 0 && !parentRedacted && validReplaceTarget(parent) {
		var best *Event
		for _, rid := range a.replaces {
			ev := loaded[rid]
			if ev == nil || !validReplacement(ev.PDU) {
				continue
			}
			if best == nil || newerEdit(ev.PDU, best.PDU) {
				best = ev
			}
		}
		if best != nil {
			b[relReplace] = json.RawMessage(ClientEvent(best, &Viewer{User: viewer}))
		}
	}
	if len(a.references) > 0 {
		chunk := make([]map[string]string, len(a.references))
		for i, rid := range a.references {
			chunk[i] = map[string]string{"event_id": string(rid)}
		}
		b[relReference] = map[string]any{"chunk": chunk}
	}
	return b
}

// validReplaceTarget: an edit of an edit is not an edit (event replacements,
// "Validity of replacement events"); state events cannot be edited.
func validReplaceTarget(p *events.PDU) bool {
	if p.IsState() {
		return false
	}
	rel, ok := relationOf(p)
	return !ok || rel.relType != relReplace
}

// validReplacement checks the replacement itself: it needs m.new_content,
// which the server can only see in unencrypted events.
func validReplacement(p *events.PDU) bool {
	if p.IsState() {
		return false
	}
	if p.Type() == spec.MRoomEncrypted {
		return true
	}
	return p.Content().Get(`m\.new_content`).IsObject()
}

// newerEdit orders replacements: by origin_server_ts, then by event ID.
func newerEdit(a, b *events.PDU) bool {
	if a.OriginServerTS() != b.OriginServerTS() {
		return a.OriginServerTS() > b.OriginServerTS()
	}
	return a.EventID() > b.EventID()
}

// redactedAmong returns which of the events are redacted.
func (s *Service) redactedAmong(ctx context.Context, ids []spec.EventID) (map[spec.EventID]bool, error) {
	out := map[spec.EventID]bool{}
	for len(ids) > 0 {
		n := min(len(ids), maxINList)
		args := make([]any, n)
		for i, id := range ids[:n] {
			args[i] = string(id)
		}
		rows, err := s.db.Query(ctx, `SELECT event_id FROM events WHERE redacted_by IS NOT NULL AND event_id IN (`+placeholders(1, n)+`)`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			out[spec.EventID(id)] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		ids = ids[n:]
	}
	return out, nil
}

// renderWithBundle renders an event in the client format for the viewer,
// with its bundled aggregations.
func renderWithBundle(ev *Event, v *Viewer, b bundle) []byte {
	var more map[string]any
	if len(b) > 0 {
		more = map[string]any{"m.relations": b}
	}
	return events.ClientEvent(ev.PDU, v.unsigned(ev, more))
}

// RenderEvents renders events in the client format for a viewer, with the
// bundled aggregations the spec asks for on /messages, /context, /event,
// /relations, /threads, /search and limited /sync timelines, and the
// viewer's membership at each (unsigned.membership).
func (s *Service) RenderEvents(ctx context.Context, viewer spec.UserID, device string, evs []*Event) ([]json.RawMessage, error) {
	bs, err := s.bundles(ctx, viewer, evs)
	if err != nil {
		return nil, err
	}
	v := s.ViewerOf(viewer, device)
	out := make([]json.RawMessage, len(evs))
	for i, ev := range evs {
		out[i] = renderWithBundle(ev, v, bs[ev.PDU.EventID()])
	}
	return out, nil
}

// renderFor is RenderEvents for a request's caller.
func (h *handlers) renderFor(c *gin.Context, evs []*Event) ([]json.RawMessage, error) {
	dev := auth.DeviceFrom(c)
	out, err := h.s.RenderEvents(c.Request.Context(), dev.UserID, dev.DeviceID, evs)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ThreadOf returns the thread an event is in, for threaded receipts and
// notification counts (receipts, "Threaded read receipts"): the thread
// root's event ID, or "main". It follows at most 3 relations, as the spec
// recommends.
func (s *Service) ThreadOf(ctx context.Context, room spec.RoomID, id spec.EventID) (string, error) {
	for hop := 0; hop < 3; hop++ {
		rows, err := scanChildren(ctx, s, `SELECT `+childColumns+` WHERE event_id = $1`, string(id))
		if err != nil {
			return "", err
		}
		if len(rows) == 0 || rows[0].room != room {
			return "main", nil
		}
		if rows[0].relType == relThread {
			return string(rows[0].parent), nil
		}
		id = rows[0].parent
	}
	return "main", nil
}

// RelatesTo reports whether an event leads to the target through 1 to 3
// relations of any type. A threaded receipt may name a thread its event
// relates to: an annotation of a reference to the thread root is in the
// main timeline (receipts, "Threaded read receipts"), yet related to the
// thread, and clients use it to mark the whole thread read; the spec's 400
// is for an event "not related to the thread_id".
func (s *Service) RelatesTo(ctx context.Context, room spec.RoomID, id, target spec.EventID) (bool, error) {
	for hop := 0; hop < 3; hop++ {
		rows, err := scanChildren(ctx, s, `SELECT `+childColumns+` WHERE event_id = $1`, string(id))
		if err != nil {
			return false, err
		}
		if len(rows) == 0 || rows[0].room != room {
			return false, nil
		}
		if id = rows[0].parent; id == target {
			return true, nil
		}
	}
	return false, nil
}

// RelationsQuery is what GET /relations asks for.
type RelationsQuery struct {
	RelType   string // "" for any
	EventType string // "" for any
	From, To  *Token
	Forward   bool
	Limit     int
	Recurse   bool
}

// RelationsPage is one page of children, most recent first unless Forward.
type RelationsPage struct {
	Events         []*Event
	Next, Prev     *Token
	RecursionDepth int
}

// recurseDepth is how many levels of relations recurse follows: the spec
// asks for at least 3.
const recurseDepth = 3

// maxRelationChildren bounds how many children one request considers.
const maxRelationChildren = 10000

// Relations pages through the children of an event the user may see.
// Parents the user may not see, in rooms they may not read, get the same 404
// as unknown events.
func (s *Service) Relations(ctx context.Context, user spec.UserID, room spec.RoomID, parentID spec.EventID, q RelationsQuery) (*RelationsPage, error) {
	notFound := spec.NotFound("event not found")
	a, err := s.readAccess(user, room)
	if err != nil {
		return nil, notFound
	}
	parent, err := s.eventByID(ctx, parentID)
	if err != nil {
		return nil, err
	}
	if parent == nil || parent.PDU.RoomID() != room || parent.Position > a.upTo || !a.r.canSee(user, parent) {
		return nil, notFound
	}
	if q.Limit <= 0 {
		q.Limit = 10
	}
	q.Limit = min(q.Limit, 100)
	depth := 1
	if q.Recurse {
		depth = recurseDepth
	}
	// Collect the children level by level. Filters apply to every level:
	// a child reached only through a non-matching event is not included.
	seen := map[spec.EventID]bool{parentID: true}
	frontier := []spec.EventID{parentID}
	var all []childRow
	for level := 0; level < depth && len(frontier) > 0 && len(all) < maxRelationChildren; level++ {
		rows, err := s.childrenOf(ctx, frontier)
		if err != nil {
			return nil, err
		}
		frontier = nil
		for _, c := range rows {
			if seen[c.id] || c.room != room || (q.RelType != "" && c.relType != q.RelType) || (q.EventType != "" && c.typ != q.EventType) {
				continue
			}
			seen[c.id] = true
			frontier = append(frontier, c.id)
			if c.position <= a.upTo && a.r.canSeePlain(user, c.position) {
				all = append(all, c)
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].position < all[j].position })
	var window []childRow
	for _, c := range all {
		if q.Forward {
			if (q.From != nil && c.position <= int64(*q.From)) || (q.To != nil && c.position > int64(*q.To)) {
				continue
			}
		} else if (q.From != nil && c.position > int64(*q.From)) || (q.To != nil && c.position <= int64(*q.To)) {
			continue
		}
		window = append(window, c)
	}
	if !q.Forward {
		for i, j := 0, len(window)-1; i < j; i, j = i+1, j-1 {
			window[i], window[j] = window[j], window[i]
		}
	}
	page := &RelationsPage{Prev: q.From}
	if q.Recurse {
		page.RecursionDepth = depth
	}
	if len(window) > q.Limit {
		last := window[q.Limit-1].position
		next := Token(last)
		if !q.Forward {
			next = Token(last - 1)
		}
		page.Next = &next
		window = window[:q.Limit]
	}
	ids := make([]spec.EventID, len(window))
	for i, c := range window {
		ids[i] = c.id
	}
	loaded, err := s.eventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if ev := loaded[id]; ev != nil {
			page.Events = append(page.Events, ev)
		}
	}
	return page, nil
}

// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]:
// the children of an event, paginated either way, with optional recursion.
func (h *handlers) relations(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	room, eid, err := roomEventParams(c)
	if err != nil {
		return err
	}
	q := RelationsQuery{RelType: c.Param("relType"), EventType: c.Param("eventType")}
	for _, p := range []struct {
		name string
		dst  **Token
	}{{"from", &q.From}, {"to", &q.To}} {
		if v := c.Query(p.name); v != "" {
			t, err := ParseToken(v)
			if err != nil {
				return err
			}
			*p.dst = &t
		}
	}
	switch c.Query("dir") {
	case "", "b":
	case "f":
		q.Forward = true
	default:
		return spec.InvalidParam("dir must be b or f")
	}
	switch c.Query("recurse") {
	case "", "false":
	case "true":
		q.Recurse = true
	default:
		return spec.InvalidParam("recurse must be true or false")
	}
	if q.Limit, err = limitParam(c, 10); err != nil {
		return err
	}
	page, err := h.s.Relations(c.Request.Context(), dev.UserID, room, eid, q)
	if err != nil {
		return err
	}
	chunk, err := h.renderFor(c, page.Events)
	if err != nil {
		return err
	}
	resp := gin.H{"chunk": chunk}
	if page.Next != nil {
		resp["next_batch"] = page.Next.String()
	}
	if page.Prev != nil {
		resp["prev_batch"] = page.Prev.String()
	}
	if q.Recurse {
		resp["recursion_depth"] = page.RecursionDepth
	}
	c.JSON(http.StatusOK, resp)
	return nil
}

// indexRelation records the relation of a newly stored event, if it has one.
func indexRelation(tx *storage.Tx, ev *Event) error {
	p := ev.PDU
	rel, ok := relationOf(p)
	if !ok {
		return nil
	}
	var key any
	if rel.relType == relAnnotation {
		key = rel.key
	}
	if _, err := tx.Exec(`INSERT INTO event_relations (event_id, room_id, relates_to, rel_type, type, sender, position, origin_server_ts, annotation_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING`,
		string(p.EventID()), string(p.RoomID()), string(rel.parent), rel.relType, p.Type(), string(p.Sender()),
		ev.Position, p.OriginServerTS(), key); err != nil {
		return fmt.Errorf("index relation: %w", err)
	}
	return nil
}

// unindexRelation forgets the relation of a redacted event.
func unindexRelation(tx *storage.Tx, id spec.EventID) error {
	if _, err := tx.Exec(`DELETE FROM event_relations WHERE event_id = $1`, string(id)); err != nil {
		return fmt.Errorf("unindex relation: %w", err)
	}
	return nil
}
