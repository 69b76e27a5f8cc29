package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/chatalot/chatalot/events"
	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// The request-body readers. Every one answers a *spec.Error, never a 500:
// M_TOO_LARGE over a limit, M_NOT_JSON for what is not JSON (invalid UTF-8
// included), M_BAD_JSON for JSON of the wrong shape.
//
//   - ReadJSON decodes into a typed request struct; most endpoints use it.
//   - ReadBody gives the raw bytes, for a handler that must keep them (a
//     UIA session is bound to the body) and decodes them with DecodeJSON.
//   - ReadCanonical gives the body as canonical JSON (events.CanonicalObject:
//     strict UTF-8, no duplicate keys, integers in range), for objects that
//     are signed or stored byte for byte, such as keys.
//
// Event content that a client sends is read by events.ReadContent instead:
// it is canonical too, but an empty body is an error there, not {}.

// ReadBody reads the whole request body. limit > 0 bounds it below the
// router's body limit; over either it is M_TOO_LARGE.
func ReadBody(c *gin.Context, limit int64) ([]byte, error) {
	r := io.Reader(c.Request.Body)
	if limit > 0 {
		if c.Request.ContentLength > limit {
			return nil, spec.TooLarge("request body is over %d bytes", limit)
		}
		r = io.LimitReader(r, limit+1)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, spec.TooLarge("request body is over %d bytes", tooLarge.Limit)
		}
		return nil, spec.BadJSON("could not read the request body")
	}
	if limit > 0 && int64(len(body)) > limit {
		return nil, spec.TooLarge("request body is over %d bytes", limit)
	}
	return body, nil
}

// ReadJSON decodes the request body into v (see DecodeJSON).
func ReadJSON(c *gin.Context, v any) error {
	body, err := ReadBody(c, 0)
	if err != nil {
		return err
	}
	return DecodeJSON(body, v)
}

// ReadCanonical reads a request body of at most limit bytes and returns its
// canonical JSON, which must be an object; an empty body is {}. Since
// canonicalising refuses duplicate keys, what the server checks is what a
// client verifies.
func ReadCanonical(c *gin.Context, limit int64) ([]byte, error) {
	body, err := ReadBody(c, limit)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return []byte("{}"), nil
	}
	if !utf8.Valid(body) {
		return nil, errNotUTF8 // as DecodeJSON says it
	}
	return events.CanonicalObject(body)
}

// DecodeJSON decodes body into v. Invalid UTF-8 is M_NOT_JSON (encoding/json
// would quietly turn it into U+FFFD), a body that is not an object
// M_BAD_JSON, a member of the wrong type M_BAD_JSON naming it. An empty body
// decodes as {} for endpoints whose fields are all optional.
func DecodeJSON(body []byte, v any) error {
	// JSON must be UTF-8 (RFC 8259).
	if !utf8.Valid(body) {
		return errNotUTF8
	}
	trimmed := strings.TrimSpace(string(body))
	if trimmed == "" {
		body = []byte("{}")
	} else if trimmed[0] != '{' {
		if json.Valid(body) {
			return spec.BadJSON("the request body must be a JSON object")
		}
		return spec.NotJSON("the request body is not JSON")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			field := typeErr.Field
			if field == "" {
				field = "the body"
			}
			return spec.BadJSON("%s must be %s", field, jsonKind(typeErr.Type.Kind().String()))
		}
		var syntaxErr *json.SyntaxError
		if errors.As(err, &syntaxErr) || !json.Valid(body) {
			return spec.NotJSON("the request body is not JSON")
		}
		return spec.BadJSON("invalid request body: %v", err)
	}
	return nil
}

var errNotUTF8 = spec.NotJSON("the request body is not valid UTF-8")

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "of another type"
}
