package events

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// This file reads and edits JSON that is already canonical (the output of
// Canonical): no whitespace, sorted keys, known escapes. Every function
// checks its bounds and reports malformed input instead of panicking, but it
// does not re-validate the grammar.

// stringEnd returns the index just past the string starting at b[i] ('"').
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd returns the index just past the value starting at b[i], or -1.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := stringEnd(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	case ',', ':', '}', ']':
		return -1
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
		j++
	}
	return j
}

// listCursor steps through the elements of a canonical JSON object or array
// (between open and close): it checks the opening bracket, the separators
// and the closing bracket, and leaves pos at the start of the next element.
type listCursor struct {
	b    []byte
	pos  int
	bad  bool // the input was not a list of the kind asked for
	done bool
}

// step reports whether another element starts at pos.
func (l *listCursor) step(open, close byte) bool {
	if l.done {
		return false
	}
	b := l.b
	if l.pos == 0 {
		if len(b) < 2 || b[0] != open {
			return l.fail()
		}
		l.pos = 1
		if b[1] == close {
			l.done = true
			if len(b) != 2 {
				l.fail()
			}
			return false
		}
		return true
	}
	if l.pos >= len(b) {
		return l.fail()
	}
	switch b[l.pos] {
	case ',':
		l.pos++
		return true
	case close:
		l.done = true
		if l.pos != len(b)-1 {
			l.fail()
		}
		return false
	default:
		return l.fail()
	}
}

func (l *listCursor) fail() bool {
	l.bad, l.done = true, true
	return false
}

// objIter walks the members of a canonical JSON object:
//
//	it := iterObject(obj)
//	for it.next() { use it.key, it.val }
//	if it.bad { … }
type objIter struct {
	listCursor
	key []byte // the key's contents between the quotes, canonically escaped
	val []byte // the raw value
	mem []byte // the whole member, "key":value
}

func iterObject(obj []byte) objIter { return objIter{listCursor: listCursor{b: obj}} }

func (it *objIter) next() bool {
	if !it.step('{', '}') {
		return false
	}
	b := it.b
	if it.pos >= len(b) || b[it.pos] != '"' {
		return it.fail()
	}
	ke := stringEnd(b, it.pos)
	if ke < 0 || ke >= len(b) || b[ke] != ':' {
		return it.fail()
	}
	it.key = b[it.pos+1 : ke-1]
	ve := valueEnd(b, ke+1)
	if ve < 0 {
		return it.fail()
	}
	it.val = b[ke+1 : ve]
	it.mem = b[it.pos:ve]
	it.pos = ve
	return true
}

// arrIter walks the elements of a canonical JSON array.
type arrIter struct {
	listCursor
	val []byte
}

func iterArray(arr []byte) arrIter { return arrIter{listCursor: listCursor{b: arr}} }

func (it *arrIter) next() bool {
	if !it.step('[', ']') {
		return false
	}
	ve := valueEnd(it.b, it.pos)
	if ve < 0 {
		return it.fail()
	}
	it.val = it.b[it.pos:ve]
	it.pos = ve
	return true
}

// member returns the raw value of key in a canonical object.
func member(obj []byte, key string) ([]byte, bool) {
	it := iterObject(obj)
	for it.next() {
		if string(it.key) == key {
			return it.val, true
		}
	}
	return nil, false
}

// unquote decodes a canonical JSON string value (with its quotes).
func unquote(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	s := raw[1 : len(raw)-1]
	if bytes.IndexByte(s, '\\') < 0 {
		return string(s), true
	}
	return string(unescapeKey(nil, s)), true
}

// unescapeKey appends the unescaped bytes of canonical string contents.
func unescapeKey(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		var c byte
		c, i = unescapeByte(s, i)
		dst = append(dst, c)
	}
	return dst
}

// keyLess reports whether canonical key contents a sort before b.
func keyLess(a, b []byte) bool {
	if bytes.IndexByte(a, '\\') < 0 && bytes.IndexByte(b, '\\') < 0 {
		return bytes.Compare(a, b) < 0
	}
	return compareEscaped(a, b) < 0
}

// parseInt reads a canonical JSON integer.
func parseInt(raw []byte) (int64, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	return n, err == nil
}

// isString, isObject and isArray classify a raw canonical value.
func isString(raw []byte) bool { return len(raw) >= 2 && raw[0] == '"' }
func isObject(raw []byte) bool { return len(raw) >= 2 && raw[0] == '{' }
func isArray(raw []byte) bool  { return len(raw) >= 2 && raw[0] == '[' }

// appendString appends s as a canonical JSON string. It reports false if s is
// not valid UTF-8.
func appendString(dst []byte, s string) ([]byte, bool) {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		if c < utf8.RuneSelf {
			dst = appendStringRune(dst, rune(c))
			i++
		} else {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return dst, false
			}
			dst = append(dst, s[i:i+size]...)
			i += size
		}
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), true
}

// objWriter appends members to a canonical object; the caller supplies them
// in key order.
type objWriter struct {
	buf []byte
	n   int
}

// raw writes a member whose key is a plain ASCII name.
func (w *objWriter) raw(key string, val []byte) { appendMember(w, key, val) }

// rawKey writes a member whose key is given in canonical escaped form.
func (w *objWriter) rawKey(key, val []byte) { appendMember(w, key, val) }

// appendMember writes "key":val after the separator the position needs; key
// is written as it is, so it must already be canonically escaped.
func appendMember[K string | []byte](w *objWriter, key K, val []byte) {
	if w.n == 0 {
		w.buf = append(w.buf, '{')
	} else {
		w.buf = append(w.buf, ',')
	}
	w.n++
	w.buf = append(w.buf, '"')
	w.buf = append(w.buf, key...)
	w.buf = append(w.buf, '"', ':')
	w.buf = append(w.buf, val...)
}

func (w *objWriter) close() []byte {
	if w.n == 0 {
		w.buf = append(w.buf, '{')
	}
	return append(w.buf, '}')
}

// withMember returns the canonical object obj with key set to the canonical
// value val, replacing any existing member of that name.
func withMember(obj []byte, key string, val []byte) ([]byte, bool) {
	ek, ok := appendString(nil, key)
	if !ok {
		return nil, false
	}
	ek = ek[1 : len(ek)-1]
	w := objWriter{buf: make([]byte, 0, len(obj)+len(ek)+len(val)+4)}
	written := false
	it := iterObject(obj)
	for it.next() {
		if !written {
			if bytes.Equal(it.key, ek) {
				w.rawKey(ek, val)
				written = true
				continue
			}
			if keyLess(ek, it.key) {
				w.rawKey(ek, val)
				written = true
			}
		}
		w.rawKey(it.key, it.val)
	}
	if it.bad {
		return nil, false
	}
	if !written {
		w.rawKey(ek, val)
	}
	return w.close(), true
}

// without returns the canonical object obj without the named top-level
// members.
func without(obj []byte, keys ...string) ([]byte, bool) {
	w := objWriter{buf: make([]byte, 0, len(obj))}
	it := iterObject(obj)
	for it.next() {
		if !contains(keys, it.key) {
			w.rawKey(it.key, it.val)
		}
	}
	if it.bad {
		return nil, false
	}
	return w.close(), true
}

func contains(keys []string, key []byte) bool {
	for _, k := range keys {
		if string(key) == k {
			return true
		}
	}
	return false
}
