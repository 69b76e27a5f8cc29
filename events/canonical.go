package events

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"slices"
	"sync"
	"unicode/utf8"

	"github.com/chatalot/chatalot/spec"
)

// maxDepth is how deeply objects and arrays may nest. Matrix events never
// come close; the limit keeps the (recursive) parser's stack bounded whatever
// the input.
const maxDepth = 64

// Integers must lie in [-(2^53)+1, 2^53-1] (appendices, "Canonical JSON").
const maxSafeInt = 1<<53 - 1

// Canonical strictly parses JSON and returns its canonical encoding
// (appendices, "Canonical JSON"): keys sorted by codepoint, no insignificant
// whitespace, only the escapes the grammar requires, UTF-8.
//
// Input that is not JSON at all gets M_NOT_JSON. JSON that breaks Matrix's
// stricter rules gets M_BAD_JSON: fractions and exponents (the spec's own
// example rewrites 1e10 as an integer, but room versions 6+ require strict
// enforcement, so they are refused, as Synapse does; canonicalEvent relaxes
// this for events of older versions),
// integers outside the safe range, invalid UTF-8 or lone surrogate escapes,
// duplicate keys and nesting deeper than 64. A negative zero is accepted and
// written as 0, as the spec's example shows. The error is always a *spec.Error.
func Canonical(input []byte) ([]byte, error) {
	return canonical(input, false)
}

func canonical(input []byte, lenientNumbers bool) ([]byte, error) {
	p := parserPool.Get().(*parser)
	defer p.release()
	p.in = input
	p.lenientNumbers = lenientNumbers
	// Canonicalisation never lengthens valid input: the only characters it
	// escapes cannot appear raw in valid JSON.
	p.out = make([]byte, 0, len(input))
	p.skipSpace()
	if p.pos == len(p.in) {
		return nil, spec.NotJSON("empty body where JSON was expected")
	}
	if !p.value() {
		return nil, p.err
	}
	p.skipSpace()
	if p.pos != len(p.in) {
		return nil, spec.NotJSON("unexpected data after the JSON value at byte %d", p.pos)
	}
	return p.out, nil
}

// CanonicalObject is Canonical for input that must be a JSON object.
func CanonicalObject(input []byte) ([]byte, error) {
	out, err := Canonical(input)
	if err != nil {
		return nil, err
	}
	if out[0] != '{' {
		return nil, spec.BadJSON("expected a JSON object")
	}
	return out, nil
}

// canonicalEvent is CanonicalObject under the rules of room version v for
// whole events. Before version 6 servers "MUST NOT strictly enforce" the
// canonical JSON format on events (rooms/v1 "Canonical JSON"): numbers with
// fractions or exponents and integers outside the safe range are kept as
// written, byte for byte, since no canonical form is defined for them.
// Everything else (UTF-8, duplicate keys, nesting, key order) is as strict
// as for any version. Content from clients is always read strictly
// (ReadContent): the spec asks servers to stop users sending such events.
func canonicalEvent(input []byte, v spec.RoomVersion) ([]byte, error) {
	out, err := canonical(input, !v.StrictCanonicalJSON())
	if err != nil {
		return nil, err
	}
	if out[0] != '{' {
		return nil, spec.BadJSON("expected a JSON object")
	}
	return out, nil
}

// MarshalCanonical encodes a server-built value as canonical JSON. It fails
// for values canonical JSON cannot hold, such as fractional numbers.
func MarshalCanonical(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, spec.BadJSON("cannot encode value: %v", err)
	}
	return Canonical(b)
}

// ReadContent reads a request body of at most limit bytes that must be a JSON
// object, and returns its canonical encoding. A longer body gets M_TOO_LARGE;
// every error is a *spec.Error.
//
// It is the reader of event content, which is kept as raw canonical JSON,
// not decoded into a struct; it sits on the send path, so it reuses buffers.
// Other request bodies go through api's readers (api/body.go), which use
// CanonicalObject for the same checks where they need canonical JSON.
func ReadContent(r io.Reader, limit int64) ([]byte, error) {
	limit = min(max(limit, 0), math.MaxInt64-1)
	buf := bodyPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 1<<20 {
			buf.Reset()
			bodyPool.Put(buf)
		}
	}()
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, spec.NotJSON("cannot read the request body")
	}
	if n > limit {
		return nil, spec.TooLarge("request body is larger than %d bytes", limit)
	}
	return CanonicalObject(buf.Bytes())
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

var parserPool = sync.Pool{New: func() any { return new(parser) }}

// parser is a strict JSON parser that writes canonical JSON as it goes. Its
// recursion is bounded by maxDepth, so it cannot exhaust the stack.
type parser struct {
	in      []byte
	pos     int
	out     []byte
	depth   int
	members []memberPos // the members of every object being parsed, innermost last
	scratch []byte      // reused when an object's members must be reordered
	err     *spec.Error
	// lenientNumbers keeps fractions, exponents and integers outside the
	// safe range as written, for events of room versions before 6.
	lenientNumbers bool
}

// memberPos locates one object member already written to out.
type memberPos struct {
	keyStart, keyEnd int  // the key's contents, between the quotes
	start, end       int  // the whole member, "key":value
	escaped          bool // the written key contains a backslash escape
}

func (p *parser) release() {
	p.in, p.out, p.err = nil, nil, nil
	p.pos, p.depth = 0, 0
	p.lenientNumbers = false
	p.members = p.members[:0]
	if cap(p.scratch) > 1<<16 {
		p.scratch = nil
	}
	if cap(p.members) > 1<<12 {
		p.members = nil
	}
	parserPool.Put(p)
}

func (p *parser) notJSON(what string) bool {
	if p.err == nil {
		p.err = spec.NotJSON("invalid JSON at byte %d: %s", p.pos, what)
	}
	return false
}

func (p *parser) badJSON(what string) bool {
	if p.err == nil {
		p.err = spec.BadJSON("JSON not accepted at byte %d: %s", p.pos, what)
	}
	return false
}

func (p *parser) skipSpace() {
	for p.pos < len(p.in) {
		switch p.in[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// value parses one JSON value at p.pos (whitespace already skipped).
func (p *parser) value() bool {
	if p.pos >= len(p.in) {
		return p.notJSON("unexpected end of input")
	}
	switch c := p.in[p.pos]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		_, ok := p.str()
		return ok
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	default:
		return p.notJSON("unexpected character")
	}
}

func (p *parser) literal(word string) bool {
	if !bytes.HasPrefix(p.in[p.pos:], []byte(word)) {
		return p.notJSON("invalid literal")
	}
	p.pos += len(word)
	p.out = append(p.out, word...)
	return true
}

func (p *parser) enter() bool {
	p.depth++
	if p.depth > maxDepth {
		return p.badJSON("nesting is too deep")
	}
	return true
}

func (p *parser) array() bool {
	if !p.enter() {
		return false
	}
	p.pos++
	p.out = append(p.out, '[')
	p.skipSpace()
	if p.pos < len(p.in) && p.in[p.pos] == ']' {
		p.pos++
		p.out = append(p.out, ']')
		p.depth--
		return true
	}
	for {
		p.skipSpace()
		if !p.value() {
			return false
		}
		p.skipSpace()
		if p.pos >= len(p.in) {
			return p.notJSON("unterminated array")
		}
		switch p.in[p.pos] {
		case ',':
			p.pos++
			p.out = append(p.out, ',')
		case ']':
			p.pos++
			p.out = append(p.out, ']')
			p.depth--
			return true
		default:
			return p.notJSON("expected ',' or ']'")
		}
	}
}

func (p *parser) object() bool {
	if !p.enter() {
		return false
	}
	p.pos++
	objStart := len(p.out)
	p.out = append(p.out, '{')
	p.skipSpace()
	if p.pos < len(p.in) && p.in[p.pos] == '}' {
		p.pos++
		p.out = append(p.out, '}')
		p.depth--
		return true
	}
	base := len(p.members)
	for {
		p.skipSpace()
		if p.pos >= len(p.in) || p.in[p.pos] != '"' {
			return p.notJSON("expected a string key")
		}
		m := memberPos{start: len(p.out), keyStart: len(p.out) + 1}
		esc, ok := p.str()
		if !ok {
			return false
		}
		m.keyEnd, m.escaped = len(p.out)-1, esc
		p.skipSpace()
		if p.pos >= len(p.in) || p.in[p.pos] != ':' {
			return p.notJSON("expected ':'")
		}
		p.pos++
		p.out = append(p.out, ':')
		p.skipSpace()
		if !p.value() {
			return false
		}
		m.end = len(p.out)
		p.members = append(p.members, m)
		p.skipSpace()
		if p.pos >= len(p.in) {
			return p.notJSON("unterminated object")
		}
		if p.in[p.pos] == ',' {
			p.pos++
			p.out = append(p.out, ',')
			continue
		}
		if p.in[p.pos] != '}' {
			return p.notJSON("expected ',' or '}'")
		}
		p.pos++
		p.out = append(p.out, '}')
		break
	}
	ok := p.sortMembers(objStart, p.members[base:])
	p.members = p.members[:base]
	p.depth--
	return ok
}

// sortMembers puts the members of the object written at out[objStart:] in
// canonical order and refuses duplicate keys. Reordering only permutes bytes
// inside the object, so positions recorded by enclosing objects stay valid.
func (p *parser) sortMembers(objStart int, ms []memberPos) bool {
	sorted := true
	for i := 1; i < len(ms); i++ {
		c := p.compareKeys(ms[i-1], ms[i])
		if c == 0 {
			return p.badJSON("duplicate key")
		}
		if c > 0 {
			sorted = false
		}
	}
	if sorted {
		return true
	}
	slices.SortFunc(ms, p.compareKeys)
	for i := 1; i < len(ms); i++ {
		if p.compareKeys(ms[i-1], ms[i]) == 0 {
			return p.badJSON("duplicate key")
		}
	}
	s := p.scratch[:0]
	for i, m := range ms {
		if i > 0 {
			s = append(s, ',')
		}
		s = append(s, p.out[m.start:m.end]...)
	}
	copy(p.out[objStart+1:], s)
	p.scratch = s
	return true
}

// compareKeys orders two written keys by the codepoints they denote, which
// for UTF-8 is the order of the unescaped bytes.
func (p *parser) compareKeys(a, b memberPos) int {
	ka, kb := p.out[a.keyStart:a.keyEnd], p.out[b.keyStart:b.keyEnd]
	if !a.escaped && !b.escaped {
		return bytes.Compare(ka, kb)
	}
	return compareEscaped(ka, kb)
}

// compareEscaped compares two string contents in canonical escaped form by
// their unescaped bytes. In canonical form every escape stands for one byte.
func compareEscaped(a, b []byte) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		ca, ni := unescapeByte(a, i)
		cb, nj := unescapeByte(b, j)
		if ca != cb {
			if ca < cb {
				return -1
			}
			return 1
		}
		i, j = ni, nj
	}
	switch {
	case i < len(a):
		return 1
	case j < len(b):
		return -1
	}
	return 0
}

// unescapeByte returns the byte at s[i] of a canonical string's contents,
// resolving an escape, and the index after it.
func unescapeByte(s []byte, i int) (byte, int) {
	if s[i] != '\\' || i+1 >= len(s) {
		return s[i], i + 1
	}
	switch s[i+1] {
	case 'b':
		return '\b', i + 2
	case 't':
		return '\t', i + 2
	case 'n':
		return '\n', i + 2
	case 'f':
		return '\f', i + 2
	case 'r':
		return '\r', i + 2
	case 'u':
		if i+6 <= len(s) {
			return hexVal(s[i+4])<<4 | hexVal(s[i+5]), i + 6
		}
	}
	return s[i+1], i + 2 // \" and \\
}

func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return 0
}

// str parses a string at p.pos and writes it in canonical form. It reports
// whether the written form contains a backslash escape.
func (p *parser) str() (escaped, ok bool) {
	p.pos++
	p.out = append(p.out, '"')
	for {
		start, in, pos := p.pos, p.in, p.pos
		for pos+8 <= len(in) && plainWord(binary.LittleEndian.Uint64(in[pos:])) {
			pos += 8
		}
		for pos < len(in) && plainASCII[in[pos]] {
			pos++
		}
		p.pos = pos
		p.out = append(p.out, in[start:pos]...)
		if p.pos >= len(p.in) {
			return false, p.notJSON("unterminated string")
		}
		switch c := p.in[p.pos]; {
		case c == '"':
			p.pos++
			p.out = append(p.out, '"')
			return escaped, true
		case c == '\\':
			e, ok := p.escape()
			if !ok {
				return false, false
			}
			escaped = escaped || e
		case c < 0x20:
			return false, p.notJSON("control character in string")
		default:
			r, size := utf8.DecodeRune(p.in[p.pos:])
			if r == utf8.RuneError && size == 1 {
				return false, p.badJSON("invalid UTF-8")
			}
			p.out = append(p.out, p.in[p.pos:p.pos+size]...)
			p.pos += size
		}
	}
}

// plainASCII marks the bytes a string copies unchanged: printable ASCII
// other than '"' and '\\'.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainWord reports whether all eight bytes of x are plainASCII, testing
// them at once: no byte below 0x20, none equal to '"' or '\\', none with the
// high bit set.
func plainWord(x uint64) bool {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	below20 := (x - 0x20*ones) & ^x
	quote := x ^ '"'*ones
	quote = (quote - ones) & ^quote
	backslash := x ^ '\\'*ones
	backslash = (backslash - ones) & ^backslash
	return (below20|quote|backslash|x)&highs == 0
}

// escape parses one escape sequence at p.pos and writes its canonical form.
func (p *parser) escape() (escaped, ok bool) {
	if p.pos+1 >= len(p.in) {
		return false, p.notJSON("unterminated string")
	}
	c := p.in[p.pos+1]
	switch c {
	case '"', '\\', 'b', 'f', 'n', 'r', 't':
		p.out = append(p.out, '\\', c)
		p.pos += 2
		return true, true
	case '/':
		p.out = append(p.out, '/')
		p.pos += 2
		return false, true
	case 'u':
	default:
		return false, p.notJSON("invalid escape")
	}
	r, ok := p.hex4(p.pos + 2)
	if !ok {
		return false, p.notJSON("invalid \\u escape")
	}
	p.pos += 6
	switch {
	case r >= 0xDC00 && r <= 0xDFFF:
		return false, p.badJSON("lone surrogate escape")
	case r >= 0xD800 && r <= 0xDBFF:
		if p.pos+1 >= len(p.in) || p.in[p.pos] != '\\' || p.in[p.pos+1] != 'u' {
			return false, p.badJSON("lone surrogate escape")
		}
		lo, ok := p.hex4(p.pos + 2)
		if !ok {
			return false, p.notJSON("invalid \\u escape")
		}
		if lo < 0xDC00 || lo > 0xDFFF {
			return false, p.badJSON("lone surrogate escape")
		}
		p.pos += 6
		r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
	}
	return p.writeRune(r), true
}

func (p *parser) hex4(at int) (rune, bool) {
	if at+4 > len(p.in) {
		return 0, false
	}
	var r rune
	for _, c := range p.in[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// writeRune writes r as canonical string contents and reports whether it
// needed an escape.
func (p *parser) writeRune(r rune) bool {
	n := len(p.out)
	p.out = appendStringRune(p.out, r)
	return p.out[n] == '\\'
}

// appendStringRune appends r as it appears inside a canonical JSON string:
// the grammar's short escapes, \u00XX (lowercase hex) for other control
// characters, and everything else as raw UTF-8.
func appendStringRune(dst []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	switch r {
	case '"', '\\':
		return append(dst, '\\', byte(r))
	case '\b':
		return append(dst, '\\', 'b')
	case '\t':
		return append(dst, '\\', 't')
	case '\n':
		return append(dst, '\\', 'n')
	case '\f':
		return append(dst, '\\', 'f')
	case '\r':
		return append(dst, '\\', 'r')
	}
	if r < 0x20 {
		return append(dst, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xF])
	}
	return utf8.AppendRune(dst, r)
}

// number parses an integer; fractions and exponents are refused.
func (p *parser) number() bool {
	start := p.pos
	if p.in[p.pos] == '-' {
		p.pos++
	}
	digits := p.pos
	if p.pos >= len(p.in) {
		return p.notJSON("invalid number")
	}
	switch c := p.in[p.pos]; {
	case c == '0':
		p.pos++
	case c >= '1' && c <= '9':
		for p.pos < len(p.in) && p.in[p.pos] >= '0' && p.in[p.pos] <= '9' {
			p.pos++
		}
	default:
		return p.notJSON("invalid number")
	}
	end := p.pos
	if p.pos < len(p.in) {
		if c := p.in[p.pos]; c == '.' || c == 'e' || c == 'E' {
			if !p.skipFractionExponent() {
				return p.notJSON("invalid number")
			}
			if p.lenientNumbers {
				p.out = append(p.out, p.in[start:p.pos]...)
				return true
			}
			return p.badJSON("numbers must be integers")
		}
	}
	if end-digits > 16 && p.lenientNumbers {
		p.out = append(p.out, p.in[start:end]...)
		return true
	}
	if end-digits > 16 {
		return p.badJSON("integer out of range")
	}
	var n uint64
	for _, c := range p.in[digits:end] {
		n = n*10 + uint64(c-'0')
	}
	if n > maxSafeInt {
		if p.lenientNumbers {
			p.out = append(p.out, p.in[start:end]...)
			return true
		}
		return p.badJSON("integer out of range")
	}
	if n == 0 {
		p.out = append(p.out, '0') // -0 must not appear
		return true
	}
	p.out = append(p.out, p.in[start:end]...)
	return true
}

// skipFractionExponent moves past a syntactically valid fraction and exponent,
// so that "1.5" (valid JSON, refused by Matrix) and "1." (not JSON) get
// different error codes.
func (p *parser) skipFractionExponent() bool {
	digits := func() bool {
		n := 0
		for p.pos < len(p.in) && p.in[p.pos] >= '0' && p.in[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n > 0
	}
	if p.in[p.pos] == '.' {
		p.pos++
		if !digits() {
			return false
		}
	}
	if p.pos < len(p.in) && (p.in[p.pos] == 'e' || p.in[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.in) && (p.in[p.pos] == '+' || p.in[p.pos] == '-') {
			p.pos++
		}
		if !digits() {
			return false
		}
	}
	return true
}
