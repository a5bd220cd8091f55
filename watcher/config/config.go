// Package config holds the watcher's settings: one Config, filled from flags with an
// environment fallback, and validated once before anything is wired.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// EnvPrefix prefixes the environment fallback of every flag: --ssh-key → KUBEFTP_SSH_KEY.
const EnvPrefix = "KUBEFTP_"

// Command names the subcommand a Config was parsed for; validation differs per command.
type Command string

const (
	CommandWatch  Command = "watch"
	CommandRender Command = "render"
)

// Config is everything the watcher can be told. Durations and lists are already parsed.
type Config struct {
	Command Command

	Kubeconfig string
	Inventory  string
	SSHKey     string
	KnownHosts string

	DefaultEdgeAddress string
	DefaultEdgeGroup   string
	NodeSelector       string
	NodeAddressType    string
	ReservedPorts      []int

	CoalesceWindow  time.Duration
	ResyncPeriod    time.Duration
	RetryMaxBackoff time.Duration

	Once   bool
	DryRun bool

	MetricsAddress string
	HealthAddress  string

	LeaderElect      bool
	Namespace        string
	LeaderElectionID string
	StateConfigMap   string

	WorkDir string
	Forks   int

	LogLevel  string
	LogFormat string

	// render only
	FromManifests string
	Format        string
}

// Parse reads args (without the program and subcommand names) for cmd. A flag not given on the
// command line falls back to its environment variable, looked up with getenv. It does not
// validate: call Validate.
func Parse(cmd Command, args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	c := &Config{Command: cmd}
	fs := flag.NewFlagSet("kubeftp-edge "+string(cmd), flag.ContinueOnError)
	fs.SetOutput(stderr)

	// env names besides the KUBEFTP_ ones, as Kubernetes tooling and the downward API use them
	extraEnv := map[string]string{"kubeconfig": "KUBECONFIG", "namespace": "POD_NAMESPACE"}

	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty = in-cluster config (env KUBECONFIG)")
	fs.StringVar(&c.DefaultEdgeAddress, "default-edge-address", "", "edge bind address for Services without kubeftp.io/edge-address")
	fs.StringVar(&c.DefaultEdgeGroup, "default-edge-group", "all", "inventory group serving Services without kubeftp.io/edge-group")
	fs.StringVar(&c.NodeSelector, "node-selector", "", "label selector of the nodes that may carry traffic")
	fs.StringVar(&c.NodeAddressType, "node-address-type", string(corev1.NodeInternalIP), "node address HAProxy connects to: InternalIP or ExternalIP")
	reserved := fs.String("reserved-ports", "22,10000", "edge ports no Service may claim (the HAProxy peers and stats ports; 22 and each inventory host's ansible_port are always reserved)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.WorkDir, "work-dir", os.TempDir(), "writable directory for the playbook, Ansible's home and temp files")

	switch cmd {
	case CommandWatch:
		fs.StringVar(&c.Inventory, "inventory", "", "Ansible inventory (YAML) of the edge hosts")
		fs.StringVar(&c.SSHKey, "ssh-key", "", "private key for SSH to the edge hosts")
		fs.StringVar(&c.KnownHosts, "known-hosts", "", "known_hosts file pinning the edge hosts' keys")
		fs.DurationVar(&c.CoalesceWindow, "coalesce-window", 2*time.Second, "at most one sync starts per window; events in it join the next (the first after a quiet window waits 200ms)")
		fs.DurationVar(&c.ResyncPeriod, "resync-period", 10*time.Minute, "full recompute and drift check this often")
		fs.DurationVar(&c.RetryMaxBackoff, "retry-max-backoff", 5*time.Minute, "cap of the per-host retry backoff")
		fs.BoolVar(&c.Once, "once", false, "sync once, then exit (non-zero if a host failed)")
		fs.BoolVar(&c.DryRun, "dry-run", false, "run the playbook in check mode and never write state")
		fs.StringVar(&c.MetricsAddress, "metrics-address", ":9090", "listen address of /metrics; empty = off")
		fs.StringVar(&c.HealthAddress, "health-address", ":8081", "listen address of /healthz and /readyz; empty = off")
		fs.BoolVar(&c.LeaderElect, "leader-elect", true, "hold a Lease so that only one replica pushes")
		fs.StringVar(&c.Namespace, "namespace", "", "namespace of the Lease and the state ConfigMap (env POD_NAMESPACE)")
		fs.StringVar(&c.LeaderElectionID, "leader-election-id", "kubeftp-edge", "name of the Lease")
		fs.StringVar(&c.StateConfigMap, "state-configmap", "kubeftp-edge-state", "ConfigMap keeping the last applied state")
		fs.IntVar(&c.Forks, "forks", 10, "parallel SSH connections of ansible-playbook")
	case CommandRender:
		fs.StringVar(&c.FromManifests, "from-manifests", "", "compute from Node/Service/EndpointSlice YAML (file or folder) instead of the cluster")
		fs.StringVar(&c.Format, "format", "vars", "vars (the vars JSON fed to ansible-playbook) or haproxy (the haproxy.cfg the role would write)")
	default:
		return nil, fmt.Errorf("unknown command %q", cmd)
	}

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil {
			return
		}
		names := []string{EnvName(f.Name)}
		if extra, ok := extraEnv[f.Name]; ok {
			names = append(names, extra)
		}
		for _, name := range names {
			if v := getenv(name); v != "" {
				if err := fs.Set(f.Name, v); err != nil {
					envErr = fmt.Errorf("--%s from %s: %w", f.Name, name, err)
				}
				return
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}

	ports, err := parsePorts(*reserved)
	if err != nil {
		return nil, fmt.Errorf("--reserved-ports: %w", err)
	}
	c.ReservedPorts = ports
	return c, nil
}

// EnvName is the environment variable that backs a flag: "ssh-key" → "KUBEFTP_SSH_KEY".
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func parsePorts(s string) ([]int, error) {
	var ports []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%q is not a port (1-65535)", f)
		}
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// Validate checks every field once; each error names the flag at fault.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	switch c.NodeAddressType {
	case string(corev1.NodeInternalIP), string(corev1.NodeExternalIP):
	default:
		add("--node-address-type must be InternalIP or ExternalIP, not %q", c.NodeAddressType)
	}
	if _, err := labels.Parse(c.NodeSelector); err != nil {
		add("--node-selector: %w", err)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("--log-level must be debug, info, warn or error, not %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		add("--log-format must be text or json, not %q", c.LogFormat)
	}
	if c.WorkDir == "" {
		add("--work-dir is required")
	}
	if len(errs) == 0 {
		// the pure package owns the rules of its options (address literal, group name, ports)
		opts, err := c.DesiredOptions()
		if err == nil {
			err = desired.ValidateOptions(opts)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}

	switch c.Command {
	case CommandWatch:
		for _, f := range []struct{ name, value string }{
			{"--inventory", c.Inventory}, {"--ssh-key", c.SSHKey}, {"--known-hosts", c.KnownHosts},
		} {
			if f.value == "" {
				add("%s is required", f.name)
			}
		}
		if c.CoalesceWindow < 0 {
			add("--coalesce-window must not be negative")
		}
		if c.ResyncPeriod <= 0 {
			add("--resync-period must be positive")
		}
		if c.RetryMaxBackoff < time.Second {
			add("--retry-max-backoff must be at least 1s")
		}
		if c.Forks < 1 || c.Forks > 200 {
			add("--forks must be between 1 and 200, not %d", c.Forks)
		}
		if c.Namespace == "" && (c.LeaderElect || !c.DryRun) {
			add("--namespace is required for the Lease and the state ConfigMap (or set POD_NAMESPACE)")
		}
		if c.LeaderElect && c.LeaderElectionID == "" {
			add("--leader-election-id is required with --leader-elect")
		}
		if c.StateConfigMap == "" && !c.DryRun {
			add("--state-configmap is required")
		}
		for _, f := range []struct{ name, value string }{
			{"--metrics-address", c.MetricsAddress}, {"--health-address", c.HealthAddress},
		} {
			if f.value == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(f.value); err != nil {
				add("%s: %w", f.name, err)
			}
		}
	case CommandRender:
		switch c.Format {
		case "vars", "haproxy":
		default:
			add("--format must be vars or haproxy, not %q", c.Format)
		}
	}
	return errors.Join(errs...)
}

// DesiredOptions turns the flags into the options of desired.Compute.
func (c *Config) DesiredOptions() (desired.Options, error) {
	sel, err := labels.Parse(c.NodeSelector)
	if err != nil {
		return desired.Options{}, fmt.Errorf("--node-selector: %w", err)
	}
	if c.NodeSelector == "" {
		sel = nil
	}
	return desired.Options{
		DefaultEdgeAddress: c.DefaultEdgeAddress,
		DefaultEdgeGroup:   c.DefaultEdgeGroup,
		NodeSelector:       sel,
		NodeAddressType:    corev1.NodeAddressType(c.NodeAddressType),
		ReservedPorts:      slices.Clone(c.ReservedPorts),
	}, nil
}
