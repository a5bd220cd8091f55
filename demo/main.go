// Command kubeftp-demo runs the whole kubeftp-edge system on this machine and shows it at
// work, step by step (`make demo`): a real kube-apiserver + etcd, a network-namespace lab with
// an edge host (HAProxy + sshd), four nodes with NodePorts, a vsftpd pod and an FTP client,
// and the kubeftp-edge watcher pushing the embedded playbook over SSH.
//
//	kubeftp-demo up   [--dir /tmp/kubeftp-demo] [--watcher bin/kubeftp-edge] [--hold=true]
//	kubeftp-demo down [--dir /tmp/kubeftp-demo]
//
// up first cleans whatever an earlier demo left, then runs the steps and, with --hold, keeps
// everything running for a look around until Ctrl-C or `kubeftp-demo down`. A failure or a
// signal tears everything down. Needs root (network namespaces).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kubeftp/kubeftp-edge/demo/scenario"
	"github.com/kubeftp/kubeftp-edge/lab/kube"
)

const (
	labPrefix = "kfdemo"
	labNet    = "10.250"
	// pidFile holds the pid of the running `kubeftp-demo up`, for down.
	pidFile = "demo.pid"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "up" && args[0] != "down") {
		fmt.Fprintln(stderr, "usage: kubeftp-demo up|down [flags]")
		return 2
	}
	fs := flag.NewFlagSet("kubeftp-demo "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "/tmp/kubeftp-demo", "run dir: lab, control plane, watcher logs and pids")
	watcher := fs.String("watcher", "bin/kubeftp-edge", "the kubeftp-edge binary")
	hold := fs.Bool("hold", true, "keep everything running after the steps until Ctrl-C or `kubeftp-demo down`")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if !filepath.IsAbs(*dir) {
		fmt.Fprintf(stderr, "--dir %q must be an absolute path\n", *dir)
		return 2
	}
	root, err := kube.RepoRoot()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if args[0] == "down" {
		if err := down(*dir, root, stdout); err != nil {
			fmt.Fprintf(stderr, "demo down: %v\n", err)
			return 1
		}
		return 0
	}
	bin, err := filepath.Abs(*watcher)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "the demo needs root: it builds network namespaces")
		return 1
	}
	if err := up(*dir, root, bin, *hold, stdout); err != nil {
		fmt.Fprintf(stderr, "\ndemo FAILED: %v\n", err)
		return 1
	}
	return 0
}

func up(dir, root, bin string, hold bool, out io.Writer) (err error) {
	if err := down(dir, root, io.Discard); err != nil {
		return fmt.Errorf("cleaning up an earlier demo: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	total := time.Now()

	fmt.Fprintf(out, "kubeftp-edge demo (run dir %s)\n\n", dir)
	fmt.Fprintf(out, "  starting kube-apiserver + etcd, and the lab: edge e1 (HAProxy + sshd), nodes n1-n4, vsftpd pod, client ... ")
	t0 := time.Now()
	env, err := scenario.Start(ctx, scenario.Options{Dir: dir, Prefix: labPrefix, Net: labNet, WatcherBin: bin, Root: root})
	if err != nil {
		fmt.Fprintln(out, "failed")
		return err
	}
	defer func() {
		fmt.Fprint(out, "\n  tearing down (watcher, API server, lab) ... ")
		t := time.Now()
		if cerr := env.Close(); cerr != nil {
			fmt.Fprintln(out, "with errors")
			err = errors.Join(err, cerr)
		} else {
			fmt.Fprintf(out, "done in %s\n", secs(time.Since(t)))
		}
		_ = os.Remove(filepath.Join(dir, pidFile))
	}()
	fmt.Fprintf(out, "%s\n", secs(time.Since(t0)))
	fmt.Fprintf(out, "  cluster: Nodes n1 n2 n3 Ready; Service %s/%s (label kubeftp.io/expose=true) with control NodePort %d,\n",
		scenario.Namespace, scenario.Service, env.Lab.ControlNodePort())
	fmt.Fprintf(out, "           passive ports %d-%d on NodePorts %d-%d, and its EndpointSlice\n\n",
		env.Lab.PassiveMin(), env.Lab.PassiveMax(), env.Lab.PassiveMin()+env.Lab.PassiveOffset(), env.Lab.PassiveMax()+env.Lab.PassiveOffset())

	steps := scenario.DefaultPlan().Steps()
	outcomes := make([]scenario.Outcome, len(steps))
	took := make([]time.Duration, len(steps))
	for i, s := range steps {
		fmt.Fprintf(out, "[%d/%d] %s\n", i+1, len(steps), s.Title)
		t := time.Now()
		o, err := s.Run(ctx, env)
		took[i] = time.Since(t)
		if err != nil {
			if ctx.Err() != nil {
				fmt.Fprintf(out, "      interrupted after %s\n", secs(took[i]))
				return errors.New("interrupted")
			}
			fmt.Fprintf(out, "      FAILED after %s\n", secs(took[i]))
			return fmt.Errorf("step %d: %w", i+1, err)
		}
		outcomes[i] = o
		fmt.Fprintf(out, "      edge serves %s\n", o.Served)
		fmt.Fprintf(out, "      %s after the change, push finished after %s, %d HAProxy reload(s)\n",
			secs(o.EdgeAfter), secs(o.Applied), o.Reloads)
		fmt.Fprintf(out, "      FTP through the edge: %s\n", o.FTP)
		fmt.Fprintf(out, "      ok (%s)\n\n", secs(took[i]))
	}

	fmt.Fprintf(out, "Summary: all %d steps passed in %s (start to last step)\n\n", len(steps), secs(time.Since(total)))
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  step\tedge updated\tpush done\treloads\tFTP\tstep time")
	names := []string{"1 configure from nothing", "2 node NotReady", "3 node added", "4 passive range"}
	for i, o := range outcomes {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\tok\t%s\n", names[i], secs(o.EdgeAfter), secs(o.Applied), o.Reloads, secs(took[i]))
	}
	tw.Flush()

	fmt.Fprintf(out, "\nLook around (as root, in another terminal):\n")
	fmt.Fprintf(out, "  export KUBECONFIG=%s\n", env.Cluster.Kubeconfig)
	fmt.Fprintf(out, "  kubectl get nodes,svc,endpointslices -A\n")
	fmt.Fprintf(out, "  kubectl -n %s get events            # Applied events of the watcher\n", scenario.Namespace)
	fmt.Fprintf(out, "  kubectl -n %s get configmap %s -o yaml   # what was applied, per host\n", scenario.SystemNamespace, scenario.StateConfigMap)
	fmt.Fprintf(out, "  cat %s                    # the edge's haproxy.cfg\n", env.Lab.EdgeConfigPath(1))
	fmt.Fprintf(out, "  curl -s %s | grep ^kubeftp_edge   # the watcher's metrics\n", env.MetricsURL)
	fmt.Fprintf(out, "  less %s             # the watcher's log\n", env.WatcherLog())
	fmt.Fprintf(out, "  ip netns exec %s-client curl -s ftp://%s/pub/   # FTP through the edge\n", labPrefix, env.Lab.EdgeAddr(1))
	fmt.Fprintf(out, "  make demo-down                      # stop everything (or Ctrl-C here)\n")
	if !hold {
		return nil
	}
	fmt.Fprintf(out, "\nRunning until Ctrl-C or `make demo-down` ...\n")
	<-ctx.Done()
	return nil
}

// down stops an earlier demo: the running `kubeftp-demo up` first (it tears down itself), then
// anything it left — the processes in its pid list, checked by name, and the lab.
func down(dir, root string, out io.Writer) error {
	var errs []error
	if pid, ok := readPID(filepath.Join(dir, pidFile)); ok && pid != os.Getpid() && comm(pid) == "kubeftp-demo" {
		fmt.Fprintf(out, "stopping the running demo (pid %d) ...\n", pid)
		if !terminate(pid, "kubeftp-demo", 90*time.Second) {
			errs = append(errs, fmt.Errorf("the demo (pid %d) did not stop within 90s; killed", pid))
		}
	}
	if data, err := os.ReadFile(filepath.Join(dir, "pids")); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			name, p, ok := strings.Cut(line, " ")
			pid, err := strconv.Atoi(p)
			if !ok || err != nil || comm(pid) != name {
				continue
			}
			fmt.Fprintf(out, "stopping %s (pid %d) left by the demo\n", name, pid)
			terminate(pid, name, 15*time.Second)
		}
		_ = os.Remove(filepath.Join(dir, "pids"))
	}
	if _, err := os.Stat(filepath.Join(dir, "lab", "lab.env")); err == nil {
		cmd := exec.Command(filepath.Join(root, "lab", "lab.sh"), "--prefix", labPrefix, "--dir", filepath.Join(dir, "lab"), "down")
		if b, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("lab down: %w: %s", err, b))
		}
	}
	_ = os.Remove(filepath.Join(dir, pidFile))
	left, err := filepath.Glob("/run/netns/" + labPrefix + "-*")
	if err == nil && len(left) > 0 {
		errs = append(errs, fmt.Errorf("network namespaces left: %v", left))
	}
	if len(errs) == 0 {
		fmt.Fprintln(out, "demo down: no demo process, no lab namespace left")
	}
	return errors.Join(errs...)
}

// terminate sends SIGTERM, waits for the process to go, then SIGKILLs it; false if it had to.
func terminate(pid int, name string, wait time.Duration) bool {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if comm(pid) != name {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return false
}

func readPID(path string) (int, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid, err == nil && pid > 0
}

// comm is the name of a live process ("" when it is gone or a zombie).
func comm(pid int) string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// "pid (comm) S ...": a zombie is as good as gone
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
		return ""
	}
	c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(c))
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }
