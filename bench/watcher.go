package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeftp/kubeftp-edge/lab/kube"
	"github.com/kubeftp/kubeftp-edge/watcher/source"

	"github.com/kubeftp/kubeftp-edge/lab"
)

// stateNamespace holds the watcher's state ConfigMap and Events of the benchmarks.
const stateNamespace = "kubeftp-bench"

// startKube starts a real etcd + kube-apiserver with room for a thousand Services, and a
// clientset that is not throttled on the client side (the benchmarks create thousands of
// objects).
func startKube(ctx context.Context, dir string) (*kube.Cluster, kubernetes.Interface, error) {
	c, err := kube.Start(ctx, kube.Options{Dir: dir,
		// the default /24 holds 254 ClusterIPs; the watcher cost part creates 1000 Services
		ExtraAPIServerArgs: []string{"--service-cluster-ip-range=10.96.0.0/20"}})
	if err != nil {
		return nil, nil, err
	}
	cfg, err := c.RESTConfig()
	if err != nil {
		c.Stop()
		return nil, nil, err
	}
	cfg.QPS, cfg.Burst = 5000, 10000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		c.Stop()
		return nil, nil, err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: stateNamespace}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		c.Stop()
		return nil, nil, fmt.Errorf("creating namespace %s: %w", stateNamespace, err)
	}
	return c, client, nil
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

// readyNode is a Ready Node with an InternalIP, as a kubelet would leave it.
func readyNode(name, ip string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
			}},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}},
		},
	}
}

// createNode creates n and sets its status (the status of a create is not kept: it only
// changes through the /status subresource).
func createNode(ctx context.Context, client kubernetes.Interface, n *corev1.Node) error {
	status := n.Status
	got, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating node %s: %w", n.Name, err)
	}
	got.Status = status
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting the status of node %s: %w", n.Name, err)
	}
	return nil
}

// ftpService is an opted-in NodePort Service: control port "ftp" (ctrlPort) on ctrlNodePort,
// passive ports pasvLo.. (n of them) on NodePorts from pasvNodeLo at a constant offset.
func ftpService(ns, name string, ctrlPort, ctrlNodePort, pasvLo, n, pasvNodeLo int32, ann map[string]string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{source.ExposeLabel: "true"},
			Annotations: ann},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "ftp", Protocol: corev1.ProtocolTCP, Port: ctrlPort, NodePort: ctrlNodePort}},
		},
	}
	for i := range n {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("pasv-%d", pasvLo+i),
			Protocol: corev1.ProtocolTCP, Port: pasvLo + i, NodePort: pasvNodeLo + i})
	}
	return s
}

// endpointSlice is the slice of a Service with one ready endpoint on each of the nodes.
func endpointSlice(ns, svc string, nodes ...string) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	ready := true
	for i, n := range nodes {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{fmt.Sprintf("10.244.%d.%d", i, 10+i)}, NodeName: &n,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return sl
}

// Watcher is the real watcher program (kubeftp-edge watch) started by a benchmark.
type Watcher struct {
	cmd     *exec.Cmd
	out     *tailWriter
	done    chan struct{}
	metrics string // host:port
	logFile *os.File
}

// WatcherOptions are the files and flags the watcher runs with.
type WatcherOptions struct {
	Binary     string
	Kubeconfig string
	Inventory  string
	SSHKey     string
	KnownHosts string
	EdgeAddr   string
	WorkDir    string
	// LogFile receives the watcher's log.
	LogFile string
	// Extra flags, e.g. --coalesce-window=500ms.
	Extra []string
}

// StartWatcher runs `kubeftp-edge watch` without leader election and waits until its
// metrics endpoint answers.
func StartWatcher(ctx context.Context, o WatcherOptions) (*Watcher, error) {
	ports, err := freeTCPPorts(2)
	if err != nil {
		return nil, err
	}
	w := &Watcher{out: &tailWriter{max: 8192}, done: make(chan struct{}),
		metrics: "127.0.0.1:" + strconv.Itoa(ports[0])}
	args := append([]string{"watch",
		"--kubeconfig", o.Kubeconfig, "--inventory", o.Inventory, "--ssh-key", o.SSHKey,
		"--known-hosts", o.KnownHosts, "--default-edge-address", o.EdgeAddr,
		"--leader-elect=false", "--namespace", stateNamespace,
		"--metrics-address", w.metrics, "--health-address", "127.0.0.1:" + strconv.Itoa(ports[1]),
		"--work-dir", o.WorkDir,
	}, o.Extra...)
	w.cmd = exec.Command(o.Binary, args...)
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// only the watcher's own settings: a KUBEFTP_* variable of the caller must not leak in
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBEFTP_") && !strings.HasPrefix(kv, "KUBECONFIG=") {
			w.cmd.Env = append(w.cmd.Env, kv)
		}
	}
	var sink io.Writer = w.out
	if o.LogFile != "" {
		if w.logFile, err = os.Create(o.LogFile); err != nil {
			return nil, err
		}
		sink = io.MultiWriter(w.out, w.logFile)
	}
	w.cmd.Stdout, w.cmd.Stderr = sink, sink
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the watcher: %w", err)
	}
	go func() { _ = w.cmd.Wait(); close(w.done) }()
	for {
		if _, err := w.Metrics(ctx); err == nil {
			return w, nil
		}
		select {
		case <-w.done:
			return nil, fmt.Errorf("the watcher exited: %s", lastLines(w.out.String(), 5))
		case <-ctx.Done():
			w.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PID is the watcher's process id.
func (w *Watcher) PID() int { return w.cmd.Process.Pid }

// Log is the tail of the watcher's output.
func (w *Watcher) Log() string { return w.out.String() }

// Stop sends SIGTERM (the watcher stops its playbook run and exits), then kills the group.
func (w *Watcher) Stop() {
	_ = syscall.Kill(w.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(20 * time.Second):
	}
	_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
	<-w.done
	if w.logFile != nil {
		_ = w.logFile.Close()
	}
}

// Metrics reads the watcher's /metrics as series → value ("name{labels}" as exposed).
func (w *Watcher) Metrics(ctx context.Context) (Series, error) {
	s, err := lab.ScrapeMetrics(ctx, w.metrics)
	return Series(s), err
}

// Series are metric samples by "name{labels}".
type Series map[string]float64

// Sum adds the samples of a metric whose labels contain every given `key="value"`.
func (s Series) Sum(name string, labels ...string) float64 {
	var t float64
	for k, v := range s {
		n, l, _ := strings.Cut(k, "{")
		if n != name {
			continue
		}
		ok := true
		for _, want := range labels {
			if !strings.Contains(l, want) {
				ok = false
				break
			}
		}
		if ok {
			t += v
		}
	}
	return t
}

// procStat is a process's own CPU time and memory from /proc.
type procStat struct {
	CPU      time.Duration // utime + stime, without children
	RSS, HWM int64         // current and peak resident set
}

func readProcStat(pid int) (procStat, error) {
	var st procStat
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// the command name may hold spaces: fields count from after its closing parenthesis
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 13 {
		return st, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stt, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return st, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	// USER_HZ is 100 on Linux
	st.CPU = time.Duration(ut+stt) * 10 * time.Millisecond
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		for key, dst := range map[string]*int64{"VmRSS:": &st.RSS, "VmHWM:": &st.HWM} {
			if v, ok := strings.CutPrefix(line, key); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				*dst = kb << 10
			}
		}
	}
	return st, nil
}

func freeTCPPorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitFor polls cond every interval until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s (last error: %v)", what, timeout, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(interval):
		}
	}
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}
