package fakem365

import (
	"strings"
)

// globalResource is what the global cloud's delegated scopes are named
// under; SetCloud changes it.
const globalResource = "https://outlook.office.com"

// SetCloud makes the fake a national cloud's Entra ID: it issues tokens
// only for Exchange Online scopes under resource (GCC High and DoD:
// https://outlook.office365.us; 21Vianet: https://partner.outlook.cn) and
// answers AADSTS500011 for another cloud's, as a real national cloud
// knows no global resource. "" is the global cloud (which accepts both
// https://outlook.office.com and https://outlook.office365.com).
func (e *Entra) SetCloud(resource string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cloudResource = strings.TrimRight(resource, "/")
}

// resources are the Exchange Online resources this cloud knows; caller
// holds e.mu.
func (e *Entra) resources() []string {
	if e.cloudResource != "" {
		return []string{e.cloudResource}
	}
	return []string{globalResource, "https://outlook.office365.com"}
}

// foreignResource returns the resource of the first scope in scope that
// names an Exchange Online resource of another cloud, or ""; caller holds
// e.mu.
func (e *Entra) foreignResource(scope string) string {
	known := e.resources()
	for _, sc := range strings.Fields(scope) {
		i := strings.Index(sc, "://")
		if i < 0 {
			continue // offline_access, openid
		}
		j := strings.Index(sc[i+3:], "/")
		if j < 0 {
			continue
		}
		res := sc[:i+3+j]
		if !strings.Contains(res, "outlook") {
			continue
		}
		if !contains(known, res) {
			return res
		}
	}
	return ""
}

// permission returns the permission a delegated scope names in this
// cloud ("SMTP.Send"), or ""; caller holds e.mu.
func (e *Entra) permission(sc string) string {
	for _, res := range e.resources() {
		if rest, ok := strings.CutPrefix(sc, res+"/"); ok {
			return rest
		}
	}
	return ""
}
