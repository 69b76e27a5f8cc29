package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/chatalot/chatalot/spec"
	"github.com/gin-gonic/gin"
)

// ReadJSON decodes the request body into v. Bodies that are not JSON get
// M_NOT_JSON, JSON of the wrong shape M_BAD_JSON, too large M_TOO_LARGE:
// always a *spec.Error, never a 500.
//
// An empty body decodes as {} for endpoints whose fields are all optional.
func ReadJSON(c *gin.Context, v any) error {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return spec.TooLarge("request body is over %d bytes", tooLarge.Limit)
		}
		return spec.BadJSON("could not read the request body")
	}
	return DecodeJSON(body, v)
}

// DecodeJSON is ReadJSON for bytes already read.
func DecodeJSON(body []byte, v any) error {
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD; JSON
	// must be UTF-8 (RFC 8259), so such a body is not JSON.
	if !utf8.Valid(body) {
		return spec.NotJSON("the request body is not valid UTF-8")
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
