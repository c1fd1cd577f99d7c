package configs

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var envAccount = []string{
	"OAUTHRELAY_ACCOUNTS_0_NAME=app",
	"OAUTHRELAY_ACCOUNTS_0_TENANT=contoso.com",
	"OAUTHRELAY_ACCOUNTS_0_CLIENT_ID=id",
	"OAUTHRELAY_ACCOUNTS_0_MAILBOX=app@contoso.com",
	"OAUTHRELAY_ACCOUNTS_0_SENDERS=*@contoso.com",
}

func TestLoad_SaysWhichPathsWereSearched(t *testing.T) {
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")}
	got, err := Load(LoadOptions{SearchPaths: paths, Env: envAccount})
	if err != nil {
		t.Fatal(err)
	}
	if got.File != "" || !reflect.DeepEqual(got.Searched, paths) {
		t.Fatalf("File %q, Searched %q: want none found after %q", got.File, got.Searched, paths)
	}
	for _, want := range append(paths, "no config file found", "built-in defaults + OAUTHRELAY_* environment variables") {
		if !strings.Contains(got.Source(), want) {
			t.Errorf("Source() = %q lacks %q", got.Source(), want)
		}
	}

	// Relative paths are shown as the absolute path they were looked for at
	// (a service's working folder is often not what one expects).
	t.Chdir(dir)
	got, err = Load(LoadOptions{SearchPaths: []string{"./oauthrelay.yaml"}, Env: envAccount})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "oauthrelay.yaml"); len(got.Searched) != 1 || got.Searched[0] != want {
		t.Errorf("Searched %q, want %q", got.Searched, want)
	}

	os.WriteFile(paths[1], []byte(minimal), 0o600)
	got, err = Load(LoadOptions{SearchPaths: paths, Env: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if got.File != paths[1] || !strings.Contains(got.Source(), paths[1]) {
		t.Errorf("File %q, Source %q: want %s", got.File, got.Source(), paths[1])
	}
}

// A warning names the key it is about, so a command can leave out those
// about keys it does not use.
func TestLoad_WarningNamesItsKey(t *testing.T) {
	got, ps := loadYAML(t, minimal+"    client_secret: x${UNSET_SECRET}\nadmin:\n  token: ${UNSET_TOKEN}\n")
	if len(ps) != 0 {
		t.Fatal(ps)
	}
	var keys []string
	for _, w := range got.Warnings {
		keys = append(keys, w.Key)
		if !strings.Contains(w.String(), "is not set in the environment") {
			t.Errorf("warning %q does not say what is wrong", w)
		}
	}
	if want := []string{"accounts[0].client_secret", "admin.token"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("warnings are about %q, want %q", keys, want)
	}
}
