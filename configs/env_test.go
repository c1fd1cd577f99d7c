package configs

import (
	"reflect"
	"strings"
	"testing"
)

func TestLoad_UnknownEnvironmentVariableSuggestsFix(t *testing.T) {
	_, ps := loadYAML(t, minimal,
		"OAUTHRELAY_LISTEN_ADR=0.0.0.0:2525",
		"OAUTHRELAY_ACCOUNTS_0_MAILBX=a@contoso.com",
		"OAUTHRELAY_ACCOUNT_0_NAME=app",
		"OAUTHRELAY_ADMIN_TOKN=0123456789abcdef",
		"OAUTHRELAY_ACCOUNTS=app",
		"OAUTHRELAY_SOMETHING_ELSE_ENTIRELY=1",
		"Oauthrelay_Log_Level=debug",
		"QUEUE_CRASH_CHILD=1", // not ours: no prefix
		"HOME=/root",
	)
	wantProblems(t, ps, map[string]string{
		"OAUTHRELAY_LISTEN_ADR":              "unknown variable — did you mean OAUTHRELAY_LISTEN_ADDR?",
		"OAUTHRELAY_ACCOUNTS_0_MAILBX":       "unknown variable — did you mean OAUTHRELAY_ACCOUNTS_0_MAILBOX?",
		"OAUTHRELAY_ACCOUNT_0_NAME":          "unknown variable — did you mean OAUTHRELAY_ACCOUNTS_0_NAME?",
		"OAUTHRELAY_ADMIN_TOKN":              "unknown variable — did you mean OAUTHRELAY_ADMIN_TOKEN?",
		"OAUTHRELAY_ACCOUNTS":                "accounts are set one key at a time: OAUTHRELAY_ACCOUNTS_0_NAME",
		"OAUTHRELAY_SOMETHING_ELSE_ENTIRELY": "unknown variable — each OAUTHRELAY_* variable names a config key",
		"Oauthrelay_Log_Level":               "names are upper-case — did you mean OAUTHRELAY_LOG_LEVEL?",
	})
}

// Every key has its variable, and each is accepted.
func TestLoad_EveryKeyHasAnEnvironmentVariable(t *testing.T) {
	env := []string{}
	for key, typ := range configKeys() {
		if key == "accounts" {
			continue
		}
		env = append(env, EnvPrefix+strings.ToUpper(strings.ReplaceAll(key, ".", "_"))+"="+sampleValue(key, typ))
	}
	for key, typ := range accountKeys() {
		env = append(env, "OAUTHRELAY_ACCOUNTS_0_"+strings.ToUpper(key)+"="+sampleValue(key, typ))
	}
	_, ps := loadYAML(t, "", env...)
	for _, p := range ps {
		if strings.Contains(p.Msg, "unknown") || strings.HasPrefix(p.Key, "OAUTHRELAY_") {
			t.Errorf("%v", p)
		}
	}
}

func sampleValue(key string, typ reflect.Type) string {
	switch {
	case typ == durationType || typ == reflect.TypeOf(Default().Delivery.Retry):
		return "1m"
	case typ.Kind() == reflect.Bool:
		return "false"
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Float64:
		return "1"
	case strings.HasSuffix(key, "_file"):
		return ""
	}
	return "x"
}
