package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/rooms"
	"github.com/chatalot/chatalot/spec"
	"github.com/chatalot/chatalot/storage"
	"github.com/gin-gonic/gin"
)

// Server notices (client-server API "Server Notices"): each user has one
// server-notices room, created on the first notice by the system user
// (Config.NoticesUser, an account without a password created on first
// use), tagged m.server_notice, which the user is invited to, never joined
// to. The room is unencrypted: the server writes the notices itself, so
// there is nothing to hide from it, and clients need no keys to read them.
// Users cannot send in it (power level -10) nor reject its invite.

const noticesUserSetting = "server_notices_user"

// noticesUser returns the system user, creating it on first use.
func (s *Service) noticesUser(ctx context.Context) (spec.UserID, error) {
	id := spec.NewUserID(s.cfg.NoticesUser, s.server)
	have, err := s.setting(ctx, noticesUserSetting)
	if err != nil {
		return "", err
	}
	if have == string(id) {
		return id, nil
	}
	// The account and the setting that marks it as ours commit together.
	actx, _ := storage.Attach(ctx, func(tx *storage.Tx) error { return putSetting(tx, noticesUserSetting, string(id)) })
	if _, err := s.auth.CreateUser(actx, s.cfg.NoticesUser, "", false); err != nil {
		var me *spec.Error
		if errors.As(err, &me) && me.Code == spec.ErrUserInUse {
			return "", spec.Internal("the server notices user %s is an existing account; set server_notices_user to a free name", id)
		}
		return "", err
	}
	if err := s.auth.SetProfile(ctx, id, "displayname", s.cfg.NoticesRoomName); err != nil {
		s.log.Warn().Err(err).Msg("could not name the server notices user")
	}
	return id, nil
}

// noticeRoomFor returns the user's server-notices room, creating it or
// inviting the user again (after they left) as needed.
func (s *Service) noticeRoomFor(ctx context.Context, system, user spec.UserID) (spec.RoomID, error) {
	s.noticeMu.Lock()
	defer s.noticeMu.Unlock()
	s.mu.RLock()
	room, ok := s.noticeRooms[user]
	s.mu.RUnlock()
	if ok && s.rooms.Exists(room) {
		switch s.rooms.Membership(user, room) {
		case spec.Join, spec.Invite:
			return room, nil
		case spec.Ban:
			return "", spec.Forbidden("%s is banned from their server notices room", user)
		}
		if _, err := s.rooms.Change(ctx, rooms.Sender{User: system}, room, rooms.MembershipChange{Target: user, Membership: spec.Invite}); err != nil {
			return "", err
		}
		return room, nil
	}
	name := s.cfg.NoticesRoomName
	room, _, err := s.rooms.CreateRoom(ctx, system, rooms.CreateRequest{
		Preset: "private_chat", Name: &name, Invite: []string{string(user)}, Unencrypted: true,
		PowerLevelContentOverride: []byte(`{"users_default":-10}`),
	})
	if err != nil {
		return "", err
	}
	err = s.db.Write(ctx, func(tx *storage.Tx) error {
		if err := setNoticeRoom(tx, user, room); err != nil {
			return err
		}
		tx.AfterCommit(func() {
			s.mu.Lock()
			if old, had := s.noticeRooms[user]; had {
				delete(s.noticeRoom, old)
			}
			s.noticeRooms[user] = room
			s.noticeRoom[room] = user
			s.mu.Unlock()
		})
		return nil
	})
	if err != nil {
		return "", err
	}
	tag := json.RawMessage(`{"tags":{"m.server_notice":{"order":0}}}`)
	if err := s.auth.SetAccountData(ctx, user, room, "m.tag", tag); err != nil {
		s.log.Warn().Err(err).Msg("could not tag the server notices room")
	}
	return room, nil
}

// SendNotice sends a server notice to a local user from the notices
// account and returns its event ID; the notice's TxnID (with the admin)
// makes retries idempotent.
func (s *Service) SendNotice(ctx context.Context, who Actor, user spec.UserID, notice rooms.SendRequest) (spec.EventID, error) {
	ctx, finish := s.audit(ctx, who, "send_server_notice", string(user), map[string]any{"type": notice.Type}, nil)
	id, err := func() (spec.EventID, error) {
		system, err := s.noticesUser(ctx)
		if err != nil {
			return "", err
		}
		room, err := s.noticeRoomFor(ctx, system, user)
		if err != nil {
			return "", err
		}
		return s.rooms.Send(ctx, rooms.Sender{User: system, Device: "admin " + who.String()}, room, notice)
	}()
	return id, finish(err)
}

// POST /_synapse/admin/v1/send_server_notice and PUT
// /_synapse/admin/v1/send_server_notice/{txnId}: {"user_id", "content",
// "type" (default m.room.message), "state_key"}.
func (s *Service) sendNotice(c *gin.Context) error {
	var req struct {
		UserID   *string         `json:"user_id"`
		Content  json.RawMessage `json:"content"`
		Type     *string         `json:"type"`
		StateKey *string         `json:"state_key"`
	}
	if err := api.ReadJSON(c, &req); err != nil {
		return err
	}
	if req.UserID == nil {
		return spec.MissingParam("user_id is required")
	}
	if len(req.Content) == 0 || string(req.Content) == "null" {
		return spec.MissingParam("content is required")
	}
	content, err := events.CanonicalObject(req.Content)
	if err != nil {
		return err
	}
	user, err := spec.ParseUserID(*req.UserID)
	if err != nil || user.Server() != s.server {
		return spec.InvalidParam("server notices can only be sent to users of this server")
	}
	if active, err := s.auth.UserExists(c.Request.Context(), user); err != nil {
		return err
	} else if !active {
		return spec.NotFound("user %s not found", user)
	}
	typ := spec.MRoomMessage
	if req.Type != nil {
		typ = *req.Type
	}
	if typ == "" || typ == spec.MRoomCreate || typ == spec.MRoomMember || typ == spec.MRoomPowerLevels {
		return spec.InvalidParam("type %q cannot be sent as a server notice", typ)
	}
	id, err := s.SendNotice(c.Request.Context(), actor(c), user,
		rooms.SendRequest{Type: typ, StateKey: req.StateKey, TxnID: c.Param("txnId"), Content: content})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{"event_id": id})
	return nil
}
