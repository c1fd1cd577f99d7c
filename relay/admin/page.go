package admin

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
)

type csrfKey struct{}

func contextWithCSRF(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, csrfKey{}, token)
}

func csrfFrom(r *http.Request) string {
	s, _ := r.Context().Value(csrfKey{}).(string)
	return s
}

// uiAction runs a button of the status page and returns to it with a note.
func (s *Server) uiAction(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var msg string
	var err error
	switch {
	case strings.HasSuffix(r.URL.Path, "/retry"):
		if err = s.opts.Queue.RetryNow(id); err == nil {
			msg = "Message " + id + " will be tried again now."
		}
	case strings.HasSuffix(r.URL.Path, "/delete"):
		if err = s.opts.Queue.Delete(id); err == nil {
			msg = "Message " + id + " deleted."
		}
	case strings.HasSuffix(r.URL.Path, "/requeue"):
		var nid string
		if nid, err = s.opts.Queue.Requeue(id); err == nil {
			msg = "Message " + id + " requeued as " + nid + "."
		}
	case strings.HasSuffix(r.URL.Path, "/flush"):
		res := s.opts.Queue.Flush()
		msg = fmt.Sprintf("%d messages will be tried now.", res.Scheduled)
		if res.Held != "" {
			msg = fmt.Sprintf("%d messages will go as soon as the upstream can be reached: %s.", res.Scheduled, res.Held)
		}
		for account, n := range res.Paused {
			msg += fmt.Sprintf(" %d of account %s wait because it is paused: %s.", n, account, res.Why[account])
		}
	}
	if err != nil {
		msg = "Failed: " + err.Error()
	}
	s.opts.Log.Info("admin: page action", "path", r.URL.Path, "result", msg)
	http.Redirect(w, r, "/?msg="+url.QueryEscape(msg), http.StatusSeeOther)
}

// uiAccountRetry is the account's Try again button.
func (s *Server) uiAccountRetry(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var msg string
	if st, err := s.opts.Accounts.Retry(r.Context(), name); err != nil {
		msg = "Account " + name + " still does not work: " + err.Error()
		if st.Explanation.Action != "" {
			msg += " — " + st.Explanation.Action
		}
	} else {
		msg = "Account " + name + " works again; its mail is being sent now."
	}
	s.opts.Log.Info("admin: page action", "path", r.URL.Path, "result", msg)
	http.Redirect(w, r, "/?msg="+url.QueryEscape(msg)+"#account-"+url.PathEscape(name), http.StatusSeeOther)
}

// uiAccountTest is the account's Test button: the pre-flight check's steps.
func (s *Server) uiAccountTest(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if s.opts.Check == nil {
		http.Error(w, "no check configured", http.StatusNotImplemented)
		return
	}
	res := s.opts.Check(r.Context(), name)
	s.opts.Log.Info("admin: account test", "account", name, "ok", res.OK)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	checkTmpl.Execute(w, res)
}

// uiDeviceStart is the Connect button of a device_code account: the relay
// asks Microsoft for a code and the page shows it.
func (s *Server) uiDeviceStart(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == "" {
		name = r.PathValue("account") // reached by its Connect link
	}
	if _, err := s.opts.Accounts.StartDeviceSignIn(name); err != nil {
		http.Redirect(w, r, "/?msg="+url.QueryEscape("Could not start the sign-in for "+name+": "+err.Error()), http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/ui/accounts/"+url.PathEscape(name)+"/device", http.StatusSeeOther)
}

// uiDeviceStatus shows the code and the link, and reloads itself every few
// seconds (no JavaScript) until the sign-in is done.
func (s *Server) uiDeviceStatus(w http.ResponseWriter, r *http.Request) {
	d, ok := s.opts.Accounts.DeviceSignInStatus(r.PathValue("name"))
	if !ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	deviceTmpl.Execute(w, d)
}

type accountView struct {
	tokens.AccountState
	Delegated bool
	Waiting   int
}

type messageView struct {
	queue.Message
	Recipients string
	Reply      string
	Meaning    string
	When       string
}

type pageData struct {
	Version  string
	CSRF     string
	Flash    string
	Outage   string
	Ready    Ready
	Accounts []accountView
	States   []queue.MessageState
	Rows     []countRow
	Total    map[queue.MessageState]int
	Oldest   string
	Bytes    string
	Waiting  []messageView
	Failures []messageView
}

type countRow struct {
	Account string
	Counts  []int
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "in " + (-d).Round(time.Second).String()
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1fh ago", d.Hours())
	}
	return fmt.Sprintf("%.1f days ago", d.Hours()/24)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func (s *Server) view(m queue.Message) messageView {
	v := messageView{Message: m}
	var addrs []string
	for _, r := range m.Recipients {
		addrs = append(addrs, r.Addr)
		if r.Last != nil && (v.Reply == "" || r.State == queue.StateFailed) {
			v.Reply = r.Last.String()
			if r := []rune(v.Reply); len(r) > 120 { // the full reply is in the API and `queue show`
				v.Reply = string(r[:120]) + "…"
			}
			if s.opts.Explain != nil {
				v.Meaning = s.opts.Explain(*r.Last, m.Account, m.From)
			}
		}
	}
	v.Recipients = strings.Join(addrs, ", ")
	if m.State == queue.MsgPaused {
		v.Meaning = "waiting: the account needs attention — " + m.PausedReason
	}
	return v
}

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	st := s.opts.Queue.Stats()
	d := pageData{Version: s.opts.Version, CSRF: csrfFrom(r), Flash: r.URL.Query().Get("msg"), Ready: s.ready(),
		States: []queue.MessageState{queue.MsgQueued, queue.MsgInflight, queue.MsgDeferred, queue.MsgPaused, queue.MsgFailed},
		Total:  st.ByState, Bytes: humanBytes(st.Bytes), Oldest: "none waiting"}
	if !st.Oldest.IsZero() {
		d.Oldest = ago(st.Oldest)
	}
	if st.UpstreamDown != "" {
		d.Outage = fmt.Sprintf("The upstream mail service cannot be reached (since %s): %s. All mail is held without using up attempts; next probe %s.",
			ago(st.UpstreamDownSince), st.UpstreamDown, ago(st.NextProbe))
	}
	for _, a := range s.accountStates() {
		v := accountView{AccountState: a, Delegated: a.Flow != tokens.FlowClientCredentials && a.Flow != tokens.FlowServiceAccount}
		for state, n := range st.ByAccount[a.Account] {
			if state != queue.MsgFailed {
				v.Waiting += n
			}
		}
		d.Accounts = append(d.Accounts, v)
	}
	accounts := make([]string, 0, len(st.ByAccount))
	for a := range st.ByAccount {
		accounts = append(accounts, a)
	}
	sort.Strings(accounts)
	for _, a := range accounts {
		row := countRow{Account: a}
		for _, state := range d.States {
			row.Counts = append(row.Counts, st.ByAccount[a][state])
		}
		d.Rows = append(d.Rows, row)
	}
	all := s.opts.Queue.List(queue.Filter{})
	var failed []queue.Message
	for _, m := range all {
		if m.State == queue.MsgFailed {
			failed = append(failed, m)
		} else if len(d.Waiting) < 50 {
			v := s.view(m)
			switch {
			case m.State == queue.MsgPaused:
				v.When = "waits for the account"
			case m.State == queue.MsgInflight:
				v.When = "being sent now"
			case time.Until(m.NextAttempt) > time.Second:
				v.When = "next try " + ago(m.NextAttempt)
			default:
				v.When = "due now"
			}
			d.Waiting = append(d.Waiting, v)
		}
	}
	sort.Slice(failed, func(i, j int) bool { return failed[i].Finished.After(failed[j].Finished) })
	for i, m := range failed {
		if i == 20 {
			break
		}
		v := s.view(m)
		v.When = ago(m.Finished)
		d.Failures = append(d.Failures, v)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := statusTmpl.Execute(w, d); err != nil {
		s.opts.Log.Error("admin: rendering the status page", "error", err.Error())
	}
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if _, _, ok := s.sessionOf(r); ok {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	renderLogin(w, http.StatusOK, "", next)
}

// safeNext is where to go after logging in: a path on this server only
// (never another site: "//evil" and "/\evil" are refused), else "/".
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	return next
}

func renderLogin(w http.ResponseWriter, status int, problem, next string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	loginTmpl.Execute(w, struct{ Problem, Next string }{problem, next})
}

const css = `<style>
*{box-sizing:border-box}body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d2430;background:#f4f6f9}
header{background:#17324d;color:#fff;padding:.7rem 1rem;display:flex;align-items:center;gap:1rem;flex-wrap:wrap}
header h1{font-size:1.15rem;margin:0;flex:1}main{max-width:72rem;margin:0 auto;padding:1rem}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:1rem;margin-bottom:1rem}
h2{font-size:1.05rem;margin:0 0 .7rem}.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(19rem,1fr));gap:.8rem}
.card{border:1px solid #dde3ea;border-radius:6px;padding:.8rem}.muted{color:#5b6776;font-size:.9em}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:1rem;font-size:.85em;font-weight:600}
.connected{background:#d9f2e3;color:#17663a}.needs_reconnect,.misconfigured,.smtp_auth_disabled,.smtp_auth_refused{background:#fde2e1;color:#a31515}.not_connected{background:#fff1cc;color:#7a5300}
.btn{display:inline-block;border:0;border-radius:4px;padding:.35rem .8rem;background:#0b5cad;color:#fff;text-decoration:none;font:inherit;cursor:pointer}
.btn.light{background:#e7edf4;color:#17324d}.btn.danger{background:#b42318}form.inline{display:inline}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e6ebf0;vertical-align:top}
.scroll{overflow-x:auto}.flash{background:#e8f1fb;border-left:4px solid #0b5cad;padding:.6rem 1rem;margin-bottom:1rem;border-radius:4px}
.warn{background:#fdecea;border-left-color:#b42318}code{font-size:.9em;word-break:break-all}
@media(max-width:40rem){th.hide,td.hide{display:none}main{padding:.5rem}section{padding:.7rem}th,td{padding:.3rem .2rem;font-size:.85em}table.counts th,table.counts td{text-align:center}table.counts th:first-child,table.counts td:first-child{text-align:left}}
</style>`

var funcs = template.FuncMap{"ago": ago, "string": func(s tokens.State) string { return string(s) }}

var statusTmpl = template.Must(template.New("status").Funcs(funcs).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>oauthrelay status</title>` + css + `</head><body>
<header><h1>oauthrelay</h1><span class="muted" style="color:#c8d6e5">{{.Version}}</span>
<span>{{if .Ready.Ready}}ready{{else}}NOT READY: spool {{.Ready.Spool}}, listener {{.Ready.Listener}}{{end}}</span>
<form class="inline" method="post" action="/logout"><input type="hidden" name="csrf" value="{{.CSRF}}"><button class="btn light">Log out</button></form></header>
<main>
{{if .Flash}}<div class="flash">{{.Flash}}</div>{{end}}
{{if .Outage}}<div class="flash warn" id="outage">{{.Outage}}</div>{{end}}
{{if not .Ready.Ready}}<div class="flash warn" id="not-ready">Not ready: spool {{.Ready.Spool}}; listener {{.Ready.Listener}}.</div>{{end}}
<section><h2>Accounts</h2><div class="cards">
{{range .Accounts}}{{$acct := .Account}}<div class="card" id="account-{{.Account}}">
<div><strong>{{.Account}}</strong> <span class="badge {{string .State}}" data-state="{{string .State}}">{{if eq (string .State) "connected"}}connected{{else if eq (string .State) "needs_reconnect"}}needs reconnect{{else if eq (string .State) "misconfigured"}}misconfigured{{else if eq (string .State) "smtp_auth_disabled"}}SMTP AUTH disabled{{else if eq (string .State) "smtp_auth_refused"}}login refused{{else}}not connected{{end}}</span></div>
<div class="muted">{{.Mailbox}} · {{.Flow}}{{if .Waiting}} · {{.Waiting}} waiting{{end}}</div>
<div class="muted" id="credential-{{.Account}}">{{.Provider}}{{if .Cloud}} · {{.Cloud}} cloud{{end}}{{if eq .Kind "hve"}} · High Volume Email{{end}}{{if .Credential}} · {{.Credential}}{{if not .CertificateExpiry.IsZero}} (expires {{.CertificateExpiry.Format "2006-01-02"}}){{end}}{{end}}</div>
{{if .CertificateWarning}}<p class="flash warn" id="certificate-{{.Account}}"><strong>Certificate:</strong> {{.CertificateWarning}}.</p>{{end}}
<div class="muted" id="protocols-{{.Account}}">Protocols: {{range $i, $p := .Protocols}}{{if $i}}, {{end}}{{$p}}{{end}}{{with .Sessions}} · open now:{{range $p, $n := .}} {{$n}} {{$p}}{{end}}{{end}}</div>
{{if .Explanation.Title}}<p>{{if .Explanation.Code}}<code>{{.Explanation.Code}}</code> {{end}}{{.Explanation.Title}}.
{{if .Explanation.Detail}}<br><span class="muted">{{.Explanation.Detail}}</span>{{end}}
{{if .Explanation.Action}}<br><strong>What to do:</strong> {{.Explanation.Action}}{{end}}
{{if .Explanation.URL}}<br><a href="{{.Explanation.URL}}">Admin consent link</a> — send it to an administrator{{end}}</p>{{end}}
{{range $p, $ex := .Refused}}<p class="flash warn" id="refused-{{$acct}}-{{$p}}"><strong>{{$p}} logins stopped</strong> (mail is not affected): {{if $ex.Code}}<code>{{$ex.Code}}</code> {{end}}{{$ex.Title}}.
{{if $ex.Detail}}<br><span class="muted">{{$ex.Detail}}</span>{{end}}
{{if $ex.Action}}<br><strong>What to do:</strong> {{$ex.Action}}{{end}}</p>{{end}}
{{if .MissingProtocols}}<p class="flash warn">Reconnect to grant {{range $i, $p := .MissingProtocols}}{{if $i}}, {{end}}{{$p}}{{end}}: the last sign-in did not include its permission.</p>{{end}}
<p class="muted">{{if .ConsentedBy}}Signed in as {{.ConsentedBy}} {{ago .ConsentedAt}}.<br>{{end}}
Access token: {{if .AccessExpiry.IsZero}}none yet{{else}}expires {{.AccessExpiry.Format "2006-01-02 15:04 MST"}}{{if .Fingerprint}} ({{.Fingerprint}}){{end}}{{end}}.
{{if not .LastRefresh.IsZero}}Last refresh {{ago .LastRefresh}}.{{end}}</p>
{{if eq .Flow "device_code"}}<form class="inline" method="post" action="/ui/accounts/{{.Account}}/device"><input type="hidden" name="csrf" value="{{$.CSRF}}"><button class="btn" id="connect-{{.Account}}" title="shows a code to enter at the sign-in page">{{if eq (string .State) "connected"}}Reconnect{{else}}Connect{{end}}</button></form>
{{else if .Delegated}}<a class="btn" id="connect-{{.Account}}" href="/connect/{{.Account}}">{{if eq (string .State) "connected"}}Reconnect{{else}}Connect{{end}}</a>{{end}}
{{if or (ne (string .State) "connected") .Refused}}<form class="inline" method="post" action="/ui/accounts/{{.Account}}/retry"><input type="hidden" name="csrf" value="{{$.CSRF}}"><button class="btn" id="retry-{{.Account}}" title="after fixing it on the provider's side">Try again</button></form>{{end}}
<form class="inline" method="post" action="/ui/accounts/{{.Account}}/test"><input type="hidden" name="csrf" value="{{$.CSRF}}"><button class="btn light" id="test-{{.Account}}" title="sign in upstream without sending">Test</button></form>
</div>{{end}}
</div></section>

<section><h2>Queue</h2>
<p>Oldest waiting: <strong>{{.Oldest}}</strong> · spool {{.Bytes}}
<form class="inline" method="post" action="/ui/queue/flush"><input type="hidden" name="csrf" value="{{.CSRF}}"><button class="btn light">Try all now</button></form></p>
<div class="scroll"><table class="counts"><tr><th>account</th>{{range .States}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr><td>{{.Account}}</td>{{range .Counts}}<td>{{.}}</td>{{end}}</tr>{{else}}<tr><td colspan="6" class="muted">The queue is empty.</td></tr>{{end}}
</table></div></section>

{{if .Waiting}}<section><h2>Waiting for delivery</h2><div class="scroll"><table>
<tr><th>message</th><th class="hide">to</th><th>last reply and what it means</th><th></th></tr>
{{range .Waiting}}<tr><td><code>{{.ID}}</code><br><span class="muted">{{.From}} · {{.Account}} · {{.State}} · {{if eq .Attempts 1}}1 attempt{{else}}{{.Attempts}} attempts{{end}} · {{.When}}</span></td>
<td class="hide">{{.Recipients}}</td><td>{{if .Reply}}<code>{{.Reply}}</code><br>{{end}}<span class="muted">{{.Meaning}}</span></td>
<td><form class="inline" method="post" action="/ui/queue/{{.ID}}/retry"><input type="hidden" name="csrf" value="{{$.CSRF}}"><button class="btn light">Retry</button></form>
<form class="inline" method="post" action="/ui/queue/{{.ID}}/delete"><input type="hidden" name="csrf" value="{{$.CSRF}}"><button class="btn danger">Delete</button></form></td></tr>{{end}}
</table></div></section>{{end}}

<section><h2>Recent failures</h2>{{if .Failures}}<div class="scroll"><table>
<tr><th>message</th><th class="hide">to</th><th>upstream answered</th><th></th></tr>
{{range .Failures}}<tr><td><code>{{.ID}}</code><br><span class="muted">{{.From}} · {{.Account}} · {{.When}}{{if .Bounced}} · sender notified{{end}}</span></td>
<td class="hide">{{.Recipients}}</td><td><code>{{.Reply}}</code><br><span class="muted">{{.Meaning}}</span></td>
<td><form class="inline" method="post" action="/ui/failed/{{.ID}}/requeue"><input type="hidden" name="csrf" value="{{$.CSRF}}"><button class="btn light">Requeue</button></form>
<form class="inline" method="post" action="/ui/queue/{{.ID}}/delete"><input type="hidden" name="csrf" value="{{$.CSRF}}"><button class="btn danger">Delete</button></form></td></tr>{{end}}
</table></div>{{else}}<p class="muted">No failed messages.</p>{{end}}</section>
</main></body></html>`))

var deviceTmpl = template.Must(template.New("device").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
{{if eq .Status "pending"}}<meta http-equiv="refresh" content="3">{{end}}
<title>Connect {{.Account}} — oauthrelay</title>` + css + `</head><body>
<header><h1>oauthrelay</h1></header><main><section>
{{if eq .Status "pending"}}<h2>Connect {{.Account}}</h2>
<p>On any device, open <a href="{{.VerificationURI}}" target="_blank" rel="noopener"><code>{{.VerificationURI}}</code></a>, enter the code</p>
<p style="font-size:2rem;letter-spacing:.2rem" id="user-code"><strong>{{.UserCode}}</strong></p>
<p>and sign in{{if .Mailbox}} as <strong>{{.Mailbox}}</strong>{{end}}. This page updates by itself; the code expires at {{.Expires.Format "15:04 MST"}}.</p>
{{else if eq .Status "connected"}}<h2 id="device-result">Connected{{if .Warning}} — but check who signed in{{end}}</h2>
<p>{{.Account}} is connected{{if .SignedInAs}} as {{.SignedInAs}}{{end}}; its mail flows now.</p>
{{if .Warning}}<div class="flash warn">You {{.Warning}}.</div>{{end}}
{{else}}<h2 id="device-result">Not connected</h2><div class="flash warn">{{.Error}}</div>{{end}}
<p><a class="btn{{if eq .Status "pending"}} light{{end}}" href="/">Back to the status page</a></p>
</section></main></body></html>`))

var checkTmpl = template.Must(template.New("check").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Test of {{.Account}} — oauthrelay</title>` + css + `</head><body>
<header><h1>oauthrelay</h1></header><main><section>
<h2 id="check-result">Test of {{.Account}}{{if .Mailbox}} ({{.Mailbox}}){{end}}: {{if .OK}}<span class="badge connected">passed</span>{{else}}<span class="badge misconfigured">failed</span>{{end}}</h2>
<table>{{range .Steps}}<tr><td>{{if .OK}}✔{{else}}✘{{end}} <strong>{{.Step}}</strong></td><td>{{.Detail}}{{if .Fix}}<br><strong>What to do:</strong> {{.Fix}}{{end}}</td></tr>{{end}}</table>
<p class="muted">Nothing was sent. The test does not pause or resume the account; Try again does.</p>
<p><a class="btn" href="/">Back to the status page</a></p>
</section></main></body></html>`))

var loginTmpl = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>oauthrelay — log in</title>` + css + `</head><body>
<header><h1>oauthrelay</h1></header><main><section style="max-width:26rem;margin:2rem auto">
<h2>Log in</h2>{{if .Problem}}<div class="flash warn">{{.Problem}}</div>{{end}}
<form method="post" action="/login"><input type="hidden" name="next" value="{{.Next}}"><p><label for="token">Admin token</label><br>
<input id="token" name="token" type="password" autocomplete="current-password" style="width:100%;padding:.4rem" required></p>
<p><button class="btn" id="login">Log in</button></p></form>
<p class="muted">The token is <code>admin.token</code> in the configuration, or, if none is set, the file <code>admin.token</code> beside the keysafe.</p>
</section></main></body></html>`))
