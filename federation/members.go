package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/gin-gonic/gin"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
)

// Invites, leaves, knocks and queries: the inbound handlers (rooms decides,
// as for joins) and the client side Peers gives rooms (rooms.RemoteMembers).

func (s *Service) memberRoutes(f *gin.RouterGroup) {
	f.PUT("/v2/invite/:roomId/:eventId", api.Handle(s.invite))
	f.GET("/v1/make_leave/:roomId/:userId", api.Handle(s.makeMember(spec.Leave)))
	f.PUT("/v2/send_leave/:roomId/:eventId", api.Handle(s.sendMember(spec.Leave)))
	f.GET("/v1/make_knock/:roomId/:userId", api.Handle(s.makeMember(spec.Knock)))
	f.PUT("/v1/send_knock/:roomId/:eventId", api.Handle(s.sendMember(spec.Knock)))
	f.GET("/v1/query/directory", api.Handle(s.queryDirectory))
	f.GET("/v1/query/profile", api.Handle(s.queryProfile))
}

// PUT /_matrix/federation/v2/invite/{roomId}/{eventId}: sign an invite of
// a user of this server.
func (s *Service) invite(c *gin.Context) error {
	room, err := spec.ParseRoomID(param(c, "roomId"))
	if err != nil {
		return spec.InvalidParam("room ID: %v", err)
	}
	var body struct {
		RoomVersion spec.RoomVersion  `json:"room_version"`
		Event       json.RawMessage   `json:"event"`
		State       []json.RawMessage `json:"invite_room_state"`
	}
	if err := api.ReadJSON(c, &body); err != nil {
		return err
	}
	if body.RoomVersion == "" || len(body.Event) == 0 {
		return spec.MissingParam("room_version and event are required")
	}
	signed, err := s.rooms.ReceiveInvite(c.Request.Context(), spec.ServerName(Origin(c)), room, spec.EventID(param(c, "eventId")),
		body.RoomVersion, body.Event, body.State, s.keys)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"event": json.RawMessage(signed)})
	return nil
}

// GET /_matrix/federation/v1/make_leave/{roomId}/{userId} and
// GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=…
func (s *Service) makeMember(membership string) func(*gin.Context) error {
	return func(c *gin.Context) error {
		room, err := spec.ParseRoomID(param(c, "roomId"))
		if err != nil {
			return spec.InvalidParam("room ID: %v", err)
		}
		user, err := spec.ParseUserID(param(c, "userId"))
		if err != nil {
			return spec.InvalidParam("user ID: %v", err)
		}
		if string(user.Server()) != Origin(c) {
			return spec.Forbidden("a server asks for its own users only")
		}
		var vers []spec.RoomVersion
		for _, v := range c.QueryArray("ver") {
			vers = append(vers, spec.RoomVersion(v))
		}
		if membership == spec.Knock && len(vers) == 0 {
			return spec.MissingParam("make_knock needs the versions the server supports (ver)")
		}
		tmpl, v, err := s.rooms.MakeMember(c.Request.Context(), room, user, membership, vers)
		if err != nil {
			return err
		}
		c.JSON(http.StatusOK, gin.H{"event": json.RawMessage(tmpl), "room_version": v})
		return nil
	}
}

// PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId} and
// PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}
func (s *Service) sendMember(membership string) func(*gin.Context) error {
	return func(c *gin.Context) error {
		room, err := spec.ParseRoomID(param(c, "roomId"))
		if err != nil {
			return spec.InvalidParam("room ID: %v", err)
		}
		body, err := api.ReadBody(c, 0)
		if err != nil {
			return err
		}
		state, err := s.rooms.SendMember(c.Request.Context(), spec.ServerName(Origin(c)), room, spec.EventID(param(c, "eventId")), body, membership, s.keys)
		if err != nil {
			return err
		}
		if membership == spec.Knock {
			c.JSON(http.StatusOK, gin.H{"knock_room_state": state})
			return nil
		}
		c.JSON(http.StatusOK, gin.H{})
		return nil
	}
}

// GET /_matrix/federation/v1/query/directory?room_alias=
func (s *Service) queryDirectory(c *gin.Context) error {
	alias, err := spec.ParseRoomAlias(c.Query("room_alias"))
	if err != nil {
		return spec.InvalidParam("room_alias: %v", err)
	}
	if alias.Server() != s.name {
		return spec.NotFound("room alias %s is not of this server", alias)
	}
	room, servers, err := s.rooms.LookupAlias(c.Request.Context(), alias)
	if err != nil {
		return err
	}
	if room == "" {
		return spec.NotFound("room alias %s not found", alias)
	}
	c.JSON(http.StatusOK, gin.H{"room_id": room, "servers": servers})
	return nil
}

// GET /_matrix/federation/v1/query/profile?user_id=&field=
func (s *Service) queryProfile(c *gin.Context) error {
	user, err := spec.ParseUserID(c.Query("user_id"))
	if err != nil {
		return spec.InvalidParam("user_id: %v", err)
	}
	field := c.Query("field")
	if field != "" && field != "displayname" && field != "avatar_url" {
		return spec.InvalidParam("field must be displayname or avatar_url")
	}
	if user.Server() != s.name || s.profiles == nil {
		return spec.NotFound("no such user on this server")
	}
	if s.cfg.ProfilesToRoomMates && !s.sharesRoomWithServer(user, spec.ServerName(Origin(c))) {
		// As GET /profile answers local users: unwilling to disclose.
		return spec.Forbidden("no user of %s shares a room with this user", Origin(c))
	}
	name, avatar, err := s.profiles.Profile(c.Request.Context(), user)
	if err != nil {
		return err
	}
	out := gin.H{}
	if name != "" && field != "avatar_url" {
		out["displayname"] = name
	}
	if avatar != "" && field != "displayname" {
		out["avatar_url"] = avatar
	}
	c.JSON(http.StatusOK, out)
	return nil
}

// sharesRoomWithServer reports whether a user of srv is joined to a room
// the user is joined to.
func (s *Service) sharesRoomWithServer(user spec.UserID, srv spec.ServerName) bool {
	for _, u := range s.rooms.UsersSharingRoomsWith(user) {
		if u.Server() == srv {
			return true
		}
	}
	return false
}

// The client side (rooms.RemoteMembers).

// Invite asks srv to sign an invite of one of its users (invite v2).
func (p *Peers) Invite(ctx context.Context, srv spec.ServerName, v spec.RoomVersion, invite *events.PDU, state []json.RawMessage) (json.RawMessage, error) {
	body, err := json.Marshal(map[string]any{"room_version": v, "event": json.RawMessage(invite.JSON()), "invite_room_state": state})
	if err != nil {
		return nil, err
	}
	path := "/_matrix/federation/v2/invite/" + url.PathEscape(string(invite.RoomID())) + "/" + url.PathEscape(string(invite.EventID()))
	resp, err := p.request(ctx, http.MethodPut, srv, path, body)
	if err != nil {
		return nil, matrixError(err)
	}
	var out struct {
		Event json.RawMessage `json:"event"`
	}
	if err := json.Unmarshal(resp, &out); err != nil || len(out.Event) == 0 {
		return nil, badGateway("invite: %s answered no event", srv)
	}
	return out.Event, nil
}

// MakeMember asks srv for the template of user's leave or knock.
func (p *Peers) MakeMember(ctx context.Context, srv spec.ServerName, room spec.RoomID, user spec.UserID, membership string) (json.RawMessage, spec.RoomVersion, error) {
	path := "/_matrix/federation/v1/make_" + membership + "/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(user))
	if membership == spec.Knock {
		path += "?" + supportedVersions().Encode()
	}
	body, err := p.request(ctx, http.MethodGet, srv, path, nil)
	if err != nil {
		return nil, "", matrixError(err)
	}
	var mm struct {
		Event       json.RawMessage  `json:"event"`
		RoomVersion spec.RoomVersion `json:"room_version"`
	}
	if err := json.Unmarshal(body, &mm); err != nil {
		return nil, "", badGateway("make_%s: %v", membership, err)
	}
	if mm.RoomVersion == "" {
		mm.RoomVersion = "1"
	}
	return mm.Event, mm.RoomVersion, nil
}

// SendLeave sends a signed leave to srv (send_leave v2).
func (p *Peers) SendLeave(ctx context.Context, srv spec.ServerName, room spec.RoomID, leave *events.PDU) error {
	path := "/_matrix/federation/v2/send_leave/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(leave.EventID()))
	_, err := p.request(ctx, http.MethodPut, srv, path, leave.JSON())
	return matrixError(err)
}

// SendKnock sends a signed knock to srv (send_knock) and returns the
// room's state it answered.
func (p *Peers) SendKnock(ctx context.Context, srv spec.ServerName, room spec.RoomID, knock *events.PDU) ([]json.RawMessage, error) {
	path := "/_matrix/federation/v1/send_knock/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(knock.EventID()))
	body, err := p.request(ctx, http.MethodPut, srv, path, knock.JSON())
	if err != nil {
		return nil, matrixError(err)
	}
	var sk struct {
		State []json.RawMessage `json:"knock_room_state"`
	}
	if err := json.Unmarshal(body, &sk); err != nil {
		return nil, badGateway("send_knock: %v", err)
	}
	return sk.State, nil
}

// QueryDirectory resolves an alias of srv.
func (p *Peers) QueryDirectory(ctx context.Context, srv spec.ServerName, alias spec.RoomAlias) (spec.RoomID, []spec.ServerName, error) {
	body, err := p.request(ctx, http.MethodGet, srv, "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape(string(alias)), nil)
	var re *remoteError
	if errors.As(err, &re) && re.status == http.StatusNotFound {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, matrixError(err)
	}
	var d struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return "", nil, badGateway("query/directory: %v", err)
	}
	room, err := spec.ParseRoomID(d.RoomID)
	if err != nil {
		return "", nil, badGateway("query/directory: room ID: %v", err)
	}
	var servers []spec.ServerName
	for _, s := range d.Servers {
		if n, err := spec.ParseServerName(s); err == nil {
			servers = append(servers, n)
		}
	}
	return room, servers, nil
}

// QueryProfile asks a user's server for their profile (query/profile).
func (p *Peers) QueryProfile(ctx context.Context, user spec.UserID) (displayName, avatarURL string, err error) {
	if !p.Allowed(user.Server()) {
		return "", "", spec.NotFound("profile not found")
	}
	body, err := p.request(ctx, http.MethodGet, user.Server(), "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape(string(user)), nil)
	if err != nil {
		return "", "", matrixError(err)
	}
	var pr struct {
		DisplayName string `json:"displayname"`
		AvatarURL   string `json:"avatar_url"`
	}
	if err := json.Unmarshal(body, &pr); err != nil {
		return "", "", badGateway("query/profile: %v", err)
	}
	return pr.DisplayName, pr.AvatarURL, nil
}

// supportedVersions is the ver query of make_join and make_knock.
func supportedVersions() url.Values {
	q := url.Values{}
	for n := 1; spec.RoomVersion(fmt.Sprint(n)).Supported(); n++ {
		q.Add("ver", fmt.Sprint(n))
	}
	return q
}

// matrixError turns a remote server's refusal into a Matrix error for the
// client: its errcode and a 4xx status kept, anything else a 502.
func matrixError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*spec.Error); ok {
		return err
	}
	var re *remoteError
	if errors.As(err, &re) && re.status >= 400 && re.status < 500 {
		var body struct {
			Code    spec.ErrCode `json:"errcode"`
			Message string       `json:"error"`
		}
		if json.Unmarshal(re.body, &body) == nil && body.Code != "" {
			return spec.NewError(body.Code, "the remote server refused: %s", body.Message).WithStatus(re.status)
		}
	}
	return badGateway("%v", err)
}

func badGateway(format string, args ...any) error {
	return spec.NewError(spec.ErrUnknown, format, args...).WithStatus(http.StatusBadGateway)
}

var _ rooms.RemoteMembers = (*Peers)(nil)
