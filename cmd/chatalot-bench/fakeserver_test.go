package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A fake homeserver, small and in memory, that answers exactly the requests
// the benchmark makes. The tests run it as a separate process (the test
// binary re-executed with fakeServerEnv set), because the benchmark measures
// a process through /proc. fakeDupEnv makes it deliver every 7th message
// twice in /sync, to prove the benchmark notices.
const (
	fakeServerEnv = "CHATALOT_BENCH_FAKE_SERVER"
	fakeDupEnv    = "CHATALOT_BENCH_FAKE_DUP"
)

type fakeEvent struct {
	pos  int
	room string
	json map[string]any
}

type fakeServer struct {
	mu      sync.Mutex
	wake    chan struct{} // closed and replaced at every new event
	tokens  map[string]string
	events  []*fakeEvent               // every event; pos is the index + 1
	members map[string]map[string]bool // room → joined users
	nextID  int
	dup     bool
}

func runFakeServer() {
	listen := "127.0.0.1:0"
	for i, a := range os.Args {
		if a == "--listen" && i+1 < len(os.Args) {
			listen = os.Args[i+1]
		}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := &fakeServer{wake: make(chan struct{}), tokens: map[string]string{},
		members: map[string]map[string]bool{}, dup: os.Getenv(fakeDupEnv) != ""}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("OK")) })
	mux.HandleFunc("POST /_matrix/client/v3/register", s.register)
	mux.HandleFunc("POST /_matrix/client/v3/createRoom", s.auth(s.createRoom))
	mux.HandleFunc("POST /_matrix/client/v3/join/{room}", s.auth(s.join))
	mux.HandleFunc("PUT /_matrix/client/v3/rooms/{room}/send/{type}/{txn}", s.auth(s.send))
	mux.HandleFunc("GET /_matrix/client/v3/sync", s.auth(s.sync))
	mux.HandleFunc("GET /_matrix/client/v3/rooms/{room}/messages", s.auth(s.messages))
	mux.HandleFunc("POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync", s.auth(s.slidingSync))
	json.NewEncoder(os.Stderr).Encode(map[string]string{"level": "info", "listen": ln.Addr().String(), "message": "Chatalot is serving"})
	go http.Serve(ln, mux)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	<-sigs
	os.Exit(0)
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (s *fakeServer) auth(h func(w http.ResponseWriter, r *http.Request, user string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		user := s.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		s.mu.Unlock()
		if user == "" {
			w.WriteHeader(401)
			reply(w, map[string]string{"errcode": "M_UNKNOWN_TOKEN"})
			return
		}
		h(w, r, user)
	}
}

func (s *fakeServer) register(w http.ResponseWriter, r *http.Request) {
	var in struct{ Username string }
	json.NewDecoder(r.Body).Decode(&in)
	user := "@" + in.Username + ":localhost"
	s.mu.Lock()
	s.nextID++
	tok := "tok" + strconv.Itoa(s.nextID)
	s.tokens[tok] = user
	s.mu.Unlock()
	reply(w, map[string]string{"user_id": user, "access_token": tok})
}

// appendEvent adds an event; the caller holds s.mu.
func (s *fakeServer) appendEvent(room string, ev map[string]any) string {
	id := fmt.Sprintf("$e%d", len(s.events)+1)
	ev["event_id"] = id
	s.events = append(s.events, &fakeEvent{pos: len(s.events) + 1, room: room, json: ev})
	close(s.wake)
	s.wake = make(chan struct{})
	return id
}

func memberEvent(user string) map[string]any {
	return map[string]any{"type": "m.room.member", "sender": user, "state_key": user, "content": map[string]any{"membership": "join"}}
}

func (s *fakeServer) createRoom(w http.ResponseWriter, r *http.Request, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	room := fmt.Sprintf("!r%d:localhost", s.nextID)
	s.members[room] = map[string]bool{user: true}
	s.appendEvent(room, map[string]any{"type": "m.room.create", "sender": user, "state_key": "", "content": map[string]any{}})
	s.appendEvent(room, memberEvent(user))
	reply(w, map[string]string{"room_id": room})
}

func (s *fakeServer) join(w http.ResponseWriter, r *http.Request, user string) {
	room := r.PathValue("room")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.members[room] == nil {
		w.WriteHeader(404)
		reply(w, map[string]string{"errcode": "M_NOT_FOUND"})
		return
	}
	s.members[room][user] = true
	s.appendEvent(room, memberEvent(user))
	reply(w, map[string]string{"room_id": room})
}

func (s *fakeServer) send(w http.ResponseWriter, r *http.Request, user string) {
	var content map[string]any
	json.NewDecoder(r.Body).Decode(&content)
	room := r.PathValue("room")
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.members[room][user] {
		w.WriteHeader(403)
		reply(w, map[string]string{"errcode": "M_FORBIDDEN"})
		return
	}
	id := s.appendEvent(room, map[string]any{"type": r.PathValue("type"), "sender": user, "content": content})
	reply(w, map[string]string{"event_id": id})
}

func (s *fakeServer) sync(w http.ResponseWriter, r *http.Request, user string) {
	var f struct {
		Room struct {
			Timeline struct{ Limit int }
			State    struct {
				LazyLoadMembers bool `json:"lazy_load_members"`
			}
		}
	}
	f.Room.Timeline.Limit = 10
	if v := r.URL.Query().Get("filter"); v != "" {
		json.Unmarshal([]byte(v), &f)
	}
	since, _ := strconv.Atoi(r.URL.Query().Get("since"))
	timeout, _ := strconv.Atoi(r.URL.Query().Get("timeout"))
	deadline := time.After(time.Duration(timeout) * time.Millisecond)
	for {
		s.mu.Lock()
		join, next := s.delta(user, since, f.Room.Timeline.Limit, f.Room.State.LazyLoadMembers)
		wake := s.wake
		s.mu.Unlock()
		if len(join) > 0 && since > 0 || since == 0 || timeout == 0 {
			reply(w, map[string]any{"next_batch": strconv.Itoa(next), "rooms": map[string]any{"join": join}})
			return
		}
		select {
		case <-wake:
		case <-deadline:
			timeout = 0
		case <-r.Context().Done():
			return
		}
	}
}

// delta builds rooms.join for events after since; the caller holds s.mu.
func (s *fakeServer) delta(user string, since, limit int, lazy bool) (map[string]any, int) {
	type acc struct{ timeline, state []map[string]any }
	rooms := map[string]*acc{}
	for _, e := range s.events[since:] {
		if !s.members[e.room][user] {
			continue
		}
		a := rooms[e.room]
		if a == nil {
			a = &acc{}
			rooms[e.room] = a
		}
		a.timeline = append(a.timeline, e.json)
		if s.dup && e.pos%7 == 0 && e.json["type"] == "m.room.message" {
			a.timeline = append(a.timeline, e.json)
		}
	}
	join := map[string]any{}
	for room, a := range rooms {
		limited := len(a.timeline) > limit
		if limited {
			a.timeline = a.timeline[len(a.timeline)-limit:]
		}
		if since == 0 { // initial: the members as state
			for m := range s.members[room] {
				if !lazy || slices.ContainsFunc(a.timeline, func(ev map[string]any) bool { return ev["sender"] == m }) {
					a.state = append(a.state, memberEvent(m))
				}
			}
		}
		join[room] = map[string]any{
			"timeline": map[string]any{"events": a.timeline, "limited": limited, "prev_batch": "x"},
			"state":    map[string]any{"events": a.state},
		}
	}
	return join, len(s.events)
}

func (s *fakeServer) messages(w http.ResponseWriter, r *http.Request, user string) {
	room := r.PathValue("room")
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	s.mu.Lock()
	defer s.mu.Unlock()
	var chunk []map[string]any
	end := 0
	for i := min(from, len(s.events)) - 1; i >= 0 && len(chunk) < limit; i-- {
		if s.events[i].room == room {
			chunk = append(chunk, s.events[i].json)
			end = i // the next page starts below this event
		}
	}
	out := map[string]any{"chunk": chunk, "start": strconv.Itoa(from)}
	if len(chunk) == limit {
		out["end"] = strconv.Itoa(end)
	}
	reply(w, out)
}
