package oauth

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// The rendezvous for QR-code login (MSC4108 as revised by MSC4388): two
// devices of one person, the new one not signed in, exchange a few
// end-to-end encrypted messages through the server, after which the new
// one signs in with the device authorisation grant. The server only keeps
// the latest message of each session, in memory, and sees ciphertext.
// Sessions are bounded in size, lifetime and number, and creating one
// costs a registration attempt of the client's address (no token is
// needed: the new device has none).

const (
	pathRendezvous        = "/_matrix/client/unstable/io.element.msc4388/rendezvous"
	rendezvousMaxData     = 4096
	rendezvousLifetime    = 5 * time.Minute
	rendezvousMaxSessions = 1000
	featureRendezvous     = "io.element.msc4388"
)

// FeatureRendezvous is the unstable feature name of the rendezvous, for
// /versions.
const FeatureRendezvous = featureRendezvous

type rendezvousSession struct {
	data     string
	sequence int64
	expires  time.Time
}

// rendezvous is the sessions, apart from the authorisation server's state:
// its own lock, polled every second by two devices.
type rendezvous struct {
	mu       sync.Mutex
	sessions map[string]*rendezvousSession
}

func (s *Service) rendezvousRoutes(r *gin.Engine) {
	r.GET(pathRendezvous, api.Handle(s.rendezvousDiscovery))
	r.POST(pathRendezvous, api.Handle(s.rendezvousCreate))
	r.GET(pathRendezvous+"/:id", api.Handle(s.rendezvousGet))
	r.PUT(pathRendezvous+"/:id", api.Handle(s.rendezvousPut))
	r.DELETE(pathRendezvous+"/:id", api.Handle(s.rendezvousDelete))
}

type rendezvousBody struct {
	Data          *string `json:"data"`
	SequenceToken *string `json:"sequence_token"`
}

func readRendezvous(c *gin.Context, needToken bool) (rendezvousBody, error) {
	var b rendezvousBody
	if err := api.ReadJSON(c, &b); err != nil {
		return b, err
	}
	if b.Data == nil {
		return b, spec.MissingParam("data is required")
	}
	if len(*b.Data) > rendezvousMaxData {
		return b, spec.TooLarge("data is over %d bytes", rendezvousMaxData)
	}
	if needToken && b.SequenceToken == nil {
		return b, spec.MissingParam("sequence_token is required")
	}
	return b, nil
}

// GET …/rendezvous: whether sessions may be created here.
func (s *Service) rendezvousDiscovery(c *gin.Context) error {
	c.JSON(http.StatusOK, gin.H{"create_available": true})
	return nil
}

// POST …/rendezvous: a new session holding the first message.
func (s *Service) rendezvousCreate(c *gin.Context) error {
	if err := s.limiter.AllowIP(c, auth.RateRegister); err != nil {
		return err
	}
	b, err := readRendezvous(c, false)
	if err != nil {
		return err
	}
	id := newSecret()
	now := s.now()
	rv := &s.rendezvous
	rv.mu.Lock()
	for k, v := range rv.sessions {
		if now.After(v.expires) {
			delete(rv.sessions, k)
		}
	}
	if len(rv.sessions) >= rendezvousMaxSessions {
		rv.mu.Unlock()
		return spec.LimitExceeded(int64(time.Minute / time.Millisecond))
	}
	sess := &rendezvousSession{data: *b.Data, sequence: 1, expires: now.Add(rendezvousLifetime)}
	rv.sessions[id] = sess
	rv.mu.Unlock()
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{"id": id, "sequence_token": "1", "expires_in_ms": rendezvousLifetime.Milliseconds()})
	return nil
}

// lookup returns a live session; the caller holds rv.mu.
func (s *Service) rendezvousLookup(id string) (*rendezvousSession, error) {
	sess, ok := s.rendezvous.sessions[id]
	if !ok || s.now().After(sess.expires) {
		delete(s.rendezvous.sessions, id)
		return nil, spec.NotFound("no such rendezvous session, or it expired")
	}
	return sess, nil
}

// GET …/rendezvous/{id}: the latest message and its sequence token.
func (s *Service) rendezvousGet(c *gin.Context) error {
	rv := &s.rendezvous
	rv.mu.Lock()
	sess, err := s.rendezvousLookup(c.Param("id"))
	var out gin.H
	if err == nil {
		out = gin.H{"data": sess.data, "sequence_token": strconv.FormatInt(sess.sequence, 10), "expires_in_ms": sess.expires.Sub(s.now()).Milliseconds()}
	}
	rv.mu.Unlock()
	if err != nil {
		return err
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, out)
	return nil
}

// PUT …/rendezvous/{id}: replaces the message if the writer saw the latest
// one (its sequence token matches); otherwise 409, and nothing changes.
func (s *Service) rendezvousPut(c *gin.Context) error {
	b, err := readRendezvous(c, true)
	if err != nil {
		return err
	}
	rv := &s.rendezvous
	rv.mu.Lock()
	defer rv.mu.Unlock()
	sess, err := s.rendezvousLookup(c.Param("id"))
	if err != nil {
		return err
	}
	if *b.SequenceToken != strconv.FormatInt(sess.sequence, 10) {
		return spec.NewError(spec.ErrConcurrentWrite, "the session changed since that sequence token")
	}
	sess.sequence++
	sess.data = *b.Data
	c.JSON(http.StatusOK, gin.H{"sequence_token": strconv.FormatInt(sess.sequence, 10)})
	return nil
}

// DELETE …/rendezvous/{id}: ends a session.
func (s *Service) rendezvousDelete(c *gin.Context) error {
	rv := &s.rendezvous
	rv.mu.Lock()
	_, err := s.rendezvousLookup(c.Param("id"))
	delete(rv.sessions, c.Param("id"))
	rv.mu.Unlock()
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, gin.H{})
	return nil
}
