package watcher

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kubeftp/kubeftp-edge/lab/kube"
)

// buildBinary builds the kubeftp-edge command once per test into a temp dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	root, err := kube.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "kubeftp-edge")
	cmd := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X main.version=v0.0.0-test -X main.commit=abc123", "./watcher")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type cmdResult struct {
	stdout, stderr string
	code           int
}

func runBinary(t *testing.T, bin string, env []string, args ...string) cmdResult {
	t.Helper()
	root, err := kube.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	res := cmdResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running %v: %v", args, err)
	}
	return res
}

func TestRenderFromManifests(t *testing.T) {
	for _, tool := range []string{"ansible-playbook", "haproxy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (make test installs it): %v", tool, err)
		}
	}
	bin := buildBinary(t)

	vars := runBinary(t, bin, nil, "render", "--from-manifests", "examples/manifests", "--format", "vars")
	if vars.code != 0 {
		t.Fatalf("render vars: exit %d\n%s", vars.code, vars.stderr)
	}
	var doc struct {
		State struct {
			Schema     int `json:"schema"`
			Generation struct {
				Unsafe string `json:"__ansible_unsafe"`
			} `json:"generation"`
			Nodes    []json.RawMessage `json:"nodes"`
			Services []struct {
				ID struct {
					Unsafe string `json:"__ansible_unsafe"`
				} `json:"id"`
				NodeNames []struct {
					Unsafe string `json:"__ansible_unsafe"`
				} `json:"node_names"`
			} `json:"services"`
		} `json:"haproxy_ftp_state"`
	}
	if err := json.Unmarshal([]byte(vars.stdout), &doc); err != nil {
		t.Fatalf("render vars output is not the vars JSON: %v\n%s", err, vars.stdout)
	}
	if doc.State.Schema != 1 || len(doc.State.Generation.Unsafe) != 64 || len(doc.State.Services) != 2 {
		t.Errorf("vars: schema %d, generation %q, %d services; want 1, a sha256, 2",
			doc.State.Schema, doc.State.Generation.Unsafe, len(doc.State.Services))
	}
	// demo/ftp (Cluster) on every node: n1, n2 (n3 is excluded by label); partners/ftp (Local)
	// on n2 only
	if len(doc.State.Nodes) != 2 {
		t.Errorf("vars: %d nodes, want 2 (n3 is excluded by label)", len(doc.State.Nodes))
	}
	for _, s := range doc.State.Services {
		var names []string
		for _, n := range s.NodeNames {
			names = append(names, n.Unsafe)
		}
		want := map[string][]string{"demo-ftp": nil, "partners-ftp": {"n2"}}[s.ID.Unsafe]
		if !slices.Equal(names, want) {
			t.Errorf("service %s: node_names %v, want %v", s.ID.Unsafe, names, want)
		}
	}
	if !strings.Contains(vars.stderr, "ActiveModeNotProxied") {
		t.Errorf("no active-mode warning on stderr:\n%s", vars.stderr)
	}

	cfg := runBinary(t, bin, nil, "render", "--from-manifests", "examples/manifests", "--format", "haproxy")
	if cfg.code != 0 {
		t.Fatalf("render haproxy: exit %d\n%s", cfg.code, cfg.stderr)
	}
	if !strings.Contains(cfg.stdout, "generation "+doc.State.Generation.Unsafe) {
		t.Errorf("haproxy.cfg is not of the rendered vars' generation:\n%s", cfg.stdout)
	}
	for _, want := range []string{"bind 10.213.1.1:21", "bind 10.213.1.1:21100-21110", "bind 10.213.1.2:21"} {
		if !strings.Contains(cfg.stdout, want) {
			t.Errorf("haproxy.cfg lacks %q", want)
		}
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-f", path).CombinedOutput(); err != nil {
		t.Errorf("haproxy -c rejects the rendered config: %v\n%s\n%s", err, out, cfg.stdout)
	}
}

func TestCommandLineErrors(t *testing.T) {
	bin := buildBinary(t)
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.MkdirAll(bad, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		env      []string
		args     []string
		wantCode int
		want     []string // in stderr (or stdout for version)
	}{
		{"version", nil, []string{"version"}, 0, []string{"kubeftp-edge v0.0.0-test (commit abc123)"}},
		{"no command", nil, nil, 2, []string{"usage: kubeftp-edge"}},
		{"unknown command", nil, []string{"serve"}, 2, []string{`unknown command "serve"`}},
		{"watch without ssh settings", []string{"KUBECONFIG=", "POD_NAMESPACE=kubeftp"}, []string{"watch"}, 2,
			[]string{"--inventory is required", "--ssh-key is required", "--known-hosts is required"}},
		{"env fallback is validated too", []string{"KUBEFTP_NODE_ADDRESS_TYPE=Hostname"}, []string{"render"}, 2,
			[]string{`--node-address-type must be InternalIP or ExternalIP, not "Hostname"`}},
		{"bad duration from env names the flag and the variable", []string{"KUBEFTP_COALESCE_WINDOW=soon"}, []string{"watch"}, 2,
			[]string{"--coalesce-window from KUBEFTP_COALESCE_WINDOW"}},
		{"unknown kind names the file", nil, []string{"render", "--from-manifests", bad}, 1,
			[]string{filepath.Join(bad, "cm.yaml"), "ConfigMap"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runBinary(t, bin, tt.env, tt.args...)
			if res.code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", res.code, tt.wantCode, res.stdout, res.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.stderr+res.stdout, w) {
					t.Errorf("output lacks %q:\nstdout: %s\nstderr: %s", w, res.stdout, res.stderr)
				}
			}
		})
	}
}
