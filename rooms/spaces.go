package rooms

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
)

// Spaces (client-server API, "Spaces") and room previews: the space
// hierarchy walks m.space.child state, and the room summary describes one
// room. Both show only rooms the requester may see or preview, and both
// answer from the rooms' current state in memory.

// mayPreview reports whether a user may learn a room's summary: they are
// joined or invited, could join or knock, or the room is world-readable
// (the hierarchy's list of conditions). A banned user may only preview a
// world-readable room.
func (s *Service) mayPreview(user spec.UserID, r *liveRoom) bool {
	snap := r.cur.Load()
	m := snap.membership(user)
	if m == spec.Join || m == spec.Invite || r.worldReadableNow() {
		return true
	}
	if m == spec.Ban {
		return false
	}
	jr := snap.get(spec.MRoomJoinRules, "")
	if jr == nil {
		return false
	}
	switch jr.Content().Get("join_rule").String() {
	case "public", "knock", "knock_restricted":
		return true
	case "restricted":
		for _, a := range jr.Content().Get("allow").Array() {
			if a.Get("type").String() == "m.room_membership" && s.Membership(user, spec.RoomID(a.Get("room_id").String())) == spec.Join {
				return true
			}
		}
	}
	return false
}

// mayPreviewAnonymously reports whether a room's summary may be given
// without an access token: public or knockable rooms, and world-readable
// ones (room summary endpoint).
func mayPreviewAnonymously(r *liveRoom) bool {
	if r.worldReadableNow() {
		return true
	}
	jr := r.cur.Load().get(spec.MRoomJoinRules, "")
	if jr == nil {
		return false
	}
	switch jr.Content().Get("join_rule").String() {
	case "public", "knock", "knock_restricted":
		return true
	}
	return false
}

// RoomSummary is the room summary endpoint's answer.
type RoomSummary struct {
	RoomInfo
	Membership string `json:"membership,omitempty"`
}

// Summary describes a room for a user (user "" for an anonymous caller).
// Rooms they may not preview get the same 404 as unknown rooms.
func (s *Service) Summary(user spec.UserID, room spec.RoomID) (*RoomSummary, error) {
	r := s.room(room)
	if r == nil || (user == "" && !mayPreviewAnonymously(r)) || (user != "" && !s.mayPreview(user, r)) {
		return nil, spec.NotFound("room not found")
	}
	out := &RoomSummary{RoomInfo: describeRoom(r)}
	if user != "" {
		out.Membership = r.cur.Load().membership(user)
		if out.Membership == "" {
			out.Membership = spec.Leave
		}
	}
	return out, nil
}

// HierarchyQuery is what GET /hierarchy asks for.
type HierarchyQuery struct {
	MaxDepth      int
	Limit         int
	SuggestedOnly bool
	From          string
}

// HierarchyRoom is one room of the hierarchy.
type HierarchyRoom struct {
	RoomInfo
	ChildrenState []json.RawMessage `json:"children_state"`
}

// HierarchyPage is one page of the hierarchy.
type HierarchyPage struct {
	Rooms []HierarchyRoom
	Next  string
}

// Hierarchy limits: defaults and maxima the server applies.
const (
	defaultHierarchyDepth = 10
	maxHierarchyDepth     = 25
	defaultHierarchyLimit = 50
	maxHierarchyLimit     = 100
	maxSpaceChildren      = 1000
)

// hierarchyToken is "h<offset>.<max_depth>.<suggested_only>.<root>": the
// walk is deterministic for unchanged state, so a page is the walk with the
// first offset rooms skipped. The token binds the parameters that may not
// change between pages and the root (as a short hash).
func hierarchyToken(offset int, q HierarchyQuery, root spec.RoomID) string {
	sug := 0
	if q.SuggestedOnly {
		sug = 1
	}
	return fmt.Sprintf("h%d.%d.%d.%s", offset, q.MaxDepth, sug, rootTag(root))
}

func rootTag(root spec.RoomID) string {
	sum := sha256.Sum256([]byte(root))
	return hex.EncodeToString(sum[:6])
}

func parseHierarchyToken(tok string, q HierarchyQuery, root spec.RoomID) (int, error) {
	bad := spec.InvalidParam("unknown pagination token")
	if len(tok) < 2 || tok[0] != 'h' {
		return 0, bad
	}
	parts := strings.Split(tok[1:], ".")
	if len(parts) != 4 {
		return 0, bad
	}
	offset, err1 := strconv.Atoi(parts[0])
	depth, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || offset < 0 || (parts[2] != "0" && parts[2] != "1") || parts[3] != rootTag(root) {
		return 0, bad
	}
	if depth != q.MaxDepth || (parts[2] == "1") != q.SuggestedOnly {
		return 0, spec.InvalidParam("suggested_only and max_depth cannot change on paginated requests")
	}
	return offset, nil
}

// spaceChild is one valid m.space.child of a space.
type spaceChild struct {
	ev    *events.PDU
	room  spec.RoomID
	order string // "" when absent or invalid
}

// spaceChildren returns the valid children of a space in the spec's order
// ("Ordering of children within a space"): children with a valid order
// first, by order; then by the child event's origin_server_ts; then by room
// ID. A child event without a non-empty via list is a removed child.
func spaceChildren(r *liveRoom, suggestedOnly bool) []spaceChild {
	var out []spaceChild
	for k, ev := range r.cur.Load().state.All() {
		if k.Type != spec.MSpaceChild {
			continue
		}
		room, err := spec.ParseRoomID(k.StateKey)
		if err != nil {
			continue
		}
		c := ev.Content()
		via := c.Get("via")
		if !via.IsArray() || len(via.Array()) == 0 {
			continue
		}
		if suggestedOnly && c.Get("suggested").Type != gjson.True {
			continue
		}
		sc := spaceChild{ev: ev, room: room}
		if o := c.Get("order"); o.Type == gjson.String && validOrder(o.Str) {
			sc.order = o.Str
		}
		out = append(out, sc)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (a.order != "") != (b.order != "") {
			return a.order != ""
		}
		if a.order != b.order {
			return a.order < b.order
		}
		if a.ev.OriginServerTS() != b.ev.OriginServerTS() {
			return a.ev.OriginServerTS() < b.ev.OriginServerTS()
		}
		return a.room < b.room
	})
	if len(out) > maxSpaceChildren {
		out = out[:maxSpaceChildren]
	}
	return out
}

// validOrder: at most 50 characters, each in \x20–\x7E (m.space.child).
func validOrder(s string) bool {
	if s == "" || len(s) > 50 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7E {
			return false
		}
	}
	return true
}

// childState renders an m.space.child event as stripped state with its
// origin_server_ts.
func childState(p *events.PDU) json.RawMessage {
	sk, _ := p.StateKey()
	b, _ := json.Marshal(map[string]any{
		"content":          json.RawMessage(p.Content().Raw),
		"origin_server_ts": p.OriginServerTS(),
		"sender":           p.Sender(),
		"state_key":        sk,
		"type":             p.Type(),
	})
	return b
}

// Hierarchy walks the space tree from root depth first, each room before its
// children, children in the spec's order. Rooms are listed once, which is
// also how cycles end; rooms the user may not preview are left out and not
// walked into; rooms this server does not know (no federation) are skipped.
func (s *Service) Hierarchy(ctx context.Context, user spec.UserID, root spec.RoomID, q HierarchyQuery) (*HierarchyPage, error) {
	r := s.room(root)
	if r == nil || !s.mayPreview(user, r) {
		return nil, spec.Forbidden("you may not view room %s", root)
	}
	offset := 0
	if q.From != "" {
		n, err := parseHierarchyToken(q.From, q, root)
		if err != nil {
			return nil, err
		}
		offset = n
	}
	type entry struct {
		room  spec.RoomID
		depth int
	}
	stack := []entry{{root, 0}}
	seen := map[spec.RoomID]bool{}
	page := &HierarchyPage{Rooms: []HierarchyRoom{}}
	emitted := 0
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[e.room] {
			continue
		}
		seen[e.room] = true
		cr := s.room(e.room)
		if cr == nil || (e.room != root && !s.mayPreview(user, cr)) {
			continue
		}
		if len(page.Rooms) == q.Limit {
			page.Next = hierarchyToken(offset+q.Limit, q, root)
			break
		}
		info := describeRoom(cr)
		var children []spaceChild
		if info.RoomType == "m.space" {
			children = spaceChildren(cr, q.SuggestedOnly)
		}
		if emitted >= offset {
			hr := HierarchyRoom{RoomInfo: info, ChildrenState: []json.RawMessage{}}
			for _, c := range children {
				hr.ChildrenState = append(hr.ChildrenState, childState(c.ev))
			}
			page.Rooms = append(page.Rooms, hr)
		}
		emitted++
		if e.depth < q.MaxDepth {
			for i := len(children) - 1; i >= 0; i-- {
				if !seen[children[i].room] {
					stack = append(stack, entry{children[i].room, e.depth + 1})
				}
			}
		}
	}
	return page, nil
}

// optionalAuth authenticates requests that carry an access token and lets
// the others through anonymously (auth.DeviceFrom is then nil).
func optionalAuth(requireAuth gin.HandlerFunc) gin.HandlerFunc {
	return func(c *gin.Context) {
		if requireAuth != nil && (c.GetHeader("Authorization") != "" || c.Query("access_token") != "") {
			requireAuth(c)
			return
		}
		c.Next()
	}
}

// GET /_matrix/client/v1/room_summary/{roomIdOrAlias}: a room's summary,
// without an access token for public, knockable and world-readable rooms.
func (h *handlers) roomSummary(c *gin.Context) error {
	var user spec.UserID
	if dev := auth.DeviceFrom(c); dev != nil {
		user = dev.UserID
	}
	idOrAlias := c.Param("roomIdOrAlias")
	var room spec.RoomID
	if strings.HasPrefix(idOrAlias, "#") {
		alias, err := spec.ParseRoomAlias(idOrAlias)
		if err != nil {
			return spec.InvalidParam("room alias: %v", err)
		}
		if room, err = h.s.ResolveAlias(c.Request.Context(), alias); err != nil {
			return err
		}
		if room == "" {
			return spec.NotFound("room not found")
		}
	} else {
		var err error
		if room, err = spec.ParseRoomID(idOrAlias); err != nil {
			return spec.InvalidParam("room ID or alias: %v", err)
		}
	}
	sum, err := h.s.Summary(user, room)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, sum)
	return nil
}

// GET /_matrix/client/v1/rooms/{roomId}/hierarchy: a page of the space tree.
func (h *handlers) hierarchy(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	room, err := roomIDParam(c)
	if err != nil {
		return err
	}
	q := HierarchyQuery{MaxDepth: defaultHierarchyDepth, Limit: defaultHierarchyLimit, From: c.Query("from")}
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return spec.InvalidParam("limit must be an integer greater than zero")
		}
		q.Limit = min(n, maxHierarchyLimit)
	}
	if v := c.Query("max_depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return spec.InvalidParam("max_depth must be a non-negative integer")
		}
		q.MaxDepth = min(n, maxHierarchyDepth)
	}
	switch c.Query("suggested_only") {
	case "", "false":
	case "true":
		q.SuggestedOnly = true
	default:
		return spec.InvalidParam("suggested_only must be true or false")
	}
	page, err := h.s.Hierarchy(c.Request.Context(), dev.UserID, room, q)
	if err != nil {
		return err
	}
	resp := gin.H{"rooms": page.Rooms}
	if page.Next != "" {
		resp["next_batch"] = page.Next
	}
	c.JSON(http.StatusOK, resp)
	return nil
}
