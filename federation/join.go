package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/chatalot/chatalot/spec"
)

// JoinRemote implements rooms.RemoteJoiner: a local user joins a room this
// server does not know through one of the servers named, as the joining
// server of make_join and send_join. What the resident answers is checked
// and committed by rooms (CommitRemoteJoin).
func (s *Service) JoinRemote(ctx context.Context, user spec.UserID, room spec.RoomID, via []spec.ServerName, content map[string]json.RawMessage) error {
	// Events the resident sends meanwhile wait for the room (awaitJoin).
	done := s.joining(room)
	defer done()
	var last error = spec.NotFound("no server to join %s through", room)
	for _, srv := range via {
		if !s.Allowed(srv) {
			continue
		}
		err := s.joinVia(ctx, user, room, srv, content)
		if err == nil {
			return nil
		}
		s.log.Info().Str("room_id", string(room)).Str("via", string(srv)).Err(err).Msg("federation: join failed")
		last = err
	}
	if _, ok := last.(*spec.Error); !ok {
		return spec.NotFound("cannot join %s through %v: %v", room, via, last)
	}
	return last
}

func (s *Service) joinVia(ctx context.Context, user spec.UserID, room spec.RoomID, srv spec.ServerName, content map[string]json.RawMessage) error {
	q := url.Values{}
	for n := 1; spec.RoomVersion(fmt.Sprint(n)).Supported(); n++ {
		q.Add("ver", fmt.Sprint(n))
	}
	path := "/_matrix/federation/v1/make_join/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(user)) + "?" + q.Encode()
	body, err := s.request(ctx, http.MethodGet, srv, path, nil)
	if err != nil {
		return err
	}
	var mj struct {
		Event       json.RawMessage  `json:"event"`
		RoomVersion spec.RoomVersion `json:"room_version"`
	}
	if err := json.Unmarshal(body, &mj); err != nil {
		return fmt.Errorf("make_join: %w", err)
	}
	if mj.RoomVersion == "" {
		mj.RoomVersion = "1"
	}
	join, err := s.rooms.JoinFromTemplate(mj.Event, mj.RoomVersion, user, room, content)
	if err != nil {
		return err
	}
	path = "/_matrix/federation/v2/send_join/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(join.EventID()))
	body, err = s.request(ctx, http.MethodPut, srv, path, join.JSON())
	if err != nil {
		return err
	}
	var sj struct {
		State     []json.RawMessage `json:"state"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	if err := json.Unmarshal(body, &sj); err != nil {
		return fmt.Errorf("send_join: %w", err)
	}
	return s.rooms.CommitRemoteJoin(ctx, mj.RoomVersion, join, sj.State, sj.AuthChain, s.keys)
}

// joinWait bounds how long a transaction waits for a join in progress.
const joinWait = 30 * time.Second

// joining records a join of room in progress until done is called: the
// resident may send the room's next events before this server has stored
// the room, and they must not be dropped as events of an unknown room.
func (s *Service) joining(room spec.RoomID) (done func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.joins == nil {
		s.joins = map[spec.RoomID]chan struct{}{}
	}
	if _, ok := s.joins[room]; ok {
		return func() {} // another join of the room is in progress: it ends the wait
	}
	ch := make(chan struct{})
	s.joins[room] = ch
	return func() {
		s.mu.Lock()
		delete(s.joins, room)
		s.mu.Unlock()
		close(ch)
	}
}

// awaitJoin waits until a join of room in progress ends, if there is one.
func (s *Service) awaitJoin(ctx context.Context, room spec.RoomID) {
	s.mu.Lock()
	ch := s.joins[room]
	s.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case <-ch:
	case <-time.After(joinWait):
	case <-ctx.Done():
	}
}
