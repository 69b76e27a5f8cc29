package federation

import (
	"bytes"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/chatalot/chatalot/spec"
)

// maxRequestBody bounds what a remote may send to be verified; transactions
// are limited to 50 PDUs and 100 EDUs, far below this.
const maxRequestBody = 8 << 20

// RequireServerAuth refuses requests without a valid X-Matrix signature for
// this server (401 M_UNAUTHORIZED) and puts the verified origin in the
// context for the handlers after it (Origin). The body is read once and
// given back to the handler.
func RequireServerAuth(ourName string, keys KeySource) gin.HandlerFunc {
	return func(c *gin.Context) {
		var body []byte
		if c.Request.Body != nil {
			b, err := io.ReadAll(io.LimitReader(c.Request.Body, maxRequestBody+1))
			if err != nil {
				abort(c, spec.BadJSON("cannot read body"))
				return
			}
			if len(b) > maxRequestBody {
				abort(c, spec.TooLarge("request body too large"))
				return
			}
			body = b
			c.Request.Body = io.NopCloser(bytes.NewReader(b))
		}
		if len(bytes.TrimSpace(body)) == 0 {
			body = nil
		}
		origin, err := Verify(c.Request.Context(), c.Request.Header.Values("Authorization"), Request{
			Method:  c.Request.Method,
			URI:     c.Request.URL.RequestURI(),
			Content: body,
		}, ourName, keys)
		if err != nil {
			abort(c, err)
			return
		}
		c.Set(ginOriginKey, origin)
		c.Next()
	}
}

const ginOriginKey = "federation.origin"

// Origin is the server that signed the request, set by RequireServerAuth.
func Origin(c *gin.Context) string { return c.GetString(ginOriginKey) }

func abort(c *gin.Context, err error) {
	if e, ok := err.(*spec.Error); ok {
		c.AbortWithStatusJSON(e.Status, e.Body())
		return
	}
	c.AbortWithStatusJSON(http.StatusInternalServerError, spec.Internal("%v", err).Body())
}
