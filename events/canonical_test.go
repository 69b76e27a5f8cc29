package events

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/chatalot/chatalot/spec"
)

func errCode(err error) spec.ErrCode {
	var se *spec.Error
	if errors.As(err, &se) {
		return se.Code
	}
	return ""
}

// The examples of appendices "Canonical JSON", byte for byte.
func TestCanonicalSpecExamples(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{}`, `{}`},
		{"{\n    \"one\": 1,\n    \"two\": \"Two\"\n}", `{"one":1,"two":"Two"}`},
		{"{\n    \"b\": \"2\",\n    \"a\": \"1\"\n}", `{"a":"1","b":"2"}`},
		{`{"b":"2","a":"1"}`, `{"a":"1","b":"2"}`},
		{`{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}`, `{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
		{"{\n    \"a\": \"日本語\"\n}", `{"a":"日本語"}`},
		{"{\n    \"本\": 2,\n    \"日\": 1\n}", `{"日":1,"本":2}`},
		{"{\n    \"a\": \"\\u65E5\"\n}", `{"a":"日"}`},
		{"{\n    \"a\": null\n}", `{"a":null}`},
		// The spec's last example is {"a": -0, "b": 1e10}. Strict
		// enforcement (room versions 6+) refuses the exponent, so only the
		// -0 half is checked here; 1e10 is in TestCanonicalRefuses.
		{"{\n    \"a\": -0\n}", `{"a":0}`},
	}
	for _, tt := range tests {
		got, err := Canonical([]byte(tt.in))
		if err != nil {
			t.Errorf("Canonical(%q): %v", tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("Canonical(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestCanonical(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"scalar string", `"x"`, `"x"`},
		{"scalar int", ` 42 `, `42`},
		{"literals", `[true,false,null]`, `[true,false,null]`},
		{"whitespace", " \t\r\n[ 1 , { \"a\" : [ ] } ]\n", `[1,{"a":[]}]`},
		{"short escapes kept", `"\b\f\n\r\t\"\\"`, `"\b\f\n\r\t\"\\"`},
		{"solidus unescaped", `"\/a/"`, `"/a/"`},
		{"control escapes lowercase", `"\u0001\u001F\u000B"`, `"\u0001\u001f\u000b"`},
		{"nul", `"\u0000"`, `"\u0000"`},
		{"short escape from u", `"\u0008\u0009\u000a\u000C\u000d"`, `"\b\t\n\f\r"`},
		{"quote from u", `"\u0022\u005c"`, `"\"\\"`},
		{"del and line separators raw", `"\u007f\u2028\u2029"`, "\"\x7f\u2028\u2029\""},
		{"html not escaped", `"\u003c\u003e\u0026"`, `"<>&"`},
		{"surrogate pair", `"\ud83d\ude00"`, `"😀"`},
		{"raw astral", `"😀"`, `"😀"`},
		{"U+FFFD raw", "\"\xef\xbf\xbd\"", "\"\xef\xbf\xbd\""},
		{"max int", `9007199254740991`, `9007199254740991`},
		{"min int", `-9007199254740991`, `-9007199254740991`},
		{"negative zero", `[-0]`, `[0]`},
		{"zero", `0`, `0`},
		{"nested sort", `{"b":{"d":1,"c":[{"z":1,"y":2}]},"a":{"f":{},"e":[]}}`,
			`{"a":{"e":[],"f":{}},"b":{"c":[{"y":2,"z":1}],"d":1}}`},
		{"codepoint order", `{"é":1,"z":2,"Z":3,"😀":4,"ﬀ":5}`, `{"Z":3,"z":2,"é":1,"ﬀ":5,"😀":4}`},
		{"escaped key order", `{"A":1,"\n":2,"\"":3}`, `{"\n":2,"\"":3,"A":1}`},
		{"escaped keys equal prefix", `{"a\u0001":1,"a":2}`, `{"a":2,"a\u0001":1}`},
		{"many keys", `{"k9":9,"k8":8,"k7":7,"k6":6,"k5":5,"k4":4,"k3":3,"k2":2,"k1":1,"k0":0}`,
			`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonical([]byte(tt.in))
			if err != nil {
				t.Fatalf("Canonical(%q): %v", tt.in, err)
			}
			if string(got) != tt.want {
				t.Fatalf("Canonical(%q) = %q, want %q", tt.in, got, tt.want)
			}
			again, err := Canonical(got)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("not a fixed point: %q, %v", again, err)
			}
		})
	}
}

func TestCanonicalRefuses(t *testing.T) {
	const bad, not = spec.ErrBadJSON, spec.ErrNotJSON
	tests := []struct {
		name string
		in   string
		want spec.ErrCode
	}{
		{"empty", ``, not},
		{"spaces", `  `, not},
		{"garbage", `hello`, not},
		{"trailing garbage", `{} x`, not},
		{"two values", `{}{}`, not},
		{"trailing comma object", `{"a":1,}`, not},
		{"trailing comma array", `[1,]`, not},
		{"missing colon", `{"a" 1}`, not},
		{"unquoted key", `{a:1}`, not},
		{"single quotes", `{'a':1}`, not},
		{"unterminated string", `"abc`, not},
		{"unterminated object", `{"a":1`, not},
		{"unterminated array", `[1`, not},
		{"raw control char", "\"a\x01\"", not},
		{"raw newline", "\"a\nb\"", not},
		{"bad escape", `"\x"`, not},
		{"short u escape", `"\u12"`, not},
		{"bad hex", `"\u12G4"`, not},
		{"leading zero", `01`, not},
		{"leading zero negative", `-01`, not},
		{"plus sign", `+1`, not},
		{"bare minus", `-`, not},
		{"dot without digits", `1.`, not},
		{"exponent without digits", `1e`, not},
		{"NaN", `NaN`, not},
		{"truncated literal", `tru`, not},
		{"capital literal", `True`, not},
		{"BOM", "\xef\xbb\xbf{}", not},
		{"fraction", `1.5`, bad},
		{"integral fraction", `1.0`, bad},
		{"exponent", `1e10`, bad},
		{"spec example with exponent", `{"a": -0, "b": 1e10}`, bad},
		{"negative exponent", `-2E-3`, bad},
		{"too large", `9007199254740992`, bad},
		{"too small", `-9007199254740992`, bad},
		{"huge", `123456789012345678901234567890`, bad},
		{"invalid utf8", "\"\xff\"", bad},
		{"truncated utf8", "\"\xe6\x97\"", bad},
		{"overlong utf8", "\"\xc0\xaf\"", bad},
		{"utf8 surrogate", "\"\xed\xa0\x80\"", bad},
		{"invalid utf8 in key", "{\"\xff\":1}", bad},
		{"lone high surrogate", `"\ud83d"`, bad},
		{"lone high surrogate then char", `"\ud83dx"`, bad},
		{"high then non-low", `"\ud83d\u0041"`, bad},
		{"lone low surrogate", `"\ude00"`, bad},
		{"duplicate key", `{"a":1,"a":2}`, bad},
		{"duplicate key escaped", `{"a":1,"\u0061":2}`, bad},
		{"duplicate key unsorted", `{"b":1,"a":1,"b":2}`, bad},
		{"duplicate nested", `{"x":{"a":1,"a":1}}`, bad},
		{"too deep", strings.Repeat("[", 65) + strings.Repeat("]", 65), bad},
		{"too deep objects", strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65), bad},
		{"very deep", strings.Repeat("[", 100000), bad},
		{"very deep objects", strings.Repeat(`{"a":`, 100000), bad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonical([]byte(tt.in))
			if err == nil {
				t.Fatalf("Canonical(%q) = %q, want %s", tt.in, got, tt.want)
			}
			if c := errCode(err); c != tt.want {
				t.Fatalf("Canonical(%q): %v, want %s", tt.in, err, tt.want)
			}
		})
	}
}

func TestCanonicalDepthLimit(t *testing.T) {
	ok := strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)
	if _, err := Canonical([]byte(ok)); err != nil {
		t.Fatalf("depth %d refused: %v", maxDepth, err)
	}
}

func TestCanonicalObject(t *testing.T) {
	if _, err := CanonicalObject([]byte(`[1]`)); errCode(err) != spec.ErrBadJSON {
		t.Fatalf("array: %v, want M_BAD_JSON", err)
	}
	if _, err := CanonicalObject([]byte(`{`)); errCode(err) != spec.ErrNotJSON {
		t.Fatalf("broken: %v, want M_NOT_JSON", err)
	}
	got, err := CanonicalObject([]byte(` {"b":1, "a":2} `))
	if err != nil || string(got) != `{"a":2,"b":1}` {
		t.Fatalf("got %s, %v", got, err)
	}
}

func TestMarshalCanonical(t *testing.T) {
	got, err := MarshalCanonical(map[string]any{"b": "<&>", "a": []int{1, 2}, "c": 3.0})
	if err != nil || string(got) != `{"a":[1,2],"b":"<&>","c":3}` {
		t.Fatalf("got %s, %v", got, err)
	}
	if _, err := MarshalCanonical(map[string]any{"f": 1.5}); errCode(err) != spec.ErrBadJSON {
		t.Fatalf("float: %v, want M_BAD_JSON", err)
	}
	if _, err := MarshalCanonical(func() {}); errCode(err) != spec.ErrBadJSON {
		t.Fatalf("func: %v, want M_BAD_JSON", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestReadContent(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		limit      int64
		want       string
		wantCode   spec.ErrCode
		wantStatus int
	}{
		{"ok", `{"msgtype":"m.text", "body":"hi"}`, 100, `{"body":"hi","msgtype":"m.text"}`, "", 0},
		{"exactly limit", `{"a":1}`, 7, `{"a":1}`, "", 0},
		{"over limit", `{"a":12}`, 7, "", spec.ErrTooLarge, 413},
		{"array", `[]`, 100, "", spec.ErrBadJSON, 400},
		{"not json", `body=hi`, 100, "", spec.ErrNotJSON, 400},
		{"empty", ``, 100, "", spec.ErrNotJSON, 400},
		{"float", `{"a":0.5}`, 100, "", spec.ErrBadJSON, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadContent(strings.NewReader(tt.body), tt.limit)
			if tt.wantCode == "" {
				if err != nil || string(got) != tt.want {
					t.Fatalf("got %s, %v; want %s", got, err, tt.want)
				}
				return
			}
			var se *spec.Error
			if !errors.As(err, &se) || se.Code != tt.wantCode || se.Status != tt.wantStatus {
				t.Fatalf("got %v, want %s %d", err, tt.wantCode, tt.wantStatus)
			}
		})
	}
	if _, err := ReadContent(failingReader{}, 100); errCode(err) == "" {
		t.Fatalf("read error: %v, want a *spec.Error", err)
	}
}

func TestPlainWord(t *testing.T) {
	var b [8]byte
	for c := 0; c < 256; c++ {
		for i := range 8 {
			for j := range b {
				b[j] = 'a'
			}
			b[i] = byte(c)
			want := true
			for _, x := range b {
				want = want && plainASCII[x]
			}
			if got := plainWord(binary.LittleEndian.Uint64(b[:])); got != want {
				t.Fatalf("plainWord(%q) = %v", b, got)
			}
		}
	}
}
