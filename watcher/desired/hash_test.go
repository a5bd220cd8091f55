package desired

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func golden(t *testing.T, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", t.Name()+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

// TestComputeGolden pins the whole document for the chart's Service, a Local Service and a
// non-constant mapping, so any change to the output (and thus to every generation) shows
// up in review.
func TestComputeGolden(t *testing.T) {
	in := Input{
		Nodes: threeNodes,
		Services: []*corev1.Service{
			chartService("demo", "ftp"),
			plainService("partners", "ftp", 21, 30121, 21200, 3, 31000, local(32456), annotate(AnnotationEdgeAddress, "10.213.1.2",
				AnnotationTimeoutClient, "30m", AnnotationTimeoutServer, "30m", AnnotationMaxConn, "500"), func(s *corev1.Service) {
				s.Spec.Ports[1].NodePort, s.Spec.Ports[2].NodePort, s.Spec.Ports[3].NodePort = 31207, 31201, 31233
			}),
		},
		Slices: []*discoveryv1.EndpointSlice{slice("partners", "ftp", endpoint("n2", "true"))},
	}
	got, _ := Compute(in, baseOpts)
	b, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, append(b, '\n'))
}

func TestHashStable(t *testing.T) {
	s, _ := Compute(Input{Nodes: threeNodes, Services: []*corev1.Service{chartService("demo", "ftp")}}, baseOpts)
	if s.Generation != s.Hash() {
		t.Errorf("Generation %s is not Hash() %s", s.Generation, s.Hash())
	}
	golden(t, []byte(s.Hash()+"\n"))

	other := s
	other.Generation = "0123"
	if other.Hash() != s.Hash() {
		t.Error("Hash depends on Generation")
	}
	changed, _ := Compute(Input{Nodes: threeNodes, Services: []*corev1.Service{chartService("demo", "ftp", annotate(AnnotationMaxConn, "1999"))}}, baseOpts)
	if changed.Hash() == s.Hash() {
		t.Error("Hash did not change with maxconn")
	}
	moved, _ := Compute(Input{Nodes: []*corev1.Node{node("n1", "10.213.2.11"), node("n2", "10.213.2.99"), node("n3", "10.213.2.13")},
		Services: []*corev1.Service{chartService("demo", "ftp")}}, baseOpts)
	if moved.Hash() == s.Hash() {
		t.Error("Hash did not change with a node address")
	}
}
