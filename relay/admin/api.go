package admin

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/tokens"
)

// Status is GET /api/status.
type Status struct {
	Version  string                `json:"version"`
	Ready    Ready                 `json:"ready"`
	Accounts []tokens.AccountState `json:"accounts"`
	Queue    queue.Stats           `json:"queue"`
	// OldestAgeSeconds is the age of the oldest message waiting (0: none).
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

func (s *Server) status() Status {
	st := s.opts.Queue.Stats()
	out := Status{Version: s.opts.Version, Ready: s.ready(), Accounts: s.accountStates(), Queue: st}
	if !st.Oldest.IsZero() {
		out.OldestAgeSeconds = time.Since(st.Oldest).Seconds()
	}
	return out
}

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.status())
}

func (s *Server) apiAccounts(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.accountStates())
}

// accountStates are the accounts' states with their open inbound sessions.
func (s *Server) accountStates() []tokens.AccountState {
	states := s.opts.Accounts.States()
	if s.opts.InboundSessions == nil {
		return states
	}
	open := s.opts.InboundSessions()
	for i := range states {
		states[i].Sessions = open[states[i].Account]
	}
	return states
}

func (s *Server) apiList(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	if state != "" && !slices.Contains(queue.MessageStates(), queue.MessageState(state)) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("state must be one of %v", queue.MessageStates()))
		return
	}
	msgs := s.opts.Queue.List(queue.Filter{State: queue.MessageState(state), Account: r.URL.Query().Get("account")})
	if msgs == nil {
		msgs = []queue.Message{}
	}
	writeJSON(w, http.StatusOK, msgs)
}

// opError maps a queue error to an HTTP answer.
func opError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, queue.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, queue.ErrBusy), errors.Is(err, queue.ErrPaused), errors.Is(err, queue.ErrHeld):
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// MessageDetail is GET /api/queue/{id}: the message, and what each
// recipient's last reply means in plain words (as the status page says).
type MessageDetail struct {
	queue.Message
	Meanings map[string]string `json:"meanings,omitempty"` // recipient address -> meaning
}

func (s *Server) apiGet(w http.ResponseWriter, r *http.Request) {
	m, err := s.opts.Queue.Get(r.PathValue("id"))
	if err != nil {
		opError(w, err)
		return
	}
	d := MessageDetail{Message: m}
	if s.opts.Explain != nil {
		for _, rc := range m.Recipients {
			if rc.Last != nil {
				if d.Meanings == nil {
					d.Meanings = map[string]string{}
				}
				d.Meanings[rc.Addr] = s.opts.Explain(*rc.Last, m.Account, m.From)
			}
		}
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) apiRetry(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.opts.Queue.RetryNow(id); err != nil {
		opError(w, err)
		return
	}
	s.opts.Log.Info("admin: retry now", "id", id)
	writeJSON(w, http.StatusOK, map[string]string{"result": "scheduled now", "id": id})
}

func (s *Server) apiDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.opts.Queue.Delete(id); err != nil {
		opError(w, err)
		return
	}
	s.opts.Log.Info("admin: deleted", "id", id)
	writeJSON(w, http.StatusOK, map[string]string{"result": "deleted", "id": id})
}

func (s *Server) apiFlush(w http.ResponseWriter, r *http.Request) {
	res := s.opts.Queue.Flush()
	s.opts.Log.Info("admin: flush", "messages", res.Scheduled, "paused", res.Paused)
	writeJSON(w, http.StatusOK, res)
}

// CheckStep is one step of an account's pre-flight check, in plain words.
type CheckStep struct {
	Step   string `json:"step"` // token, permissions, connect, login
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// CheckResult is what POST /api/accounts/{name}/test, `oauthrelay check`
// and the Test button show.
type CheckResult struct {
	Account string      `json:"account"`
	Mailbox string      `json:"mailbox"`
	OK      bool        `json:"ok"`
	Steps   []CheckStep `json:"steps"`
}

func (s *Server) knownAccount(w http.ResponseWriter, name string) bool {
	for _, a := range s.opts.Accounts.States() {
		if a.Account == name {
			return true
		}
	}
	writeError(w, http.StatusNotFound, "no account named "+name+" in the configuration")
	return false
}

// apiAccountRetry: the admin fixed something on Microsoft's side; try the
// account again and, if it works, resume its mail now.
func (s *Server) apiAccountRetry(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.knownAccount(w, name) {
		return
	}
	st, err := s.opts.Accounts.Retry(r.Context(), name)
	s.opts.Log.Info("admin: account retry", "account", name, "state", string(st.State))
	if err != nil {
		writeJSON(w, http.StatusConflict, map[string]any{"error": "still not working: " + err.Error(), "account": st})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": "resumed: any mail waiting for it is being sent now", "account": st})
}

func (s *Server) apiAccountTest(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.knownAccount(w, name) {
		return
	}
	if s.opts.Check == nil {
		writeError(w, http.StatusNotImplemented, "no check configured")
		return
	}
	res := s.opts.Check(r.Context(), name)
	s.opts.Log.Info("admin: account test", "account", name, "ok", res.OK)
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) apiRequeue(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	nid, err := s.opts.Queue.Requeue(id)
	if err != nil {
		opError(w, err)
		return
	}
	s.opts.Log.Info("admin: requeued", "id", nid, "from", id)
	writeJSON(w, http.StatusOK, map[string]string{"result": "requeued", "id": nid, "from": id})
}

// apiDeviceStart starts a device-code sign-in in the relay (or returns the
// pending one): `oauthrelay connect --device` uses it while serve runs, so
// only the service writes its keysafe.
func (s *Server) apiDeviceStart(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.knownAccount(w, name) {
		return
	}
	d, err := s.opts.Accounts.StartDeviceSignIn(name)
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	s.opts.Log.Info("admin: device sign-in started", "account", name)
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) apiDeviceStatus(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.knownAccount(w, name) {
		return
	}
	d, ok := s.opts.Accounts.DeviceSignInStatus(name)
	if !ok {
		writeError(w, http.StatusNotFound, "no device sign-in started for "+name)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// apiToken hands out a current access token of an account, for programs
// that sign in to Microsoft 365 with XOAUTH2 themselves. The admin token
// guards it; the log names only the token's fingerprint.
func (s *Server) apiToken(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.knownAccount(w, name) {
		return
	}
	tok, err := s.opts.Accounts.Token(r.Context(), name)
	if err != nil {
		writeError(w, http.StatusConflict, "no token: "+err.Error())
		return
	}
	s.opts.Log.Info("admin: access token handed out", "account", name, "client", clientIP(r), "token", tokens.Fingerprint(tok.AccessToken))
	writeJSON(w, http.StatusOK, map[string]any{"account": name, "mailbox": tok.Mailbox,
		"access_token": tok.AccessToken, "expires": tok.Expiry.UTC().Format(time.RFC3339)})
}
