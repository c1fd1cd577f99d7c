package configs

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Attached is the listen.allowed_networks keyword for the networks this
// machine (or container) is attached to: loopback, and the subnet of each
// address of its network interfaces, read once at start. In a Docker
// container that is the container's own networks — the app beside it, not
// every private range.
const Attached = "attached"

// isAttached reports whether an allowed_networks entry is the keyword.
func isAttached(s string) bool { return strings.EqualFold(strings.TrimSpace(s), Attached) }

// interfaceAddrs lists this machine's interface addresses with their
// prefix lengths (192.0.2.10/24), from net.InterfaceAddrs.
func interfaceAddrs() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipnet.IP)
		if !ok {
			continue
		}
		ones, bits := ipnet.Mask.Size()
		if ip.Is4In6() && bits == 128 {
			ones -= 96
		}
		ip = ip.Unmap()
		if p, err := ip.Prefix(ones); err == nil {
			out = append(out, netip.PrefixFrom(ip, p.Bits()))
		}
	}
	return out, nil
}

// resolveAttached replaces the keyword in list with the networks it stands
// for and drops repeated networks. attached is what the keyword became (nil
// if list does not use it).
func resolveAttached(list []string, ifaceAddrs func() ([]netip.Prefix, error)) (out, attached []string, err error) {
	used := false
	for _, n := range list {
		used = used || isAttached(n)
	}
	if !used {
		return list, nil, nil
	}
	addrs, err := ifaceAddrs()
	if err != nil {
		return list, nil, fmt.Errorf("%s: cannot list the network interfaces: %v — list the networks instead", Attached, err)
	}
	nets := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")} // always
	for _, a := range addrs {
		// A link-local peer has a zone, and a zoned address is in no prefix.
		if a.Addr().IsLinkLocalUnicast() {
			continue
		}
		nets = append(nets, a.Masked())
	}
	seen := map[string]bool{}
	add := func(dst []string, n string) []string {
		canon := n
		if p, err := ParseNetwork(n); err == nil {
			canon = p.String()
		}
		if seen[canon] {
			return dst
		}
		seen[canon] = true
		return append(dst, canon)
	}
	for _, p := range nets {
		attached = add(attached, p.String())
	}
	seen = map[string]bool{}
	for _, n := range list {
		if !isAttached(n) {
			out = add(out, n)
			continue
		}
		for _, a := range attached {
			out = add(out, a)
		}
	}
	return out, attached, nil
}
