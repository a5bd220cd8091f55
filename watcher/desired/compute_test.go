package desired

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

var threeNodes = []*corev1.Node{node("n1", "10.213.2.11"), node("n2", "10.213.2.12"), node("n3", "10.213.2.13")}

var wantThree = []Node{wantNode("n1", "10.213.2.11"), wantNode("n2", "10.213.2.12"), wantNode("n3", "10.213.2.13")}

var baseOpts = Options{DefaultEdgeAddress: "10.213.1.1"}

// checkWarnings compares warnings field by field; want.Message is a substring of the message.
func checkWarnings(t *testing.T, want, got []Warning) {
	t.Helper()
	strip := func(ws []Warning) []Warning {
		out := make([]Warning, len(ws))
		for i, w := range ws {
			w.Message = ""
			out[i] = w
		}
		return out
	}
	if diff := cmp.Diff(strip(want), strip(got)); diff != "" {
		t.Fatalf("warnings (-want +got):\n%s\ngot: %+v", diff, got)
	}
	for i := range want {
		if !strings.Contains(got[i].Message, want[i].Message) {
			t.Errorf("warning %d message %q does not contain %q", i, got[i].Message, want[i].Message)
		}
		if strings.ContainsAny(got[i].Message, "\n\r") || len(got[i].Message) > 400 {
			t.Errorf("warning %d message is not one short line: %q", i, got[i].Message)
		}
	}
}

func TestCompute(t *testing.T) {
	tests := []struct {
		name      string
		in        Input
		opts      Options
		want      []Service
		wantNodes []Node // the nodes want's services name; wantThree when nil
		wantWarns []Warning
	}{
		{
			name: "kubeftp-proxy-helm chart Service, labelled",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{chartService("demo", "ftp")}},
			want: []Service{chartWant(wantThree...)},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonActiveModeNotProxied, Field: "spec.ports",
				Message: `port 20 ("ftp-data") is for active-mode FTP`}},
		},
		{
			name: "LoadBalancer type, ftp and ftp-pasv names, non-constant NodePorts",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("partners", "ftp", 21, 30121, 21200, 3, 31000, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.Ports[1].NodePort, s.Spec.Ports[2].NodePort, s.Spec.Ports[3].NodePort = 31207, 31201, 31233
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "metrics", Protocol: corev1.ProtocolUDP, Port: 9100, NodePort: 30999})
			})}},
			want: []Service{with(chartWant(wantThree...), func(s *Service) {
				s.ID, s.Source, s.ControlNodePort = "partners-ftp", "partners/ftp", 30121
				s.PassiveMin, s.PassiveMax, s.PassiveOffset, s.PassiveNodePorts = 21200, 21202, nil, []int{31207, 31201, 31233}
			})},
		},
		{
			name: "annotations pick control port by number and passive ports by range",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 2121, 30021, 21100, 11, 32100, func(s *corev1.Service) {
				for i := range s.Spec.Ports {
					s.Spec.Ports[i].Name = strings.Replace(s.Spec.Ports[i].Name, "ftp-pasv-", "p", 1)
				}
				s.Spec.Ports[0].Name = "control"
			}, annotate(AnnotationControlPort, "2121", AnnotationPassivePorts, "21100-21110"))}},
			want: []Service{with(chartWant(wantThree...), func(s *Service) { s.ControlPort = 2121 })},
		},
		{
			name: "annotation picks control port by name",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{chartService("demo", "ftp", func(s *corev1.Service) {
				s.Spec.Ports[0].Name = "cmd"
			}, annotate(AnnotationControlPort, "cmd"))}},
			want:      []Service{chartWant(wantThree...)},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonActiveModeNotProxied, Field: "spec.ports", Message: "passive mode"}},
		},
		{
			name: "every edge annotation",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, annotate(
				AnnotationEdgeAddress, "2001:db8::21", AnnotationEdgeGroup, "edge_eu", AnnotationTimeoutConnect, "0500ms",
				AnnotationTimeoutClient, "30m", AnnotationTimeoutServer, "2h", AnnotationTimeoutCheck, "1500",
				AnnotationMaxConn, "500", AnnotationProxyProtocol, "v2"))}},
			want: []Service{with(chartWant(wantThree...), func(s *Service) {
				s.BindAddress, s.EdgeGroup, s.MaxConn, s.SendProxy = "2001:db8::21", "edge_eu", 500, "v2"
				s.Timeouts = Timeouts{Connect: "500ms", Client: "30m", Server: "2h", Check: "1500"}
			})},
		},
		{
			name: "IPv4-mapped edge address is written as IPv4, default group from options",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, annotate(AnnotationEdgeAddress, "::ffff:10.213.1.9"))}},
			opts: Options{DefaultEdgeGroup: "edge_a"},
			want: []Service{with(chartWant(wantThree...), func(s *Service) { s.BindAddress, s.EdgeGroup = "10.213.1.9", "edge_a" })},
		},
		{
			name: "not labelled, or labelled with anything but true: ignored silently",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{
				plainService("a", "ftp", 21, 30021, 21100, 11, 32100, func(s *corev1.Service) { s.Labels = nil }),
				plainService("b", "ftp", 21, 30021, 21100, 11, 32100, func(s *corev1.Service) { s.Labels[LabelExpose] = "True" }),
			}},
			want: []Service{},
		},
		{
			name: "ClusterIP type is refused",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeClusterIP
			})}},
			want:      []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidService, Field: "spec.type", Skipped: true, Message: `type "ClusterIP" is not served`}},
		},
		{
			name: "no control port",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, func(s *corev1.Service) {
				s.Spec.Ports[0].Name = "control"
			})}},
			want:      []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidService, Field: "spec.ports", Skipped: true, Message: "no control port"}},
		},
		{
			name: "two ports look like the control port",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, func(s *corev1.Service) {
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "ftp-control", Port: 990, NodePort: 30990})
			})}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidService, Field: "spec.ports", Skipped: true,
				Message: `ports "ftp" and "ftp-control" both look like the control port`}},
		},
		{
			name: "control-port annotation names no port",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, annotate(AnnotationControlPort, "2121"))}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidService, Field: AnnotationControlPort, Skipped: true,
				Message: `names "2121", which is not a TCP port of the Service`}},
		},
		{
			name: "gap in passive ports",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, func(s *corev1.Service) {
				s.Spec.Ports = append(s.Spec.Ports[:4], s.Spec.Ports[6:]...) // drops 21103 and 21104
			})}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidService, Field: "spec.ports", Skipped: true,
				Message: "21103-21104 missing between 21102 and 21105"}},
		},
		{
			name: "no passive ports",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 0, 32100)}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidService, Field: "spec.ports", Skipped: true,
				Message: "no passive ports"}},
		},
		{
			name: "passive-ports annotation covers a port the Service lacks",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, annotate(AnnotationPassivePorts, "21100-21111"))}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidAnnotation, Field: AnnotationPassivePorts, Skipped: true,
				Message: "port 21111 of the range is not a TCP port"}},
		},
		{
			name: "passive range above the limit",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, annotate(AnnotationPassivePorts, "20000-22000"))}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidAnnotation, Field: AnnotationPassivePorts, Skipped: true,
				Message: "2001 ports, more than the limit of 2000"}},
		},
		{
			name: "UDP control port",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, func(s *corev1.Service) {
				s.Spec.Ports[0].Protocol = corev1.ProtocolUDP
			})}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidService, Field: "spec.ports", Skipped: true,
				Message: `port 21 ("ftp") is "UDP", not TCP`}},
		},
		{
			name: "passive port without a nodePort yet",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, func(s *corev1.Service) {
				s.Spec.Ports[3].NodePort = 0
			})}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidService, Field: "spec.ports", Skipped: true,
				Message: `port 21102 ("ftp-pasv-21102") has no nodePort yet`}},
		},
		{
			name: "control port 22 is reserved for SSH",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 22, 30021, 21100, 11, 32100)}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonReservedPort, Field: "spec.ports", Skipped: true,
				Message: "edge port 22 is reserved"}},
		},
		{
			name: "passive range holds a reserved port from the options",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100)}},
			opts: Options{DefaultEdgeAddress: "10.213.1.1", ReservedPorts: []int{21105, 8404}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonReservedPort, Field: "spec.ports", Skipped: true,
				Message: "passive range 21100-21110 contains edge port 21105"}},
		},
		{
			name: "control port inside the passive range",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21105, 30021, 21100, 11, 32100, annotate(AnnotationControlPort, "ftp-pasv-21105"))}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonReservedPort, Field: "spec.ports", Skipped: true,
				Message: "control port 21105 lies inside the passive range"}},
		},
		{
			name: "no edge address anywhere",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100)}},
			opts: Options{},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidService, Field: AnnotationEdgeAddress, Skipped: true,
				Message: "--default-edge-address"}},
		},
		{
			name: "bad annotations each skip the Service, unknown ones only warn",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, annotate(
				AnnotationEdgeAddress, "fe80::1%eth0", AnnotationEdgeGroup, "9group", AnnotationTimeoutClient, "0s",
				AnnotationTimeoutServer, "25d", AnnotationTimeoutCheck, "2 s", AnnotationMaxConn, "1000001",
				AnnotationProxyProtocol, "v3", "kubeftp.io/edge-adress", "10.0.0.1", "other.io/x", "y"))}},
			want: []Service{},
			wantWarns: []Warning{
				{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidAnnotation, Field: AnnotationEdgeAddress, Skipped: true, Message: "zones are not allowed"},
				{Namespace: "demo", Name: "ftp", Reason: ReasonUnknownAnnotation, Field: "kubeftp.io/edge-adress", Message: "a typo?"},
				{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidAnnotation, Field: AnnotationEdgeGroup, Skipped: true, Message: `invalid value "9group"`},
				{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidAnnotation, Field: AnnotationMaxConn, Skipped: true, Message: "from 1 to 1000000"},
				{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidAnnotation, Field: AnnotationProxyProtocol, Skipped: true, Message: `"v3"`},
				{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidAnnotation, Field: AnnotationTimeoutCheck, Skipped: true, Message: "HAProxy time"},
				{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidAnnotation, Field: AnnotationTimeoutClient, Skipped: true, Message: "greater than zero"},
				{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidAnnotation, Field: AnnotationTimeoutServer, Skipped: true, Message: "about 24 days"},
			},
		},
		{
			name: "unknown annotation alone does not skip",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, annotate("kubeftp.io/timeout", "5s"))}},
			want: []Service{chartWant(wantThree...)},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonUnknownAnnotation, Field: "kubeftp.io/timeout",
				Message: `annotation "kubeftp.io/timeout" is not one kubeftp-edge knows`}},
		},
		{
			name: "wildcard edge address refused",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, annotate(AnnotationEdgeAddress, "0.0.0.0"))}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidAnnotation, Field: AnnotationEdgeAddress, Skipped: true,
				Message: "specific unicast address"}},
		},
		{
			name: "conflict: the older Service keeps the ports",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{
				plainService("a", "new", 21, 30021, 21100, 11, 32100, age(time.Hour)),
				plainService("z", "old", 2121, 30022, 21105, 11, 32200),
			}},
			want: []Service{with(chartWant(wantThree...), func(s *Service) {
				s.ID, s.Source, s.ControlPort, s.ControlNodePort, s.PassiveMin, s.PassiveMax, s.PassiveOffset = "z-old", "z/old", 2121, 30022, 21105, 21115, intp(11095)
			})},
			wantWarns: []Warning{{Namespace: "a", Name: "new", Reason: ReasonPortConflict, Field: "spec.ports", Skipped: true,
				Message: "edge ports 10.213.1.1:21 and 21100-21110 are already served for the older Service z/old"}},
		},
		{
			name: "conflict: same age, namespace/name decides; control port inside another's range",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{
				plainService("b", "ftp", 21105, 30021, 21200, 11, 32100),
				plainService("a", "ftp", 21, 30021, 21100, 11, 32100),
			}},
			want: []Service{with(chartWant(wantThree...), func(s *Service) { s.ID, s.Source = "a-ftp", "a/ftp" })},
			wantWarns: []Warning{{Namespace: "b", Name: "ftp", Reason: ReasonPortConflict, Field: "spec.ports", Skipped: true,
				Message: "older Service a/ftp"}},
		},
		{
			name: "same ports on different edge addresses do not conflict",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{
				plainService("a", "ftp", 21, 30021, 21100, 11, 32100),
				plainService("b", "ftp", 21, 30022, 21100, 11, 32200, annotate(AnnotationEdgeAddress, "10.213.1.2")),
			}},
			want: []Service{
				with(chartWant(wantThree...), func(s *Service) { s.ID, s.Source = "a-ftp", "a/ftp" }),
				with(chartWant(wantThree...), func(s *Service) {
					s.ID, s.Source, s.BindAddress, s.ControlNodePort, s.PassiveOffset = "b-ftp", "b/ftp", "10.213.1.2", 30022, intp(11100)
				}),
			},
		},
		{
			name: "node eligibility",
			in: Input{Nodes: []*corev1.Node{
				node("ok", "10.213.2.11", nodeLabel("pool", "ftp")),
				node("down", "10.213.2.12", notReady, nodeLabel("pool", "ftp")),
				node("nocond", "10.213.2.13", nodeLabel("pool", "ftp"), func(n *corev1.Node) { n.Status.Conditions = nil }),
				node("excluded", "10.213.2.14", nodeLabel("pool", "ftp"), nodeLabel(LabelExcludeFromLB, "")),
				node("other-pool", "10.213.2.15", nodeLabel("pool", "web")),
				node("deleting", "10.213.2.16", nodeLabel("pool", "ftp"), func(n *corev1.Node) { n.DeletionTimestamp = &metav1.Time{Time: t0} }),
				node("noip", "10.213.2.17", nodeLabel("pool", "ftp"), func(n *corev1.Node) { n.Status.Addresses = n.Status.Addresses[:1] }),
				node("v6", "2001:db8::17", nodeLabel("pool", "ftp")),
				node("badip", "10.213.2.300", nodeLabel("pool", "ftp")),
				node("Bad_Name", "10.213.2.19", nodeLabel("pool", "ftp")),
			}, Services: []*corev1.Service{chartService("demo", "ftp")}},
			opts: Options{DefaultEdgeAddress: "10.213.1.1", NodeSelector: labels.SelectorFromSet(labels.Set{"pool": "ftp"})},
			// not Ready (or no Ready condition): kept, drained
			want: []Service{chartWant(drained(wantNode("down", "10.213.2.12")), drained(wantNode("nocond", "10.213.2.13")),
				wantNode("ok", "10.213.2.11"), wantNode("v6", "2001:db8::17"))},
			wantNodes: []Node{drained(wantNode("down", "10.213.2.12")), drained(wantNode("nocond", "10.213.2.13")),
				wantNode("ok", "10.213.2.11"), wantNode("v6", "2001:db8::17")},
			wantWarns: []Warning{
				{Name: "Bad_Name", Reason: ReasonInvalidNode, Field: "metadata.name", Skipped: true, Message: `node name "Bad_Name" is not a DNS subdomain`},
				{Name: "badip", Reason: ReasonInvalidNode, Field: "status.addresses", Skipped: true, Message: `node address "10.213.2.300" of type "InternalIP"`},
				{Namespace: "demo", Name: "ftp", Reason: ReasonActiveModeNotProxied, Field: "spec.ports", Message: "active-mode"},
			},
		},
		{
			name: "ExternalIP address type",
			in: Input{Nodes: []*corev1.Node{node("n1", "10.213.2.11", func(n *corev1.Node) {
				n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "192.0.2.11"})
			}), node("n2", "10.213.2.12")}, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100)}},
			opts:      Options{DefaultEdgeAddress: "10.213.1.1", NodeAddressType: corev1.NodeExternalIP},
			want:      []Service{chartWant(wantNode("n1", "192.0.2.11"))},
			wantNodes: []Node{wantNode("n1", "192.0.2.11")},
		},
		{
			name: "no eligible node: served with an empty backend and a warning",
			in:   Input{Nodes: []*corev1.Node{node("n1", "10.213.2.11", notReady), node("n2", "10.213.2.12", nodeLabel(LabelExcludeFromLB, ""))}, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100)}},
			// the NotReady node stays, drained: no server takes new clients
			want:      []Service{chartWant(drained(wantNode("n1", "10.213.2.11")))},
			wantNodes: []Node{drained(wantNode("n1", "10.213.2.11"))},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonNoEligibleNodes, Field: "spec.externalTrafficPolicy",
				Message: "served with no backend servers: no node is Ready"}},
		},
		{
			name: "externalTrafficPolicy Local: only eligible nodes with a ready endpoint",
			in: Input{
				Nodes: append([]*corev1.Node{node("n4", "10.213.2.14", notReady)}, threeNodes...),
				Services: []*corev1.Service{
					plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, local(32456)),
					plainService("other", "ftp", 21, 30021, 21100, 11, 32100, annotate(AnnotationEdgeAddress, "10.213.1.2")),
				},
				Slices: []*discoveryv1.EndpointSlice{
					slice("demo", "ftp", endpoint("n3", ""), endpoint("n2", "false")),
					slice("demo", "ftp", endpoint("n1", "true"), endpoint("n4", "true")),
					slice("other", "ftp", endpoint("n2", "true")), // another Service: no effect on demo/ftp
					slice("demo", "ftp-other", endpoint("n2", "true")),
				},
			},
			// n4 is not Ready but runs a ready endpoint: a drained server, for the sessions on it
			want: []Service{
				with(chartWant(wantThree[0], wantThree[2], drained(wantNode("n4", "10.213.2.14"))), func(s *Service) { s.TrafficPolicy, s.HealthCheckNodePort = TrafficPolicyLocal, 32456 }),
				with(chartWant(append(wantThree, drained(wantNode("n4", "10.213.2.14")))...), func(s *Service) { s.ID, s.Source, s.BindAddress = "other-ftp", "other/ftp", "10.213.1.2" }),
			},
			wantNodes: append(wantThree, drained(wantNode("n4", "10.213.2.14"))),
		},
		{
			name: "externalTrafficPolicy Local without ready endpoints",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, local(32456))}},
			want: []Service{with(chartWant(), func(s *Service) { s.TrafficPolicy, s.HealthCheckNodePort = TrafficPolicyLocal, 32456 })},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonNoEligibleNodes, Field: "spec.externalTrafficPolicy",
				Message: "no eligible node has a ready endpoint"}},
		},
		{
			name: "externalTrafficPolicy Local on a NodePort Service has no health check port",
			in:   Input{Nodes: threeNodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, local(0))}},
			want: []Service{},
			wantWarns: []Warning{{Namespace: "demo", Name: "ftp", Reason: ReasonInvalidService, Field: "spec.healthCheckNodePort", Skipped: true,
				Message: "allocates only for type LoadBalancer"}},
		},
		{
			name: "node name label longer than 63 characters",
			in: Input{Nodes: []*corev1.Node{node("n1", "10.213.2.11"), node(strings.Repeat("x", 64)+".example", "10.213.2.12")},
				Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100)}},
			want: []Service{chartWant(wantThree[0])},
			wantWarns: []Warning{{Name: strings.Repeat("x", 64) + ".example", Reason: ReasonInvalidNode, Field: "metadata.name", Skipped: true,
				Message: "labels of at most 63 characters"}},
		},
		{
			name: "ambiguous namespace-name pairs get distinct ids",
			in: Input{Nodes: threeNodes, Services: []*corev1.Service{
				plainService("a-b", "c", 21, 30021, 21100, 11, 32100),
				plainService("a", "b-c", 21, 30021, 21100, 11, 32100, annotate(AnnotationEdgeAddress, "10.213.1.2")),
			}},
			want: []Service{
				with(chartWant(wantThree...), func(s *Service) { s.ID, s.Source, s.BindAddress = "a-b-c", "a/b-c", "10.213.1.2" }),
				with(chartWant(wantThree...), func(s *Service) { s.ID, s.Source = "a-b-c-"+hex8("a-b/c"), "a-b/c" }),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			if opts.DefaultEdgeAddress == "" && tt.name != "no edge address anywhere" {
				opts.DefaultEdgeAddress = baseOpts.DefaultEdgeAddress
			}
			got, warns := Compute(tt.in, opts)
			universe := tt.wantNodes
			if universe == nil {
				universe = wantThree
			}
			want := wantState(tt.want, universe)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("State (-want +got):\n%s", diff)
			}
			checkWarnings(t, tt.wantWarns, warns)
			if err := got.Validate(); err != nil {
				t.Errorf("Compute returned an invalid State: %v", err)
			}
		})
	}
}
