package oauth

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"
)

// The pages are plain HTML forms: no JavaScript, nothing loaded from
// anywhere, one inline style sheet allowed by its hash. The client's logo
// is not shown: showing it would make the person's browser fetch it, telling
// the client's host who signs in when.

const style = `body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#111;background:#fff}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}ul{padding-left:1.2rem}li{margin:.6rem 0}li form{display:inline}label{display:block;margin-top:1rem;font-weight:600}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem;border:1px solid #666;border-radius:4px}
button{margin-top:1.2rem;margin-right:.5rem;padding:.5rem 1.2rem;font-size:1rem;border-radius:4px;border:1px solid #333;background:#fff;cursor:pointer}
button.primary{background:#0b5cad;color:#fff;border-color:#0b5cad}.error{color:#a00;font-weight:600}.note{color:#444;font-size:.9rem}
@media (prefers-color-scheme:dark){body{background:#111;color:#eee}.note{color:#bbb}input[type=text],input[type=password]{background:#222;color:#eee}button{background:#222;color:#eee}}`

var styleHash = func() string {
	sum := sha256.Sum256([]byte(style))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}()

// The pages are written by hand rather than with html/template: executing
// templates keeps every exported method of the binary linked (see
// tests/binary_test.go). Every value from outside goes through text or
// attr, which escape it.

// htmlPage accumulates a page.
type htmlPage struct{ b strings.Builder }

func (p *htmlPage) raw(s string)  { p.b.WriteString(s) }
func (p *htmlPage) text(s string) { p.b.WriteString(html.EscapeString(s)) }

// attr writes name="value", escaped.
func (p *htmlPage) attr(name, value string) {
	p.raw(" " + name + `="`)
	p.text(value)
	p.raw(`"`)
}

func (p *htmlPage) head(title string) {
	p.raw(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>`)
	p.text(title)
	p.raw("</title><style>" + style + "</style></head><body><main>\n")
}

func (p *htmlPage) foot() { p.raw("</main></body></html>\n") }

// message writes an error (alert) or status paragraph when there is one.
func (p *htmlPage) message(msg, role string) {
	if msg == "" {
		return
	}
	p.raw(`<p class="error"`)
	p.attr("role", role)
	p.raw(">")
	p.text(msg)
	p.raw("</p>\n")
}

// formStart opens a POST form with its hidden fields (empty ones left out).
func (p *htmlPage) formStart(action string, hidden ...string) {
	p.raw(`<form method="post"`)
	p.attr("action", action)
	p.raw(">")
	for i := 0; i+1 < len(hidden); i += 2 {
		if hidden[i+1] == "" && hidden[i] != "next" {
			continue
		}
		p.raw(`<input type="hidden"`)
		p.attr("name", hidden[i])
		p.attr("value", hidden[i+1])
		p.raw(">")
	}
	p.raw("\n")
}

// input writes a labelled field; extra is trusted markup (attributes).
func (p *htmlPage) input(kind, id, name, label, autocomplete, extra string) {
	p.raw(`<label`)
	p.attr("for", id)
	p.raw(">")
	p.text(label)
	p.raw(`</label><input`)
	p.attr("type", kind)
	p.attr("id", id)
	p.attr("name", name)
	p.attr("autocomplete", autocomplete)
	p.raw(" " + extra + ">\n")
}

func (p *htmlPage) checkbox(name, label string, required bool) {
	p.raw(`<label><input type="checkbox"`)
	p.attr("name", name)
	p.raw(` value="yes"`)
	if required {
		p.raw(" required")
	}
	p.raw("> ")
	p.text(label)
	p.raw("</label>\n")
}

func (p *htmlPage) button(label, class, name, value string) {
	p.raw(`<button type="submit"`)
	if class != "" {
		p.attr("class", class)
	}
	if name != "" {
		p.attr("name", name)
		p.attr("value", value)
	}
	p.raw(">")
	p.text(label)
	p.raw("</button>")
}

const plainField = `autocapitalize="none" spellcheck="false" required`

// views are the pages by name.
var views = map[string]func(p *htmlPage, d pageData){
	"signin": func(p *htmlPage, d pageData) {
		p.raw("<h1>Sign in to ")
		p.text(d.Server)
		p.raw("</h1>\n<p><strong>")
		p.text(d.Client)
		p.raw("</strong> wants to sign in to your account.</p>\n")
		p.message(d.Error, "alert")
		p.formStart(d.Action, "request", d.Request, "csrf", d.CSRF)
		p.input("text", "username", "username", "User name", "username", plainField+" autofocus")
		p.input("password", "password", "password", "Password", "current-password", "required")
		p.button("Sign in", "primary", "", "")
		p.raw("\n</form>\n<p class=\"note\">You will be asked to confirm before ")
		p.text(d.Client)
		p.raw(" gets access.</p>\n")
		if d.SignUp != "" {
			p.raw("<p>No account yet? <a")
			p.attr("href", d.SignUp)
			p.raw(">Create one</a>")
			if d.InviteNeeded {
				p.raw(" with an invite code")
			}
			p.raw(".</p>\n")
		}
	},
	"signup": func(p *htmlPage, d pageData) {
		p.raw("<h1>Create an account on ")
		p.text(d.Server)
		p.raw("</h1>\n<p>Then <strong>")
		p.text(d.Client)
		p.raw("</strong> will ask to sign in with it.</p>\n")
		p.message(d.Error, "alert")
		p.formStart(d.Action, "request", d.Request, "csrf", d.CSRF)
		if d.InviteNeeded {
			p.input("text", "invite_code", "invite_code", "Invite code", "off", plainField)
		}
		p.input("text", "username", "username", "User name", "username", plainField+` aria-describedby="username-note"`)
		p.raw(`<p class="note" id="username-note">Your address will be @name:`)
		p.text(d.Server)
		p.raw(". Lower-case letters, digits and . _ = - / + only.</p>\n")
		p.input("password", "password", "password", "Password", "new-password", "required")
		p.input("password", "password2", "password2", "Password again", "new-password", "required")
		p.button("Create account", "primary", "", "")
		p.raw("\n</form>\n<p>Already have an account? <a")
		p.attr("href", d.SignIn)
		p.raw(">Sign in</a>.</p>\n")
	},
	"consent": func(p *htmlPage, d pageData) {
		p.raw("<h1>Allow ")
		p.text(d.Client)
		p.raw("?</h1>\n<p><strong>")
		p.text(d.Client)
		p.raw("</strong> wants to sign in as <strong>")
		p.text(d.User)
		p.raw("</strong>.</p>\n<p>It will be able to read and send your messages, and act as you on this server, as a new session")
		if d.Device != "" {
			p.raw(" (device <code>")
			p.text(d.Device)
			p.raw("</code>)")
		}
		p.raw(". You can sign it out at any time from your list of sessions.</p>\n")
		if d.DeviceFlow {
			p.raw(`<p class="error">The application is on another device: the one that showed you the code. Only allow if you started this yourself just now; someone who sent you a code wants your account.</p>` + "\n")
		} else {
			p.raw(`<p class="note">Afterwards you go back to <strong>`)
			p.text(d.Destination)
			p.raw("</strong>")
			if d.ClientURI != "" {
				p.raw("; the application's home page is ")
				p.text(d.ClientURI)
			}
			p.raw(".</p>\n")
		}
		p.formStart(d.Action, "request", d.Request, "csrf", d.CSRF)
		p.button("Allow", "primary", "decision", "allow")
		p.raw("\n")
		p.button("Cancel", "", "decision", "deny")
		p.raw("\n</form>\n")
	},
	"account_signin": func(p *htmlPage, d pageData) {
		p.raw("<h1>Your account on ")
		p.text(d.Server)
		p.raw("</h1>\n")
		p.message(d.Error, "alert")
		p.formStart(d.Action, "csrf", d.CSRF, "next", d.Next)
		p.input("text", "username", "username", "User name", "username", plainField+" autofocus")
		p.input("password", "password", "password", "Password", "current-password", "required")
		p.button("Sign in", "primary", "", "")
		p.raw("\n</form>\n")
	},
	"account": func(p *htmlPage, d pageData) {
		p.raw("<h1>")
		p.text(d.User)
		p.raw("</h1>\n")
		p.message(d.Error, "status")
		if d.ResetAsked {
			resetSection(p, d)
		}
		p.raw(`<h2 id="sessions">Sessions</h2>
<p class="note">Each app you are signed in with is a session. Signing one out deletes its encryption keys on this server.</p>
<ul>
`)
		if len(d.Devices) == 0 {
			p.raw("<li>No sessions.</li>\n")
		}
		for _, dev := range d.Devices {
			p.raw("<li")
			if dev.Selected {
				p.raw(` aria-current="true"`)
			}
			p.raw("><strong>")
			p.text(dev.Name)
			p.raw("</strong> <code>")
			p.text(dev.ID)
			p.raw("</code>")
			if dev.LastSeen != "" {
				p.raw(", last used ")
				p.text(dev.LastSeen)
			}
			p.raw("\n")
			p.formStart(pathAccountDeleteDevice, "csrf", d.CSRF, "device_id", dev.ID)
			class := ""
			if d.ConfirmDelete && dev.Selected {
				class = "primary"
			}
			p.button("Sign out "+dev.Name, class, "", "")
			p.raw("</form></li>\n")
		}
		p.raw("</ul>\n<h2 id=\"password\">Password</h2>\n")
		p.formStart(pathAccountPassword, "csrf", d.CSRF)
		p.input("password", "current_password", "current_password", "Current password", "current-password", "required")
		p.input("password", "new_password", "new_password", "New password", "new-password", "required")
		p.input("password", "new_password2", "new_password2", "New password again", "new-password", "required")
		p.checkbox("keep_sessions", "Keep my sessions signed in", false)
		p.button("Change password", "", "", "")
		p.raw("</form>\n<h2 id=\"deactivate\">Close the account</h2>\n")
		if d.Deactivate {
			p.raw(`<p class="error">An app asked to close this account. Only do so if you meant to.</p>` + "\n")
		}
		p.formStart(pathAccountDeactivate, "csrf", d.CSRF)
		p.raw(`<p class="note">Closing is for good: every session is signed out, you leave every room, and the user name is never given out again.</p>` + "\n")
		p.input("password", "deactivate_password", "password", "Password", "current-password", "required")
		p.checkbox("erase", "Also erase my display name and avatar", false)
		p.checkbox("confirm", "I want to close my account", true)
		p.button("Close my account", "", "", "")
		p.raw("</form>\n")
		p.formStart(pathAccountSignOut, "csrf", d.CSRF)
		p.button("Sign out of this page", "", "", "")
		p.raw("</form>\n")
	},
	"device_code": func(p *htmlPage, d pageData) {
		p.raw("<h1>Sign in a device</h1>\n<p>Enter the code your other device shows.</p>\n")
		p.message(d.Error, "alert")
		p.raw(`<form method="get"`)
		p.attr("action", d.Action)
		p.raw(">\n")
		p.input("text", "user_code", "user_code", "Code", "off", `autocapitalize="characters" spellcheck="false" required autofocus`)
		p.button("Continue", "primary", "", "")
		p.raw("\n</form>\n<p class=\"note\">Only enter a code that a device of yours shows right now. Nobody from this server will ever ask you for one.</p>\n")
	},
	"done": func(p *htmlPage, d pageData) {
		p.raw("<h1>")
		p.text(d.Title)
		p.raw(`</h1><p role="status">`)
		p.text(d.Error)
		p.raw("</p>\n")
	},
	"error": func(p *htmlPage, d pageData) {
		p.raw("<h1>")
		p.text(d.Title)
		p.raw("</h1>")
		p.message(d.Error, "alert")
	},
}

// resetSection is the account page's part for approving cross-signing
// resets.
func resetSection(p *htmlPage, d pageData) {
	p.raw(`<h2 id="reset">Reset your encryption identity</h2>` + "\n")
	if len(d.Resets) == 0 {
		p.raw("<p>No app is waiting to reset your encryption identity. Start again in your app if it asked.</p>\n")
		return
	}
	p.raw(`<p class="error">Resetting replaces the keys that prove your sessions are yours. Your other sessions and the people you talk with will have to verify you again, and messages only your old keys could read may stay unreadable. Only allow it if you asked for it yourself just now.</p>` + "\n<ul>\n")
	for _, r := range d.Resets {
		p.raw("<li>Asked by <strong>")
		p.text(r.Device)
		p.raw("</strong>")
		if r.Approved {
			p.raw(": allowed.</li>\n")
			continue
		}
		p.raw("\n")
		p.formStart(pathAccountCrossSigning, "csrf", d.CSRF, "session", r.Session)
		p.button("Allow the reset", "primary", "", "")
		p.raw("</form></li>\n")
	}
	p.raw("</ul>\n")
}

type pageData struct {
	Title, Server, Client, ClientURI, User, Device, Destination string
	Error, Action, Request, CSRF                                string
	SignUp, SignIn                                              string // links between the two pages
	InviteNeeded                                                bool
	Next                                                        string // account page: where to go after signing in
	Devices                                                     []deviceView
	Deactivate                                                  bool // the deactivate action was asked for
	ConfirmDelete                                               bool // the device_delete action was asked for
	DeviceFlow                                                  bool // consent for the device authorisation grant
	ResetAsked                                                  bool // the cross_signing_reset action was asked for
	Resets                                                      []resetView
}

// renderPage writes a page with headers that keep it to itself: no
// scripts, no framing, nothing fetched, no caching, not readable by other
// origins. formTarget is where the page's form may send the browser: a
// form's redirect counts for form-action in some browsers.
func (s *Service) renderPage(c *gin.Context, status int, name string, d pageData, formTarget string) error {
	view, ok := views[name]
	if !ok {
		return fmt.Errorf("oauth: no page %q", name)
	}
	var p htmlPage
	p.head(d.Title)
	view(&p, d)
	p.foot()
	h := c.Writer.Header()
	h.Del("Access-Control-Allow-Origin")
	h.Del("Access-Control-Allow-Methods")
	h.Del("Access-Control-Allow-Headers")
	formAction := "'self'"
	if formTarget != "" {
		formAction += " " + formTarget
	}
	h.Set("Content-Security-Policy", "default-src 'none'; style-src "+styleHash+"; form-action "+formAction+"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	c.Data(status, "text/html; charset=utf-8", []byte(p.b.String()))
	return nil
}

func (s *Service) clientName(m clientMetadata) string {
	if m.ClientName != "" {
		return m.ClientName
	}
	if u, err := url.Parse(m.ClientURI); err == nil {
		return u.Host
	}
	return "An application"
}

func (s *Service) signInPage(c *gin.Context, r *authRequest, errMsg string, status int) error {
	d := pageData{
		Title: "Sign in to " + string(s.serverName), Server: string(s.serverName), Client: s.clientName(r.client),
		Error: errMsg, Action: pathSignIn, Request: r.id, CSRF: r.csrf,
	}
	if needed, ok := s.accounts.SignUpNeedsInviteCode(); ok {
		d.SignUp, d.InviteNeeded = pathSignUp+"?request="+url.QueryEscape(r.id), needed
	}
	return s.renderPage(c, status, "signin", d, "")
}

func (s *Service) signUpPage(c *gin.Context, r *authRequest, errMsg string, status int) error {
	needed, _ := s.accounts.SignUpNeedsInviteCode()
	return s.renderPage(c, status, "signup", pageData{
		Title: "Create an account on " + string(s.serverName), Server: string(s.serverName), Client: s.clientName(r.client),
		Error: errMsg, Action: pathSignUp, Request: r.id, CSRF: r.csrf, InviteNeeded: needed,
		SignIn: pathSignIn + "?request=" + url.QueryEscape(r.id),
	}, "")
}

func (s *Service) renderConsent(c *gin.Context, r *authRequest) error {
	return s.renderPage(c, http.StatusOK, "consent", pageData{
		Title: "Allow " + s.clientName(r.client) + "?", Client: s.clientName(r.client), ClientURI: r.client.ClientURI,
		User: string(r.user), Device: r.deviceID, Destination: destination(r.redirectURI), DeviceFlow: r.deviceCode != "",
		Action: pathConsent, Request: r.id, CSRF: r.csrf,
	}, formSource(r.redirectURI))
}

func (s *Service) errorPage(c *gin.Context, status int, msg string) error {
	return s.renderPage(c, status, "error", pageData{Title: "Cannot sign in", Error: msg}, "")
}

// destination names where a redirect URI leads, for the person to check.
func destination(redirectURI string) string {
	u, err := url.Parse(redirectURI)
	if err != nil {
		return redirectURI
	}
	if u.Host != "" {
		return u.Scheme + "://" + u.Host
	}
	return "the app (" + u.Scheme + ":)"
}

// formSource is the CSP source that allows the consent form's redirect.
func formSource(redirectURI string) string {
	u, err := url.Parse(redirectURI)
	if err != nil {
		return ""
	}
	if !plainHost(u.Scheme) {
		return ""
	}
	if u.Host != "" {
		if !plainHost(u.Host) {
			return ""
		}
		return u.Scheme + "://" + u.Host
	}
	return u.Scheme + ":"
}
