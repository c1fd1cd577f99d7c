package relay

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/oauthrelay/oauthrelay/queue"
)

// Reply classification: what each of Microsoft's replies means for a
// recipient (delivered, deferred, failed), for the account (throttled,
// refused) and for the session (gone or reusable) — README, Retry policy.

// attemptError is a failure before or outside a transaction: it applies to
// every recipient of the attempt.
type attemptError struct {
	outcome queue.Outcome
	reply   queue.Reply
	pause   string // the account cannot send: pause it with this explanation
	auth535 bool   // Microsoft answered AUTH with 535 (reply holds it)
	// unreachable: the upstream could not be reached at all (connection,
	// DNS, TLS handshake, timeout, 421 at the greeting): an outage.
	unreachable bool
}

func enhanced(se *smtp.SMTPError) string {
	if se.EnhancedCode == smtp.NoEnhancedCode || se.EnhancedCode == (smtp.EnhancedCode{}) {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
}

func (d *Upstream) reply(account string, code int, enh string) {
	if d.events.Reply != nil {
		d.events.Reply(account, code, enh)
	}
}

// replyErr classifies an error outside a transaction.
func (d *Upstream) replyErr(stage string, err error) *attemptError {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		// Even a 5xx at EHLO/AUTH is about the connection, not the message:
		// retrying later is right, bouncing would be wrong.
		return &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: se.Code, Enhanced: enhanced(se), Text: se.Message}}
	}
	return &attemptError{outcome: queue.Deferred, reply: queue.Reply{Code: 451, Enhanced: "4.4.2", Text: fmt.Sprintf("connection lost at %s: %v", stage, err)}}
}

// classify turns an error inside a transaction into a reply, and says
// whether Microsoft is throttling and whether the connection is gone.
func (d *Upstream) classify(u *upAccount, err error) (r queue.Reply, throttled, connGone bool) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return queue.Reply{Code: 451, Enhanced: "4.4.2", Text: "connection lost: " + err.Error()}, false, true
	}
	r = queue.Reply{Code: se.Code, Enhanced: enhanced(se), Text: se.Message}
	d.reply(u.Name, r.Code, r.Enhanced)
	switch {
	case r.Enhanced == "4.4.2" && r.Code == 421, r.Enhanced == "4.3.2":
		return r, true, r.Code == 421
	case r.Code == 421:
		return r, false, true // the server closes the connection after 421
	case senderThrottled(r), quotaExceeded(r):
		return r, true, false
	case notAuthenticated(r):
		return r, false, true // this session lost its login: a new one
	}
	return r, false, false
}

// senderThrottled: "550 5.2.251–5.2.255 Sender throttled due to
// continuous … errors" (M365.md) is about the mailbox, not the message: it
// is deferred with the throttling back-off, never bounced. (SendAsDenied is
// 554 5.2.252, after the final dot.)
func senderThrottled(r queue.Reply) bool {
	return r.Code == 550 && strings.HasPrefix(r.Enhanced, "5.2.25")
}

// quotaExceeded: a daily sending quota ("550 5.4.5 Daily user sending
// limit exceeded" — Gmail: 2,000 messages a day for Workspace, 500 for
// gmail.com; Outlook.com words it "quota"). RFC 3463 X.4.5 is congestion:
// the message is fine and goes out when the quota resets, so it is
// deferred with the throttling back-off, never bounced.
func quotaExceeded(r queue.Reply) bool { return r.Code == 550 && r.Enhanced == "5.4.5" }

// notAuthenticated: "530 5.7.57 Client not authenticated" at MAIL means
// the session's login was lost, not that the message is refused.
func notAuthenticated(r queue.Reply) bool { return r.Code == 530 && r.Enhanced == "5.7.57" }

func outcome(r queue.Reply) queue.Outcome {
	switch {
	case r.Code >= 200 && r.Code < 300:
		return queue.Delivered
	case senderThrottled(r), quotaExceeded(r), notAuthenticated(r):
		return queue.Deferred
	case r.Code >= 500:
		return queue.Failed
	}
	return queue.Deferred
}

// throttle slows the account down after 421 4.4.2 / 432 4.3.2: it returns
// how long to wait before the next attempt (growing while the throttling
// lasts) and how many deliveries of the account may run at once (one
// fewer, at least one); the queue applies both.
func (d *Upstream) throttle(u *upAccount) (time.Duration, int) {
	u.mu.Lock()
	u.throttledAt = time.Now()
	u.throttleStreak++
	u.concurrency = max(1, u.concurrency-1)
	n, streak := u.concurrency, u.throttleStreak
	u.mu.Unlock()
	if d.events.Throttled != nil {
		d.events.Throttled(u.Name)
	}
	wait := d.cfg.ThrottleBackoff * time.Duration(min(streak, 8))
	d.log.Warn("delivery: "+u.service()+" is throttling the account; slowing down", "account", u.Name, "connections", n, "retry_after", wait.String())
	return wait, n
}

// throttleOver reports, after an accepted message, whether the account's
// throttling has been over long enough to go back to full concurrency.
func (d *Upstream) throttleOver(u *upAccount) bool {
	u.mu.Lock()
	u.throttleStreak = 0 // accepted: the next throttling starts the back-off afresh
	if u.throttledAt.IsZero() || time.Since(u.throttledAt) < d.cfg.ThrottleRecovery {
		u.mu.Unlock()
		return false
	}
	u.throttledAt, u.throttleStreak, u.concurrency = time.Time{}, 0, d.cfg.Connections
	u.mu.Unlock()
	d.log.Info("delivery: throttling over; full speed again", "account", u.Name)
	return true
}
