package rooms

import (
	"context"
	"net/http"
	"sort"
	"strconv"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Threads (client-server API, "Threading"): a thread is a root event and
// the events that point at it with rel_type m.thread. The thread list is
// read from event_relations; which threads a user sees, and in which order,
// depends on the thread events they may see.

// threadToken is the thread list's pagination token: "t<position>", the
// position of the latest event of the last thread returned. Tokens of other
// endpoints ("s…") are refused.
type threadToken int64

func (t threadToken) String() string { return "t" + strconv.FormatInt(int64(t), 10) }

func parseThreadToken(s string) (threadToken, error) {
	if len(s) < 2 || s[0] != 't' {
		return 0, spec.InvalidParam("unknown pagination token")
	}
	n, err := strconv.ParseInt(s[1:], 10, 64)
	if err != nil || n < 0 {
		return 0, spec.InvalidParam("unknown pagination token")
	}
	return threadToken(n), nil
}

// ThreadsPage is one page of thread roots, latest activity first.
type ThreadsPage struct {
	Roots []*Event
	Next  *threadToken
}

// ThreadsQuery is which page of a room's threads /threads asks for.
type ThreadsQuery struct {
	Participated bool         // only threads the user started or replied in
	From         *threadToken // nil: from the latest
	Limit        int          // clamped to 1..100
}

// Threads lists the room's thread roots the user may see, ordered by the
// latest thread event they may see.
func (s *Service) Threads(ctx context.Context, user spec.UserID, room spec.RoomID, q ThreadsQuery) (*ThreadsPage, error) {
	a, err := s.readAccess(user, room)
	if err != nil {
		return nil, err
	}
	limit := min(max(q.Limit, 1), 100)
	rows, err := scanChildren(ctx, s, `SELECT `+childColumns+` WHERE room_id = $1 AND rel_type = 'm.thread' ORDER BY position`, string(room))
	if err != nil {
		return nil, err
	}
	type thread struct {
		root         spec.EventID
		latest       int64
		participated bool
	}
	byRoot := map[spec.EventID]*thread{}
	for _, c := range rows {
		if c.position > a.upTo || !a.r.canSeePlain(user, c.position) {
			continue
		}
		t := byRoot[c.parent]
		if t == nil {
			t = &thread{root: c.parent}
			byRoot[c.parent] = t
		}
		t.latest = c.position
		if c.sender == user {
			t.participated = true
		}
	}
	list := make([]*thread, 0, len(byRoot))
	for _, t := range byRoot {
		if q.From == nil || t.latest < int64(*q.From) {
			list = append(list, t)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].latest > list[j].latest })
	page := &ThreadsPage{}
	for i, t := range list {
		if len(page.Roots) == limit {
			next := threadToken(list[i-1].latest)
			page.Next = &next
			break
		}
		root, err := s.eventByID(ctx, t.root)
		if err != nil {
			return nil, err
		}
		// The root must be an event of this room the user may see.
		if root == nil || root.PDU.RoomID() != room || root.Position > a.upTo || !a.r.canSee(user, root) {
			continue
		}
		if q.Participated && !t.participated && root.PDU.Sender() != user {
			continue
		}
		page.Roots = append(page.Roots, root)
	}
	return page, nil
}

// GET /_matrix/client/v1/rooms/{roomId}/threads: the room's threads, most
// recently active first, each root with its thread summary bundled.
func (h *handlers) threads(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	room, err := roomIDParam(c)
	if err != nil {
		return err
	}
	q := ThreadsQuery{Limit: 10}
	switch c.Query("include") {
	case "", "all":
	case "participated":
		q.Participated = true
	default:
		return spec.InvalidParam("include must be all or participated")
	}
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return spec.InvalidParam("limit must be an integer greater than zero")
		}
		q.Limit = n
	}
	if v := c.Query("from"); v != "" {
		t, err := parseThreadToken(v)
		if err != nil {
			return err
		}
		q.From = &t
	}
	page, err := h.s.Threads(c.Request.Context(), dev.UserID, room, q)
	if err != nil {
		return err
	}
	chunk, err := h.renderFor(c, page.Roots)
	if err != nil {
		return err
	}
	resp := gin.H{"chunk": chunk}
	if page.Next != nil {
		resp["next_batch"] = page.Next.String()
	}
	c.JSON(http.StatusOK, resp)
	return nil
}
