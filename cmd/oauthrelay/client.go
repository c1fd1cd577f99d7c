package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oauthrelay/oauthrelay/configs"
	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/relay/admin"
	"github.com/oauthrelay/oauthrelay/tokens"
	"github.com/spf13/cobra"
)

// apiClient talks to a running relay's admin API, found from the same
// configuration as serve.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func newAPIClient(cmd *cobra.Command) (*apiClient, error) {
	loaded, err := mustLoad(func() (*configs.Loaded, error) { return loadConfig(cmd) })
	if err != nil {
		return nil, err
	}
	return apiClientFor(cmd, &loaded.Config)
}

// adminDialAddr is where the CLI reaches the admin server of c.
func adminDialAddr(c *configs.Config) string {
	host, port, err := net.SplitHostPort(c.Admin.Addr)
	if err != nil {
		return ""
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// apiClientFor is newAPIClient for a configuration already loaded.
func apiClientFor(cmd *cobra.Command, c *configs.Config) (*apiClient, error) {
	base, _ := cmd.Flags().GetString("server")
	if base == "" {
		base = "http://" + adminDialAddr(c)
	}
	token := c.Admin.Token
	if token == "" {
		raw, err := os.ReadFile(tokens.AdminTokenPath(c.Keysafe.Path))
		if err != nil {
			return nil, fmt.Errorf("no admin token: set admin.token (or OAUTHRELAY_ADMIN_TOKEN), or run as a user who may read %s", tokens.AdminTokenPath(c.Keysafe.Path))
		}
		token = strings.TrimSpace(string(raw))
	}
	return &apiClient{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// call does one API request and decodes the JSON answer into out.
func (a *apiClient) call(method, path string, out any) error {
	req, err := http.NewRequest(method, a.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the relay's admin API at %s: %w (is `oauthrelay serve` running? --server overrides)", a.base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return exitError{code: 1, err: fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)}
		}
		return exitError{code: 1, err: fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))}
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = body
		return nil
	}
	return json.Unmarshal(body, out)
}

func printJSON(w io.Writer, raw json.RawMessage) error {
	_, err := w.Write(raw)
	return err
}

func apiFlags(cmd *cobra.Command) {
	cmd.PersistentFlags().String("server", "", "admin API base URL (default: from admin.addr)")
	cmd.PersistentFlags().Bool("json", false, "print the API's JSON instead of a table")
}

func jsonFlag(cmd *cobra.Command) bool {
	v, _ := cmd.Flags().GetBool("json")
	return v
}

// when says a time relative to now in words: "in 4m", "now", "due since 15s".
func when(t time.Time) string {
	d := time.Until(t).Round(time.Second)
	switch {
	case d > 0:
		return "in " + d.String()
	case d > -time.Second:
		return "now"
	}
	return "due since " + (-d).String() + " (waiting for a free worker or connection)"
}

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "in " + (-d).Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

func lastReply(m queue.Message) string {
	for _, r := range m.Recipients {
		if r.Last != nil {
			s := r.Last.String()
			if len(s) > 70 {
				s = s[:70] + "…"
			}
			return s
		}
	}
	if m.Held != "" {
		return "held: " + m.Held
	}
	if m.PausedReason != "" {
		return "paused: " + m.PausedReason
	}
	return ""
}

func newQueueCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Inspect and manage the queue of a running relay (like postqueue)",
	}
	apiFlags(cmd)

	cmd.AddCommand(newQueueListCmd(), newQueueShowCmd(), newQueueDumpCmd(),
		queueAction("retry ID", "Try a message again now", "POST", "/api/queue/{id}/retry", cobra.ExactArgs(1)),
		queueAction("delete ID", "Delete a message (live or failed) for good", "DELETE", "/api/queue/{id}", cobra.ExactArgs(1)),
		queueAction("flush", "Try every waiting message now", "POST", "/api/queue/flush", cobra.NoArgs),
		queueAction("requeue ID", "Send a failed message again (new ID, fresh retries)", "POST", "/api/failed/{id}/requeue", cobra.ExactArgs(1)),
	)
	return cmd
}

// newQueueListCmd is `queue list`.
func newQueueListCmd() *cobra.Command {
	list := &cobra.Command{
		Use: "list", Short: fmt.Sprintf("List messages (--state %s, --account NAME)", queueStates()), Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			if s, _ := cmd.Flags().GetString("state"); s != "" {
				q.Set("state", s)
			}
			if s, _ := cmd.Flags().GetString("account"); s != "" {
				q.Set("account", s)
			}
			var raw json.RawMessage
			if err := a.call("GET", "/api/queue?"+q.Encode(), &raw); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var msgs []queue.Message
			if err := json.Unmarshal(raw, &msgs); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tACCOUNT\tAGE\tATTEMPTS\tFROM\tRCPTS\tLAST REPLY")
			for _, m := range msgs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", m.ID, m.State, m.Account, age(m.Arrived), m.Attempts, m.From, len(m.Recipients), lastReply(m))
			}
			tw.Flush()
			fmt.Fprintf(cmd.OutOrStdout(), "%d message(s)\n", len(msgs))
			return nil
		},
	}
	list.Flags().String("state", "", "only messages in this state")
	list.Flags().String("account", "", "only messages of this account")
	return list
}

// newQueueShowCmd is `queue show ID`.
func newQueueShowCmd() *cobra.Command {
	show := &cobra.Command{
		Use: "show ID", Short: "Show one message with each recipient's state and last reply", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := a.call("GET", "/api/queue/"+url.PathEscape(args[0]), &raw); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var d admin.MessageDetail
			if err := json.Unmarshal(raw, &d); err != nil {
				return err
			}
			m := d.Message
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "id:        %s\nstate:     %s\naccount:   %s\nfrom:      <%s>\nsize:      %d bytes\narrived:   %s (%s ago)\nattempts:  %d\n",
				m.ID, m.State, m.Account, m.From, m.Size, m.Arrived.Format(time.RFC3339), age(m.Arrived), m.Attempts)
			if m.State != queue.MsgFailed && m.State != queue.MsgPaused {
				if m.Held != "" {
					fmt.Fprintf(w, "next:      when Microsoft 365 can be reached again (see held)\n")
				} else {
					fmt.Fprintf(w, "next:      %s (%s)\n", m.NextAttempt.Format(time.RFC3339), when(m.NextAttempt))
				}
			}
			if m.Held != "" {
				fmt.Fprintf(w, "held:      %s\n", m.Held)
			}
			if m.PausedReason != "" {
				fmt.Fprintf(w, "paused:    %s\n", m.PausedReason)
			}
			fmt.Fprintln(w, "recipients:")
			for _, r := range m.Recipients {
				reply := ""
				if r.Last != nil {
					reply = " — " + r.Last.String()
				}
				fmt.Fprintf(w, "  %-40s %-10s%s\n", r.Addr, r.State, reply)
				if mean := d.Meanings[r.Addr]; mean != "" {
					fmt.Fprintf(w, "  %-40s %-10s  what it means: %s\n", "", "", mean)
				}
			}
			return nil
		},
	}
	return show
}

// queueAction is a queue command that POSTs or DELETEs one API call.
func queueAction(use, short, method, path string, args cobra.PositionalArgs) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: args,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			p := path
			if len(args) == 1 {
				p = strings.Replace(path, "{id}", url.PathEscape(args[0]), 1)
			}
			var raw json.RawMessage
			if err := a.call(method, p, &raw); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var res map[string]any
			json.Unmarshal(raw, &res)
			switch {
			case res["scheduled_now"] != nil:
				var fr queue.FlushResult
				json.Unmarshal(raw, &fr)
				if fr.Held != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "%d message(s) will go as soon as Microsoft 365 can be reached: %s\n", fr.Scheduled, fr.Held)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%d message(s) will be tried now\n", fr.Scheduled)
				}
				for account, n := range fr.Paused {
					fmt.Fprintf(cmd.OutOrStdout(), "%d message(s) of account %s wait because it is paused: %s\n", n, account, fr.Why[account])
				}
			case res["from"] != nil:
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %v as %v\n", args[0], res["result"], res["id"])
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %v\n", args[0], res["result"])
			}
			return nil
		},
	}
}

// newQueueDumpCmd is `queue dump`: the spool on disk, no server needed.
func newQueueDumpCmd() *cobra.Command {
	dump := &cobra.Command{
		Use:   "dump [--spool DIR] [--body ID]",
		Short: "Read the spool on disk (relay running or not): one JSON line per message, or a message's bytes",
		Long: `dump reads the spool directly, read-only, so it works when the relay is
stopped too. Without --body it prints one JSON object per line for every
live message (latest state from log/) and every failed one (failed/), each
with a "spool_state" of "live" or "failed", oldest first; pipe it to jq.
With --body ID it writes that message's bytes as queued.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, _ := cmd.Flags().GetString("spool")
			if dir == "" {
				loaded, err := loadConfig(cmd)
				if loaded == nil {
					return err
				}
				dir = loaded.Config.Spool.Dir
			}
			if id, _ := cmd.Flags().GetString("body"); id != "" {
				r, err := queue.InspectBody(dir, id)
				if err != nil {
					return err
				}
				defer r.Close()
				_, err = io.Copy(cmd.OutOrStdout(), r)
				return err
			}
			live, failed, err := queue.Inspect(dir)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			for _, set := range []struct {
				state string
				metas []*queue.Meta
			}{{"live", live}, {"failed", failed}} {
				for _, m := range set.metas {
					if err := enc.Encode(struct {
						SpoolState string `json:"spool_state"`
						*queue.Meta
					}{set.state, m}); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	dump.Flags().String("spool", "", "spool folder (default: spool.dir of the configuration)")
	dump.Flags().String("body", "", "print this message's bytes instead")
	return dump
}

// printAccounts is the table of `accounts`: each account's state, its
// provider, cloud and credential, its protocols and the IMAP/POP3
// sessions open now, then, below it, each protocol Microsoft refused and
// each client certificate that expires soon, with what to do.
func printAccounts(w io.Writer, states []tokens.AccountState) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tSTATE\tMAILBOX\tFLOW\tSIGNS IN WITH\tPROTOCOLS\tOPEN SESSIONS\tTOKEN EXPIRES\tLAST REFRESH\tWHAT TO DO")
	var refusals []string
	for _, s := range states {
		exp := "-"
		if !s.AccessExpiry.IsZero() {
			exp = s.AccessExpiry.Local().Format("2006-01-02 15:04")
		}
		var todo []string
		if s.State != tokens.Connected {
			todo = append(todo, s.Explanation.String())
		} else if len(s.MissingProtocols) > 0 {
			todo = append(todo, "reconnect to grant "+strings.ToUpper(strings.Join(s.MissingProtocols, ", ")))
		}
		if s.CertificateWarning != "" {
			todo = append(todo, "renew the client certificate (below)")
			refusals = append(refusals, fmt.Sprintf("%s: %s", s.Account, s.CertificateWarning))
		}
		for _, p := range slices.Sorted(maps.Keys(s.Refused)) {
			todo = append(todo, strings.ToUpper(p)+" logins refused (below)")
			refusals = append(refusals, fmt.Sprintf("%s: %s logins stopped (mail is not affected): %s; then: oauthrelay accounts retry %s",
				s.Account, strings.ToUpper(p), s.Refused[p].String(), s.Account))
		}
		sessions := "-"
		if len(s.Sessions) > 0 {
			var parts []string
			for _, p := range slices.Sorted(maps.Keys(s.Sessions)) {
				parts = append(parts, fmt.Sprintf("%s %d", p, s.Sessions[p]))
			}
			sessions = strings.Join(parts, ", ")
		}
		protocols := strings.Join(s.Protocols, ",")
		if protocols == "" {
			protocols = "smtp"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Account, s.State, s.Mailbox, s.Flow, signsInWith(s), protocols, sessions, exp, age(s.LastRefresh), strings.Join(todo, "; "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range refusals {
		fmt.Fprintln(w, r)
	}
	return nil
}

// signsInWith is an account's provider, cloud and credential:
// "microsoft/global: certificate (expires 2027-01-05)".
func signsInWith(s tokens.AccountState) string {
	if s.Provider == "" { // a relay from before these fields
		return "-"
	}
	out := s.Provider
	if s.Cloud != "" {
		out += "/" + s.Cloud
	}
	if s.Kind != "" {
		out += "/" + s.Kind
	}
	out += ": " + s.Credential
	if !s.CertificateExpiry.IsZero() {
		out += " (expires " + s.CertificateExpiry.UTC().Format("2006-01-02") + ")"
	}
	return out
}

func newAccountsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "accounts",
		Short: "List accounts and their connection state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := a.call("GET", "/api/accounts", &raw); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var states []tokens.AccountState
			if err := json.Unmarshal(raw, &states); err != nil {
				return err
			}
			return printAccounts(cmd.OutOrStdout(), states)
		},
	}
	retry := &cobra.Command{
		Use:   "retry NAME",
		Short: "Try an account that needs attention again (after fixing it on Microsoft's side) and resume its mail",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := accountCall(cmd, "POST", args[0], "retry")
			if err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var res struct{ Result string }
			json.Unmarshal(raw, &res)
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", args[0], res.Result)
			return nil
		},
	}
	apiFlags(retry)
	cmd.AddCommand(retry)
	apiFlags(cmd)
	return cmd
}

// newCheckCmd is `oauthrelay check ACCOUNT`: the pre-flight check, run by
// the running relay (its tokens, its network).
func newCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check ACCOUNT",
		Short: "Test an account end to end without sending: token, permissions, connection, login (exit 0 only if all pass)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := accountCall(cmd, "POST", args[0], "test")
			if err != nil {
				return err
			}
			var res admin.CheckResult
			if err := json.Unmarshal(raw, &res); err != nil {
				return err
			}
			if jsonFlag(cmd) {
				printJSON(cmd.OutOrStdout(), raw)
			} else {
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "Checking %s (%s) — nothing is sent\n", res.Account, res.Mailbox)
				for _, st := range res.Steps {
					mark := "ok  "
					if !st.OK {
						mark = "FAIL"
					}
					fmt.Fprintf(w, "  [%s] %-11s %s\n", mark, st.Step, st.Detail)
					if st.Fix != "" {
						fmt.Fprintf(w, "         %-11s what to do: %s\n", "", st.Fix)
					}
				}
			}
			if !res.OK {
				return exitError{code: 1, err: fmt.Errorf("account %s: check failed", res.Account)}
			}
			fmt.Fprintln(cmd.OutOrStdout(), "All checks passed.")
			return nil
		},
	}
	apiFlags(cmd)
	return cmd
}

func newHealthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 if the relay is ready (spool writable, listener accepting), else 1 — for Docker's HEALTHCHECK",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			resp, err := a.http.Get(a.base + "/readyz")
			if err != nil {
				return exitError{code: 1, err: fmt.Errorf("not reachable: %w", err)}
			}
			defer resp.Body.Close()
			var rd admin.Ready
			json.NewDecoder(resp.Body).Decode(&rd)
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "spool: %s\nlistener: %s\n", rd.Spool, rd.Listener)
			for _, a := range rd.AccountsAttention {
				fmt.Fprintf(w, "needs attention: %s\n", a)
			}
			if resp.StatusCode != http.StatusOK {
				return exitError{code: 1, err: errors.New("not ready")}
			}
			fmt.Fprintln(w, "ready")
			return nil
		},
	}
	cmd.Flags().String("server", "", "admin base URL (default: from admin.addr)")
	return cmd
}

// queueStates is "queued|inflight|…", for help texts.
func queueStates() string {
	var s []string
	for _, st := range queue.MessageStates() {
		s = append(s, string(st))
	}
	return strings.Join(s, "|")
}

// newTokenCmd is `oauthrelay token ACCOUNT`: a current access token, for
// programs that sign in to Microsoft 365 with XOAUTH2 themselves.
func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token ACCOUNT",
		Short: "Print a current access token of an account (for fetchmail, mbsync… that speak XOAUTH2 themselves)",
		Long: `token asks the running relay for a current access token of ACCOUNT and
prints it alone on a line (--json: with its expiry), for a program that
signs in with XOAUTH2 itself: fetchmail's passwordeval, mbsync's PassCmd.
The token is valid for about an hour; ask again each time. It carries the
scopes of the account's protocols (accounts[].protocols).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := accountCall(cmd, "GET", args[0], "token")
			if err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var res struct {
				AccessToken string `json:"access_token"`
			}
			if err := json.Unmarshal(raw, &res); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.AccessToken)
			return nil
		},
	}
	apiFlags(cmd)
	return cmd
}

// accountCall makes one admin API call about an account:
// METHOD /api/accounts/{name}/{what}, and returns its JSON.
func accountCall(cmd *cobra.Command, method, name, what string) (json.RawMessage, error) {
	a, err := newAPIClient(cmd)
	if err != nil {
		return nil, err
	}
	var raw json.RawMessage
	err = a.call(method, accountPath(name, what), &raw)
	return raw, err
}

func accountPath(name, what string) string {
	return "/api/accounts/" + url.PathEscape(name) + "/" + what
}
