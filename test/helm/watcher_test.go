package helm

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// runWatcherAsServiceAccount installs the chart in ns with one edge host on a closed loopback
// port, then runs kubeftp-edge with the Deployment's own arguments (file paths and listen
// addresses moved to the test's directories and loopback) through a kubeconfig that
// impersonates the chart's ServiceAccount.
func runWatcherAsServiceAccount(t *testing.T, adminKubeconfig, ns string, keys sshFiles,
	kubectl func(...string) (string, error), must func(...string) string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "kubeftp-edge")
	build := exec.Command("go", "build", "-o", bin, "./watcher")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the watcher: %v\n%s", err, out)
	}

	// A port nobody listens on: the watcher's SSH pre-flight fails at once, on loopback.
	closed := freePort(t)
	out, err := runHelm(t, append(keys.args(), "template", release, chartDir(t), "--namespace", ns,
		"--set", "edge.hosts[0].name=edge1", "--set", "edge.hosts[0].address=127.0.0.1",
		"--set", "edge.hosts[0].port="+strconv.Itoa(closed))...)
	if err != nil {
		t.Fatal(err)
	}
	manifests := filepath.Join(dir, "manifests.yaml")
	if err := os.WriteFile(manifests, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	must("apply", "--validate=strict", "-f", manifests)
	objs := parseManifests(t, out)
	var d appsv1.Deployment
	objs.decode(t, "Deployment", "edge-kubeftp-edge", &d)
	var inv corev1.ConfigMap
	objs.decode(t, "ConfigMap", "edge-kubeftp-edge-inventory", &inv)
	inventory := filepath.Join(dir, "inventory.yml")
	if err := os.WriteFile(inventory, []byte(inv.Data["inventory.yml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	sa := "system:serviceaccount:" + ns + ":" + d.Spec.Template.Spec.ServiceAccountName

	// The kubeconfig: admin credentials that impersonate the ServiceAccount and its groups.
	cfg, err := clientcmd.LoadFromFile(adminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		ai.Impersonate = sa
		ai.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}

	// ssh control sockets need a short path, as /var/lib/kubeftp-edge is in the pod.
	workDir, err := os.MkdirTemp("", "kfe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(workDir) })
	replace := map[string]string{
		"--inventory":       inventory,
		"--ssh-key":         keys.privateKey,
		"--known-hosts":     keys.knownHosts,
		"--work-dir":        workDir,
		"--metrics-address": "127.0.0.1:" + strconv.Itoa(freePort(t)),
		"--health-address":  "127.0.0.1:" + strconv.Itoa(freePort(t)),
	}
	args := []string{}
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		name, _, _ := strings.Cut(a, "=")
		if v, ok := replace[name]; ok {
			a = name + "=" + v
		}
		args = append(args, a)
	}
	args = append(args, "--kubeconfig="+kubeconfig, "--coalesce-window=100ms")

	// A labelled Service in another namespace with an edge address that is no IP literal.
	svc := `apiVersion: v1
kind: Service
metadata:
  name: bad-ftp
  namespace: ftp-a
  labels: {kubeftp.io/expose: "true"}
  annotations: {kubeftp.io/edge-address: "not-an-address"}
spec:
  type: NodePort
  selector: {app: ftp}
  ports:
    - {name: ftp, port: 21, nodePort: 30121}
    - {name: pasv-21100, port: 21100, nodePort: 32200}
`
	svcFile := filepath.Join(dir, "service.yaml")
	if err := os.WriteFile(svcFile, []byte(svc), 0o600); err != nil {
		t.Fatal(err)
	}
	must("apply", "-f", svcFile)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+ns, "HOME="+dir)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() { cancel(); <-exited }
	t.Cleanup(stop)

	leaseName := ""
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--leader-election-id="); ok {
			leaseName = v
		}
	}
	var holder, events string
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		holder, _ = kubectl("-n", ns, "get", "lease", leaseName, "-o", "jsonpath={.spec.holderIdentity}")
		events, _ = kubectl("-n", "ftp-a", "get", "events", "--field-selector",
			"involvedObject.kind=Service,involvedObject.name=bad-ftp,type=Warning", "-o", `jsonpath={range .items[*]}{.reason}: {.message}{"\n"}{end}`)
		if holder != "" && strings.TrimSpace(events) != "" {
			break
		}
		select {
		case <-exited:
			t.Fatalf("the watcher exited:\n%s", logs.String())
		case <-time.After(250 * time.Millisecond):
		}
	}
	stop()
	if holder == "" {
		t.Errorf("the watcher holds no Lease %s/%s", ns, leaseName)
	}
	if strings.TrimSpace(events) == "" {
		t.Errorf("no Warning Event on ftp-a/bad-ftp")
	} else {
		t.Logf("events: %s", events)
	}
	if strings.Contains(strings.ToLower(logs.String()), "forbidden") {
		t.Errorf("the API server refused the watcher something:\n%s", logs.String())
	}
	if t.Failed() {
		t.Logf("watcher output:\n%s", logs.String())
	}
}

// freePort returns a loopback TCP port that nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
