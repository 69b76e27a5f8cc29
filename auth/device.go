// Package auth owns accounts and sessions: registration with its
// user-interactive authentication, registration tokens (invite codes),
// logins, Argon2id password hashes, access tokens, devices, rate limits,
// profiles and account data.
package auth

import (
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// Device is the authenticated caller of a request: a user and one of their
// devices (sessions).
type Device struct {
	UserID   spec.UserID
	DeviceID string
	IsAdmin  bool
}

const deviceKey = "chatalot.device"

// DeviceFrom returns the caller set by the auth middleware. It is nil only on
// routes that are not behind the middleware.
func DeviceFrom(c *gin.Context) *Device {
	d, _ := c.Get(deviceKey)
	dev, _ := d.(*Device)
	return dev
}

// SetDevice records the authenticated caller on the request; the middleware
// calls it, and so can package tests that mount a handler without auth.
func SetDevice(c *gin.Context, d *Device) { c.Set(deviceKey, d) }
