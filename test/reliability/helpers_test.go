// Package reliability breaks kubeftp-edge on purpose and checks that it loses nothing and lets
// no one in: edge hosts that go away or change their host key, reloads that fail, the watcher
// killed mid-run, the API server and etcd restarted, two replicas, hostile values in every
// field the cluster hands over, and a churn soak with FTP transfers running all the time.
//
// Everything is real: the watcher binary built from this checkout (in a PID namespace of its
// own, as in a pod), a kube-apiserver + etcd (lab/kube), three edge hosts with sshd and HAProxy
// in network namespaces (lab, prefix kfrel, net 10.252) and real FTP clients and vsftpd.
// docs/RELIABILITY.md lists every test with what it measured.
package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeftp/kubeftp-edge/lab"
	"github.com/kubeftp/kubeftp-edge/lab/kube"
	"github.com/kubeftp/kubeftp-edge/watcher/controller"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

var (
	soakFor    = flag.Duration("soak", 0, "run TestSoak for this long (make soak); 0 runs its short version")
	watcherLog = flag.Bool("watcher-log", false, "print every watcher's log at the end of its test")
	// make soak takes a lab of its own, so that it can run beside make test
	labPrefix = flag.String("lab-prefix", "kfrel", "namespace prefix of the lab")
	labNet    = flag.String("lab-net", "10.252", "first two octets of the lab's private /16")
)

const (
	labEdges = 3
	// statsPort stands for an edge's HAProxy stats listener: the lab's stats endpoint is a
	// unix socket, so the port is only reserved, as an operator would reserve theirs.
	statsPort = 8404
	peersPort = 10000
)

// world is what every test shares: one API server, one lab, one watcher binary.
var world struct {
	cluster *kube.Cluster
	client  kubernetes.Interface
	lab     *lab.Lab
	binary  string
	dir     string
	// push is the longest first push to the three edges seen so far (nodes, one Service, a
	// fresh watcher). Waits add twice that: on a loaded machine one playbook run takes 45 s
	// instead of 2, and a wait sized for an idle one fails for that reason alone.
	push time.Duration
}

// slack is what every wait adds for the machine's speed (see world.push).
func slack() time.Duration { return 2 * world.push }

// firstPush waits until every edge converged after a watcher started at start and records
// how long that took in world.push.
func (e *env) firstPush(start time.Time, what string) time.Duration {
	e.t.Helper()
	e.waitConverged(3*time.Minute, what)
	took := time.Since(start)
	world.push = max(world.push, took)
	e.t.Logf("%s: %s", what, took.Round(time.Millisecond))
	return took
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips under -short
	}
	os.Exit(runWithWorld(m))
}

func runWithWorld(m *testing.M) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "reliability:", err); return 1 }
	if os.Geteuid() != 0 {
		return fail(fmt.Errorf("the lab needs root (network namespaces, iptables); run as root or with -short"))
	}
	for _, bin := range []string{"ansible-playbook", "haproxy", "curl", "lftp", "ssh", "unshare", "socat", "ssh-keygen"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fail(fmt.Errorf("%s is required (make test installs it): %w", bin, err))
		}
	}
	dir, err := os.MkdirTemp("", "kfrel-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	world.dir = dir
	root, err := kube.RepoRoot()
	if err != nil {
		return fail(err)
	}
	world.binary = filepath.Join(dir, "kubeftp-edge")
	build := exec.Command("go", "build", "-o", world.binary, "./watcher")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("building the watcher: %w\n%s", err, out))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	world.cluster, err = kube.MustStart(filepath.Join(dir, "kube"))
	if err != nil {
		return fail(err)
	}
	defer func() { world.cluster.Stop() }()
	rc, err := world.cluster.RESTConfig()
	if err != nil {
		return fail(err)
	}
	rc.QPS, rc.Burst = 200, 400
	if world.client, err = kubernetes.NewForConfig(rc); err != nil {
		return fail(err)
	}

	// Interrupted: tear the lab down before dying, or its namespaces stay behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			if world.lab != nil {
				_ = world.lab.Down()
			}
			world.cluster.Stop()
			os.Exit(2)
		}
	}()
	world.lab, err = lab.Up(ctx, lab.Options{Root: root, Prefix: *labPrefix, Net: *labNet, Nodes: 3, Edges: labEdges, Clients: 4})
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := world.lab.Down(); err != nil {
			fmt.Fprintln(os.Stderr, "reliability: lab down:", err)
		}
	}()
	// Every edge serves the Services on edge 1's address (where vsftpd's PASV replies point):
	// the others bind it without owning it, as edge hosts behind one VIP do.
	for i := 2; i <= labEdges; i++ {
		if _, err := world.lab.Exec(ctx, "e"+strconv.Itoa(i), "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"); err != nil {
			return fail(err)
		}
	}
	return m.Run()
}

// env is one test's slice of the world: a namespace, its own nodes (labelled with the
// namespace; the watcher's --node-selector keeps other tests' nodes out) and its watchers.
type env struct {
	t   *testing.T
	ctx context.Context
	ns  string
	lab *lab.Lab
	// rendered caches render --format haproxy by generation
	rendered map[string][]byte
	// push is how long this test's first push to every edge took (firstPush)
	push time.Duration
}

func newEnv(t *testing.T, timeout time.Duration) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root, the network-namespace lab and a real kube-apiserver (not in -short)")
	}
	if world.client == nil || world.lab == nil {
		t.Fatal("no lab or API server: TestMain did not set them up")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*slack())
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, ns: kube.Namespace(t, world.client), lab: world.lab}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab logs:\n%s", world.lab.Logs(20))
		}
	})
	return e
}

// ---- Kubernetes objects ----

func (e *env) nodeName(k int) string { return fmt.Sprintf("%s-n%d", e.ns[:min(len(e.ns), 40)], k) }

// createNode creates a Ready Node whose InternalIP is lab node k, and deletes it at the end.
func (e *env) createNode(k int) {
	e.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: e.nodeName(k), Labels: map[string]string{"kubeftp-test": e.ns}}}
	e.createNodeObject(n, e.lab.NodeAddr(k).String())
}

func (e *env) createNodeObject(n *corev1.Node, addr string) {
	e.t.Helper()
	n, err := world.client.CoreV1().Nodes().Create(e.ctx, n, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating node: %v", err)
	}
	name := n.Name
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := world.client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			e.t.Logf("deleting node %s: %v", name, err)
		}
	})
	n.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}},
	}
	if _, err := world.client.CoreV1().Nodes().UpdateStatus(e.ctx, n, metav1.UpdateOptions{}); err != nil {
		e.t.Fatalf("setting status of node %s: %v", name, err)
	}
}

// setReady flips node k's Ready condition (only through /status: no kubelet runs).
func (e *env) setReady(ctx context.Context, k int, ready bool) error {
	n, err := world.client.CoreV1().Nodes().Get(ctx, e.nodeName(k), metav1.GetOptions{})
	if err != nil {
		return err
	}
	st := corev1.ConditionTrue
	if !ready {
		st = corev1.ConditionFalse
	}
	n.Status.Conditions[0].Status, n.Status.Conditions[0].LastTransitionTime = st, metav1.Now()
	_, err = world.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// labService is the Service of the lab's vsftpd pod: the NodePorts every lab node forwards,
// served on edge 1's address.
func (e *env) labService(name string) *corev1.Service {
	l := e.lab
	return ftpService(name, int32(l.ControlNodePort()), int32(l.PassiveMin()), int32(l.PassiveMax()-l.PassiveMin()+1),
		int32(l.PassiveMin()+l.PassiveOffset()), map[string]string{desired.AnnotationEdgeAddress: l.EdgeAddr(1).String()})
}

// ftpService is an opted-in NodePort Service: port "ftp" 21 → ctrlNode, n passive ports
// pasv-<p> from pasvLo with NodePorts from pasvNodeLo.
func ftpService(name string, ctrlNode, pasvLo, n, pasvNodeLo int32, annotations map[string]string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubeftp.io/expose": "true"}, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "ftp", Protocol: corev1.ProtocolTCP, Port: 21, NodePort: ctrlNode}},
		},
	}
	for i := int32(0); i < n; i++ {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("pasv-%d", pasvLo+i),
			Protocol: corev1.ProtocolTCP, Port: pasvLo + i, NodePort: pasvNodeLo + i})
	}
	return s
}

// createService creates svc in the test's namespace and deletes it at the end (no
// controller-manager deletes a namespace's objects; NodePorts are cluster-wide).
func (e *env) createService(svc *corev1.Service) {
	e.t.Helper()
	svc.Namespace = e.ns
	if _, err := world.client.CoreV1().Services(e.ns).Create(e.ctx, svc, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("creating service %s: %v", svc.Name, err)
	}
	name := svc.Name
	e.t.Cleanup(func() { e.deleteService(name) })
}

func (e *env) deleteService(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := world.client.CoreV1().Services(e.ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		e.t.Logf("deleting service %s: %v", name, err)
	}
}

// events lists the Events of a Service.
func (e *env) events(ctx context.Context, svc string) ([]corev1.Event, error) {
	list, err := world.client.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + svc})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// waitEvent waits for an Event of the given type and reason on a Service whose message
// contains every one of want.
func (e *env) waitEvent(svc, typ, reason string, d time.Duration, want ...string) corev1.Event {
	e.t.Helper()
	var last []string
	d += slack()
	deadline := time.Now().Add(d)
	for {
		evs, err := e.events(e.ctx, svc)
		if err == nil {
			last = last[:0]
			for _, ev := range evs {
				last = append(last, fmt.Sprintf("%s %s %q", ev.Type, ev.Reason, ev.Message))
				if ev.Type == typ && ev.Reason == reason && containsAll(ev.Message, want) {
					return ev
				}
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no %s %s event with %q on service %s within %s; events: %q", typ, reason, want, svc, d, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// hostRecord is one host of hosts.json in the state ConfigMap.
type hostRecord struct {
	Hash      string `json:"hash"`
	Result    string `json:"result"`
	Message   string `json:"message"`
	Preflight string `json:"preflight"`
	Failures  int    `json:"failures"`
}

// stateHosts reads hosts.json and the generation of the state ConfigMap.
func (e *env) stateHosts(ctx context.Context) (map[string]hostRecord, string, error) {
	cm, err := world.client.CoreV1().ConfigMaps(e.ns).Get(ctx, "kubeftp-edge-state", metav1.GetOptions{})
	if err != nil {
		return nil, "", err
	}
	hosts := map[string]hostRecord{}
	if err := json.Unmarshal([]byte(cm.Data[controller.KeyHosts]), &hosts); err != nil {
		return nil, "", fmt.Errorf("hosts.json: %w", err)
	}
	return hosts, cm.Data[controller.KeyGeneration], nil
}

// eventually polls cond every 500ms for up to d; cond returns a description of what it saw.
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	d += slack()
	deadline := time.Now().Add(d)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last seen: %s", what, d, seen)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ---- the watcher process ----

// watcherProc is one `kubeftp-edge watch` process, PID 1 of a PID namespace of its own as in a
// container: killing it kills everything it started, ansible-playbook and ssh included.
type watcherProc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	metrics string
	logPath string
	work    string
}

// watcherConfig shapes one watcher; zero fields take the lab's files.
type watcherConfig struct {
	inventory   string
	knownHosts  string
	leaderElect bool
	window      time.Duration // coalesce window; 500ms when zero
	maxBackoff  time.Duration // 8s when zero
	resync      time.Duration // 1h when zero
	extra       []string
}

// inventory writes a copy of the lab's inventory for one watcher: its own ControlPersist
// directory (a master left by another watcher would skip the host key check) and, when
// interpreter is set, that Python interpreter on the edges.
func (e *env) inventory(name, interpreter string) string {
	e.t.Helper()
	dir := e.t.TempDir()
	data, err := os.ReadFile(e.lab.Inventory())
	if err != nil {
		e.t.Fatal(err)
	}
	text := string(data)
	cp := "ansible_control_path_dir: " + filepath.Join(e.lab.Dir(), "cp")
	if !strings.Contains(text, cp) {
		e.t.Fatalf("lab inventory does not set %q", cp)
	}
	cpDir := filepath.Join("/tmp", "kfrel-cp-"+name+"-"+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(cpDir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { closeMasters(cpDir); os.RemoveAll(cpDir) })
	text = strings.Replace(text, cp, "ansible_control_path_dir: "+cpDir, 1)
	if interpreter != "" {
		py := "ansible_python_interpreter: /usr/bin/python3"
		if !strings.Contains(text, py) {
			e.t.Fatalf("lab inventory does not set %q", py)
		}
		text = strings.Replace(text, py, "ansible_python_interpreter: "+interpreter, 1)
	}
	path := filepath.Join(dir, "inventory.yml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// closeMasters ends the SSH ControlPersist masters whose sockets are in dir.
func closeMasters(dir string) {
	socks, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, s := range socks {
		_ = exec.Command("ssh", "-o", "ControlPath="+s, "-O", "exit", "edge").Run()
	}
}

func (e *env) watcherArgs(c watcherConfig, metrics, health, work string) []string {
	l := e.lab
	if c.inventory == "" {
		e.t.Fatal("watcherConfig.inventory is required (env.inventory)")
	}
	if c.knownHosts == "" {
		c.knownHosts = l.KnownHosts()
	}
	if c.window == 0 {
		c.window = 500 * time.Millisecond
	}
	if c.maxBackoff == 0 {
		c.maxBackoff = 8 * time.Second
	}
	if c.resync == 0 {
		c.resync = time.Hour
	}
	return append([]string{"watch",
		"--kubeconfig", world.cluster.Kubeconfig, "--inventory", c.inventory, "--ssh-key", l.SSHKey(),
		"--known-hosts", c.knownHosts, "--namespace", e.ns, "--node-selector", "kubeftp-test=" + e.ns,
		"--default-edge-address", l.EdgeAddr(1).String(),
		"--reserved-ports", fmt.Sprintf("22,%d,%d", peersPort, statsPort),
		"--metrics-address", metrics, "--health-address", health, "--work-dir", work,
		"--coalesce-window", c.window.String(), "--retry-max-backoff", c.maxBackoff.String(),
		"--resync-period", c.resync.String(), "--leader-elect=" + strconv.FormatBool(c.leaderElect),
		"--log-format", "json", "--log-level", "debug",
	}, c.extra...)
}

// startWatcher runs a watcher and waits until its metrics answer; it is killed at the end.
func (e *env) startWatcher(name string, c watcherConfig) *watcherProc {
	e.t.Helper()
	ports := freePorts(e.t, 2)
	w := &watcherProc{name: name, done: make(chan struct{}), metrics: "127.0.0.1:" + strconv.Itoa(ports[0])}
	w.work = e.t.TempDir()
	w.logPath = filepath.Join(e.t.TempDir(), name+".log")
	logf, err := os.OpenFile(w.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	args := append([]string{"--pid", "--fork", "--kill-child", "--mount-proc", world.binary},
		e.watcherArgs(c, w.metrics, "127.0.0.1:"+strconv.Itoa(ports[1]), w.work)...)
	w.cmd = exec.Command("unshare", args...)
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	w.cmd.Env = cleanEnv()
	w.cmd.Stdout, w.cmd.Stderr = logf, logf
	if err := w.cmd.Start(); err != nil {
		e.t.Fatalf("starting watcher %s: %v", name, err)
	}
	go func() { _ = w.cmd.Wait(); logf.Close(); close(w.done) }()
	e.t.Cleanup(func() {
		w.kill()
		if e.t.Failed() || *watcherLog {
			e.t.Logf("watcher %s log (tail):\n%s", name, w.logTail(60))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := w.scrape(e.ctx); err == nil {
			return w
		}
		select {
		case <-w.done:
			e.t.Fatalf("watcher %s exited at start:\n%s", name, w.logTail(20))
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("watcher %s: no metrics within 30s:\n%s", name, w.logTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cleanEnv is the test's environment without KUBEFTP_* and KUBECONFIG: only flags count.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBEFTP_") && !strings.HasPrefix(kv, "KUBECONFIG=") {
			env = append(env, kv)
		}
	}
	return env
}

// kill is SIGKILL to the container: the watcher (PID 1 of its namespace) and all it started.
func (w *watcherProc) kill() {
	if w.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
	<-w.done
}

// stop is a graceful stop: SIGTERM to the watcher itself (it releases its Lease).
func (w *watcherProc) stop(t *testing.T) {
	t.Helper()
	if pid := w.childPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		t.Errorf("watcher %s did not stop within 30s of SIGTERM", w.name)
		w.kill()
	}
}

// childPID is the watcher's pid as seen from here (unshare's only child).
func (w *watcherProc) childPID() int {
	pid := w.cmd.Process.Pid
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

func (w *watcherProc) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *watcherProc) logTail(n int) string {
	data, _ := os.ReadFile(w.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// scrape reads the watcher's /metrics as "name{labels}" → value.
func (w *watcherProc) scrape(ctx context.Context) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return lab.ScrapeMetrics(ctx, w.metrics)
}

// metric is the value of the series name{labels} (labels as exposed, e.g. `host="e1"`), or -1.
func metric(series map[string]float64, name string, labels ...string) float64 {
	for k, v := range series {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		if containsAll(k, labels) {
			return v
		}
	}
	return -1
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// ---- the edges ----

// haproxyCheck runs haproxy -c on edge i's config: a half-written or broken file fails it.
func (e *env) haproxyCheck(i int) error {
	out, err := exec.CommandContext(e.ctx, "haproxy", "-c", "-f", e.lab.EdgeConfigPath(i)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("haproxy -c on edge %d: %w: %s", i, err, bytes.TrimSpace(out))
	}
	return nil
}

// edgeGeneration is the generation in edge i's config header ("" when none).
func (e *env) edgeGeneration(i int) string {
	cfg, _, err := e.lab.EdgeConfig(i)
	if err != nil {
		return ""
	}
	return generationOf(cfg)
}

func generationOf(cfg []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cfg))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		for j := 0; j+1 < len(f); j++ {
			if f[j] == "generation" {
				return strings.TrimSuffix(f[j+1], ":")
			}
		}
	}
	return ""
}

// render runs `kubeftp-edge render` with the watcher's flags against the cluster.
func (e *env) render(format string) ([]byte, error) {
	cmd := exec.CommandContext(e.ctx, world.binary, "render", "--kubeconfig", world.cluster.Kubeconfig,
		"--node-selector", "kubeftp-test="+e.ns, "--default-edge-address", e.lab.EdgeAddr(1).String(),
		"--reserved-ports", fmt.Sprintf("22,%d,%d", peersPort, statsPort), "--format", format, "--work-dir", e.t.TempDir())
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("render --format %s: %w: %s", format, err, stderr.String())
	}
	return out, nil
}

// desiredGeneration is the generation the cluster asks for now (render --format vars: no
// Ansible, cheap enough to poll).
func (e *env) desiredGeneration() (string, error) {
	out, err := e.render("vars")
	if err != nil {
		return "", err
	}
	var vars struct {
		State struct {
			Generation struct {
				Value string `json:"__ansible_unsafe"`
			} `json:"generation"`
		} `json:"haproxy_ftp_state"`
	}
	if err := json.Unmarshal(out, &vars); err != nil || vars.State.Generation.Value == "" {
		return "", fmt.Errorf("render --format vars: no generation (%v)", err)
	}
	return vars.State.Generation.Value, nil
}

// expectedConfig is what the role renders for edge i from the desired state the cluster asks
// for now: `kubeftp-edge render --format haproxy` (the role's own template through
// ansible-playbook) with edge i's host vars applied (see hostConfig). Cached per generation.
func (e *env) expectedConfig(i int, gen string) ([]byte, error) {
	if e.rendered == nil {
		e.rendered = map[string][]byte{}
	}
	out, ok := e.rendered[gen]
	if !ok {
		var err error
		if out, err = e.render("haproxy"); err != nil {
			return nil, err
		}
		if got := generationOf(out); got != gen {
			return nil, fmt.Errorf("rendered generation %s, want %s (the cluster changed meanwhile)", got, gen)
		}
		e.rendered[gen] = out
	}
	return hostConfig(out, "e"+strconv.Itoa(i), e.lab.EdgeStatsSocket(i)), nil
}

// hostConfig turns what render gives a host called localhost with the role's defaults into
// what edge host gets with the lab inventory's host vars: its peer name and stats socket.
func hostConfig(cfg []byte, host, statsSocket string) []byte {
	var b bytes.Buffer
	for _, line := range strings.SplitAfter(string(cfg), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && (f[0] == "peer" || f[0] == "localpeer") && f[1] == "localhost":
			line = strings.Replace(line, "localhost", host, 1)
		case len(f) >= 3 && f[0] == "stats" && f[1] == "socket" && f[2] == "/run/haproxy/admin.sock":
			line = strings.Replace(line, f[2], statsSocket, 1)
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

// waitConverged waits until every edge converged (see converged).
func (e *env) waitConverged(d time.Duration, what string) {
	e.t.Helper()
	eventually(e.t, d, what, e.converged)
}

// converged reports whether every edge runs a config that passes haproxy -c and equals what
// the role renders from the cluster's current desired state, with a worker serving it: the
// worker's servers are the file's (the file alone is replaced before the reload, so a check
// of the file passes mid-run) and the watcher recorded the push as done in hosts.json.
func (e *env) converged() (bool, string) {
	gen, err := e.desiredGeneration()
	if err != nil {
		return false, err.Error()
	}
	hosts, _, err := e.stateHosts(e.ctx)
	if err != nil {
		return false, "state ConfigMap: " + err.Error()
	}
	for i := 1; i <= labEdges; i++ {
		if h := hosts["e"+strconv.Itoa(i)]; h.Hash != gen {
			return false, fmt.Sprintf("hosts.json: e%d at %s (%s %q), want %s", i, short(h.Hash), h.Result, trunc(h.Message, 120), short(gen))
		}
	}
	for i := 1; i <= labEdges; i++ {
		got, _, err := e.lab.EdgeConfig(i)
		if err != nil {
			return false, err.Error()
		}
		if g := generationOf(got); g != gen {
			return false, fmt.Sprintf("edge %d has generation %s, want %s", i, short(g), short(gen))
		}
		want, err := e.expectedConfig(i, gen)
		if err != nil {
			return false, err.Error()
		}
		if !bytes.Equal(got, want) {
			return false, fmt.Sprintf("edge %d has generation %q, want %q; %s", i, generationOf(got), generationOf(want), firstDiff(want, got))
		}
		if err := e.haproxyCheck(i); err != nil {
			return false, err.Error()
		}
		procs, err := e.lab.ShowProc(e.ctx, i)
		if err != nil {
			return false, err.Error()
		}
		if _, ok := procs.CurrentWorker(); !ok {
			return false, fmt.Sprintf("edge %d: no HAProxy worker", i)
		}
		running, err := e.lab.ServersState(e.ctx, i)
		if err != nil {
			return false, err.Error()
		}
		if want, got := configServers(got), runningServers(running); want != got {
			return false, fmt.Sprintf("edge %d: the worker serves %q, the file has %q", i, got, want)
		}
	}
	return true, ""
}

// configServers lists the "backend/server address weight" lines of a haproxy.cfg, sorted.
func configServers(cfg []byte) string {
	var out []string
	backend := ""
	for _, line := range strings.Split(string(cfg), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "backend":
			backend = f[1]
		case len(f) >= 1 && (f[0] == "frontend" || f[0] == "listen" || f[0] == "peers" || f[0] == "global" || f[0] == "defaults"):
			backend = ""
		case len(f) >= 3 && f[0] == "server" && backend != "":
			host, _, _ := strings.Cut(f[2], ":")
			w := "1" // the role writes weight 0 (drained) or nothing
			if i := slices.Index(f, "weight"); i > 0 && i+1 < len(f) {
				w = f[i+1]
			}
			out = append(out, backend+"/"+f[1]+" "+host+" "+w)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// runningServers lists what "show servers state" says the running worker serves, sorted.
func runningServers(states []lab.ServerState) string {
	var out []string
	for _, s := range states {
		out = append(out, s.Backend+"/"+s.Server+" "+s.Addr+" "+strconv.Itoa(s.Weight))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// roundTrip moves a file up and down through edge 1 with curl (EPSV) and lftp.
func (e *env) roundTrip(ctx context.Context, name string, size int64) error {
	l := e.lab
	var errs []string
	for i, c := range []lab.Client{lab.CurlEPSV, lab.Lftp} {
		tr := lab.Transfer{Client: c, Source: l.ClientAddrs()[i%len(l.ClientAddrs())],
			Server: netipPort(l, 21), Path: "pub/" + name + "-" + string(c) + ".bin"}
		if err := l.RoundTrip(ctx, tr, size); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// readAll reads a whole file, "" when missing.
func readAll(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return string(b)
}

func netipPort(l *lab.Lab, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(l.EdgeAddr(1), port)
}

// runCmd runs a command in the root namespace and returns its combined output.
func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// firstDiff describes the first line where got differs from want.
func firstDiff(want, got []byte) string {
	wl, gl := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := range max(len(wl), len(gl)) {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d: want %q, got %q", i+1, w, g)
		}
	}
	return "equal"
}

// drainedIn reports whether cfg keeps node as a drained server: it has server lines for it,
// and every one of them has weight 0.
func drainedIn(cfg []byte, node string) bool {
	lines, drained := lab.DrainedLines(cfg, node)
	return lines > 0 && drained == lines
}
