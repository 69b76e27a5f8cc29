package admin

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Policy is the part of admin that auth and rooms consult as they act:
// account flags (locked, suspended), blocked rooms and server-notices rooms,
// and, with IP logging on, the last connection of each session. It lives in
// memory (the auth middleware and the rooms guard ask on every request or
// membership change and must not read the database to answer) and is built
// from admin's own tables before auth and rooms, so that both are given it
// at construction; the admin Service, built after them, changes it.
type Policy struct {
	users *auth.UserReader // is a target being deactivated (GuardMembership)
	logIP bool

	mu          sync.RWMutex
	flags       map[spec.UserID]userFlags
	blocked     map[spec.RoomID]spec.UserID
	noticeRooms map[spec.UserID]spec.RoomID
	noticeRoom  map[spec.RoomID]spec.UserID                       // the reverse index
	eraser      func(ctx context.Context, user spec.UserID) error // the Service's erasure (erase.go)

	connMu sync.Mutex
	conns  map[spec.UserID]map[string]connection // whois with IP logging on
}

// NewPolicy loads the policy from admin's tables (migrated with Schema).
// logIPAddresses is Config.LogIPAddresses.
func NewPolicy(ctx context.Context, db *storage.DB, logIPAddresses bool) (*Policy, error) {
	p := &Policy{
		users: auth.NewUserReader(db), logIP: logIPAddresses,
		noticeRoom: map[spec.RoomID]spec.UserID{},
		conns:      map[spec.UserID]map[string]connection{},
	}
	var err error
	if p.flags, err = loadFlags(ctx, db); err != nil {
		return nil, fmt.Errorf("admin: load account flags: %w", err)
	}
	if p.blocked, err = loadBlocked(ctx, db); err != nil {
		return nil, fmt.Errorf("admin: load blocked rooms: %w", err)
	}
	if p.noticeRooms, err = loadNoticeRooms(ctx, db); err != nil {
		return nil, fmt.Errorf("admin: load server-notices rooms: %w", err)
	}
	for u, r := range p.noticeRooms {
		p.noticeRoom[r] = u
	}
	return p, nil
}

// ForRequests is the policy auth applies to requests and logins
// (auth.AccessPolicy). It is built after rooms, whose stored events tell
// whether a suspended account redacts its own event (nil: it may not).
func (p *Policy) ForRequests(events StoredEvents) auth.AccessPolicy {
	return requestPolicy{p: p, events: events}
}

type requestPolicy struct {
	p      *Policy
	events StoredEvents
}

// CheckRequest implements auth.AccessPolicy.
func (r requestPolicy) CheckRequest(c *gin.Context, dev *auth.Device) error {
	if r.p.logIP {
		r.p.remember(dev, c.ClientIP(), c.Request.UserAgent())
	}
	f := r.p.flagsOf(dev.UserID)
	if f.Locked && !isLogout(c.FullPath()) {
		return errLocked()
	}
	if f.Suspended && suspendedMayNot(c, dev.UserID, r.events) {
		return errSuspended()
	}
	return nil
}

// CheckLogin implements auth.AccessPolicy: a locked account gets no new
// access token.
func (r requestPolicy) CheckLogin(_ context.Context, user spec.UserID) error {
	if r.p.flagsOf(user).Locked {
		return errLocked()
	}
	return nil
}

// GuardMembership is the rooms package's membership guard: nobody joins,
// knocks on or is invited to a blocked room, and a user cannot reject the
// invite to their server-notices room (M_CANNOT_LEAVE_SERVER_NOTICE_ROOM,
// as the spec asks) unless their account is being deactivated.
func (p *Policy) GuardMembership(ctx context.Context, room spec.RoomID, sender, target spec.UserID, membership, current string) error {
	p.mu.RLock()
	_, blocked := p.blocked[room]
	owner, notices := p.noticeRoom[room]
	p.mu.RUnlock()
	switch membership {
	case spec.Join, spec.Knock, spec.Invite:
		if blocked {
			return spec.Forbidden("this room has been blocked on this server")
		}
	case spec.Leave:
		if notices && owner == target && sender == target && current == spec.Invite {
			if gone, err := p.users.IsDeactivated(ctx, target); err == nil && gone {
				return nil
			}
			return spec.NewError(spec.ErrCannotLeaveServerNotice, "the server notices room cannot be rejected")
		}
	}
	return nil
}

func (p *Policy) flagsOf(user spec.UserID) userFlags {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.flags[user]
}

// updateFlags changes one flag in memory (call after the commit).
func (p *Policy) updateFlags(user spec.UserID, f func(*userFlags)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fl := p.flags[user]
	f(&fl)
	p.flags[user] = fl
}

// connection is the last address and user agent a session used, kept in
// memory only and only when the admin turned IP logging on.
type connection struct {
	IP        string
	UserAgent string
	LastSeen  int64
}

func (p *Policy) remember(dev *auth.Device, ip, ua string) {
	if len(ua) > 512 {
		ua = ua[:512]
	}
	p.connMu.Lock()
	defer p.connMu.Unlock()
	m := p.conns[dev.UserID]
	if m == nil {
		m = map[string]connection{}
		p.conns[dev.UserID] = m
	}
	m[dev.DeviceID] = connection{IP: ip, UserAgent: ua, LastSeen: time.Now().UnixMilli()}
}

func (p *Policy) connection(user spec.UserID, device string) (connection, bool) {
	if !p.logIP {
		return connection{}, false
	}
	p.connMu.Lock()
	defer p.connMu.Unlock()
	c, ok := p.conns[user][device]
	return c, ok
}

func (p *Policy) forgetConnections(user spec.UserID) {
	p.connMu.Lock()
	delete(p.conns, user)
	p.connMu.Unlock()
}
