package desired

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// hostile are values a cluster user could put into any string field. Each carries a marker
// that must never appear in the marshalled State.
var hostile = []struct{ name, value, marker string }{
	{"jinja expression", "{{ lookup('pipe','id') }}", "lookup("},
	{"jinja statement", "{% raw %}x{% endraw %}", "raw %"},
	{"quotes", `a"b'c`, `b'c`},
	{"newline injection", "10.0.0.1\n    server evil 6.6.6.6:21", "evil"},
	{"carriage return", "ftp\rinjected", "injected"},
	{"very long", strings.Repeat("longvalue", 2000), "longvaluelongvalue"},
	{"non-ASCII", "ftp-\u00fcber-\u200b", "\u00fcber"},
	{"invalid UTF-8", "ftp\xff\xfemarker", "marker"},
}

func assertNoPayload(t *testing.T, s State, marker string) {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	// Look for the marker as written and as JSON would escape it.
	esc, _ := json.Marshal(marker)
	if strings.Contains(string(b), marker) || strings.Contains(string(b), strings.Trim(string(esc), `"`)) {
		t.Errorf("hostile value %q reached the State: %s", marker, b)
	}
	if err := s.Validate(); err != nil {
		t.Errorf("State is invalid: %v", err)
	}
}

// TestHostileServiceValues puts each hostile value into each cluster-provided field of a
// Service: the Service is skipped with a warning and nothing hostile reaches the State.
func TestHostileServiceValues(t *testing.T) {
	fields := []struct {
		name      string
		set       func(s *corev1.Service, v string)
		wantField string
		unknownOK bool // an unknown annotation key only warns; the Service itself is fine
	}{
		{"namespace", func(s *corev1.Service, v string) { s.Namespace = v }, "metadata.name", false},
		{"name", func(s *corev1.Service, v string) { s.Name = v }, "metadata.name", false},
		{"spec.type", func(s *corev1.Service, v string) { s.Spec.Type = corev1.ServiceType(v) }, "spec.type", false},
		{"externalTrafficPolicy", func(s *corev1.Service, v string) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicy(v)
		}, "spec.externalTrafficPolicy", false},
		{"port name", func(s *corev1.Service, v string) { s.Spec.Ports[0].Name = v }, "spec.ports", false},
		{"port protocol", func(s *corev1.Service, v string) { s.Spec.Ports[0].Protocol = corev1.Protocol(v) }, "spec.ports", false},
		{"annotation key", func(s *corev1.Service, v string) { annotate(AnnotationPrefix+v, "1")(s) }, "", true},
	}
	for _, key := range []string{AnnotationEdgeAddress, AnnotationEdgeGroup, AnnotationControlPort, AnnotationPassivePorts,
		AnnotationTimeoutConnect, AnnotationTimeoutClient, AnnotationTimeoutServer, AnnotationTimeoutCheck,
		AnnotationMaxConn, AnnotationProxyProtocol} {
		fields = append(fields, struct {
			name      string
			set       func(s *corev1.Service, v string)
			wantField string
			unknownOK bool
		}{"annotation " + key, func(s *corev1.Service, v string) { annotate(key, v)(s) }, key, false})
	}
	for _, f := range fields {
		for _, h := range hostile {
			t.Run(f.name+"/"+h.name, func(t *testing.T) {
				svc := plainService("demo", "ftp", 21, 30021, 21100, 11, 32100)
				f.set(svc, h.value)
				got, warns := Compute(Input{Nodes: threeNodes, Services: []*corev1.Service{svc}}, baseOpts)
				assertNoPayload(t, got, h.marker)
				if len(warns) == 0 {
					t.Fatalf("no warning for hostile %s", f.name)
				}
				for _, w := range warns {
					if strings.ContainsAny(w.Message, "\n\r") || len(w.Message) > 400 || len(h.value) > 100 && strings.Contains(w.Message, h.value[:100]) {
						t.Errorf("warning message is not safe to show: %q", w.Message)
					}
					if strings.ContainsAny(w.Field, "\n\r{}") {
						t.Errorf("warning field is not safe to show: %q", w.Field)
					}
				}
				if f.unknownOK {
					if len(got.Services) != 1 || warns[0].Reason != ReasonUnknownAnnotation || warns[0].Skipped {
						t.Errorf("unknown annotation key: want the Service served with one UnknownAnnotation warning, got %d services, %+v", len(got.Services), warns)
					}
					return
				}
				if len(got.Services) != 0 {
					t.Errorf("Service with hostile %s was served", f.name)
				}
				var skipped bool
				for _, w := range warns {
					skipped = skipped || (w.Skipped && w.Field == f.wantField)
				}
				if !skipped {
					t.Errorf("no skipping warning for field %q: %+v", f.wantField, warns)
				}
			})
		}
	}
}

// TestHostileNodeValues puts hostile values into node names, node addresses and endpoint
// node names: the node is left out (with a warning not tied to a Service) and nothing
// hostile reaches the State.
func TestHostileNodeValues(t *testing.T) {
	for _, h := range hostile {
		t.Run("node name/"+h.name, func(t *testing.T) {
			nodes := []*corev1.Node{node("n1", "10.213.2.11"), node(h.value, "10.213.2.12")}
			got, warns := Compute(Input{Nodes: nodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100)}}, baseOpts)
			assertNoPayload(t, got, h.marker)
			checkNodeWarning(t, warns, h.value, "metadata.name")
			if diff := nodeNames(got); diff != "n1" {
				t.Errorf("nodes served: got %q, want n1", diff)
			}
		})
		t.Run("node address/"+h.name, func(t *testing.T) {
			nodes := []*corev1.Node{node("n1", "10.213.2.11"), node("n2", h.value)}
			got, warns := Compute(Input{Nodes: nodes, Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100)}}, baseOpts)
			assertNoPayload(t, got, h.marker)
			checkNodeWarning(t, warns, "n2", "status.addresses")
			if diff := nodeNames(got); diff != "n1" {
				t.Errorf("nodes served: got %q, want n1", diff)
			}
		})
		t.Run("endpoint node name/"+h.name, func(t *testing.T) {
			got, _ := Compute(Input{
				Nodes:    threeNodes,
				Services: []*corev1.Service{plainService("demo", "ftp", 21, 30021, 21100, 11, 32100, local(32456))},
				Slices:   []*discoveryv1.EndpointSlice{slice("demo", "ftp", endpoint(h.value, "true"), endpoint("n2", "true"))},
			}, baseOpts)
			assertNoPayload(t, got, h.marker)
			if diff := nodeNames(got); diff != "n2" {
				t.Errorf("nodes served: got %q, want n2", diff)
			}
		})
	}
}

func checkNodeWarning(t *testing.T, warns []Warning, name, field string) {
	t.Helper()
	for _, w := range warns {
		if w.Namespace == "" && w.Name == name && w.Reason == ReasonInvalidNode && w.Field == field && w.Skipped &&
			!strings.ContainsAny(w.Message, "\n\r") && len(w.Message) <= 400 {
			return
		}
	}
	t.Errorf("no safe InvalidNode warning on %s for node %q: %+v", field, name, warns)
}

func nodeNames(s State) string {
	var names []string
	for _, svc := range s.Services {
		for _, n := range s.ServiceNodes(svc) {
			names = append(names, n.Name)
		}
	}
	return strings.Join(names, ",")
}
