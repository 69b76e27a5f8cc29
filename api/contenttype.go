package api

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// jsonContentType is the media type of every JSON answer. gin's c.JSON
// writes "application/json; charset=utf-8"; the client-server API says
// "application/json" (JSON is UTF-8 by definition, RFC 8259), and clients
// and test suites compare the header exactly.
const jsonContentType = "application/json"

const ginJSONContentType = "application/json; charset=utf-8"

// plainJSONType makes every JSON answer carry exactly "application/json",
// whichever handler wrote it, by fixing the header just before the first
// byte of the body goes out.
func plainJSONType(c *gin.Context) {
	c.Writer = &plainJSONWriter{ResponseWriter: c.Writer}
	c.Next()
}

type plainJSONWriter struct {
	gin.ResponseWriter
}

func (w *plainJSONWriter) fixType() {
	h := w.ResponseWriter.Header()
	if !w.ResponseWriter.Written() && h.Get("Content-Type") == ginJSONContentType {
		h.Set("Content-Type", jsonContentType)
	}
}

func (w *plainJSONWriter) Write(b []byte) (int, error) {
	w.fixType()
	return w.ResponseWriter.Write(b)
}

func (w *plainJSONWriter) WriteString(s string) (int, error) {
	w.fixType()
	return w.ResponseWriter.WriteString(s)
}

func (w *plainJSONWriter) WriteHeaderNow() {
	w.fixType()
	w.ResponseWriter.WriteHeaderNow()
}

func (w *plainJSONWriter) Flush() {
	w.fixType()
	w.ResponseWriter.Flush()
}

var _ http.Flusher = (*plainJSONWriter)(nil)

// Unwrap lets http.ResponseController reach the connection (read
// deadlines for stalled bodies) through this writer.
func (w *plainJSONWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
