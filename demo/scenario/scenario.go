// Package scenario is the whole kubeftp-edge system on one machine, in the shape `make demo`
// shows and the end-to-end tests assert: a real kube-apiserver + etcd (lab/kube), the
// network-namespace lab (lab) with an edge HAProxy reached over SSH, nodes with NodePorts and a
// vsftpd pod, and the real watcher binary running the embedded playbook. Steps change the
// cluster the way a user or a kubelet would, then wait until the edge's running HAProxy serves
// the expected nodes and move files through it with real FTP clients.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeftp/kubeftp-edge/lab"
	"github.com/kubeftp/kubeftp-edge/lab/kube"
	"github.com/kubeftp/kubeftp-edge/watcher/config"
	"github.com/kubeftp/kubeftp-edge/watcher/controller"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

const (
	// Namespace holds the FTP Services of the scenario.
	Namespace = "demo"
	// SystemNamespace holds the watcher's Lease and state ConfigMap.
	SystemNamespace = "kubeftp-system"
	// StateConfigMap is the watcher's state ConfigMap in SystemNamespace.
	StateConfigMap = "kubeftp-edge-state"
	// Service is the name of the FTP Service every step is about.
	Service = "ftp"
	// PassiveMin and PassiveMax are the passive range vsftpd and the Service start with.
	PassiveMin, PassiveMax = 21100, 21110
	// pidsFile lists "name pid" of the processes Start launched outside the lab (the lab keeps
	// its own pid files): what Down stops when the process that started them is gone.
	pidsFile = "pids"
)

// Options describe one scenario run.
type Options struct {
	// Dir is the run dir: lab, control plane, watcher work dir and logs. Absolute; created.
	Dir string
	// Prefix and Net name the lab's namespaces and its private /16 (see lab.Options).
	Prefix, Net string
	// WatcherBin is the kubeftp-edge binary to run.
	WatcherBin string
	// Root is the repository checkout (lab/lab.sh); empty: found from the working directory.
	Root string
	// CoalesceWindow is the watcher's --coalesce-window; 0: 300ms.
	CoalesceWindow time.Duration
}

// Env is a running scenario: the control plane and the lab are up, the watcher runs once
// StartWatcher returned.
type Env struct {
	Lab     *lab.Lab
	Cluster *kube.Cluster
	Client  kubernetes.Interface
	// MetricsURL and HealthURL are the watcher's endpoints (loopback), once it runs.
	MetricsURL, HealthURL string

	opts        Options
	desiredOpts desired.Options
	watcherArgs []string

	mu      sync.Mutex
	watcher *exec.Cmd
	exited  chan struct{}
	started time.Time
}

// Start brings up the control plane and the lab side by side, creates the namespaces, three
// Ready Nodes n1-n3 (the lab has a fourth machine, n4, that is not registered yet) and the FTP
// Service demo/ftp with order-preserving NodePorts and its EndpointSlice. The watcher is not
// started: StartWatcher does that, so that the first step can time it. On error everything
// started so far is stopped again.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	if !filepath.IsAbs(opts.Dir) {
		return nil, fmt.Errorf("scenario run dir %q must be absolute", opts.Dir)
	}
	if opts.WatcherBin == "" {
		return nil, errors.New("scenario: the kubeftp-edge binary is required")
	}
	if _, err := os.Stat(opts.WatcherBin); err != nil {
		return nil, fmt.Errorf("scenario: kubeftp-edge binary: %w", err)
	}
	if opts.CoalesceWindow == 0 {
		opts.CoalesceWindow = 300 * time.Millisecond
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	// a new cluster every run: etcd data or a watcher log of an earlier one would mislead
	for _, old := range []string{"kube", "watcher", "watcher.log"} {
		if err := os.RemoveAll(filepath.Join(opts.Dir, old)); err != nil {
			return nil, fmt.Errorf("scenario: %w", err)
		}
	}
	e := &Env{opts: opts}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Close())
		}
	}()

	// The control plane and the lab share nothing: start them side by side.
	var wg sync.WaitGroup
	var kubeErr, labErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		e.Cluster, kubeErr = kube.Start(ctx, kube.Options{Dir: filepath.Join(opts.Dir, "kube")})
		if kubeErr == nil {
			kubeErr = e.recordPIDs()
		}
	}()
	go func() {
		defer wg.Done()
		e.Lab, labErr = lab.Up(ctx, lab.Options{
			Root: opts.Root, Prefix: opts.Prefix, Net: opts.Net, Nodes: 4, Edges: 1, Clients: 4,
			Dir: filepath.Join(opts.Dir, "lab"),
			// explicit: the run dir's lab.env keeps the range an earlier run's last step set
			PassiveMin: PassiveMin, PassiveMax: PassiveMax,
		})
	}()
	wg.Wait()
	if err := errors.Join(kubeErr, labErr); err != nil {
		return nil, err
	}
	cs, err := e.Cluster.Clientset()
	if err != nil {
		return nil, err
	}
	e.Client = cs

	if err := e.configureWatcher(); err != nil {
		return nil, err
	}
	for _, ns := range []string{Namespace, SystemNamespace} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("creating namespace %s: %w", ns, err)
		}
	}
	for k := 1; k <= 3; k++ {
		if err := e.AddNode(ctx, k); err != nil {
			return nil, err
		}
	}
	l := e.Lab
	if _, err := e.CreateService(ctx, FTPService{
		Name: Service, ControlNodePort: l.ControlNodePort(),
		PassiveMin: l.PassiveMin(), PassiveMax: l.PassiveMax(), PassiveOffset: l.PassiveOffset(),
	}); err != nil {
		return nil, err
	}
	if err := e.SetEndpoints(ctx, Service, 1); err != nil {
		return nil, err
	}
	return e, nil
}

// configureWatcher fixes the watcher's command line, and derives the desired options from it
// through the watcher's own flag parsing, so that the scenario computes what the watcher does.
func (e *Env) configureWatcher() error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	metrics := "127.0.0.1:" + strconv.Itoa(ports[0])
	health := "127.0.0.1:" + strconv.Itoa(ports[1])
	e.MetricsURL, e.HealthURL = "http://"+metrics+"/metrics", "http://"+health+"/readyz"
	work := filepath.Join(e.opts.Dir, "watcher")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fmt.Errorf("scenario: %w", err)
	}
	e.watcherArgs = []string{
		"--kubeconfig", e.Cluster.Kubeconfig,
		"--inventory", e.Lab.Inventory(), "--ssh-key", e.Lab.SSHKey(), "--known-hosts", e.Lab.KnownHosts(),
		"--namespace", SystemNamespace, "--state-configmap", StateConfigMap,
		"--default-edge-address", e.Lab.EdgeAddr(1).String(),
		"--metrics-address", metrics, "--health-address", health,
		"--coalesce-window", e.opts.CoalesceWindow.String(), "--resync-period", "1m", "--retry-max-backoff", "5s",
		"--work-dir", work,
	}
	cfg, err := config.Parse(config.CommandWatch, e.watcherArgs, func(string) string { return "" }, io.Discard)
	if err != nil {
		return fmt.Errorf("watcher flags: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("watcher flags: %w", err)
	}
	e.desiredOpts, err = cfg.DesiredOptions()
	return err
}

// WatcherCommand is the command line the watcher runs with.
func (e *Env) WatcherCommand() []string {
	return append([]string{e.opts.WatcherBin, "watch"}, e.watcherArgs...)
}

// WatcherLog is the file the watcher logs to.
func (e *Env) WatcherLog() string { return filepath.Join(e.opts.Dir, "watcher.log") }

// StartWatcher starts the kubeftp-edge binary and waits until it is ready: caches synced and
// the first sync attempted (its /readyz).
func (e *Env) StartWatcher(ctx context.Context) error {
	logf, err := os.OpenFile(e.WatcherLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("watcher log: %w", err)
	}
	cmd := exec.Command(e.opts.WatcherBin, append([]string{"watch"}, e.watcherArgs...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// SIGTERM when this process dies first: the watcher then stops its playbook run itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	e.mu.Lock()
	e.started = time.Now()
	if err := cmd.Start(); err != nil {
		e.mu.Unlock()
		logf.Close()
		return fmt.Errorf("starting the watcher: %w", err)
	}
	e.watcher, e.exited = cmd, make(chan struct{})
	exited := e.exited
	e.mu.Unlock()
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	if err := e.recordPIDs(); err != nil {
		return err
	}
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.HealthURL, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("the watcher exited: %s", e.WatcherLogTail(20))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the watcher is not ready after 60s: %s", e.WatcherLogTail(20))
		}
	}
}

// WatcherStarted is when StartWatcher launched the watcher.
func (e *Env) WatcherStarted() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.started
}

// WatcherLogTail is the last lines of the watcher's log, for error messages.
func (e *Env) WatcherLogTail(lines int) string {
	data, err := os.ReadFile(e.WatcherLog())
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// stopWatcher sends SIGTERM and waits for the watcher to finish (SIGKILL after 20s).
func (e *Env) stopWatcher() error {
	e.mu.Lock()
	cmd, exited := e.watcher, e.exited
	e.watcher = nil
	e.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return errors.New("the watcher did not stop within 20s of SIGTERM; killed")
	}
}

// Close stops the watcher, the control plane and the lab, in that order, and removes the pid
// list. Logs stay in the run dir. Safe to call on a half-started Env and twice.
func (e *Env) Close() error {
	var errs []error
	if err := e.stopWatcher(); err != nil {
		errs = append(errs, err)
	}
	if e.Cluster != nil {
		e.Cluster.Stop()
	}
	if e.Lab != nil {
		if err := e.Lab.Down(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(filepath.Join(e.opts.Dir, pidsFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// recordPIDs writes the pid list of the processes started so far.
func (e *Env) recordPIDs() error {
	var b strings.Builder
	e.mu.Lock()
	if e.watcher != nil && e.watcher.Process != nil {
		fmt.Fprintf(&b, "kubeftp-edge %d\n", e.watcher.Process.Pid)
	}
	e.mu.Unlock()
	if e.Cluster != nil {
		for _, pid := range e.Cluster.PIDs() {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			fmt.Fprintf(&b, "%s %d\n", strings.TrimSpace(string(comm)), pid)
		}
	}
	path := filepath.Join(e.opts.Dir, pidsFile)
	if err := os.WriteFile(path+".tmp", []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("recording pids: %w", err)
	}
	return os.Rename(path+".tmp", path)
}

// Desired is what the watcher should push now: the same pure computation, over the objects
// the API server holds, with the options of the watcher's command line.
func (e *Env) Desired(ctx context.Context) (desired.State, []desired.Warning, error) {
	in, err := e.listInput(ctx)
	if err != nil {
		return desired.State{}, nil, err
	}
	st, warns := desired.Compute(in, e.desiredOpts)
	return st, warns, nil
}

// StateGeneration is the generation in the watcher's state ConfigMap ("" before the first push).
func (e *Env) StateGeneration(ctx context.Context) (string, error) {
	cm, err := e.Client.CoreV1().ConfigMaps(SystemNamespace).Get(ctx, StateConfigMap, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("state configmap: %w", err)
	}
	return cm.Data[controller.KeyGeneration], nil
}

// Metrics fetches the watcher's /metrics text.
func (e *Env) Metrics(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.MetricsURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("watcher metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("watcher metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("watcher metrics: %s", resp.Status)
	}
	return string(body), nil
}

// AddEdgeAddress gives edge i another address on its public segment, NET.1.<host>, as a
// second VIP for Services that bind elsewhere. It goes away with the lab's namespaces.
func (e *Env) AddEdgeAddress(ctx context.Context, i, host int) (netip.Addr, error) {
	a4 := e.Lab.EdgeAddr(i).As4()
	a4[3] = byte(host)
	addr := netip.AddrFrom4(a4)
	if host < 150 || host > 250 {
		// below: clients and edges 10-40; 254: the root namespace
		return netip.Addr{}, fmt.Errorf("edge address host part %d: want 150-250", host)
	}
	if _, err := e.Lab.Exec(ctx, "e"+strconv.Itoa(i), "ip", "addr", "add", addr.String()+"/24", "dev", "eth0"); err != nil {
		return netip.Addr{}, err
	}
	return addr, nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("a free loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
