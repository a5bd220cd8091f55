package source

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// The seed corpus lives in testdata/fuzz/FuzzLoadManifests/ plus the example manifests; run
// go test -fuzz FuzzLoadManifests -fuzztime 30s ./watcher/source/

// FuzzLoadManifests reads arbitrary bytes as a manifest file: a refused file is named in the
// error; an accepted one computes to a State within the vars contract, whatever names,
// labels, annotations and addresses the objects carry.
func FuzzLoadManifests(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "examples", "manifests", "*.yaml"))
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	opts := desired.Options{
		DefaultEdgeAddress: "10.213.1.1", DefaultEdgeGroup: "all",
		NodeAddressType: corev1.NodeInternalIP, ReservedPorts: []int{22, 10000},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "objects.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		in, err := LoadManifests(path)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		s, warns := desired.Compute(in, opts)
		if err := s.Validate(); err != nil {
			t.Fatalf("manifests accepted into a State outside the contract: %v", err)
		}
		for _, w := range warns {
			if strings.ContainsAny(w.Message, "\r\n") {
				t.Fatalf("warning with a line break: %q", w.Message)
			}
		}
	})
}
