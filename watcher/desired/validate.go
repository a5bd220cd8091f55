package desired

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// The allow-lists of the vars contract (ansible/README.md). Every string that reaches a State
// matches one of these; the role checks the same rules again in its preflight.
var (
	groupRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	timeRE      = regexp.MustCompile(`^([0-9]{1,9})(us|ms|s|m|h|d)?$`)
	generationR = regexp.MustCompile(`^[0-9a-f]{1,64}$`)
)

const (
	// TrafficPolicyCluster sends to every eligible node; kube-proxy forwards from there.
	TrafficPolicyCluster = "Cluster"
	// TrafficPolicyLocal sends only to nodes with a ready endpoint of the Service.
	TrafficPolicyLocal = "Local"

	// maxHAProxyMillis is the largest time HAProxy accepts (a signed 32-bit count of ms);
	// a bigger value passes this regex but makes `haproxy -c` fail for every Service.
	maxHAProxyMillis = 1<<31 - 1
)

// parseAddr accepts an IPv4 or IPv6 literal without zone and returns it in canonical form.
// IPv4-mapped IPv6 addresses are unmapped so that one address has exactly one spelling.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("not an IP address literal")
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("IPv6 zones are not allowed")
	}
	return a.Unmap(), nil
}

// parseHAProxyTime validates an HAProxy time value and returns it without leading zeros.
func parseHAProxyTime(s string) (string, error) {
	m := timeRE.FindStringSubmatch(s)
	if m == nil {
		return "", fmt.Errorf("want an HAProxy time such as 5s, 500ms or 1h")
	}
	n, _ := strconv.ParseUint(m[1], 10, 64) // at most 9 digits: cannot fail or overflow
	if n == 0 {
		// 0 means "no timeout" to HAProxy: sessions would never expire.
		return "", fmt.Errorf("must be greater than zero")
	}
	perUnit := map[string]uint64{"us": 0, "ms": 1, "": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[m[2]]
	ms := n * perUnit
	if m[2] == "us" {
		ms = (n + 999) / 1000
	}
	if ms > maxHAProxyMillis {
		return "", fmt.Errorf("longer than HAProxy's limit of about 24 days")
	}
	return strconv.FormatUint(n, 10) + m[2], nil
}

// The checks below are the apimachinery validation rules (IsDNS1123Label,
// IsDNS1123Subdomain, IsValidPortName; TestValidatorsMatchAPIMachinery holds them equal),
// written out because their regexps cost more than the rest of Compute at 5000 nodes.

func isDNSLabel(s string) bool { return len(s) <= 63 && isLabel(s) }

func isDNSSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for {
		label, rest, more := strings.Cut(s, ".")
		if !isLabel(label) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

// isNodeName: a DNS subdomain whose labels are at most 63 characters. The API server does
// not limit label length in node names, but DNS does, and so does the role's preflight.
func isNodeName(s string) bool {
	if !isDNSSubdomain(s) {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) > 63 {
			return false
		}
	}
	return true
}

// isLabel: [a-z0-9]([-a-z0-9]*[a-z0-9])?, any length.
func isLabel(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isPortName: an IANA service name, at most 15 characters with at least one letter, no
// "--" (what the API server allows as a Service port name).
func isPortName(s string) bool {
	if len(s) > 15 || !isLabel(s) || strings.Contains(s, "--") {
		return false
	}
	return strings.ContainsAny(s, "abcdefghijklmnopqrstuvwxyz")
}

// isID: the contract's ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$.
func isID(s string) bool { return isDNSLabel(s) }

func validPort(p int) bool { return p >= 1 && p <= 65535 }

// Validate checks a State against every rule of the vars contract, schema 1. Compute only
// emits valid States; Validate is the same check for a State read back from elsewhere.
func (s State) Validate() error {
	if s.Schema != Schema {
		return fmt.Errorf("schema: got %d, want %d", s.Schema, Schema)
	}
	if !generationR.MatchString(s.Generation) {
		return fmt.Errorf("generation: want 1 to 64 lowercase hex digits")
	}
	if err := validateNodes(s.Nodes); err != nil {
		return err
	}
	known := make(map[string]bool, len(s.Nodes))
	for _, n := range s.Nodes {
		known[n.Name] = true
	}
	for i, svc := range s.Services {
		if err := svc.validateFields(); err != nil {
			return fmt.Errorf("services[%d]: %w", i, err)
		}
		if err := svc.validateNodeNames(known); err != nil {
			return fmt.Errorf("services[%d]: %w", i, err)
		}
		if i > 0 && s.Services[i-1].ID >= svc.ID {
			return fmt.Errorf("services[%d]: id %q: services must be sorted by unique id", i, svc.ID)
		}
	}
	return nil
}

// validateNodeNames checks that a Local Service names known nodes, sorted and once each, and
// that a Cluster Service names none (it uses every node).
func (s Service) validateNodeNames(known map[string]bool) error {
	if s.TrafficPolicy != TrafficPolicyLocal {
		if s.NodeNames != nil {
			return fmt.Errorf("node_names: must be null for traffic_policy %s (every node serves)", s.TrafficPolicy)
		}
		return nil
	}
	if s.NodeNames == nil {
		return fmt.Errorf("node_names: must be a list for traffic_policy Local")
	}
	for i, n := range s.NodeNames {
		if !known[n] {
			return fmt.Errorf("node_names[%d]: %q is not in nodes", i, n)
		}
		if i > 0 && s.NodeNames[i-1] >= n {
			return fmt.Errorf("node_names[%d]: %q: names must be sorted and unique", i, n)
		}
	}
	return nil
}

// validateFields checks everything but the node names.
func (s Service) validateFields() error {
	if !isID(s.ID) {
		return fmt.Errorf("id: %q is not a valid id", s.ID)
	}
	ns, name, ok := strings.Cut(s.Source, "/")
	if !ok || !isDNSLabel(ns) || !isDNSLabel(name) {
		return fmt.Errorf("source: %q is not namespace/name", s.Source)
	}
	if !groupRE.MatchString(s.EdgeGroup) {
		return fmt.Errorf("edge_group: %q is not an inventory group name", s.EdgeGroup)
	}
	if a, err := parseAddr(s.BindAddress); err != nil || a.String() != s.BindAddress {
		return fmt.Errorf("bind_address: %q is not a canonical IP address", s.BindAddress)
	}
	for _, p := range []struct {
		name string
		v    int
	}{
		{"control_port", s.ControlPort}, {"control_node_port", s.ControlNodePort},
		{"passive_min", s.PassiveMin}, {"passive_max", s.PassiveMax},
	} {
		if !validPort(p.v) {
			return fmt.Errorf("%s: %d is not a port", p.name, p.v)
		}
	}
	if s.PassiveMin > s.PassiveMax {
		return fmt.Errorf("passive_min %d > passive_max %d", s.PassiveMin, s.PassiveMax)
	}
	if s.PassiveMax-s.PassiveMin+1 > MaxPassivePorts {
		return fmt.Errorf("passive range: more than %d ports", MaxPassivePorts)
	}
	if s.ControlPort >= s.PassiveMin && s.ControlPort <= s.PassiveMax {
		return fmt.Errorf("control_port %d lies inside the passive range", s.ControlPort)
	}
	if s.PassiveNodePorts == nil {
		return fmt.Errorf("passive_node_ports: must be a list, not null")
	}
	if s.PassiveOffset != nil {
		if len(s.PassiveNodePorts) != 0 {
			return fmt.Errorf("passive_node_ports: must be empty when passive_offset is set")
		}
		if !validPort(s.PassiveMin+*s.PassiveOffset) || !validPort(s.PassiveMax+*s.PassiveOffset) {
			return fmt.Errorf("passive_offset: %d moves the range out of the port space", *s.PassiveOffset)
		}
	} else {
		if len(s.PassiveNodePorts) != s.PassiveMax-s.PassiveMin+1 {
			return fmt.Errorf("passive_node_ports: got %d, want one per passive port", len(s.PassiveNodePorts))
		}
		for i, p := range s.PassiveNodePorts {
			if !validPort(p) {
				return fmt.Errorf("passive_node_ports[%d]: %d is not a port", i, p)
			}
		}
	}
	switch s.TrafficPolicy {
	case TrafficPolicyCluster:
		if s.HealthCheckNodePort != 0 {
			return fmt.Errorf("health_check_node_port: must be 0 for traffic_policy Cluster")
		}
	case TrafficPolicyLocal:
		if !validPort(s.HealthCheckNodePort) {
			return fmt.Errorf("health_check_node_port: %d is not a port", s.HealthCheckNodePort)
		}
	default:
		return fmt.Errorf("traffic_policy: %q is neither Cluster nor Local", s.TrafficPolicy)
	}
	for _, t := range []struct{ name, v string }{
		{"connect", s.Timeouts.Connect}, {"client", s.Timeouts.Client},
		{"server", s.Timeouts.Server}, {"check", s.Timeouts.Check},
	} {
		if norm, err := parseHAProxyTime(t.v); err != nil || norm != t.v {
			return fmt.Errorf("timeouts.%s: %q is not a valid HAProxy time", t.name, t.v)
		}
	}
	if s.MaxConn < 1 || s.MaxConn > MaxMaxConn {
		return fmt.Errorf("maxconn: %d is outside 1..%d", s.MaxConn, MaxMaxConn)
	}
	if s.SendProxy != "" && s.SendProxy != "v1" && s.SendProxy != "v2" {
		return fmt.Errorf("send_proxy: %q is not \"\", v1 or v2", s.SendProxy)
	}
	return nil
}

// validateNodes checks the State's node list.
func validateNodes(nodes []Node) error {
	if nodes == nil {
		return fmt.Errorf("nodes: must be a list, not null")
	}
	ids := make(map[int]bool, len(nodes))
	for i, n := range nodes {
		if !isNodeName(n.Name) {
			return fmt.Errorf("nodes[%d]: name %q is not a DNS subdomain", i, n.Name)
		}
		if i > 0 && nodes[i-1].Name >= n.Name {
			return fmt.Errorf("nodes[%d]: %q: nodes must be sorted by unique name", i, n.Name)
		}
		if a, err := parseAddr(n.Address); err != nil || a.String() != n.Address {
			return fmt.Errorf("nodes[%d]: address %q is not a canonical IP address", i, n.Address)
		}
		if n.ID < 1 || n.ID > maxServerID {
			return fmt.Errorf("nodes[%d]: id %d is outside 1..%d", i, n.ID, maxServerID)
		}
		if ids[n.ID] {
			return fmt.Errorf("nodes[%d]: id %d is used twice", i, n.ID)
		}
		ids[n.ID] = true
	}
	return nil
}
