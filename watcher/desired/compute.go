package desired

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Input is a snapshot of the cluster objects the desired state depends on.
type Input struct {
	Nodes    []*corev1.Node
	Services []*corev1.Service            // already filtered by label kubeftp.io/expose=true
	Slices   []*discoveryv1.EndpointSlice // of those Services
}

// Options are the watcher's settings that shape the desired state.
type Options struct {
	DefaultEdgeAddress string                 // used when a Service has no kubeftp.io/edge-address
	DefaultEdgeGroup   string                 // "all" when empty
	NodeSelector       labels.Selector        // nil selects every node
	NodeAddressType    corev1.NodeAddressType // InternalIP when empty
	ReservedPorts      []int                  // edge ports no Service may claim; 22 always is
}

// Warning is something a user should hear about a Service (or, with Namespace "", a Node).
type Warning struct {
	Namespace, Name string
	Reason          string // CamelCase Event reason, one of the Reason constants
	Field           string // the annotation or field at fault, e.g. "kubeftp.io/passive-ports"
	Message         string // one sentence, safe to show: user values are quoted and truncated
	Skipped         bool   // the Service (or Node) is not served because of it
}

// Event reasons of warnings.
const (
	ReasonInvalidAnnotation    = "InvalidAnnotation"
	ReasonUnknownAnnotation    = "UnknownAnnotation"
	ReasonInvalidService       = "InvalidService"
	ReasonReservedPort         = "ReservedPort"
	ReasonPortConflict         = "PortConflict"
	ReasonNoEligibleNodes      = "NoEligibleNodes"
	ReasonActiveModeNotProxied = "ActiveModeNotProxied"
	ReasonInvalidNode          = "InvalidNode"
)

// sshPort is always reserved: Ansible reaches the edge hosts over it.
const sshPort = 22

// ValidateOptions checks the watcher's settings; errors name the flag at fault.
func ValidateOptions(opts Options) error {
	if opts.DefaultEdgeAddress != "" {
		if _, err := parseEdgeAddress(opts.DefaultEdgeAddress); err != nil {
			return fmt.Errorf("--default-edge-address %s: %w", quote(opts.DefaultEdgeAddress), err)
		}
	}
	if opts.DefaultEdgeGroup != "" && !groupRE.MatchString(opts.DefaultEdgeGroup) {
		return fmt.Errorf("--default-edge-group %s: want an inventory group name (letters, digits and _, not starting with a digit)",
			quote(opts.DefaultEdgeGroup))
	}
	switch opts.NodeAddressType {
	case "", corev1.NodeInternalIP, corev1.NodeExternalIP:
	default:
		return fmt.Errorf("--node-address-type %s: want InternalIP or ExternalIP", quote(string(opts.NodeAddressType)))
	}
	for _, p := range opts.ReservedPorts {
		if !validPort(p) {
			return fmt.Errorf("--reserved-ports: %d is not a port (1-65535)", p)
		}
	}
	return nil
}

// Compute turns a cluster snapshot into the desired edge state. It is deterministic: the same
// objects in any order give the same State, Hash and warnings. It sets Generation to Hash().
func Compute(in Input, opts Options) (State, []Warning) {
	if opts.NodeAddressType == "" {
		opts.NodeAddressType = corev1.NodeInternalIP
	}
	reserved := append([]int{sshPort}, opts.ReservedPorts...)
	sort.Ints(reserved)

	nodes, warns := eligibleNodes(in.Nodes, opts)
	if err := validateNodes(nodes); err != nil {
		// Unreachable unless a check in eligibleNodes is missing; never let such a value out.
		warns = append(warns, Warning{Reason: ReasonInvalidNode, Skipped: true,
			Message: fmt.Sprintf("internal check failed, no node is used: %s", quote(err.Error()))})
		nodes = []Node{}
	}
	byName := make(map[string]int, len(nodes))
	for i, n := range nodes {
		byName[n.Name] = i
	}

	var cands []candidate
	for _, svc := range sortedServices(in.Services) {
		if svc.Labels[LabelExpose] != "true" {
			continue
		}
		c, ws, ok := parseService(svc, opts, reserved)
		warns = append(warns, ws...)
		if ok {
			cands = append(cands, c)
		}
	}

	// The older Service keeps a contested edge port: an existing, working setup is never
	// taken over by one created later.
	sort.Slice(cands, func(i, j int) bool { return olderThan(cands[i], cands[j]) })
	var kept []candidate
	claims := make(map[netip.Addr][]int, len(cands)) // indexes into kept, per edge address
	for _, c := range cands {
		if other := conflict(c, kept, claims[c.addr]); other != nil {
			warns = append(warns, Warning{
				Namespace: c.svc.Namespace, Name: c.svc.Name, Reason: ReasonPortConflict, Field: "spec.ports", Skipped: true,
				Message: fmt.Sprintf("edge ports %s are already served for the older Service %s; this Service is not served",
					claimText(c), other.key),
			})
			continue
		}
		claims[c.addr] = append(claims[c.addr], len(kept))
		kept = append(kept, c)
	}

	ids := serviceIDs(kept)
	ready := readyNodes(in.Slices)
	state := State{Schema: Schema, Services: make([]Service, 0, len(kept))}
	anyCluster, used := false, map[string]bool{}
	for i, c := range kept {
		s := c.out
		s.ID = ids[i]
		servers := Serving(nodes, nil)
		if c.local {
			s.NodeNames = localNodeNames(byName, ready[c.key])
			servers = Serving(nodes, s.NodeNames)
		}
		if servers == 0 {
			// Still served, with an empty backend: the edge binds the ports and refuses
			// connections cleanly, rather than keeping an old config that points at nodes
			// which may now be something else entirely.
			why := "no node is Ready, has a usable address and matches the node selector"
			if c.local {
				why = "externalTrafficPolicy is Local and no eligible node has a ready endpoint of it"
			}
			warns = append(warns, Warning{
				Namespace: c.svc.Namespace, Name: c.svc.Name, Reason: ReasonNoEligibleNodes, Field: "spec.externalTrafficPolicy",
				Message: fmt.Sprintf("served with no backend servers: %s; clients are refused until that changes", why),
			})
		}
		if err := s.validateFields(); err != nil {
			// Unreachable unless a check above is missing; never let such a value out.
			warns = append(warns, Warning{
				Namespace: c.svc.Namespace, Name: c.svc.Name, Reason: ReasonInvalidService, Skipped: true,
				Message: fmt.Sprintf("internal check failed, Service not served: %s", quote(err.Error())),
			})
			continue
		}
		if c.local {
			for _, n := range s.NodeNames {
				used[n] = true
			}
		} else {
			anyCluster = true
		}
		state.Services = append(state.Services, s)
	}
	// Only the nodes some Service uses: a node that no Service can reach changes nothing on
	// the edge, so it must not change the hash either (a push and reload for nothing).
	state.Nodes = append(make([]Node, 0, len(nodes)), nodes...)
	if !anyCluster {
		state.Nodes = make([]Node, 0, len(used))
		for _, n := range nodes {
			if used[n.Name] {
				state.Nodes = append(state.Nodes, n)
			}
		}
	}
	sort.Slice(state.Services, func(i, j int) bool { return state.Services[i].ID < state.Services[j].ID })
	state.Generation = state.Hash()

	sort.SliceStable(warns, func(i, j int) bool {
		if warns[i].Namespace != warns[j].Namespace {
			return warns[i].Namespace < warns[j].Namespace
		}
		return warns[i].Name < warns[j].Name
	})
	return state, warns
}

// sortedServices orders Services by namespace/name and drops later copies of one name.
func sortedServices(svcs []*corev1.Service) []*corev1.Service {
	out := make([]*corev1.Service, 0, len(svcs))
	for _, s := range svcs {
		if s != nil {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.UID != b.UID {
			return a.UID < b.UID
		}
		return a.ResourceVersion < b.ResourceVersion
	})
	dedup := out[:0]
	for i, s := range out {
		if i > 0 && s.Namespace == out[i-1].Namespace && s.Name == out[i-1].Name {
			continue
		}
		dedup = append(dedup, s)
	}
	return dedup
}

func olderThan(a, b candidate) bool {
	ta, tb := a.svc.CreationTimestamp.Time, b.svc.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	return a.key < b.key
}

// conflict returns the kept Service that already claims one of c's edge ports, if any.
func conflict(c candidate, kept []candidate, sameAddr []int) *candidate {
	for _, i := range sameAddr {
		k := &kept[i]
		if overlaps(c.out.ControlPort, c.out.ControlPort, k.out.ControlPort, k.out.ControlPort) ||
			overlaps(c.out.ControlPort, c.out.ControlPort, k.out.PassiveMin, k.out.PassiveMax) ||
			overlaps(c.out.PassiveMin, c.out.PassiveMax, k.out.ControlPort, k.out.ControlPort) ||
			overlaps(c.out.PassiveMin, c.out.PassiveMax, k.out.PassiveMin, k.out.PassiveMax) {
			return k
		}
	}
	return nil
}

func overlaps(alo, ahi, blo, bhi int) bool { return alo <= bhi && blo <= ahi }

func claimText(c candidate) string {
	return fmt.Sprintf("%s:%d and %d-%d", c.out.BindAddress, c.out.ControlPort, c.out.PassiveMin, c.out.PassiveMax)
}

// readyNodes maps namespace/service to the nodes that run a ready endpoint of it.
func readyNodes(slices []*discoveryv1.EndpointSlice) map[string]map[string]bool {
	out := make(map[string]map[string]bool)
	for _, sl := range slices {
		if sl == nil {
			continue
		}
		svc, ok := sl.Labels[discoveryv1.LabelServiceName]
		if !ok {
			continue
		}
		key := sl.Namespace + "/" + svc
		for _, ep := range sl.Endpoints {
			// nil means unknown, which the API defines as ready.
			if ep.NodeName == nil || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			if out[key] == nil {
				out[key] = make(map[string]bool)
			}
			out[key][*ep.NodeName] = true
		}
	}
	return out
}

// Serving counts the nodes of names (all of nodes when names is nil) that are not drained:
// those that take new clients.
func Serving(nodes []Node, names []string) int {
	in := make(map[string]bool, len(names))
	for _, n := range names {
		in[n] = true
	}
	count := 0
	for _, n := range nodes {
		if !n.Drain && (names == nil || in[n.Name]) {
			count++
		}
	}
	return count
}

// localNodeNames returns the eligible nodes that run a ready endpoint, sorted by name.
func localNodeNames(byName map[string]int, ready map[string]bool) []string {
	out := make([]string, 0, len(ready))
	for name := range ready {
		if _, ok := byName[name]; ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// serviceIDs names the HAProxy sections of each kept Service (kept is in age order).
//
// "<namespace>-<name>" alone is ambiguous (a-b/c and a/b-c), so it is used only when the
// namespace has no "-" (the first "-" then splits it back) and it fits 63 characters.
// Otherwise the id is a prefix of it plus 8 hex digits of sha256("namespace/name"). Either
// way the id depends only on the Service's own name. Should two ids still collide, the older
// Service keeps its id and the younger gets another hash, salted with a counter.
func serviceIDs(kept []candidate) []string {
	ids := make([]string, len(kept))
	used := make(map[string]bool, len(kept))
	for i, c := range kept {
		ns, name := c.svc.Namespace, c.svc.Name
		id := ns + "-" + name
		if strings.Contains(ns, "-") || len(id) > 63 {
			id = hashedID(id, c.key)
		}
		for salt := 1; used[id]; salt++ {
			id = hashedID(ns+"-"+name, c.key+"#"+strconv.Itoa(salt))
		}
		used[id] = true
		ids[i] = id
	}
	return ids
}

func hashedID(base, key string) string {
	sum := sha256.Sum256([]byte(key))
	suffix := hex.EncodeToString(sum[:4])
	if len(base) > 63-1-len(suffix) {
		base = strings.TrimRight(base[:63-1-len(suffix)], "-")
	}
	return base + "-" + suffix
}

// quote renders a user value for a message: Go-quoted (no raw newlines or control bytes) and
// cut at 64 characters.
func quote(s string) string {
	const limit = 64
	if utf8.RuneCountInString(s) <= limit {
		return strconv.Quote(s)
	}
	n := 0
	for i := range s {
		if n == limit {
			return strconv.Quote(s[:i]) + "..."
		}
		n++
	}
	return strconv.Quote(s)
}

// safeField names an annotation key as a warning's Field: the key itself when it is plainly
// safe to show, else just "metadata.annotations" (the message carries the quoted key).
func safeField(k string) string {
	if len(k) <= 100 && strings.Trim(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./_-") == "" {
		return k
	}
	return "metadata.annotations"
}
