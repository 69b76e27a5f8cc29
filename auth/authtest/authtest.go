// Package authtest is the stand-in for the auth middleware that package
// tests mount in front of a domain's routes. Only tests import it: it
// trusts whatever the bearer token says.
package authtest

import (
	"strings"

	"github.com/chatalot/chatalot/api"
	"github.com/chatalot/chatalot/auth"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Middleware takes the bearer token to be "USER" or "USER|DEVICE" (device
// DEV by default) and sets that caller; no token is 401 M_MISSING_TOKEN.
var Middleware = api.Middleware(func(c *gin.Context) error {
	tok := strings.TrimPrefix(c.GetHeader("Authorization"), "Bearer ")
	if tok == "" {
		return spec.NewError(spec.ErrMissingToken, "missing access token")
	}
	user, device, _ := strings.Cut(tok, "|")
	if device == "" {
		device = "DEV"
	}
	auth.SetDevice(c, &auth.Device{UserID: spec.UserID(user), DeviceID: device})
	return nil
})
