package configs

import (
	"bufio"
	"encoding/base64"
	"net"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestLoad_AttachedIsTheInterfacesSubnetsAndLoopback(t *testing.T) {
	fake := func() ([]netip.Prefix, error) {
		return []netip.Prefix{
			netip.MustParsePrefix("127.0.0.1/8"),
			netip.MustParsePrefix("192.0.2.10/24"),
			netip.MustParsePrefix("2001:db8::5/64"),
			netip.MustParsePrefix("fe80::1/64"), // link-local: a zoned peer never matches a prefix
		}, nil
	}
	got, err := Load(LoadOptions{File: writeFile(t, minimal+"listen:\n  allowed_networks: [attached, 10.9.0.0/16, 192.0.2.0/24]\n"), Env: []string{}, InterfaceAddrs: fake})
	if err != nil {
		t.Fatal(err)
	}
	attached := []string{"127.0.0.0/8", "::1/128", "192.0.2.0/24", "2001:db8::/64"}
	if !reflect.DeepEqual(got.Attached, attached) {
		t.Errorf("attached = %q, want %q", got.Attached, attached)
	}
	if want := append(attached, "10.9.0.0/16"); !reflect.DeepEqual(got.Listen.AllowedNetworks, want) {
		t.Errorf("allowed_networks = %q, want %q (resolved, no duplicates)", got.Listen.AllowedNetworks, want)
	}

	// Without an interface list of its own, it reads this machine's:
	// loopback is always there, and every address's subnet.
	got, err = Load(LoadOptions{SearchPaths: []string{}, Env: append([]string{"OAUTHRELAY_LISTEN_ALLOWED_NETWORKS=attached"}, envAccount...)})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"127.0.0.0/8", "::1/128"} {
		if !slices.Contains(got.Listen.AllowedNetworks, want) {
			t.Errorf("allowed_networks %q lacks loopback %s", got.Listen.AllowedNetworks, want)
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok || ipnet.IP.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := ipnet.Mask.Size()
		ip, _ := netip.AddrFromSlice(ipnet.IP)
		want := netip.PrefixFrom(ip.Unmap(), ones).Masked().String()
		if !slices.Contains(got.Listen.AllowedNetworks, want) && !ip.IsLoopback() {
			t.Errorf("allowed_networks %q lacks %s (this machine's %s)", got.Listen.AllowedNetworks, want, ipnet)
		}
	}
}

// Issue 12 item 6: the image and the compose example must not accept every
// private network, nor route every sender.
func TestDockerDefaults_AttachedNetworksAndOwnDomain(t *testing.T) {
	private := []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}

	env := dockerfileEnv(t)
	if env["OAUTHRELAY_LISTEN_ALLOWED_NETWORKS"] != "attached" {
		t.Errorf("Dockerfile: OAUTHRELAY_LISTEN_ALLOWED_NETWORKS=%q, want attached", env["OAUTHRELAY_LISTEN_ALLOWED_NETWORKS"])
	}
	composeEnv := composeEnvironment(t)
	var all []string
	for k, v := range env {
		all = append(all, k+"="+v)
	}
	for k, v := range composeEnv {
		all = append(all, k+"="+v)
	}
	got, err := Load(LoadOptions{SearchPaths: []string{}, Env: all})
	if err != nil {
		t.Fatalf("the image's environment with the compose file's does not load: %v", err)
	}
	checkDocker(t, "Dockerfile + docker-compose.yaml", &got.Config, private)

	got, err = Load(LoadOptions{File: "docker-sidecar.yaml", Env: []string{
		"M365_TENANT=contoso.com", "M365_CLIENT_ID=id", "M365_MAILBOX=app@contoso.com", "M365_SENDER_DOMAIN=contoso.com",
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkDocker(t, "docker-sidecar.yaml", &got.Config, private)
}

func checkDocker(t *testing.T, name string, c *Config, private []string) {
	t.Helper()
	for _, p := range private {
		if slices.Contains(c.Listen.AllowedNetworks, p) {
			t.Errorf("%s: allowed_networks %q includes %s", name, c.Listen.AllowedNetworks, p)
		}
	}
	for _, a := range c.Accounts {
		if slices.Contains(a.Senders, "*") || len(a.Senders) == 0 {
			t.Errorf("%s: account %s routes senders %q; want the app's own domain", name, a.Name, a.Senders)
		}
	}
}

// dockerfileEnv reads the OAUTHRELAY_* settings of ../Dockerfile's ENV.
func dockerfileEnv(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	kv := regexp.MustCompile(`(OAUTHRELAY_[A-Z0-9_]+)=(\S+)`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(strings.TrimSpace(sc.Text()), "#") {
			continue
		}
		for _, m := range kv.FindAllStringSubmatch(sc.Text(), -1) {
			env[m[1]] = m[2]
		}
	}
	if len(env) == 0 {
		t.Fatal("no OAUTHRELAY_* in the Dockerfile's ENV")
	}
	return env
}

// composeEnvironment is the oauthrelay service's environment in
// docker-compose.yaml, with compose's ${VAR} filled in as an .env would.
func composeEnvironment(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	dotEnv := map[string]string{
		"OAUTHRELAY_KEYSAFE_KEY": base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"OAUTHRELAY_ADMIN_TOKEN": "0123456789abcdef0123",
		"M365_TENANT":            "contoso.com", "M365_CLIENT_ID": "id",
		"M365_MAILBOX": "app@contoso.com", "M365_SENDER_DOMAIN": "contoso.com",
	}
	out := map[string]string{}
	for k, v := range doc.Services["oauthrelay"].Environment {
		out[k] = envRef.ReplaceAllStringFunc(v, func(m string) string { return dotEnv[m[2:len(m)-1]] })
	}
	return out
}
