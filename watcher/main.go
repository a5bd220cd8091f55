// Command kubeftp-edge keeps standalone HAProxy edge hosts correct for passive FTP services of
// a Kubernetes cluster.
//
//	kubeftp-edge watch   --inventory inv.yml --ssh-key id --known-hosts kh [flags]
//	kubeftp-edge render  [--from-manifests DIR] [--format vars|haproxy]
//	kubeftp-edge version
//
// Every flag also reads KUBEFTP_<FLAG_NAME> from the environment (see watcher/config).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	kubeftpedge "github.com/kubeftp/kubeftp-edge"
	"github.com/kubeftp/kubeftp-edge/watcher/apply"
	"github.com/kubeftp/kubeftp-edge/watcher/config"
	"github.com/kubeftp/kubeftp-edge/watcher/controller"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
	"github.com/kubeftp/kubeftp-edge/watcher/source"
)

// Set at build time: go build -ldflags "-X main.version=v1.2.3 -X main.commit=abc123".
var (
	version = "dev"
	commit  = "unknown"
)

const usage = `usage: kubeftp-edge <command> [flags]

commands:
  watch    keep the edge hosts at the state the cluster asks for
  render   print the desired state once (--format vars|haproxy), warnings on stderr
  version  print the version

"kubeftp-edge <command> -h" lists the flags of a command.
`

// exit codes
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitHostsFailed = 3
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var cmd config.Command
	switch args[0] {
	case "version", "--version":
		fmt.Fprintf(stdout, "kubeftp-edge %s (commit %s)\n", version, commit)
		return exitOK
	case "watch":
		cmd = config.CommandWatch
	case "render":
		cmd = config.CommandRender
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}

	cfg, err := config.Parse(cmd, args[1:], os.Getenv, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, err)
		}
		return exitUsage
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	log := newLogger(cfg, stderr)
	klog.SetSlogLogger(log)

	switch cmd {
	case config.CommandRender:
		err = render(ctx, cfg, log, stdout, stderr)
	default:
		err = watch(ctx, cfg, log)
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, controller.ErrHostsFailed):
		log.Error("sync done with failed edge hosts", "err", err)
		return exitHostsFailed
	default:
		log.Error("exiting", "err", err)
		return exitFailure
	}
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func kubeClient(cfg *config.Config) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	rc.UserAgent = "kubeftp-edge/" + version
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}

func watch(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	inv, err := apply.LoadInventory(cfg.Inventory)
	if err != nil {
		return fmt.Errorf("--inventory: %w", err)
	}
	if err := apply.CheckSSHFiles(cfg.SSHKey, cfg.KnownHosts); err != nil {
		return err
	}
	preflight, err := apply.NewPreflight(cfg.SSHKey, cfg.KnownHosts, 5*time.Second)
	if err != nil {
		return err
	}
	opts, err := cfg.DesiredOptions()
	if err != nil {
		return err
	}
	opts.ReservedPorts = withInventoryPorts(opts.ReservedPorts, inv)
	client, err := kubeClient(cfg)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(cfg.WorkDir, "kubeftp-edge-")
	if err != nil {
		return fmt.Errorf("--work-dir: %w", err)
	}
	defer os.RemoveAll(work)
	runner, err := apply.NewRunner(apply.RunnerConfig{
		InventoryPath: cfg.Inventory, SSHKeyPath: cfg.SSHKey, KnownHostsPath: cfg.KnownHosts,
		Forks: cfg.Forks, WorkDir: work, Logger: log,
	})
	if err != nil {
		return err
	}
	defer runner.Close()

	recorder, stopEvents := controller.NewEventRecorder(client)
	defer stopEvents()
	host, _ := os.Hostname()
	var ctrl *controller.Controller
	// the informers start below, after ctrl is set: no event can reach a nil controller
	src, err := source.New(client, func() { ctrl.Enqueue() })
	if err != nil {
		return err
	}
	ctrl, err = controller.New(controller.Options{
		Client: client, Source: src, HasSynced: src.HasSynced,
		Applier: runner, Preflight: preflight, Hosts: inv.Hosts, Desired: opts,
		Namespace: cfg.Namespace, StateConfigMap: cfg.StateConfigMap,
		CoalesceWindow: cfg.CoalesceWindow, ResyncPeriod: cfg.ResyncPeriod, RetryMaxBackoff: cfg.RetryMaxBackoff,
		DryRun: cfg.DryRun, Once: cfg.Once, DriftCheck: true,
		LeaderElection: controller.LeaderElection{
			Enabled: cfg.LeaderElect, Namespace: cfg.Namespace, Name: cfg.LeaderElectionID,
			Identity: host + "_" + rand.String(8),
		},
		Events: recorder, Logger: log,
	})
	if err != nil {
		return err
	}

	srvCtx, stopServers := context.WithCancel(ctx)
	defer stopServers()
	var servers []<-chan error
	if cfg.HealthAddress != "" {
		errc, err := controller.Serve(srvCtx, log, "health", cfg.HealthAddress, ctrl.HealthHandler())
		if err != nil {
			return fmt.Errorf("--health-address: %w", err)
		}
		servers = append(servers, errc)
	}
	if cfg.MetricsAddress != "" {
		errc, err := controller.Serve(srvCtx, log, "metrics", cfg.MetricsAddress, ctrl.MetricsHandler())
		if err != nil {
			return fmt.Errorf("--metrics-address: %w", err)
		}
		servers = append(servers, errc)
	}

	log.Info("starting", "version", version, "commit", commit, "hosts", len(inv.Hosts),
		"leader_elect", cfg.LeaderElect, "dry_run", cfg.DryRun, "once", cfg.Once)
	// The informers get a context of their own: Shutdown waits for them, and Run can return
	// while ctx is still alive (a lost Lease); with ctx they would never stop and the process
	// would hang instead of exiting to start over.
	srcCtx, stopSrc := context.WithCancel(ctx)
	src.Start(srcCtx)
	defer func() { stopSrc(); src.Shutdown() }()
	runErr := ctrl.Run(ctx)
	stopServers()
	for _, errc := range servers {
		if err := <-errc; err != nil && runErr == nil {
			runErr = err
		}
	}
	if runErr != nil && errors.Is(runErr, context.Canceled) && ctx.Err() != nil {
		log.Info("stopped")
		return nil
	}
	return runErr
}

func render(ctx context.Context, cfg *config.Config, log *slog.Logger, stdout, stderr io.Writer) error {
	var (
		in  desired.Input
		err error
	)
	if cfg.FromManifests != "" {
		in, err = source.LoadManifests(cfg.FromManifests)
	} else {
		in, err = listCluster(ctx, cfg)
	}
	if err != nil {
		return err
	}
	opts, err := cfg.DesiredOptions()
	if err != nil {
		return err
	}
	state, warnings := desired.Compute(in, opts)
	for _, w := range warnings {
		obj := w.Namespace + "/" + w.Name
		if w.Namespace == "" {
			obj = "node/" + w.Name
		}
		skipped := ""
		if w.Skipped {
			skipped = " (not served)"
		}
		fmt.Fprintf(stderr, "warning: %s: %s: %s: %s%s\n", obj, w.Reason, w.Field, w.Message, skipped)
	}
	vars, err := apply.MarshalVars(state)
	if err != nil {
		return err
	}
	if cfg.Format == "vars" {
		_, err := stdout.Write(append(vars, '\n'))
		return err
	}
	out, err := renderHAProxy(ctx, cfg.WorkDir, vars, log)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// listCluster reads the same objects the informers would cache, once.
func listCluster(ctx context.Context, cfg *config.Config) (desired.Input, error) {
	client, err := kubeClient(cfg)
	if err != nil {
		return desired.Input{}, err
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return desired.Input{}, fmt.Errorf("listing nodes: %w", err)
	}
	svcs, err := client.CoreV1().Services("").List(ctx, metav1.ListOptions{LabelSelector: source.ExposeSelector})
	if err != nil {
		return desired.Input{}, fmt.Errorf("listing services: %w", err)
	}
	slices, err := client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{LabelSelector: source.ServiceNameLabel})
	if err != nil {
		return desired.Input{}, fmt.Errorf("listing endpointslices: %w", err)
	}
	return source.Filter(ptrs(nodes.Items), ptrs(svcs.Items), ptrs(slices.Items)), nil
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// renderHAProxy runs the embedded ansible/render.yml on the local machine: the role's own
// preflight and template give exactly the haproxy.cfg an edge host in no extra group gets.
func renderHAProxy(ctx context.Context, workDir string, vars []byte, log *slog.Logger) ([]byte, error) {
	dir, err := os.MkdirTemp(workDir, "kubeftp-render-")
	if err != nil {
		return nil, fmt.Errorf("--work-dir: %w", err)
	}
	defer os.RemoveAll(dir)
	assets, err := apply.ExtractAssets(kubeftpedge.Assets, dir)
	if err != nil {
		return nil, err
	}
	defer assets.Close()
	varsFile := filepath.Join(dir, "vars.json")
	if err := os.WriteFile(varsFile, vars, 0o600); err != nil {
		return nil, fmt.Errorf("writing vars: %w", err)
	}
	dest := filepath.Join(dir, "haproxy.cfg")
	for _, sub := range []string{"home", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("--work-dir: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, "ansible-playbook", "-i", "localhost,",
		filepath.Join(assets.PlaybookDir, "render.yml"),
		"-e", "@"+varsFile, "-e", "haproxy_ftp_render_dest="+dest)
	cmd.Env = append(os.Environ(),
		"ANSIBLE_CONFIG="+assets.Config,
		"ANSIBLE_HOME="+filepath.Join(dir, "home"),
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "tmp"),
		"ANSIBLE_NOCOLOR=1",
	)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("rendering haproxy.cfg with ansible/render.yml: %w\n%s", err, tail(string(out), 4000))
	}
	log.Debug("rendered haproxy.cfg", "output", tail(string(out), 4000))
	cfgBytes, err := os.ReadFile(dest)
	if err != nil {
		return nil, fmt.Errorf("reading the rendered haproxy.cfg: %w", err)
	}
	return cfgBytes, nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// withInventoryPorts adds every edge host's SSH port (ansible_port) to the reserved ports: a
// Service listening there would take the port Ansible needs to reach the edge.
func withInventoryPorts(reserved []int, inv *apply.Inventory) []int {
	out := slices.Clone(reserved)
	for _, h := range inv.Hosts {
		if !slices.Contains(out, h.Port) {
			out = append(out, h.Port)
		}
	}
	return out
}
