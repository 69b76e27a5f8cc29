package api

import (
	"net/http"
	"strings"

	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// The r0 API. Until v1.1 the client-server API lived under
// /_matrix/client/r0 (and media under /_matrix/media/r0); v1.1 moved every
// endpoint to v3 unchanged. Clients still in use call r0, so every endpoint
// of the r0 era is also served there, on the very same handlers. Endpoints
// added since (knocking, key backup, cross-signing, refresh tokens, SSO
// redirects, async uploads, generic profile keys, ...) are v3 only, as in
// the spec.
//
// r0ClientEndpoints and r0MediaEndpoints were read off the spec's OpenAPI
// files: every client-server operation without x-addedInMatrixVersion (the
// spec marks everything added from v1.1 on), profile keys as r0 had them
// (displayname and avatar_url, enforced by r0Guards), plus the empty-state-key form of the state
// endpoints. Paths are relative to the version prefix; a parameter is {}.
var r0ClientEndpoints = map[string]bool{
	"GET /account/3pid":                          true,
	"POST /account/3pid":                         true,
	"POST /account/3pid/add":                     true,
	"POST /account/3pid/bind":                    true,
	"POST /account/3pid/delete":                  true,
	"POST /account/3pid/email/requestToken":      true,
	"POST /account/3pid/msisdn/requestToken":     true,
	"POST /account/3pid/unbind":                  true,
	"POST /account/deactivate":                   true,
	"POST /account/password":                     true,
	"POST /account/password/email/requestToken":  true,
	"POST /account/password/msisdn/requestToken": true,
	"GET /account/whoami":                        true,
	"GET /admin/whois/{}":                        true,
	"GET /capabilities":                          true,
	"POST /createRoom":                           true,
	"POST /delete_devices":                       true,
	"GET /devices":                               true,
	"DELETE /devices/{}":                         true,
	"GET /devices/{}":                            true,
	"PUT /devices/{}":                            true,
	"GET /directory/list/room/{}":                true,
	"PUT /directory/list/room/{}":                true,
	"DELETE /directory/room/{}":                  true,
	"GET /directory/room/{}":                     true,
	"PUT /directory/room/{}":                     true,
	"GET /events":                                true,
	"GET /events/{}":                             true,
	"GET /initialSync":                           true,
	"POST /join/{}":                              true,
	"GET /joined_rooms":                          true,
	"GET /keys/changes":                          true,
	"POST /keys/claim":                           true,
	"POST /keys/query":                           true,
	"POST /keys/upload":                          true,
	"GET /login":                                 true,
	"POST /login":                                true,
	"POST /logout":                               true,
	"POST /logout/all":                           true,
	"GET /notifications":                         true,
	"GET /presence/{}/status":                    true,
	"PUT /presence/{}/status":                    true,
	"GET /profile/{}":                            true,
	"GET /profile/{}/avatar_url":                 true,
	"PUT /profile/{}/avatar_url":                 true,
	"GET /profile/{}/displayname":                true,
	"PUT /profile/{}/displayname":                true,
	"GET /publicRooms":                           true,
	"POST /publicRooms":                          true,
	"GET /pushers":                               true,
	"POST /pushers/set":                          true,
	"GET /pushrules/":                            true,
	"GET /pushrules/global/":                     true,
	"DELETE /pushrules/global/{}/{}":             true,
	"GET /pushrules/global/{}/{}":                true,
	"PUT /pushrules/global/{}/{}":                true,
	"GET /pushrules/global/{}/{}/actions":        true,
	"PUT /pushrules/global/{}/{}/actions":        true,
	"GET /pushrules/global/{}/{}/enabled":        true,
	"PUT /pushrules/global/{}/{}/enabled":        true,
	"POST /register":                             true,
	"GET /register/available":                    true,
	"POST /register/email/requestToken":          true,
	"POST /register/msisdn/requestToken":         true,
	"GET /rooms/{}/aliases":                      true,
	"POST /rooms/{}/ban":                         true,
	"GET /rooms/{}/context/{}":                   true,
	"GET /rooms/{}/event/{}":                     true,
	"POST /rooms/{}/forget":                      true,
	"GET /rooms/{}/initialSync":                  true,
	"POST /rooms/{}/invite":                      true,
	"POST /rooms/{}/join":                        true,
	"GET /rooms/{}/joined_members":               true,
	"POST /rooms/{}/kick":                        true,
	"POST /rooms/{}/leave":                       true,
	"GET /rooms/{}/members":                      true,
	"GET /rooms/{}/messages":                     true,
	"POST /rooms/{}/read_markers":                true,
	"POST /rooms/{}/receipt/{}/{}":               true,
	"PUT /rooms/{}/redact/{}/{}":                 true,
	"POST /rooms/{}/report/{}":                   true,
	"PUT /rooms/{}/send/{}/{}":                   true,
	"GET /rooms/{}/state":                        true,
	"GET /rooms/{}/state/{}":                     true,
	"PUT /rooms/{}/state/{}":                     true,
	"GET /rooms/{}/state/{}/{}":                  true,
	"PUT /rooms/{}/state/{}/{}":                  true,
	"PUT /rooms/{}/typing/{}":                    true,
	"POST /rooms/{}/unban":                       true,
	"POST /rooms/{}/upgrade":                     true,
	"POST /search":                               true,
	"PUT /sendToDevice/{}/{}":                    true,
	"GET /sync":                                  true,
	"GET /thirdparty/location":                   true,
	"GET /thirdparty/location/{}":                true,
	"GET /thirdparty/protocol/{}":                true,
	"GET /thirdparty/protocols":                  true,
	"GET /thirdparty/user":                       true,
	"GET /thirdparty/user/{}":                    true,
	"GET /user/{}/account_data/{}":               true,
	"PUT /user/{}/account_data/{}":               true,
	"POST /user/{}/filter":                       true,
	"GET /user/{}/filter/{}":                     true,
	"POST /user/{}/openid/request_token":         true,
	"GET /user/{}/rooms/{}/account_data/{}":      true,
	"PUT /user/{}/rooms/{}/account_data/{}":      true,
	"GET /user/{}/rooms/{}/tags":                 true,
	"DELETE /user/{}/rooms/{}/tags/{}":           true,
	"PUT /user/{}/rooms/{}/tags/{}":              true,
	"POST /user_directory/search":                true,
	"GET /voip/turnServer":                       true,
}

// r0Guards narrow an r0 route whose v3 path is more general than r0's.
var r0Guards = map[string]gin.HandlerFunc{
	"GET /profile/{}/{}": r0ProfileKeys,
	"PUT /profile/{}/{}": r0ProfileKeys,
}

// r0ProfileKeys: r0 had /profile/{userId}/displayname and /avatar_url;
// other keys (v1.16) are v3 only, so r0 does not know their paths.
var r0ProfileKeys = Middleware(func(c *gin.Context) error {
	switch c.Param("keyName") {
	case "displayname", "avatar_url":
		return nil
	}
	return spec.Unrecognized("unrecognized request")
})

var r0MediaEndpoints = map[string]bool{
	"GET /config":            true,
	"GET /download/{}/{}":    true,
	"GET /download/{}/{}/{}": true,
	"GET /preview_url":       true,
	"GET /thumbnail/{}/{}":   true,
	"POST /upload":           true,
}

// Versioned registers routes under v3 and, when the endpoint existed in
// the r0 API, under r0 too, with the same handlers.
type Versioned struct {
	v3, r0 *gin.RouterGroup
	rel    string // path of this group below the version prefix
	r0Set  map[string]bool
}

// ClientAPI returns the client-server API's route groups
// (/_matrix/client/v3 and r0) with the given middleware.
func ClientAPI(r gin.IRouter, handlers ...gin.HandlerFunc) *Versioned {
	return &Versioned{v3: r.Group("/_matrix/client/v3", handlers...), r0: r.Group("/_matrix/client/r0", handlers...), r0Set: r0ClientEndpoints}
}

// MediaAPI is ClientAPI for the content repository (/_matrix/media/v3 and r0).
func MediaAPI(r gin.IRouter, handlers ...gin.HandlerFunc) *Versioned {
	return &Versioned{v3: r.Group("/_matrix/media/v3", handlers...), r0: r.Group("/_matrix/media/r0", handlers...), r0Set: r0MediaEndpoints}
}

// Group returns a sub-group at rel with more middleware.
func (v *Versioned) Group(rel string, handlers ...gin.HandlerFunc) *Versioned {
	return &Versioned{v3: v.v3.Group(rel, handlers...), r0: v.r0.Group(rel, handlers...), rel: v.rel + rel, r0Set: v.r0Set}
}

// GET registers a GET route.
func (v *Versioned) GET(rel string, handlers ...gin.HandlerFunc) {
	v.handle(http.MethodGet, rel, handlers)
}

// PUT registers a PUT route.
func (v *Versioned) PUT(rel string, handlers ...gin.HandlerFunc) {
	v.handle(http.MethodPut, rel, handlers)
}

// POST registers a POST route.
func (v *Versioned) POST(rel string, handlers ...gin.HandlerFunc) {
	v.handle(http.MethodPost, rel, handlers)
}

// DELETE registers a DELETE route.
func (v *Versioned) DELETE(rel string, handlers ...gin.HandlerFunc) {
	v.handle(http.MethodDelete, rel, handlers)
}

func (v *Versioned) handle(method, rel string, handlers []gin.HandlerFunc) {
	v.v3.Handle(method, rel, handlers...)
	key := method + " " + endpointShape(v.rel+rel)
	if !v.r0Set[key] {
		return
	}
	if guard := r0Guards[key]; guard != nil {
		handlers = append([]gin.HandlerFunc{guard}, handlers...)
	}
	v.r0.Handle(method, rel, handlers...)
}

// IsR0ClientEndpoint reports whether a client-server route (method and path
// below the version prefix, gin or spec parameters) existed in the r0 API.
func IsR0ClientEndpoint(method, rel string) bool {
	return r0ClientEndpoints[method+" "+endpointShape(rel)]
}

// endpointShape writes every path parameter (gin's :name and *name, or
// the spec's {name}) as {}.
func endpointShape(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, ":") || strings.HasPrefix(s, "*") || strings.HasPrefix(s, "{") {
			segs[i] = "{}"
		}
	}
	return strings.Join(segs, "/")
}
