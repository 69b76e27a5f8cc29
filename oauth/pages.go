package oauth

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"

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

var pages = template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>{{.Title}}</title><style>` + style + `</style></head><body><main>{{end}}
{{define "foot"}}</main></body></html>{{end}}

{{define "signin"}}{{template "head" .}}
<h1>Sign in to {{.Server}}</h1>
<p><strong>{{.Client}}</strong> wants to sign in to your account.</p>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}">
<input type="hidden" name="request" value="{{.Request}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="username">User name</label><input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus>
<label for="password">Password</label><input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit" class="primary">Sign in</button>
</form>
<p class="note">You will be asked to confirm before {{.Client}} gets access.</p>
{{if .SignUp}}<p>No account yet? <a href="{{.SignUp}}">Create one</a>{{if .InviteNeeded}} with an invite code{{end}}.</p>{{end}}
{{template "foot"}}{{end}}

{{define "signup"}}{{template "head" .}}
<h1>Create an account on {{.Server}}</h1>
<p>Then <strong>{{.Client}}</strong> will ask to sign in with it.</p>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}">
<input type="hidden" name="request" value="{{.Request}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
{{if .InviteNeeded}}<label for="invite_code">Invite code</label><input type="text" id="invite_code" name="invite_code" autocomplete="off" autocapitalize="none" spellcheck="false" required>{{end}}
<label for="username">User name</label><input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required aria-describedby="username-note">
<p class="note" id="username-note">Your address will be @name:{{.Server}}. Lower-case letters, digits and . _ = - / + only.</p>
<label for="password">Password</label><input type="password" id="password" name="password" autocomplete="new-password" required>
<label for="password2">Password again</label><input type="password" id="password2" name="password2" autocomplete="new-password" required>
<button type="submit" class="primary">Create account</button>
</form>
<p>Already have an account? <a href="{{.SignIn}}">Sign in</a>.</p>
{{template "foot"}}{{end}}

{{define "consent"}}{{template "head" .}}
<h1>Allow {{.Client}}?</h1>
<p><strong>{{.Client}}</strong> wants to sign in as <strong>{{.User}}</strong>.</p>
<p>It will be able to read and send your messages, and act as you on this server, as a new session (device <code>{{.Device}}</code>). You can sign it out at any time from your list of sessions.</p>
{{if .DeviceFlow}}<p class="error">The application is on another device: the one that showed you the code. Only allow if you started this yourself just now; someone who sent you a code wants your account.</p>
{{else}}<p class="note">Afterwards you go back to <strong>{{.Destination}}</strong>{{if .ClientURI}}; the application's home page is {{.ClientURI}}{{end}}.</p>{{end}}
<form method="post" action="{{.Action}}">
<input type="hidden" name="request" value="{{.Request}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
<button type="submit" name="decision" value="allow" class="primary">Allow</button>
<button type="submit" name="decision" value="deny">Cancel</button>
</form>
{{template "foot"}}{{end}}

{{define "account_signin"}}{{template "head" .}}
<h1>Your account on {{.Server}}</h1>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}">
<input type="hidden" name="csrf" value="{{.CSRF}}"><input type="hidden" name="next" value="{{.Next}}">
<label for="username">User name</label><input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus>
<label for="password">Password</label><input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit" class="primary">Sign in</button>
</form>
{{template "foot"}}{{end}}

{{define "account"}}{{template "head" .}}
<h1>{{.User}}</h1>
{{if .Error}}<p class="error" role="status">{{.Error}}</p>{{end}}
<h2 id="sessions">Sessions</h2>
<p class="note">Each app you are signed in with is a session. Signing one out deletes its encryption keys on this server.</p>
<ul>
{{range .Devices}}<li{{if .Selected}} aria-current="true"{{end}}><strong>{{.Name}}</strong> <code>{{.ID}}</code>{{if .LastSeen}}, last used {{.LastSeen}}{{end}}
<form method="post" action="/_chatalot/account/delete_device"><input type="hidden" name="csrf" value="{{$.CSRF}}"><input type="hidden" name="device_id" value="{{.ID}}">
<button type="submit"{{if and $.ConfirmDelete .Selected}} class="primary"{{end}}>Sign out {{.Name}}</button></form></li>
{{else}}<li>No sessions.</li>{{end}}
</ul>
<h2 id="password">Password</h2>
<form method="post" action="/_chatalot/account/password"><input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="current_password">Current password</label><input type="password" id="current_password" name="current_password" autocomplete="current-password" required>
<label for="new_password">New password</label><input type="password" id="new_password" name="new_password" autocomplete="new-password" required>
<label for="new_password2">New password again</label><input type="password" id="new_password2" name="new_password2" autocomplete="new-password" required>
<label><input type="checkbox" name="keep_sessions" value="yes"> Keep my sessions signed in</label>
<button type="submit">Change password</button></form>
<h2 id="deactivate">Close the account</h2>
{{if .Deactivate}}<p class="error">An app asked to close this account. Only do so if you meant to.</p>{{end}}
<form method="post" action="/_chatalot/account/deactivate"><input type="hidden" name="csrf" value="{{.CSRF}}">
<p class="note">Closing is for good: every session is signed out, you leave every room, and the user name is never given out again.</p>
<label for="deactivate_password">Password</label><input type="password" id="deactivate_password" name="password" autocomplete="current-password" required>
<label><input type="checkbox" name="erase" value="yes"> Also erase my display name and avatar</label>
<label><input type="checkbox" name="confirm" value="yes" required> I want to close my account</label>
<button type="submit">Close my account</button></form>
<form method="post" action="/_chatalot/account/sign_out"><input type="hidden" name="csrf" value="{{.CSRF}}"><button type="submit">Sign out of this page</button></form>
{{template "foot"}}{{end}}

{{define "device_code"}}{{template "head" .}}
<h1>Sign in a device</h1>
<p>Enter the code your other device shows.</p>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
<form method="get" action="{{.Action}}">
<label for="user_code">Code</label><input type="text" id="user_code" name="user_code" autocomplete="off" autocapitalize="characters" spellcheck="false" required autofocus>
<button type="submit" class="primary">Continue</button>
</form>
<p class="note">Only enter a code that a device of yours shows right now. Nobody from this server will ever ask you for one.</p>
{{template "foot"}}{{end}}

{{define "done"}}{{template "head" .}}
<h1>{{.Title}}</h1><p role="status">{{.Error}}</p>
{{template "foot"}}{{end}}

{{define "error"}}{{template "head" .}}
<h1>{{.Title}}</h1><p class="error" role="alert">{{.Error}}</p>
{{template "foot"}}{{end}}
`))

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
}

// renderPage writes a page with headers that keep it to itself: no
// scripts, no framing, nothing fetched, no caching, not readable by other
// origins. formTarget is where the page's form may send the browser: a
// form's redirect counts for form-action in some browsers.
func (s *Service) renderPage(c *gin.Context, status int, name string, d pageData, formTarget string) error {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, d); err != nil {
		return err
	}
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
	c.Data(status, "text/html; charset=utf-8", buf.Bytes())
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
