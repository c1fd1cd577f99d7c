package daemon

import (
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/tokens"
)

func TestCertificateAlerts_AtStartThenOnceADay(t *testing.T) {
	c := &certificateAlerts{}
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	states := []tokens.AccountState{
		{Account: "app", CertificateWarning: "the client certificate expires on 2026-12-20 (in 19 days): …"},
		{Account: "secret"},
	}
	names := func(ss []tokens.AccountState) (out []string) {
		for _, s := range ss {
			out = append(out, s.Account)
		}
		return out
	}
	for _, step := range []struct {
		after time.Duration
		want  int
	}{
		{0, 1},              // at start
		{time.Hour, 0},      // hourly checks stay quiet…
		{23 * time.Hour, 0}, // …for a day
		{24 * time.Hour, 1}, // then once more
		{25 * time.Hour, 0},
		{48 * time.Hour, 1},
	} {
		got := c.due(states, start.Add(step.after))
		if len(got) != step.want || (step.want == 1 && got[0].Account != "app") {
			t.Errorf("after %v: alerts for %v, want %d for app", step.after, names(got), step.want)
		}
	}
}
