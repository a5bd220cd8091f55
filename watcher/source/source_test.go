package source

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNodeChanged(t *testing.T) {
	base := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", ResourceVersion: "1", Labels: map[string]string{"a": "b"}},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
				LastHeartbeatTime: metav1.NewTime(time.Unix(100, 0))}},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}},
		},
	}
	tests := []struct {
		name string
		mod  func(*corev1.Node)
		want bool
	}{
		{"same resource version", func(n *corev1.Node) {}, false},
		{"heartbeat only", func(n *corev1.Node) {
			n.ResourceVersion = "2"
			n.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(time.Unix(200, 0))
		}, false},
		{"ready flips", func(n *corev1.Node) {
			n.ResourceVersion = "2"
			n.Status.Conditions[0].Status = corev1.ConditionFalse
		}, true},
		{"address changes", func(n *corev1.Node) {
			n.ResourceVersion = "2"
			n.Status.Addresses[0].Address = "10.0.0.2"
		}, true},
		{"label changes", func(n *corev1.Node) {
			n.ResourceVersion = "2"
			n.Labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
		}, true},
		{"deletion starts", func(n *corev1.Node) {
			n.ResourceVersion = "2"
			now := metav1.Now()
			n.DeletionTimestamp = &now
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := base.DeepCopy()
			tt.mod(n)
			if got := NodeChanged(base, n); got != tt.want {
				t.Errorf("NodeChanged = %v, want %v", got, tt.want)
			}
		})
	}
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const manifests = `# a comment before the first document
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Service
metadata:
  name: ftp
  labels: {kubeftp.io/expose: "true"}
spec: {type: NodePort, ports: [{name: ftp, port: 21}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: x}
spec: {type: ClusterIP, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ftp-1, labels: {kubernetes.io/service-name: ftp}}
addressType: IPv4
endpoints: []
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other-1, namespace: x, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
endpoints: []
---
`

func TestLoadManifests(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "all.yaml", manifests)
	write(t, dir, "README.md", "not a manifest")
	in, err := LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range in.Nodes {
		got = append(got, "node/"+n.Name)
	}
	for _, s := range in.Services {
		got = append(got, "service/"+s.Namespace+"/"+s.Name)
	}
	for _, s := range in.Slices {
		got = append(got, "slice/"+s.Namespace+"/"+s.Name)
	}
	want := []string{"node/n1", "node/n2", "service/default/ftp", "slice/default/ftp-1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("loaded (-want +got):\n%s", diff)
	}
}

func TestLoadManifestsErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		path    string
		wantAll []string
	}{
		{"unknown kind names the file", write(t, dir, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
			[]string{"cm.yaml", "document 1", "ConfigMap"}},
		{"unknown field", write(t, dir, "typo.yaml", "apiVersion: v1\nkind: Node\nmetadata: {name: x}\nstatuss: {}\n"),
			[]string{"typo.yaml", "statuss"}},
		{"broken yaml", write(t, dir, "broken.yaml", "apiVersion: v1\nkind: Node\nmetadata: [\n"), []string{"broken.yaml"}},
		{"missing path", filepath.Join(dir, "nope"), []string{"--from-manifests", "nope"}},
		{"empty folder", t.TempDir(), []string{"no .yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadManifests(tt.path)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.wantAll {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
