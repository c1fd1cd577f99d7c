package inbound

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Each users file line names its account, or the account whose mailbox is
// the user; what cannot work is refused with the line named.
func TestLoadUsers(t *testing.T) {
	mailboxes := map[string]string{"helpdesk": "Helpdesk@contoso.com", "scanner": "scan@contoso.com"}
	u, err := LoadUsers(writeUsers(t, "helpdesk@contoso.com:pw1", "app:pw2:scanner"), mailboxes)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := u.check("helpdesk@contoso.com", "pw1"); !ok || a != "helpdesk" {
		t.Errorf("mailbox user: %q %v", a, ok)
	}
	if a, ok := u.check("app", "pw2"); !ok || a != "scanner" {
		t.Errorf("user with account: %q %v", a, ok)
	}
	if _, ok := u.check("app", "pw1"); ok {
		t.Error("wrong password accepted")
	}
	if _, ok := u.check("nobody", ""); ok {
		t.Error("unknown user accepted")
	}
	bad := []struct{ content, want string }{
		{"app:pw:nope\n", `account "nope" is not in accounts`},
		{"someone@else.com:pw\n", "no account's mailbox is someone@else.com"},
		{"app:notbcrypt\n", "is not bcrypt"},
		{"justaname\n", "want user:bcrypt-hash[:account]"},
	}
	for _, b := range bad {
		p := filepath.Join(t.TempDir(), "users")
		content := b.content
		if strings.Count(content, ":") >= 1 && !strings.Contains(content, "notbcrypt") {
			user, rest, _ := strings.Cut(strings.TrimSpace(content), ":")
			pw, acct, has := strings.Cut(rest, ":")
			p = writeUsers(t, user+":"+pw+map[bool]string{true: ":" + acct}[has])
		} else if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadUsers(p, mailboxes)
		if err == nil || !strings.Contains(err.Error(), b.want) || !strings.Contains(err.Error(), "inbound.users_file") || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: error %v, want %q", b.content, err, b.want)
		}
	}
}
