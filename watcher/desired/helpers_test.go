package desired

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// t0 is the creation time of test objects; age offsets are added to it.
var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func node(name, ip string, mods ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}},
		},
	}
	for _, m := range mods {
		m(n)
	}
	return n
}

func notReady(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }

func nodeLabel(k, v string) func(*corev1.Node) {
	return func(n *corev1.Node) {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[k] = v
	}
}

// drained is n as a NotReady node appears in the contract.
func drained(n Node) Node { n.Drain = true; return n }

// wantNode is a node as the contract shows it; its id follows the documented formula.
func wantNode(name, ip string) Node {
	h := fnv.New32a()
	h.Write([]byte(name))
	return Node{Name: name, Address: ip, ID: int(h.Sum32()%(1<<31-1)) + 1}
}

// wantState is the State for services whose NodeNames say where each is served (chartWant
// records them for Cluster services too): State.Nodes is the union of those, looked up by
// name in universe, and Cluster services then carry null node_names, as Compute emits them.
func wantState(services []Service, universe []Node) State {
	byName := map[string]Node{}
	for _, n := range universe {
		byName[n.Name] = n
	}
	st := State{Schema: Schema, Nodes: []Node{}, Services: services}
	seen := map[string]bool{}
	for i, s := range services {
		for _, name := range s.NodeNames {
			if !seen[name] {
				seen[name] = true
				st.Nodes = append(st.Nodes, byName[name])
			}
		}
		if s.TrafficPolicy == TrafficPolicyCluster {
			st.Services[i].NodeNames = nil
		}
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Name < st.Nodes[j].Name })
	st.Generation = st.Hash()
	return st
}

// chartService is a Service shaped like the kubeftp-proxy-helm chart renders it (control
// ftp-command 21, active ftp-data 20, pasv-<port> with order-preserving NodePorts, no
// protocol set), once labelled for the edge.
func chartService(ns, name string, mods ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name),
			Labels:            map[string]string{LabelExpose: "true", "app.kubernetes.io/name": "vsftpd-helm"},
			CreationTimestamp: metav1.NewTime(t0),
		},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{
				{Name: "ftp-command", Port: 21, TargetPort: intstr.FromInt32(21), NodePort: 30021},
				{Name: "ftp-data", Port: 20, TargetPort: intstr.FromInt32(20), NodePort: 30020},
			},
		},
	}
	for p := int32(21100); p <= 21110; p++ {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{
			Name: fmt.Sprintf("pasv-%d", p), Port: p, TargetPort: intstr.FromInt32(p), NodePort: 32100 + p - 21100,
		})
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

// plainService has a control port named ftp and n passive ports ftp-pasv-<port> from lo,
// NodePorts at a constant offset, protocol TCP, no active-mode port.
func plainService(ns, name string, ctrl, ctrlNode, lo, n, nodeLo int32, mods ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name),
			Labels:            map[string]string{LabelExpose: "true"},
			CreationTimestamp: metav1.NewTime(t0),
		},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{Name: "ftp", Protocol: corev1.ProtocolTCP, Port: ctrl, NodePort: ctrlNode}},
		},
	}
	for i := int32(0); i < n; i++ {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{
			Name: fmt.Sprintf("ftp-pasv-%d", lo+i), Protocol: corev1.ProtocolTCP, Port: lo + i, NodePort: nodeLo + i,
		})
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func annotate(kv ...string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func age(d time.Duration) func(*corev1.Service) {
	return func(s *corev1.Service) { s.CreationTimestamp = metav1.NewTime(t0.Add(d)) }
}

func local(hc int32) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = hc
	}
}

func slice(ns, svc string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: svc + "-abcde",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
	}
}

// endpoint on nodeName; ready is "true", "false" or "" (unknown, which counts as ready).
func endpoint(nodeName, ready string) discoveryv1.Endpoint {
	ep := discoveryv1.Endpoint{Addresses: []string{"10.244.0.5"}, NodeName: &nodeName}
	if ready != "" {
		r := ready == "true"
		ep.Conditions.Ready = &r
	}
	return ep
}

func intp(n int) *int { return &n }

// chartWant is what the edge serves for chartService("demo", "ftp") on the given nodes.
func chartWant(nodes ...Node) Service {
	names := []string{}
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	return Service{
		ID: "demo-ftp", Source: "demo/ftp", EdgeGroup: "all", BindAddress: "10.213.1.1",
		ControlPort: 21, ControlNodePort: 30021, PassiveMin: 21100, PassiveMax: 21110,
		PassiveOffset: intp(11000), PassiveNodePorts: []int{}, TrafficPolicy: TrafficPolicyCluster,
		Timeouts: Timeouts{Connect: "5s", Client: "1h", Server: "1h", Check: "2s"},
		MaxConn:  2000, NodeNames: names,
	}
}

func with(s Service, mods ...func(*Service)) Service {
	for _, m := range mods {
		m(&s)
	}
	return s
}

// hex8 is the id suffix of a Service whose plain id would be ambiguous.
func hex8(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:4])
}
