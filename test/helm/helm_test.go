// Package helm tests the chart in helm/kubeftp-edge with the real helm binary (built from the
// Go module proxy by tools/build-helm.sh): lint, the rendered objects, the values schema, and
// the RBAC it grants, applied to a real kube-apiserver.
package helm

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"gopkg.in/yaml.v3"
)

const release = "edge"

// Namespace the chart is rendered into.
const namespace = "kubeftp-system"

// repoRoot is the directory holding go.mod, found from the test's working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

func chartDir(t *testing.T) string {
	t.Helper()
	return filepath.Join(repoRoot(t), "helm", "kubeftp-edge")
}

// helmBinary is $KUBEFTP_CACHE/bin/helm (make sets KUBEFTP_CACHE), else <repo>/.cache/bin/helm.
// Missing, it fails the test: `make test` builds it. Only a -short run may go without it.
func helmBinary(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("KUBEFTP_CACHE")
	if cache == "" {
		cache = filepath.Join(repoRoot(t), ".cache")
	}
	bin := filepath.Join(cache, "bin", "helm")
	if _, err := os.Stat(bin); err != nil {
		if testing.Short() {
			t.Skipf("helm not built (%v); run tools/build-helm.sh", err)
		}
		t.Fatalf("helm not found (run tools/build-helm.sh, or make test): %v", err)
	}
	return bin
}

// sshFiles are a fresh client key and a known_hosts line for edge1, as files for --set-file.
type sshFiles struct {
	privateKey string
	knownHosts string
}

func newSSHFiles(t *testing.T) sshFiles {
	t.Helper()
	dir := t.TempDir()
	_, clientKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(clientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	hostPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(hostPub)
	if err != nil {
		t.Fatal(err)
	}
	f := sshFiles{privateKey: filepath.Join(dir, "id"), knownHosts: filepath.Join(dir, "known_hosts")}
	if err := os.WriteFile(f.privateKey, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	line := knownhosts.Line([]string{"192.0.2.10", "edge2.example.net"}, sshPub) + "\n"
	if err := os.WriteFile(f.knownHosts, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// args are the --set-file flags that every install needs.
func (f sshFiles) args() []string {
	return []string{"--set-file", "ssh.privateKey=" + f.privateKey, "--set-file", "ssh.knownHosts=" + f.knownHosts}
}

// runHelm runs helm with args and returns stdout; stderr is part of the error.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t), args...)
	// A private HOME: helm reads no repository config or plugins from the machine.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "HELM_CACHE_HOME="+home+"/cache",
		"HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// template renders the chart with extra helm flags and fails the test on error.
func template(t *testing.T, args ...string) objects {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", release, chartDir(t), "--namespace", namespace}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return parseManifests(t, out)
}

// object is one rendered manifest, decoded generically.
type object map[string]any

func (o object) kind() string { s, _ := o["kind"].(string); return s }

func (o object) name() string {
	md, _ := o["metadata"].(map[string]any)
	s, _ := md["name"].(string)
	return s
}

type objects []object

func parseManifests(t *testing.T, out string) objects {
	t.Helper()
	var objs objects
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var o map[string]any
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("parsing rendered manifests: %v\n%s", err, out)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs
}

// find returns the objects of a kind.
func (objs objects) find(kind string) objects {
	var r objects
	for _, o := range objs {
		if o.kind() == kind {
			r = append(r, o)
		}
	}
	return r
}

// decode converts the object kind/name into a typed Kubernetes object, failing if it is not
// rendered exactly once.
func (objs objects) decode(t *testing.T, kind, name string, into any) {
	t.Helper()
	var found []object
	for _, o := range objs.find(kind) {
		if o.name() == name {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %q, rendered %d; rendered: %v", kind, name, len(found), objs.names())
	}
	b, err := json.Marshal(found[0])
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	// An unknown field is a typo in a template.
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		t.Fatalf("decoding %s %q: %v", kind, name, err)
	}
}

func (objs objects) names() []string {
	var r []string
	for _, o := range objs {
		r = append(r, o.kind()+"/"+o.name())
	}
	return r
}
