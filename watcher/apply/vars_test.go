package apply

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

func exampleState() desired.State {
	offset := 11000
	return desired.State{
		Schema:     desired.Schema,
		Generation: "5f1c0c1b7d9e2a4c",
		Nodes: []desired.Node{
			{Name: "n1", Address: "10.213.2.11", ID: 1},
			{Name: "n2", Address: "10.213.2.12", ID: 2},
		},
		Services: []desired.Service{{
			ID: "demo-ftp", Source: "demo/ftp", EdgeGroup: "all", BindAddress: "10.213.1.1",
			ControlPort: 21, ControlNodePort: 30021, PassiveMin: 21100, PassiveMax: 21110,
			PassiveOffset: &offset, TrafficPolicy: "Cluster",
			Timeouts: desired.Timeouts{Connect: "5s", Client: "1h", Server: "1h", Check: "2s"},
			MaxConn:  2000,
		}, {
			ID: "partners-ftp", Source: "partners/ftp", EdgeGroup: "all", BindAddress: "10.213.1.2",
			ControlPort: 21, ControlNodePort: 30121, PassiveMin: 21200, PassiveMax: 21202,
			PassiveNodePorts: []int{31207, 31201, 31233}, TrafficPolicy: "Local", HealthCheckNodePort: 32456,
			Timeouts: desired.Timeouts{Connect: "5s", Client: "30m", Server: "30m", Check: "2s"},
			MaxConn:  500, SendProxy: "v2", NodeNames: []string{"n2"},
		}},
	}
}

func TestMarshalVars(t *testing.T) {
	got, err := MarshalVars(exampleState())
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", t.Name()+".golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("MarshalVars() (-want +got):\n%s", diff)
	}
}

// TestMarshalVarsStructure checks, independently of the golden file, that every string is
// wrapped and that unwrapping gives back exactly the plain JSON of the state.
func TestMarshalVarsStructure(t *testing.T) {
	s := exampleState()
	s.Nodes = nil // nil lists become [], never null
	got, err := MarshalVars(s)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(got))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if len(doc) != 1 || doc[VarName] == nil {
		t.Fatalf("top level = %v, want only %q", keys(doc), VarName)
	}
	strs := 0
	unwrapped := unwrap(t, doc[VarName], VarName, &strs)
	if strs < 20 {
		t.Errorf("found %d wrapped strings, want every string of the state (at least 20)", strs)
	}

	plain, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	dec = json.NewDecoder(bytes.NewReader(plain))
	dec.UseNumber()
	if err := dec.Decode(&want); err != nil {
		t.Fatal(err)
	}
	want["services"].([]any)[0].(map[string]any)["passive_node_ports"] = []any{}
	want["nodes"] = []any{}
	if diff := cmp.Diff(any(want), unwrapped); diff != "" {
		t.Errorf("unwrapped vars (-want +got):\n%s", diff)
	}
}

// unwrap replaces every {"__ansible_unsafe": s} by s and fails on any bare string.
func unwrap(t *testing.T, v any, path string, strs *int) any {
	t.Helper()
	switch x := v.(type) {
	case string:
		t.Errorf("%s: bare string %q, want it wrapped as unsafe", path, x)
		return x
	case map[string]any:
		if s, ok := x[unsafeKey]; ok {
			if len(x) != 1 {
				t.Errorf("%s: unsafe wrapper with extra keys %v", path, keys(x))
			}
			str, ok := s.(string)
			if !ok {
				t.Errorf("%s: unsafe wrapper holds %T, want a string", path, s)
			}
			*strs++
			return str
		}
		out := map[string]any{}
		for k, e := range x {
			out[k] = unwrap(t, e, path+"."+k, strs)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = unwrap(t, e, path, strs)
		}
		return out
	default:
		return v
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestMarshalVarsRefuses(t *testing.T) {
	s := exampleState()
	s.Schema = 2
	if _, err := MarshalVars(s); err == nil || !strings.Contains(err.Error(), "schema 2") {
		t.Errorf("schema 2: error = %v, want a schema error", err)
	}
	s = exampleState()
	s.Nodes[1].Name = "n2\n  server evil 6.6.6.6:21"
	_, err := MarshalVars(s)
	if err == nil || !strings.Contains(err.Error(), "haproxy_ftp_state.nodes[1].name") {
		t.Errorf("newline in a node name: error = %v, want one naming the field", err)
	}
}

// TestMarshalVarsKeepsJinjaInert runs the real ansible-playbook on a vars file holding a value
// that would run a command if Ansible templated it. The same playbook on the same value without
// the unsafe marking must run it: otherwise this test could not fail.
func TestMarshalVarsKeepsJinjaInert(t *testing.T) {
	ansible := requireBinary(t, "ansible-playbook")
	tmp := t.TempDir()
	pwned := filepath.Join(tmp, "pwned")
	hostile := "{{ lookup('pipe', 'touch " + pwned + "') }}"
	s := exampleState()
	s.Services[0].Source = hostile

	run := func(t *testing.T, vars []byte) string {
		t.Helper()
		dir := t.TempDir()
		varsPath := filepath.Join(dir, "vars.json")
		if err := os.WriteFile(varsPath, vars, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(ansible, "-i", "localhost,", "-e", "@"+varsPath, "-e", "out_dir="+dir,
			"-e", "ansible_python_interpreter=/usr/bin/python3", filepath.Join("testdata", "unsafe.yml"))
		// An empty configuration: nothing of the project's ansible.cfg is needed to be safe.
		cfg := filepath.Join(dir, "ansible.cfg")
		if err := os.WriteFile(cfg, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd.Env = append(os.Environ(), "ANSIBLE_HOME="+filepath.Join(dir, "home"),
			"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "tmp"), "ANSIBLE_CONFIG="+cfg, "ANSIBLE_NOCOLOR=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ansible-playbook: %v\n%s", err, out)
		}
		return dir
	}

	t.Run("marked unsafe", func(t *testing.T) {
		vars, err := MarshalVars(s)
		if err != nil {
			t.Fatal(err)
		}
		dir := run(t, vars)
		if _, err := os.Stat(pwned); err == nil {
			t.Fatal("ansible evaluated the hostile value: the command ran")
		}
		got, err := os.ReadFile(filepath.Join(dir, "source.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(hostile, string(got)); diff != "" {
			t.Errorf("written value (-want +got):\n%s", diff)
		}
		port, err := os.ReadFile(filepath.Join(dir, "port.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff("22", string(port)); diff != "" {
			t.Errorf("control_port + 1 (-want +got):\n%s", diff)
		}
	})

	t.Run("plain JSON runs the command", func(t *testing.T) {
		plain, err := json.Marshal(map[string]any{VarName: s})
		if err != nil {
			t.Fatal(err)
		}
		run(t, plain)
		if _, err := os.Stat(pwned); err != nil {
			t.Fatalf("without the unsafe marking the hostile value should have run: %v", err)
		}
		_ = os.Remove(pwned)
	})
}
