package spec

import (
	"encoding/base64"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Identifier types. Each is a string on the wire; inside Chatalot a value of
// these types has passed its Parse function (or was built by the server).
// The parse functions and grammar live in this file.

// UserID is @localpart:server.
type UserID string

// RoomID is !opaque:server, or in room version 12 !<hash> with no server.
type RoomID string

// EventID is $<url-safe base64 reference hash> for room versions 4 and later.
type EventID string

// RoomAlias is #alias:server.
type RoomAlias string

// ServerName is a DNS name, IPv4 address or bracketed IPv6 address, with an
// optional port.
type ServerName string

func (u UserID) String() string     { return string(u) }
func (r RoomID) String() string     { return string(r) }
func (e EventID) String() string    { return string(e) }
func (a RoomAlias) String() string  { return string(a) }
func (s ServerName) String() string { return string(s) }

// maxIDLength is the byte limit the appendix sets on user IDs, room IDs,
// room aliases and event IDs, sigil and server name included.
const maxIDLength = 255

// The sigils of the common identifier format.
const (
	sigilUser  = '@'
	sigilRoom  = '!'
	sigilEvent = '$'
	sigilAlias = '#'
)

// hashRoomIDLength is the length of a room version 12 room ID after the
// sigil: the unpadded URL-safe base64 of a 32-byte SHA-256 reference hash.
const hashRoomIDLength = 43

func invalidID(format string, args ...any) error {
	return NewError(ErrInvalidParam, format, args...)
}

// splitSigilID checks the sigil and length of s and splits the rest at its
// first ':' into an opaque part and a server name.
func splitSigilID(kind string, s string, sigil byte) (opaque string, server ServerName, err error) {
	if len(s) > maxIDLength {
		return "", "", invalidID("%s is longer than %d bytes", kind, maxIDLength)
	}
	if len(s) == 0 || s[0] != sigil {
		return "", "", invalidID("%s must start with %q", kind, sigil)
	}
	rest := s[1:]
	i := strings.IndexByte(rest, ':')
	if i < 0 {
		return "", "", invalidID("%s has no server name", kind)
	}
	server, err = ParseServerName(rest[i+1:])
	if err != nil {
		return "", "", invalidID("%s: %s", kind, errMessage(err))
	}
	return rest[:i], server, nil
}

// checkOpaque checks the localpart grammar shared by historical user IDs,
// room IDs with a server, aliases and event IDs: valid UTF-8 (which excludes
// surrogates) with no NUL. The caller has already excluded ':' where the
// grammar does.
func checkOpaque(kind, part string) error {
	if !utf8.ValidString(part) {
		return invalidID("%s is not valid UTF-8", kind)
	}
	if strings.IndexByte(part, 0) >= 0 {
		return invalidID("%s contains a NUL character", kind)
	}
	return nil
}

func errMessage(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Message
	}
	return err.Error()
}

// ParseUserID parses @localpart:server. It accepts historical user IDs as the
// appendix requires for reading (any Unicode in the localpart except ':' and
// NUL, even an empty localpart); use ValidateLocalpart for new accounts. The
// whole ID is at most 255 bytes.
func ParseUserID(s string) (UserID, error) {
	local, _, err := splitSigilID("user ID", s, sigilUser)
	if err != nil {
		return "", err
	}
	if err := checkOpaque("user ID localpart", local); err != nil {
		return "", err
	}
	return UserID(s), nil
}

// ValidateLocalpart checks the localpart of a new user against the strict
// grammar (a-z, 0-9 and . _ = - / +, not empty). It refuses with
// M_INVALID_USERNAME. The caller still checks the length of the whole ID,
// for example with ParseUserID(NewUserID(localpart, server)).
func ValidateLocalpart(localpart string) error {
	if localpart == "" {
		return NewError(ErrInvalidUsername, "user ID localpart is empty")
	}
	if len(localpart) > maxIDLength-3 { // "@", ":" and a 1-byte server name
		return NewError(ErrInvalidUsername, "user ID localpart is too long")
	}
	for i := 0; i < len(localpart); i++ {
		if !isStrictLocalpartChar(localpart[i]) {
			return NewError(ErrInvalidUsername,
				"user ID localpart may only contain a-z, 0-9 and . _ = - / +")
		}
	}
	return nil
}

func isStrictLocalpartChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("._=-/+", c) >= 0
}

// NewUserID makes @localpart:server. It does not validate; new accounts go
// through ValidateLocalpart first.
func NewUserID(localpart string, server ServerName) UserID {
	return UserID("@" + localpart + ":" + string(server))
}

// Localpart is the part between the sigil and the first ':'.
func (u UserID) Localpart() string {
	local, _ := splitAfterSigil(string(u))
	return local
}

// Server is the server name after the first ':'.
func (u UserID) Server() ServerName {
	_, server := splitAfterSigil(string(u))
	return ServerName(server)
}

// Compliant reports whether the localpart is non-empty and uses only
// U+0021 to U+007E; user IDs outside that are historical and deprecated.
func (u UserID) Compliant() bool {
	local := u.Localpart()
	if local == "" {
		return false
	}
	for i := 0; i < len(local); i++ {
		if local[i] < 0x21 || local[i] > 0x7e {
			return false
		}
	}
	return true
}

// splitAfterSigil splits a sigil ID at its first ':'; both parts are empty
// when there is none.
func splitAfterSigil(s string) (string, string) {
	if len(s) == 0 {
		return "", ""
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok {
		return "", ""
	}
	return local, server
}

// ParseRoomID parses a room ID in either form: !opaque:server (room
// versions up to 11) or !<43 characters of URL-safe base64> (room version 12,
// the create event's reference hash, with no server). At most 255 bytes.
func ParseRoomID(s string) (RoomID, error) {
	if len(s) > maxIDLength {
		return "", invalidID("room ID is longer than %d bytes", maxIDLength)
	}
	if len(s) == 0 || s[0] != sigilRoom {
		return "", invalidID("room ID must start with '!'")
	}
	if strings.IndexByte(s, ':') < 0 {
		if !isReferenceHash(s[1:]) {
			return "", invalidID("room ID has neither a server name nor a 43-character hash")
		}
		return RoomID(s), nil
	}
	opaque, _, err := splitSigilID("room ID", s, sigilRoom)
	if err != nil {
		return "", err
	}
	if opaque == "" {
		return "", invalidID("room ID has an empty opaque part")
	}
	if err := checkOpaque("room ID", opaque); err != nil {
		return "", err
	}
	return RoomID(s), nil
}

// isReferenceHash reports whether s is the unpadded URL-safe base64 of a
// 32-byte hash, in its canonical encoding.
func isReferenceHash(s string) bool {
	if len(s) != hashRoomIDLength {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == 32
}

// Server is the server name of a !opaque:server room ID, and empty for a
// room version 12 room ID.
func (r RoomID) Server() ServerName {
	_, server := splitAfterSigil(string(r))
	return ServerName(server)
}

// ParseEventID parses $opaque: a non-empty opaque part (valid UTF-8, no NUL)
// and at most 255 bytes in all. The opaque part may hold a ':' (event IDs of
// room versions 1 and 2 had a server name).
func ParseEventID(s string) (EventID, error) {
	if len(s) > maxIDLength {
		return "", invalidID("event ID is longer than %d bytes", maxIDLength)
	}
	if len(s) < 2 || s[0] != sigilEvent {
		return "", invalidID("event ID must be '$' followed by an opaque ID")
	}
	if err := checkOpaque("event ID", s[1:]); err != nil {
		return "", err
	}
	return EventID(s), nil
}

// ParseRoomAlias parses #alias:server: a non-empty alias without ':' or NUL,
// at most 255 bytes in all.
func ParseRoomAlias(s string) (RoomAlias, error) {
	local, _, err := splitSigilID("room alias", s, sigilAlias)
	if err != nil {
		return "", err
	}
	if local == "" {
		return "", invalidID("room alias has an empty localpart")
	}
	if err := checkOpaque("room alias", local); err != nil {
		return "", err
	}
	return RoomAlias(s), nil
}

// Localpart is the alias between '#' and the first ':'.
func (a RoomAlias) Localpart() string {
	local, _ := splitAfterSigil(string(a))
	return local
}

// Server is the server name of the alias.
func (a RoomAlias) Server() ServerName {
	_, server := splitAfterSigil(string(a))
	return ServerName(server)
}

// maxDNSName is the limit of the grammar's dns-name.
const maxDNSName = 255

// ParseServerName parses hostname[:port] per the appendix: a DNS name of
// letters, digits, '-' and '.' in non-empty labels; a dotted-quad IPv4
// address (each part 0-255); or a bracketed IPv6 address. A hostname of only
// digits and dots must be a valid IPv4 address. The port is 1-65535. Server
// names are case-sensitive and kept as given.
func ParseServerName(s string) (ServerName, error) {
	if _, _, err := splitServerName(s); err != nil {
		return "", err
	}
	return ServerName(s), nil
}

// splitServerName validates s and returns its host (IPv6 without brackets)
// and port (0 if absent).
func splitServerName(s string) (host string, port int, err error) {
	if s == "" {
		return "", 0, invalidID("server name is empty")
	}
	var portStr string
	hasPort := false
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, invalidID("server name has an unterminated IPv6 literal")
		}
		host = s[1:end]
		if !isIPv6Literal(host) {
			return "", 0, invalidID("server name has an invalid IPv6 literal")
		}
		rest := s[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", 0, invalidID("server name has junk after the IPv6 literal")
			}
			portStr, hasPort = rest[1:], true
		}
	} else {
		host, portStr, hasPort = strings.Cut(s, ":")
		if err := checkHostname(host); err != nil {
			return "", 0, err
		}
	}
	if hasPort {
		port, err = parsePort(portStr)
		if err != nil {
			return "", 0, err
		}
	}
	return host, port, nil
}

func checkHostname(host string) error {
	if host == "" {
		return invalidID("server name has an empty hostname")
	}
	if len(host) > maxDNSName {
		return invalidID("server name hostname is longer than %d bytes", maxDNSName)
	}
	numeric := true
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case c >= '0' && c <= '9', c == '.':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
			numeric = false
		default:
			return invalidID("server name hostname has an invalid character")
		}
	}
	if numeric {
		if !isIPv4Literal(host) {
			return invalidID("server name has an invalid IPv4 address")
		}
		return nil
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" {
			return invalidID("server name has an empty DNS label")
		}
	}
	return nil
}

// isIPv4Literal reports whether s is four decimal numbers of 1-3 digits, each
// 0-255, separated by dots.
func isIPv4Literal(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if len(p) < 1 || len(p) > 3 {
			return false
		}
		n := 0
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
			n = n*10 + int(p[i]-'0')
		}
		if n > 255 {
			return false
		}
	}
	return true
}

// isIPv6Literal reports whether s is 2-45 characters of hex digits, ':' and
// '.', and an IPv6 address as RFC 3513 writes them (no zone).
func isIPv6Literal(s string) bool {
	if len(s) < 2 || len(s) > 45 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
			return false
		}
	}
	addr, err := netip.ParseAddr(s)
	return err == nil && addr.Is6() && addr.Zone() == ""
}

func parsePort(s string) (int, error) {
	if len(s) < 1 || len(s) > 5 {
		return 0, invalidID("server name port must be 1 to 5 digits")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, invalidID("server name port must be decimal digits")
		}
		n = n*10 + int(s[i]-'0')
	}
	if n < 1 || n > 65535 {
		return 0, invalidID("server name port must be 1-65535")
	}
	return n, nil
}

// Host is the hostname: a DNS name, an IPv4 address, or an IPv6 address
// without its brackets (ready for net.JoinHostPort). Empty if s is invalid.
func (s ServerName) Host() string {
	host, _, err := splitServerName(string(s))
	if err != nil {
		return ""
	}
	return host
}

// Port is the explicit port and true, or 0 and false when there is none (or
// the server name is invalid).
func (s ServerName) Port() (int, bool) {
	_, port, err := splitServerName(string(s))
	if err != nil || port == 0 {
		return 0, false
	}
	return port, true
}
