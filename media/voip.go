package media

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// GET /_matrix/client/v3/voip/turnServer: time-limited TURN credentials
// when the admin configured a TURN server, the empty answer otherwise.
func (s *Service) handleTURNServer(c *gin.Context) error {
	dev := auth.DeviceFrom(c)
	creds, ok := s.TURNCredentials(dev.UserID)
	if !ok {
		// No TURN server is ever assumed: Chatalot opens no connection,
		// and hands clients no third party's address, that the admin did
		// not choose. The empty object is what clients treat as "none";
		// an empty uris list would make browsers reject the whole ICE
		// configuration.
		c.JSON(http.StatusOK, gin.H{})
		return nil
	}
	c.JSON(http.StatusOK, creds)
	return nil
}

// TURNCredentials are what /voip/turnServer returns.
type TURNCredentials struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	URIs     []string `json:"uris"`
	TTL      int64    `json:"ttl"`
}

// TURNCredentials issues credentials for user in the scheme of the TURN
// REST API that coturn implements with use-auth-secret: the username is
// "EXPIRY:USER" (EXPIRY in Unix seconds) and the password is the base64
// HMAC-SHA1 of the username keyed with the shared secret, so the TURN server
// can check them without asking the homeserver. ok is false when TURN is not
// configured.
func (s *Service) TURNCredentials(user spec.UserID) (creds TURNCredentials, ok bool) {
	t := s.cfg.TURN
	if len(t.URIs) == 0 || t.Secret == "" {
		return TURNCredentials{}, false
	}
	expiry := s.now().Add(t.TTL).Unix()
	username := strconv.FormatInt(expiry, 10) + ":" + string(user)
	mac := hmac.New(sha1.New, []byte(t.Secret))
	mac.Write([]byte(username))
	return TURNCredentials{
		Username: username,
		Password: base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		URIs:     append([]string(nil), t.URIs...),
		TTL:      int64(t.TTL / time.Second),
	}, true
}
