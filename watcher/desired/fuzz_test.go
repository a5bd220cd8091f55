package desired

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/; run e.g.
// go test -fuzz FuzzCompute -fuzztime 30s ./watcher/desired/

func FuzzParsePassivePorts(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		lo, hi, err := parsePassivePorts(s)
		if err != nil {
			if lo != 0 || hi != 0 {
				t.Fatalf("error %v with a range %d-%d", err, lo, hi)
			}
			return
		}
		if !validPort(lo) || !validPort(hi) || lo > hi || hi-lo+1 > MaxPassivePorts {
			t.Fatalf("%q accepted as %d-%d", s, lo, hi)
		}
		if strings.Trim(s, "0123456789-") != "" {
			t.Fatalf("%q accepted with characters outside digits and -", s)
		}
		for _, canon := range []string{fmt.Sprintf("%d-%d", lo, hi), fmt.Sprint(lo)} {
			if canon == fmt.Sprint(lo) && lo != hi {
				continue
			}
			if lo2, hi2, err := parsePassivePorts(canon); err != nil || lo2 != lo || hi2 != hi {
				t.Fatalf("canonical form %q of %q parses as %d-%d, %v", canon, s, lo2, hi2, err)
			}
		}
	})
}

// FuzzParseAnnotations runs Compute on a Service carrying fuzzed annotation values: whatever
// they hold, the State stays within the contract and a served Service reflects only
// validated values.
func FuzzParseAnnotations(f *testing.F) {
	f.Fuzz(func(t *testing.T, edgeAddr, group, ctrl, pasv, timeout, maxconn, proxy, extraKey string) {
		ann := map[string]string{
			AnnotationEdgeAddress: edgeAddr, AnnotationEdgeGroup: group, AnnotationControlPort: ctrl,
			AnnotationPassivePorts: pasv, AnnotationTimeoutClient: timeout, AnnotationMaxConn: maxconn,
			AnnotationProxyProtocol: proxy, AnnotationPrefix + extraKey: "x",
		}
		for k, v := range ann {
			if v == "" && k != AnnotationProxyProtocol {
				delete(ann, k) // absent, so defaults apply
			}
		}
		svc := chartService("demo", "ftp", annotate())
		svc.Annotations = ann
		s, warns := Compute(Input{Nodes: threeNodes, Services: []*corev1.Service{svc}}, baseOpts)
		checkInvariants(t, s, warns)
		if len(s.Services) == 0 {
			return
		}
		got := s.Services[0]
		if a, ok := ann[AnnotationEdgeAddress]; ok {
			want, err := parseEdgeAddress(a)
			if err != nil || got.BindAddress != want {
				t.Fatalf("edge address %q served as %q (parse error %v)", a, got.BindAddress, err)
			}
		}
		if g, ok := ann[AnnotationEdgeGroup]; ok && got.EdgeGroup != g {
			t.Fatalf("edge group %q served as %q", g, got.EdgeGroup)
		}
		if m, ok := ann[AnnotationMaxConn]; ok && fmt.Sprint(got.MaxConn) != strings.TrimLeft(m, "0") {
			t.Fatalf("maxconn %q served as %d", m, got.MaxConn)
		}
		if got.SendProxy != proxy {
			t.Fatalf("proxy-protocol %q served as %q", proxy, got.SendProxy)
		}
	})
}

// FuzzCompute puts fuzzed strings into the names and addresses that come from the cluster.
func FuzzCompute(f *testing.F) {
	f.Fuzz(func(t *testing.T, ns, name, portName, nodeName, nodeAddr, epNode string, local bool) {
		svc := chartService(ns, name)
		svc.Spec.Ports[0].Name = portName
		svc.Annotations = map[string]string{AnnotationControlPort: "21"}
		if local {
			svc.Spec.ExternalTrafficPolicy, svc.Spec.HealthCheckNodePort = corev1.ServiceExternalTrafficPolicyLocal, 32456
		}
		in := Input{
			Nodes:    []*corev1.Node{node("n1", "10.213.2.11"), node(nodeName, nodeAddr)},
			Services: []*corev1.Service{svc, chartService("other", "ftp", annotate(AnnotationEdgeAddress, "10.213.1.2"))},
			Slices:   []*discoveryv1.EndpointSlice{slice(ns, name, endpoint(epNode, "true"), endpoint("n1", ""))},
		}
		s, warns := Compute(in, baseOpts)
		checkInvariants(t, s, warns)
		rev := Input{
			Nodes:    []*corev1.Node{in.Nodes[1], in.Nodes[0]},
			Services: []*corev1.Service{in.Services[1], in.Services[0]},
			Slices:   in.Slices,
		}
		if s2, _ := Compute(rev, baseOpts); s2.Generation != s.Generation {
			t.Fatalf("order changed the result: %s vs %s", s.Generation, s2.Generation)
		}
		for _, n := range s.Nodes {
			if n.Name == nodeName && n.Address != mustCanon(nodeAddr) {
				t.Fatalf("node %q address %q served as %q", nodeName, nodeAddr, n.Address)
			}
		}
	})
}

func mustCanon(s string) string {
	a, err := parseAddr(s)
	if err != nil {
		return "<invalid>"
	}
	return a.String()
}

func checkInvariants(t *testing.T, s State, warns []Warning) {
	t.Helper()
	if err := s.Validate(); err != nil {
		b, _ := json.Marshal(s)
		t.Fatalf("State breaks the contract: %v\n%s", err, b)
	}
	if s.Generation != s.Hash() {
		t.Fatalf("Generation is not the hash")
	}
	for _, w := range warns {
		if w.Reason == "" || strings.ContainsAny(w.Message, "\n\r") || len(w.Message) > 400 {
			t.Fatalf("warning not fit to show: %+v", w)
		}
	}
}

func FuzzValidators(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) { compareValidators(t, s) })
}
