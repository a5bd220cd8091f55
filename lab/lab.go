// Package lab drives the network-namespace lab of lab.sh from Go: it brings a lab up and
// down, runs commands inside its namespaces, moves files through the edge with real FTP
// clients, holds FTP sessions open by hand, runs the project's playbook against the lab's
// edge hosts and reads the edge HAProxy's state. Tests and the demo use it; it needs root.
package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options describe one lab. Two labs with different Prefix and Net never collide.
type Options struct {
	// Root is the repository checkout holding lab/lab.sh and ansible/. Empty: found by walking
	// up from the working directory to the go.mod of this module.
	Root string
	// Prefix names the lab's namespaces (<prefix>-e1, <prefix>-n1, ...): [a-z][a-z0-9]{0,9}.
	Prefix string
	// Net is the first two octets of the lab's private /16, e.g. "10.213".
	Net string
	// Nodes, Edges and Clients count Kubernetes nodes, edge hosts and client source addresses.
	Nodes, Edges, Clients int
	// PassiveMin and PassiveMax set the pod's passive range (lab.sh LAB_PASV_MIN/MAX) when
	// not zero; the default 21100-21110 is too narrow for dozens of parallel sessions.
	PassiveMin, PassiveMax int
	// Dir is the run dir (keys, inventory, configs, logs). Empty: /tmp/kubeftp-lab-<prefix>.
	Dir string
	// Logger receives one line per lab.sh command; nil discards.
	Logger *slog.Logger
}

// Lab is a lab that is up. Its fields are fixed by lab.sh's addressing plan.
type Lab struct {
	opts   Options
	script string
	log    *slog.Logger
	env    map[string]string
}

// module is the path in go.mod that identifies the repository root.
const module = "github.com/kubeftp/kubeftp-edge"

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)

// Up builds the lab (lab.sh up) and returns a handle to it. On error the half-built lab is
// torn down again.
func Up(ctx context.Context, opts Options) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, iptables)")
	}
	if !prefixRE.MatchString(opts.Prefix) {
		return nil, fmt.Errorf("lab prefix %q: want [a-z][a-z0-9]{0,9}", opts.Prefix)
	}
	if opts.Net == "" {
		return nil, errors.New("lab net is required, e.g. 10.213")
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Edges == 0 {
		opts.Edges = 1
	}
	if opts.Clients == 0 {
		opts.Clients = 6
	}
	if opts.Dir == "" {
		opts.Dir = "/tmp/kubeftp-lab-" + opts.Prefix
	}
	if opts.Root == "" {
		root, err := findRoot()
		if err != nil {
			return nil, err
		}
		opts.Root = root
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Lab{opts: opts, script: filepath.Join(opts.Root, "lab", "lab.sh"), log: log}
	if _, err := l.Script(ctx, "up"); err != nil {
		if derr := l.Down(); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	out, err := l.Script(ctx, "env")
	if err != nil {
		return nil, errors.Join(err, l.Down())
	}
	l.env = parseEnv(out)
	return l, nil
}

// Down tears the lab down (lab.sh down): its processes, namespaces and routes. Safe to call
// twice. It uses its own deadline so that it also runs after the test's context ended.
func (l *Lab) Down() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := l.Script(ctx, "down")
	return err
}

// Script runs a lab.sh subcommand with this lab's parameters and returns its stdout.
func (l *Lab) Script(ctx context.Context, args ...string) (string, error) {
	full := append([]string{
		"--prefix", l.opts.Prefix, "--net", l.opts.Net, "--dir", l.opts.Dir,
		"--nodes", strconv.Itoa(l.opts.Nodes), "--edges", strconv.Itoa(l.opts.Edges),
		"--clients", strconv.Itoa(l.opts.Clients),
	}, args...)
	var env []string
	if l.opts.PassiveMin > 0 && l.opts.PassiveMax > 0 {
		env = []string{"LAB_PASV_MIN=" + strconv.Itoa(l.opts.PassiveMin), "LAB_PASV_MAX=" + strconv.Itoa(l.opts.PassiveMax)}
	}
	start := time.Now()
	stdout, stderr, err := runEnv(ctx, env, l.script, full...)
	l.log.Debug("lab.sh", "args", strings.Join(args, " "), "took", time.Since(start), "err", err)
	if err != nil {
		return stdout, fmt.Errorf("lab.sh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr))
	}
	return stdout, nil
}

// Exec runs a command inside a namespace of the lab ("client", "pod", "e1", "n2", ...) and
// returns its stdout; stderr is part of the error.
func (l *Lab) Exec(ctx context.Context, ns string, name string, args ...string) (string, error) {
	stdout, stderr, err := run(ctx, "ip", append([]string{"netns", "exec", l.Namespace(ns), name}, args...)...)
	if err != nil {
		return stdout, fmt.Errorf("%s in %s: %w: %s", name, ns, err, strings.TrimSpace(stderr))
	}
	return stdout, nil
}

// Start starts a long-running command inside a namespace, in its own process group, and
// returns a stop function that kills that group and waits for it.
func (l *Lab) Start(ctx context.Context, ns string, name string, args ...string) (stop func(), err error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.Namespace(ns), name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s in %s: %w", name, ns, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}, nil
}

// Namespace is the full name of a lab namespace ("e1" -> "<prefix>-e1").
func (l *Lab) Namespace(ns string) string { return l.opts.Prefix + "-" + ns }

// Dir is the lab's run dir.
func (l *Lab) Dir() string { return l.opts.Dir }

// Root is the repository checkout the lab runs from.
func (l *Lab) Root() string { return l.opts.Root }

// Inventory is the lab's Ansible inventory (YAML, group edge).
func (l *Lab) Inventory() string { return l.env["LAB_INVENTORY"] }

// KnownHosts is the known_hosts file pinning every edge's host key.
func (l *Lab) KnownHosts() string { return l.env["LAB_KNOWN_HOSTS"] }

// SSHKey is the private key Ansible logs in with.
func (l *Lab) SSHKey() string { return l.env["LAB_SSH_KEY"] }

// Nodes is the number of nodes; node k (1-based) is named "n<k>".
func (l *Lab) Nodes() int { return l.opts.Nodes }

// Edges is the number of edge hosts; edge i (1-based) is inventory host "e<i>".
func (l *Lab) Edges() int { return l.opts.Edges }

// EdgeAddr is the public address of edge i: SSH, and where the FTP services bind.
func (l *Lab) EdgeAddr(i int) netip.Addr {
	if i > 9 {
		// edges 10 and up sit above the client addresses (lab.sh edge_ip)
		return l.addr(1, 100+i)
	}
	return l.addr(1, i)
}

// NodeAddr is the address of node k on the node segment (what HAProxy connects to).
func (l *Lab) NodeAddr(k int) netip.Addr { return l.addr(2, 10+k) }

// PodAddr is the vsftpd pod's address.
func (l *Lab) PodAddr() netip.Addr { return l.addr(3, 1) }

// ClientAddrs are the source addresses of the client namespace.
func (l *Lab) ClientAddrs() []netip.Addr {
	out := make([]netip.Addr, l.opts.Clients)
	for i := range out {
		out[i] = l.addr(1, 10+i)
	}
	return out
}

// EdgeConfigPath is the haproxy.cfg edge i's HAProxy runs on (the role manages it).
func (l *Lab) EdgeConfigPath(i int) string { return filepath.Join(l.edgeDir(i), "haproxy.cfg") }

// EdgeMasterSocket is edge i's HAProxy master CLI socket.
func (l *Lab) EdgeMasterSocket(i int) string { return filepath.Join(l.edgeDir(i), "master.sock") }

// EdgeStatsSocket is edge i's HAProxy stats socket (admin level).
func (l *Lab) EdgeStatsSocket(i int) string { return filepath.Join(l.edgeDir(i), "stats.sock") }

// EdgeHostKey is the public host key file of edge i.
func (l *Lab) EdgeHostKey(i int) string {
	return filepath.Join(l.edgeDir(i), "ssh_host_ed25519_key.pub")
}

// ControlNodePort, PassiveMin, PassiveMax and PassiveOffset describe the NodePorts lab.sh up
// gives the vsftpd pod on every node.
func (l *Lab) ControlNodePort() int { return l.envInt("LAB_CTRL_NODEPORT") }
func (l *Lab) PassiveMin() int      { return l.envInt("LAB_PASV_MIN") }
func (l *Lab) PassiveMax() int      { return l.envInt("LAB_PASV_MAX") }
func (l *Lab) PassiveOffset() int   { return l.envInt("LAB_PASV_OFFSET") }

// FTPRoot is the directory the vsftpd pod serves; "pub" in it is writable.
func (l *Lab) FTPRoot() string { return filepath.Join(l.opts.Dir, "ftproot") }

// NodeFail removes every NodePort of node k: connections to it get a RST.
func (l *Lab) NodeFail(ctx context.Context, k int) error {
	_, err := l.Script(ctx, "node-fail", strconv.Itoa(k))
	return err
}

// NodeRestore puts node k's NodePorts back.
func (l *Lab) NodeRestore(ctx context.Context, k int) error {
	_, err := l.Script(ctx, "node-restore", strconv.Itoa(k))
	return err
}

// RestartFTPServer restarts the pod's vsftpd with the passive range min-max (lab.sh
// vsftpd-restart), as a rollout with a new passive range would: its open sessions end.
func (l *Lab) RestartFTPServer(ctx context.Context, min, max int) error {
	if _, err := l.Script(ctx, "vsftpd-restart", strconv.Itoa(min), strconv.Itoa(max)); err != nil {
		return err
	}
	out, err := l.Script(ctx, "env")
	if err != nil {
		return err
	}
	l.env = parseEnv(out)
	return nil
}

// Logs returns the tail of every log of the lab (daemons, transfers), for failing tests.
func (l *Lab) Logs(lines int) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(l.opts.Dir, "log", "*.log"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(all) > lines {
			all = all[len(all)-lines:]
		}
		fmt.Fprintf(&b, "==> %s <==\n%s\n", f, strings.Join(all, "\n"))
	}
	return b.String()
}

func (l *Lab) edgeDir(i int) string { return filepath.Join(l.opts.Dir, "e"+strconv.Itoa(i)) }

func (l *Lab) addr(third, fourth int) netip.Addr {
	a, err := netip.ParseAddr(fmt.Sprintf("%s.%d.%d", l.opts.Net, third, fourth))
	if err != nil {
		return netip.Addr{}
	}
	return a
}

func (l *Lab) envInt(key string) int {
	n, _ := strconv.Atoi(l.env[key])
	return n
}

// parseEnv reads lab.sh env output: KEY=value or KEY="value with spaces".
func parseEnv(out string) map[string]string {
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		env[k] = strings.Trim(v, `"`)
	}
	return env
}

// run executes a command in its own process group (killed as a whole when ctx ends) and
// returns its stdout and stderr.
func run(ctx context.Context, name string, args ...string) (string, string, error) {
	return runEnv(ctx, nil, name, args...)
}

// runEnv is run with extra environment variables.
func runEnv(ctx context.Context, env []string, name string, args ...string) (string, string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// daemons started by lab.sh keep no pipe open, but a stray one must not hang us forever
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+module+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", module)
		}
		dir = parent
	}
}
