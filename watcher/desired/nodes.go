package desired

import (
	"fmt"
	"hash/fnv"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// LabelExcludeFromLB is the well-known label that keeps a node out of external load balancers.
const LabelExcludeFromLB = "node.kubernetes.io/exclude-from-external-load-balancers"

// maxServerID is the largest HAProxy server id handed out (ids are positive 32-bit ints).
const maxServerID = 1<<31 - 1

// serverIDs gives every named node a stable HAProxy server id. `balance source` with
// `hash-type consistent` places servers on the ring by id, so an id must not move when other
// nodes come and go, and must be the same in the control and passive backends.
//
// The id is FNV-1a of the node name folded into 1..2^31-1: it depends on the name alone.
// The trade-off is collisions: two names may hash alike (about n²/2^32, ~0.3% for a
// 5000-node cluster). They are resolved by linear probing in name order, so the node whose
// name sorts first keeps its id; only then can a node's id depend on which other nodes
// exist. Ids are assigned over every node with a valid name, ready or not, so that a node
// flapping NotReady never moves another node's id.
func serverIDs(names []string) map[string]int {
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	ids := make(map[string]int, len(sorted))
	used := make(map[int]bool, len(sorted))
	for _, name := range sorted {
		if _, done := ids[name]; done {
			continue
		}
		h := fnv.New32a()
		h.Write([]byte(name))
		id := int(h.Sum32()%maxServerID) + 1
		for used[id] {
			id = id%maxServerID + 1
		}
		used[id] = true
		ids[name] = id
	}
	return ids
}

// eligibleNodes returns the nodes that may carry traffic, sorted by name, with their server
// ids, and a warning for every node whose name or address cannot be used safely. A node that
// is not Ready is returned with Drain set.
func eligibleNodes(nodes []*corev1.Node, opts Options) ([]Node, []Warning) {
	var warns []Warning
	valid := make([]*corev1.Node, 0, len(nodes))
	seen := make(map[string]bool, len(nodes))
	for _, n := range sortedNodes(nodes) {
		if seen[n.Name] {
			continue
		}
		seen[n.Name] = true
		if !isNodeName(n.Name) {
			warns = append(warns, Warning{
				Name: n.Name, Reason: ReasonInvalidNode, Field: "metadata.name", Skipped: true,
				Message: fmt.Sprintf("node name %s is not a DNS subdomain with labels of at most 63 characters; the node is not used", quote(n.Name)),
			})
			continue
		}
		valid = append(valid, n)
	}
	names := make([]string, len(valid))
	for i, n := range valid {
		names[i] = n.Name
	}
	ids := serverIDs(names)

	out := make([]Node, 0, len(valid))
	for _, n := range valid {
		if n.DeletionTimestamp != nil {
			continue
		}
		if _, excluded := n.Labels[LabelExcludeFromLB]; excluded {
			continue
		}
		if opts.NodeSelector != nil && !opts.NodeSelector.Matches(labels.Set(n.Labels)) {
			continue
		}
		addr, bad, ok := nodeAddress(n, opts.NodeAddressType)
		if !ok {
			if bad != "" {
				warns = append(warns, Warning{
					Name: n.Name, Reason: ReasonInvalidNode, Field: "status.addresses", Skipped: true,
					Message: fmt.Sprintf("node address %s of type %s is not an IP address; the node is not used",
						quote(bad), quote(string(opts.NodeAddressType))),
				})
			}
			continue
		}
		out = append(out, Node{Name: n.Name, Address: addr, ID: ids[n.Name], Drain: !nodeReady(n)})
	}
	return out, warns
}

// sortedNodes orders nodes by name (UID, then resourceVersion, break ties between copies of
// one name) so that the result never depends on the order of the informer's cache.
func sortedNodes(nodes []*corev1.Node) []*corev1.Node {
	out := make([]*corev1.Node, 0, len(nodes))
	for _, n := range nodes {
		if n != nil {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.UID != b.UID {
			return a.UID < b.UID
		}
		return a.ResourceVersion < b.ResourceVersion
	})
	return out
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// nodeAddress returns the first address of type t that is a usable IP. When the node has
// addresses of that type but none is usable, bad holds the first one, for the warning.
func nodeAddress(n *corev1.Node, t corev1.NodeAddressType) (addr, bad string, ok bool) {
	for _, a := range n.Status.Addresses {
		if a.Type != t {
			continue
		}
		ip, err := parseAddr(a.Address)
		if err == nil && !ip.IsUnspecified() && !ip.IsMulticast() {
			return ip.String(), "", true
		}
		if bad == "" {
			bad = a.Address
		}
	}
	return "", bad, false
}
