package helm

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// runWatcherAsServiceAccount installs the chart in ns with one edge host on a closed loopback
// port, then runs kubeftp-edge as the chart's Deployment would (startChartWatcher) and checks
// that it takes its Lease and writes a Warning Event on a bad Service without being refused.
func runWatcherAsServiceAccount(t *testing.T, adminKubeconfig, ns string, keys sshFiles,
	kubectl func(...string) (string, error), must func(...string) string) {
	t.Helper()
	// A port nobody listens on: the watcher's SSH pre-flight fails at once, on loopback.
	closed := freePort(t)
	objs := installChart(t, ns, must, append(keys.args(),
		"--set", "edge.hosts[0].name=edge1", "--set", "edge.hosts[0].address=127.0.0.1",
		"--set", "edge.hosts[0].port="+strconv.Itoa(closed))...)

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
	svcFile := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(svcFile, []byte(svc), 0o600); err != nil {
		t.Fatal(err)
	}
	must("apply", "-f", svcFile)

	w := startChartWatcher(t, adminKubeconfig, ns, objs)
	leaseName := w.arg(t, "--leader-election-id")
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
		case <-w.exited:
			t.Fatalf("the watcher exited:\n%s", w.logs())
		case <-time.After(250 * time.Millisecond):
		}
	}
	w.stop()
	if holder == "" {
		t.Errorf("the watcher holds no Lease %s/%s", ns, leaseName)
	}
	if strings.TrimSpace(events) == "" {
		t.Errorf("no Warning Event on ftp-a/bad-ftp")
	} else {
		t.Logf("events: %s", events)
	}
	w.checkNotForbidden(t)
}

// kubectlFor runs kubectl against kubeconfig: run returns stdout (stderr goes into the error),
// must fails the test on error.
func kubectlFor(t *testing.T, kubeconfig string) (run func(...string) (string, error), must func(...string) string) {
	t.Helper()
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl is needed: %v", err)
	}
	run = func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			err = fmt.Errorf("kubectl %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String(), err
	}
	must = func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return run, must
}

// installChart renders the chart into ns with extra helm flags, applies the manifests with
// strict validation (a field the API does not know fails) and returns the rendered objects.
func installChart(t *testing.T, ns string, must func(...string) string, args ...string) objects {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", release, chartDir(t), "--namespace", ns}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "manifests.yaml")
	if err := os.WriteFile(file, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", must("apply", "--validate=strict", "-f", file))
	return parseManifests(t, out)
}

// chartWatcher is the kubeftp-edge binary run as the chart's watcher Deployment runs it.
type chartWatcher struct {
	deployment     appsv1.Deployment
	serviceAccount string // the user name the API server sees
	out            *syncBuffer
	exited         chan struct{}
	stopOnce       sync.Once
	cancel         context.CancelFunc
}

// startChartWatcher builds kubeftp-edge and runs it with the rendered watcher Deployment's own
// container arguments and environment. Each volume mount becomes a test directory holding what
// the kubelet would put there: the rendered inventory ConfigMap, the rendered SSH Secret (its
// items, by key and path), or nothing for an emptyDir; paths under a mount point are moved
// there and the listen addresses to free loopback ports. The API server is reached through a
// kubeconfig that impersonates the Deployment's ServiceAccount with the groups every
// ServiceAccount token carries, so each request is subject to the chart's RBAC.
func startChartWatcher(t *testing.T, adminKubeconfig, ns string, objs objects, extraArgs ...string) *chartWatcher {
	t.Helper()
	w := &chartWatcher{out: &syncBuffer{}, exited: make(chan struct{})}
	w.deployment = watcherDeployment(t, objs)
	spec := w.deployment.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("watcher Deployment has %d containers, want 1", len(spec.Containers))
	}
	ctr := spec.Containers[0]
	w.serviceAccount = "system:serviceaccount:" + ns + ":" + spec.ServiceAccountName

	dir := t.TempDir()
	bin := filepath.Join(dir, "kubeftp-edge")
	build := exec.Command("go", "build", "-o", bin, "./watcher")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the watcher: %v\n%s", err, out)
	}

	mounts := mountVolumes(t, objs, spec, ctr)
	remap := func(s string) string {
		best := ""
		for mountPath := range mounts {
			if (s == mountPath || strings.HasPrefix(s, mountPath+"/")) && len(mountPath) > len(best) {
				best = mountPath
			}
		}
		if best == "" {
			return s
		}
		return mounts[best] + strings.TrimPrefix(s, best)
	}
	listen := map[string]bool{"--metrics-address": true, "--health-address": true}
	var args []string
	for _, a := range ctr.Args {
		name, value, ok := strings.Cut(a, "=")
		switch {
		case ok && listen[name]:
			a = name + "=127.0.0.1:" + strconv.Itoa(freePort(t))
		case ok:
			a = name + "=" + remap(value)
		}
		args = append(args, a)
	}
	args = append(args, "--kubeconfig="+impersonatingKubeconfig(t, adminKubeconfig, dir, ns, w.serviceAccount))
	args = append(args, extraArgs...)

	podName := w.deployment.Name + "-test"
	env := os.Environ()
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+remap(e.Value))
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+ns)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env = append(env, e.Name+"="+podName)
		default:
			t.Fatalf("env %s of the watcher: a source this test does not provide: %+v", e.Name, e.ValueFrom)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = w.out, w.out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(w.exited) }()
	t.Cleanup(func() {
		w.stop()
		if t.Failed() {
			t.Logf("watcher output:\n%s", w.logs())
		}
	})
	return w
}

// stop ends the watcher (SIGTERM, then SIGKILL after 10s) and waits for it. Safe to call twice.
func (w *chartWatcher) stop() {
	w.stopOnce.Do(func() { w.cancel(); <-w.exited })
}

// logs is the watcher's output so far.
func (w *chartWatcher) logs() string { return w.out.String() }

// arg is the value of a --name=value argument of the Deployment as rendered.
func (w *chartWatcher) arg(t *testing.T, name string) string {
	t.Helper()
	for _, a := range w.deployment.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	t.Fatalf("the watcher Deployment has no %s argument", name)
	return ""
}

// checkNotForbidden fails the test when the API server refused the watcher anything it logged.
func (w *chartWatcher) checkNotForbidden(t *testing.T) {
	t.Helper()
	for _, line := range strings.Split(w.logs(), "\n") {
		if strings.Contains(strings.ToLower(line), "forbidden") {
			t.Errorf("the API server refused the watcher something: %s", line)
		}
	}
}

// watcherDeployment is the one rendered Deployment of component watcher.
func watcherDeployment(t *testing.T, objs objects) appsv1.Deployment {
	t.Helper()
	var names []string
	for _, o := range objs.find("Deployment") {
		md, _ := o["metadata"].(map[string]any)
		labels, _ := md["labels"].(map[string]any)
		if labels["app.kubernetes.io/component"] == "watcher" {
			names = append(names, o.name())
		}
	}
	if len(names) != 1 {
		t.Fatalf("want one watcher Deployment, rendered %v", names)
	}
	var d appsv1.Deployment
	objs.decode(t, "Deployment", names[0], &d)
	return d
}

// mountVolumes makes a directory for each volume mount of ctr with the content the kubelet
// would give it from the rendered objects, and returns mount path → directory.
func mountVolumes(t *testing.T, objs objects, spec corev1.PodSpec, ctr corev1.Container) map[string]string {
	t.Helper()
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]string{}
	for _, m := range ctr.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Fatalf("volume mount %s: no such volume", m.Name)
		}
		// Short paths: ssh's control sockets live under the work directory and a unix socket
		// path has at most 108 bytes.
		local, err := os.MkdirTemp("", "kfh")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(local) })
		switch {
		case v.EmptyDir != nil:
		case v.ConfigMap != nil:
			var cm corev1.ConfigMap
			objs.decode(t, "ConfigMap", v.ConfigMap.Name, &cm)
			data := map[string][]byte{}
			for k, s := range cm.Data {
				data[k] = []byte(s)
			}
			writeProjection(t, local, data, v.ConfigMap.Items, 0o444)
		case v.Secret != nil:
			var s corev1.Secret
			objs.decode(t, "Secret", v.Secret.SecretName, &s)
			// The kubelet's files are root-owned and 0440 for a non-root watcher, which ssh
			// accepts; here the test process owns them, and ssh wants them private to it.
			writeProjection(t, local, s.Data, v.Secret.Items, 0o400)
		default:
			t.Fatalf("volume %s: a kind this test does not provide", v.Name)
		}
		mounts[m.MountPath] = local
	}
	return mounts
}

// writeProjection writes a ConfigMap's or Secret's data into dir: every key, or only the
// listed items under their paths. A listed key that is missing fails, as the kubelet would.
func writeProjection(t *testing.T, dir string, data map[string][]byte, items []corev1.KeyToPath, mode os.FileMode) {
	t.Helper()
	if len(items) == 0 {
		for k := range data {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok {
			t.Fatalf("mounted key %q is not in the rendered object", it.Key)
		}
		if err := os.WriteFile(filepath.Join(dir, it.Path), b, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// impersonatingKubeconfig writes a kubeconfig into dir with the admin credentials of
// adminKubeconfig that impersonate user, with the groups the API server gives every
// ServiceAccount token of namespace ns (so default bindings such as discovery count too).
func impersonatingKubeconfig(t *testing.T, adminKubeconfig, dir, ns, user string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(adminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		ai.Impersonate = user
		ai.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// syncBuffer is a bytes.Buffer that a running process writes while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
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
