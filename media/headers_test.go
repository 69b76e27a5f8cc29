package media

import (
	"bytes"
	"mime"
	"net/url"
	"strings"
	"testing"
)

func TestContentDisposition(t *testing.T) {
	cases := []struct {
		disposition, name, want string
	}{
		{"inline", "", "inline"},
		{"inline", "photo.jpg", `inline; filename="photo.jpg"`},
		{"attachment", "War and Peace.pdf", `attachment; filename="War and Peace.pdf"`},
		{"attachment", "../../etc/passwd", `attachment; filename=".._.._etc_passwd"; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd`},
		{"attachment", `C:\Windows\evil.exe`, `attachment; filename="C__Windows_evil.exe"; filename*=UTF-8''C%3A%5CWindows%5Cevil.exe`},
		{"attachment", `a"b.txt`, `attachment; filename="a_b.txt"; filename*=UTF-8''a%22b.txt`},
		{"attachment", "x\r\nSet-Cookie: a=b", `attachment; filename="x__Set-Cookie_ a=b"; filename*=UTF-8''x%0D%0ASet-Cookie%3A%20a%3Db`},
		{"attachment", "tab\there\x00", `attachment; filename="tab_here_"; filename*=UTF-8''tab%09here%00`},
		{"inline", "résumé.pdf", `inline; filename="r_sum_.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf`},
		{"attachment", "a;b,c.txt", `attachment; filename="a_b_c.txt"; filename*=UTF-8''a%3Bb%2Cc.txt`},
		{"attachment", "100%.txt", `attachment; filename="100_.txt"; filename*=UTF-8''100%25.txt`},
	}
	for _, c := range cases {
		got := contentDisposition(c.disposition, c.name)
		if got != c.want {
			t.Errorf("contentDisposition(%q, %q)\n got %s\nwant %s", c.disposition, c.name, got, c.want)
		}
		for _, r := range got {
			if r < 0x20 || r > 0x7e {
				t.Errorf("header for %q has a raw byte %q", c.name, r)
			}
		}
		if c.name == "" {
			continue
		}
		// A standard parser gets the exact name back (RFC 2231/5987).
		d, params, err := mime.ParseMediaType(got)
		if err != nil || d != c.disposition || params["filename"] != c.name {
			t.Errorf("parsing %s: %q %v %v", got, d, params, err)
		}
	}
}

func TestDisposition(t *testing.T) {
	for ct, want := range map[string]string{
		"image/png":                 "inline",
		"IMAGE/PNG":                 "inline",
		"text/plain; charset=utf-8": "inline",
		"video/mp4":                 "inline",
		"text/html":                 "attachment",
		"image/svg+xml":             "attachment",
		"application/javascript":    "attachment",
		"application/xhtml+xml":     "attachment",
		"application/pdf":           "attachment",
		"application/octet-stream":  "attachment",
		"text/xml":                  "attachment",
		"":                          "attachment",
	} {
		if got := dispositionFor(ct); got != want {
			t.Errorf("dispositionFor(%q) = %s, want %s", ct, got, want)
		}
	}
}

func TestServingHeaders(t *testing.T) {
	e := newEnv(t, Config{})
	cases := []struct {
		name, contentType, filename, pathName string
		wantDisposition                       string
	}{
		{"image", "image/png", "cat.png", "", `inline; filename="cat.png"`},
		{"html is an attachment", "text/html", "page.html", "", `attachment; filename="page.html"`},
		{"svg is an attachment", "image/svg+xml", "x.svg", "", `attachment; filename="x.svg"`},
		{"no name", "application/pdf", "", "", "attachment"},
		{"traversal in the upload name", "text/plain", "../../../etc/passwd", "", `inline; filename=".._.._.._etc_passwd"; filename*=UTF-8''..%2F..%2F..%2Fetc%2Fpasswd`},
		{"CRLF in the upload name", "text/plain", "a\r\nX-Injected: 1", "", `inline; filename="a__X-Injected_ 1"; filename*=UTF-8''a%0D%0AX-Injected%3A%201`},
		{"name from the path", "image/png", "cat.png", "dog.png", `inline; filename="dog.png"`},
		{"hostile name from the path", "image/png", "cat.png", url.PathEscape("../x\"y.png"), `inline; filename=".._x_y.png"; filename*=UTF-8''..%2Fx%22y.png`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := e.upload(alice, []byte("<html><script>alert(1)</script></html>"), c.contentType, c.filename)
			path := "/_matrix/client/v1/media/download/media.test/" + id
			if c.pathName != "" {
				path += "/" + c.pathName
			}
			r := e.do("GET", path, alice, nil, nil)
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			h := r.header
			if got := h.Get("Content-Disposition"); got != c.wantDisposition {
				t.Errorf("Content-Disposition\n got %s\nwant %s", got, c.wantDisposition)
			}
			if h.Get("X-Injected") != "" {
				t.Error("a header was injected")
			}
			for k, want := range map[string]string{
				"X-Content-Type-Options":       "nosniff",
				"Cross-Origin-Resource-Policy": "cross-origin",
				"Content-Type":                 c.contentType,
			} {
				if got := h.Get(k); got != want {
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
			csp := h.Get("Content-Security-Policy")
			for _, d := range []string{"sandbox", "default-src 'none'", "script-src 'none'"} {
				if !strings.Contains(csp, d) {
					t.Errorf("CSP %q lacks %q", csp, d)
				}
			}
			if !bytes.Contains(r.body, []byte("<script>")) {
				t.Error("the bytes were changed")
			}
		})
	}
}
