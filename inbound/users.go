package inbound

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/oauthrelay/oauthrelay/internal/credfile"

	"golang.org/x/crypto/bcrypt"
)

// Users are the local users who may sign in, each tied to an account.
type Users struct {
	by map[string]localUser
	// dummy is checked for an unknown user, at the cost of the real users'
	// hashes, so a refusal takes as long whether the user exists or not.
	dummy []byte
}

type localUser struct {
	hash    []byte
	account string
}

// LoadUsers reads inbound.users_file: "user:bcrypt-hash[:account]" lines,
// # comments and blank lines ignored. Without an account a user signs in to
// the account whose mailbox equals the user name. mailboxes maps each
// configured account's name to its mailbox.
func LoadUsers(path string, mailboxes map[string]string) (*Users, error) {
	raw, err := credfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("inbound.users_file: %w", err)
	}
	var order []string // "<line number>\x00<line>"
	sc := bufio.NewScanner(bytes.NewReader(raw))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		order = append(order, fmt.Sprintf("%d\x00%s", n, line))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("inbound.users_file %s: %w", path, err)
	}
	u := &Users{by: map[string]localUser{}}
	cost := bcrypt.MinCost
	for _, o := range order {
		num, line, _ := strings.Cut(o, "\x00")
		parts := strings.SplitN(line, ":", 3) // a bcrypt hash has no ':'
		if len(parts) < 2 || parts[0] == "" {
			return nil, fmt.Errorf("inbound.users_file %s line %s: want user:bcrypt-hash[:account] (make a hash with: htpasswd -nbB user password)", path, num)
		}
		user, hash := parts[0], parts[1]
		c, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			return nil, fmt.Errorf("inbound.users_file %s line %s: the hash for %s is not bcrypt (make one with: htpasswd -nbB user password)", path, num, user)
		}
		cost = max(cost, c)
		account := ""
		if len(parts) == 3 {
			account = strings.TrimSpace(parts[2])
			if _, ok := mailboxes[account]; !ok {
				return nil, fmt.Errorf("inbound.users_file %s line %s: %s's account %q is not in accounts", path, num, user, account)
			}
		} else {
			for name, mb := range mailboxes {
				if strings.EqualFold(mb, user) {
					account = name
				}
			}
			if account == "" {
				return nil, fmt.Errorf("inbound.users_file %s line %s: no account's mailbox is %s — add :ACCOUNT at the end of the line", path, num, user)
			}
		}
		if _, dup := u.by[user]; dup {
			return nil, fmt.Errorf("inbound.users_file %s line %s: %s is listed twice", path, num, user)
		}
		u.by[user] = localUser{hash: []byte(hash), account: account}
	}
	u.dummy, _ = bcrypt.GenerateFromPassword([]byte("oauthrelay: no such user"), cost)
	return u, nil
}

// Len is how many users there are.
func (u *Users) Len() int { return len(u.by) }

// check compares pass with user's hash (or the dummy hash at equal cost for
// an unknown user) and returns the user's account when it matches. It is
// slow on purpose (bcrypt): caller must run it in the session's goroutine,
// never an accept loop.
func (u *Users) check(user, pass string) (account string, ok bool) {
	lu, known := u.by[user]
	hash := lu.hash
	if !known {
		hash = u.dummy
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil || !known {
		return "", false
	}
	return lu.account, true
}

// known reports whether user is a local user (for logging a name only
// when it is one: a password typed into the user field is not).
func (u *Users) known(user string) bool {
	_, ok := u.by[user]
	return ok
}

// Accounts lists the accounts the users sign in to, sorted.
func (u *Users) Accounts() []string {
	var out []string
	for _, lu := range u.by {
		if !slices.Contains(out, lu.account) {
			out = append(out, lu.account)
		}
	}
	slices.Sort(out)
	return out
}
