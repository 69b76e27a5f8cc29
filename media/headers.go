package media

import (
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"
)

// contentSecurityPolicy is sent with every piece of media. Media is served
// from the homeserver's own origin, so a file that a browser renders must not
// be able to run script or reach anything: sandbox gives it an opaque origin,
// and default-src 'none' lets it load nothing but its inline styles and
// same-origin media. (The spec's recommendation, without the obsolete
// plugin-types directive that browsers no longer parse.)
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; object-src 'self'; media-src 'self'; img-src 'self' data:"

// inlineTypes may be served with Content-Disposition: inline. Browsers render
// these as what their type says (an HTML file claimed as image/png just shows
// as a broken image), so a declared type can be trusted as long as the
// disposition follows from it. Everything else is an attachment.
// (Client-Server API, "Serving inline content".)
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// dispositionFor is inline for a safe type and attachment for anything else.
func dispositionFor(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err == nil && inlineTypes[strings.ToLower(mt)] {
		return "inline"
	}
	return "attachment"
}

// setServingHeaders sets what every media response carries, whatever its
// content: no sniffing, the sandboxing policy, readable from web clients on
// another origin, and no referrer leaking what was opened.
func setServingHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Referrer-Policy", "no-referrer")
	// Media never changes under its ID, but it can be deleted or
	// quarantined: let the client keep it a while, never a shared cache.
	h.Set("Cache-Control", "private, max-age=3600")
}

// contentDisposition builds the header for a disposition and a file name
// (RFC 6266). A name made only of unremarkable ASCII goes as is in
// filename="…". Any other name — with a slash, a backslash, a quote, a
// percent sign, a control character, non-ASCII text — goes percent-encoded
// in the RFC 5987 filename* parameter, which modern clients prefer, with an ASCII stand-in
// in filename="…" for the others. No byte of the name reaches the header
// unescaped unless it is in the plain set.
func contentDisposition(disposition, name string) string {
	if name == "" {
		return disposition
	}
	if plainFilename(name) {
		return disposition + `; filename="` + name + `"`
	}
	var fallback strings.Builder
	for _, r := range name {
		if r < utf8.RuneSelf && plainByte(byte(r)) {
			fallback.WriteRune(r)
		} else {
			fallback.WriteByte('_')
		}
	}
	return disposition + `; filename="` + fallback.String() + `"; filename*=UTF-8''` + encodeExtValue(name)
}

// plainByte is a character that is safe inside a quoted filename for every
// parser: letters, digits, space and punctuation that no client treats as
// special. Quote, backslash, slash, percent (some browsers decode %XX in
// filename=), semicolon and comma are not in it.
func plainByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte(" -_.()[]+=@!#$&'~^{}", c) >= 0
}

func plainFilename(name string) bool {
	if len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !plainByte(name[i]) {
			return false
		}
	}
	return true
}

// encodeExtValue percent-encodes every UTF-8 byte that is not an RFC 5987
// attr-char.
func encodeExtValue(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}
