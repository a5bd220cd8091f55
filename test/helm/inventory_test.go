package helm

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
)

// TestInventoryReaders: the inventory the chart renders is read the same way by the watcher's
// parser and by Ansible itself (ansible-inventory), with the hosts, ports, users, groups and
// role vars of testdata/full-values.yaml.
func TestInventoryReaders(t *testing.T) {
	keys := newSSHFiles(t)
	var cm corev1.ConfigMap
	template(t, append(fullValues(), keys.args()...)...).decode(t, "ConfigMap", "kubeftp-edge-inventory", &cm)
	path := filepath.Join(t.TempDir(), "inventory.yml")
	if err := os.WriteFile(path, []byte(cm.Data["inventory.yml"]), 0o600); err != nil {
		t.Fatal(err)
	}

	inv, err := apply.LoadInventory(path)
	if err != nil {
		t.Fatalf("the watcher cannot read the chart's inventory: %v", err)
	}
	wantHosts := []apply.Host{
		{Name: "edge1", Address: "192.0.2.10", Port: 2222, User: "deploy", Groups: []string{"all", "dmz", "edge"}},
		{Name: "edge2", Address: "edge2.example.net", Port: 22, User: "admin", Groups: []string{"all", "dmz", "edge", "partners"}},
	}
	if diff := cmp.Diff(wantHosts, inv.Hosts); diff != "" {
		t.Errorf("hosts as the watcher reads them (-want +got):\n%s", diff)
	}

	ansibleInventory, err := exec.LookPath("ansible-inventory")
	if err != nil {
		t.Fatalf("ansible-inventory is needed (ansible-core; make test installs it): %v", err)
	}
	cmd := exec.Command(ansibleInventory, "-i", path, "--list")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "ANSIBLE_LOCAL_TEMP="+t.TempDir(),
		"ANSIBLE_INVENTORY_UNPARSED_FAILED=True", "ANSIBLE_INVENTORY_ENABLED=yaml")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("ansible-inventory: %v\n%s", err, stderr)
	}
	var list struct {
		Meta struct {
			HostVars map[string]map[string]any `json:"hostvars"`
		} `json:"_meta"`
		Edge     struct{ Children []string } `json:"edge"`
		DMZ      struct{ Hosts []string }    `json:"dmz"`
		Partners struct{ Hosts []string }    `json:"partners"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("ansible-inventory output: %v\n%s", err, out)
	}
	wantVars := map[string]map[string]any{
		"edge1": {"ansible_host": "192.0.2.10", "ansible_port": float64(2222), "ansible_user": "deploy",
			"haproxy_ftp_reload_method": "master_socket"},
		"edge2": {"ansible_host": "edge2.example.net", "ansible_port": float64(22), "ansible_user": "admin",
			"haproxy_ftp_reload_method": "master_socket", "haproxy_ftp_maxconn": float64(4000)},
	}
	if diff := cmp.Diff(wantVars, list.Meta.HostVars); diff != "" {
		t.Errorf("host vars as Ansible reads them (-want +got):\n%s", diff)
	}
	slices.Sort(list.Edge.Children)
	if diff := cmp.Diff([]string{"dmz", "partners"}, list.Edge.Children); diff != "" {
		t.Errorf("children of edge (-want +got):\n%s", diff)
	}
	slices.Sort(list.DMZ.Hosts)
	if diff := cmp.Diff([]string{"edge1", "edge2"}, list.DMZ.Hosts); diff != "" {
		t.Errorf("hosts of dmz (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"edge2"}, list.Partners.Hosts); diff != "" {
		t.Errorf("hosts of partners (-want +got):\n%s", diff)
	}
}
