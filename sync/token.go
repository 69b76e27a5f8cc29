package sync

import (
	"strconv"
	"strings"

	"github.com/chatalot/chatalot/spec"
)

// Token is a sync token: the stream position every durable change is
// ordered by, and the serial of in-memory ephemeral changes (typing,
// presence). On the wire: "s<position>_<serial>".
type Token struct {
	Pos    int64
	Serial int64
}

func (t Token) String() string {
	return "s" + strconv.FormatInt(t.Pos, 10) + "_" + strconv.FormatInt(t.Serial, 10)
}

// ParseToken reads a sync token; anything else is M_INVALID_PARAM (400).
func ParseToken(s string) (Token, error) {
	bad := spec.InvalidParam("invalid sync token")
	if len(s) < 2 || len(s) > 64 || s[0] != 's' {
		return Token{}, bad
	}
	pos, serial, ok := strings.Cut(s[1:], "_")
	var t Token
	var err error
	if t.Pos, err = strconv.ParseInt(pos, 10, 64); err != nil || t.Pos < 0 {
		return Token{}, bad
	}
	if ok {
		if t.Serial, err = strconv.ParseInt(serial, 10, 64); err != nil || t.Serial < 0 {
			return Token{}, bad
		}
	}
	return t, nil
}
