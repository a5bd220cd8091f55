package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kubeftp/kubeftp-edge/lab"
)

// Sandbox is a network namespace created for one measurement, so that an HAProxy binding
// thousands of ports collides with nothing on the machine. Node addresses have no route in
// it: health checks fail at once and cost no waiting.
type Sandbox struct {
	name string
	dir  string
	// Limits are passed to prlimit for every HAProxy started in the sandbox.
	memLimit int64
}

// sandboxSeq makes sandbox names unique within this process.
var sandboxSeq int

// NewSandbox creates a network namespace with lo up and addr on it. dir holds sockets and
// configs. memLimit caps each HAProxy's address space (bytes), so a config too big for the
// machine fails with an allocation error instead of pushing others' processes out of memory.
func NewSandbox(ctx context.Context, dir, addr string, memLimit int64) (*Sandbox, error) {
	sandboxSeq++
	s := &Sandbox{name: fmt.Sprintf("kfb%d-%d", os.Getpid(), sandboxSeq), dir: dir, memLimit: memLimit}
	if _, err := runOut(ctx, "ip", "netns", "add", s.name); err != nil {
		return nil, fmt.Errorf("creating the benchmark namespace: %w", err)
	}
	for _, args := range [][]string{
		{"-n", s.name, "link", "set", "lo", "up"},
		{"-n", s.name, "addr", "add", addr + "/32", "dev", "lo"},
	} {
		if _, err := runOut(ctx, "ip", args...); err != nil {
			return nil, errors.Join(fmt.Errorf("setting up namespace %s: %w", s.name, err), s.Close())
		}
	}
	return s, nil
}

// Close deletes the namespace.
func (s *Sandbox) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := runOut(ctx, "ip", "netns", "del", s.name); err != nil {
		return fmt.Errorf("deleting namespace %s: %w", s.name, err)
	}
	return nil
}

// haproxyArgv is the command line that runs HAProxy inside the sandbox under its limits.
func (s *Sandbox) haproxyArgv(args ...string) []string {
	argv := []string{"netns", "exec", s.name, "prlimit",
		"--as=" + strconv.FormatInt(s.memLimit, 10), "haproxy"}
	return append(argv, args...)
}

// Check runs `haproxy -c` on cfg and returns how long it took.
func (s *Sandbox) Check(ctx context.Context, cfg string) (time.Duration, error) {
	start := time.Now()
	out, err := runOut(ctx, "ip", s.haproxyArgv("-c", "-f", cfg)...)
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("haproxy -c: %w: %s", err, lastLines(alerts(out), 3))
	}
	return took, nil
}

// HAProxy is a master-worker HAProxy running in a sandbox.
type HAProxy struct {
	cmd    *exec.Cmd
	socket string
	out    *tailWriter
	done   chan struct{}
}

// Start starts HAProxy in master-worker mode with a master CLI socket and returns once its
// first worker runs, with how long that took.
func (s *Sandbox) Start(ctx context.Context, cfg string) (*HAProxy, time.Duration, error) {
	sock := filepath.Join(s.dir, "master.sock")
	_ = os.Remove(sock)
	h := &HAProxy{socket: sock, out: &tailWriter{max: 4096}, done: make(chan struct{})}
	h.cmd = exec.Command("ip", s.haproxyArgv("-W", "-S", sock, "-f", cfg)...)
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	h.cmd.Stdout, h.cmd.Stderr = h.out, h.out
	start := time.Now()
	if err := h.cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("starting haproxy: %w", err)
	}
	go func() { _ = h.cmd.Wait(); close(h.done) }()
	for {
		if p, err := h.ShowProc(ctx); err == nil {
			if _, ok := p.current(); ok {
				return h, time.Since(start), nil
			}
		}
		select {
		case <-h.done:
			return nil, 0, fmt.Errorf("haproxy exited before its first worker ran: %s", lastLines(alerts(h.out.String()), 3))
		case <-ctx.Done():
			h.Stop()
			return nil, 0, fmt.Errorf("waiting for the first worker: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stop ends the master and its workers (SIGTERM, then SIGKILL to the process group).
func (h *HAProxy) Stop() {
	_ = syscall.Kill(h.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
	}
	_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
	<-h.done
}

// procs is the master CLI's "show proc": the master's failed reloads and the workers.
type procs struct {
	failed  int
	workers []proc
}

type proc struct{ pid, reloads int }

// current is the newest worker: every reload bumps the count of the workers it finds.
func (p procs) current() (proc, bool) {
	var cur proc
	for i, w := range p.workers {
		if i == 0 || w.reloads < cur.reloads {
			cur = w
		}
	}
	return cur, len(p.workers) > 0
}

// ShowProc reads the master CLI's "show proc".
func (h *HAProxy) ShowProc(ctx context.Context) (procs, error) {
	out, err := socketCommand(ctx, h.socket, "show proc")
	if err != nil {
		return procs{}, err
	}
	var p procs
	master := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		pid, err1 := strconv.Atoi(f[0])
		reloads, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			return procs{}, fmt.Errorf("show proc: line %q", sc.Text())
		}
		switch f[1] {
		case "master":
			master = true
			if len(f) >= 5 && f[3] == "[failed:" {
				p.failed, _ = strconv.Atoi(strings.TrimSuffix(f[4], "]"))
			}
		case "worker":
			p.workers = append(p.workers, proc{pid: pid, reloads: reloads})
		}
	}
	if !master {
		return procs{}, fmt.Errorf("show proc: no master in %q", out)
	}
	return p, nil
}

// WorkerRSS is the resident set size of the current worker, in bytes.
func (h *HAProxy) WorkerRSS(ctx context.Context) (int64, error) {
	p, err := h.ShowProc(ctx)
	if err != nil {
		return 0, err
	}
	w, ok := p.current()
	if !ok {
		return 0, errors.New("no worker runs")
	}
	return processRSS(w.pid)
}

// Reload sends "reload" to the master CLI and returns the time until a new worker runs. A
// reload the master gives up on (its failed counter grows) is an error.
func (h *HAProxy) Reload(ctx context.Context) (time.Duration, error) {
	before, err := h.ShowProc(ctx)
	if err != nil {
		return 0, err
	}
	old, _ := before.current()
	start := time.Now()
	// HAProxy 2.6 answers nothing to reload: the new worker in "show proc" is the answer.
	if _, err := socketCommand(ctx, h.socket, "reload"); err != nil {
		return 0, fmt.Errorf("reload: %w", err)
	}
	for {
		if p, err := h.ShowProc(ctx); err == nil {
			if p.failed > before.failed {
				return 0, fmt.Errorf("reload failed: %s", lastLines(alerts(h.out.String()), 3))
			}
			if w, ok := p.current(); ok && w.pid != old.pid {
				return time.Since(start), nil
			}
		}
		select {
		case <-h.done:
			return 0, fmt.Errorf("haproxy exited during a reload: %s", lastLines(alerts(h.out.String()), 3))
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for the new worker: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// alerts drops HAProxy's NOTICE and WARNING lines from its output.
func alerts(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "[NOTICE]") && !strings.HasPrefix(l, "[WARNING]") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// processRSS reads VmRSS of a process from /proc.
func processRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the RSS of %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS of %d: %q", pid, v)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

// socketCommand waits up to 30 s: a master re-executing a per-port config of half a million
// servers takes that long to answer.
func socketCommand(ctx context.Context, path, command string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return lab.SocketCommand(ctx, path, command)
}
