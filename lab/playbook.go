package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
)

// PlaybookOptions say how to run the project's playbook against the lab's edge hosts.
type PlaybookOptions struct {
	// VarsFile is passed as -e @VarsFile (the vars contract, YAML or JSON). Required.
	VarsFile string
	// Playbook is the playbook to run; empty: <root>/ansible/site.yml.
	Playbook string
	// KnownHosts replaces the lab's known_hosts for this run (e.g. one with a wrong key).
	KnownHosts string
	// Limit is passed as --limit when not empty.
	Limit string
}

// HostResult is what the callback plugin kubeftp_result reports for one host.
type HostResult = apply.CallbackHost

// PlaybookRun is the outcome of one ansible-playbook run.
type PlaybookRun struct {
	ExitCode int
	Duration time.Duration
	// Output is ansible-playbook's stdout and stderr, for failure messages and logs.
	Output string
	// Hosts are the per-host results of the callback plugin, by inventory host name.
	Hosts map[string]HostResult
}

// RunPlaybook runs ansible-playbook with the repository's ansible.cfg, the lab's inventory and
// the given vars, over real SSH with the pinned known_hosts, and reads the per-host results the
// callback plugin writes. A non-zero exit is not an error (see ExitCode and Hosts); an error
// means the run could not happen or wrote no results.
func (l *Lab) RunPlaybook(ctx context.Context, opts PlaybookOptions) (*PlaybookRun, error) {
	if opts.VarsFile == "" {
		return nil, errors.New("run playbook: a vars file is required")
	}
	playbook := opts.Playbook
	if playbook == "" {
		playbook = filepath.Join(l.opts.Root, "ansible", "site.yml")
	}
	dir, err := os.MkdirTemp(l.opts.Dir, "run-")
	if err != nil {
		return nil, fmt.Errorf("run playbook: %w", err)
	}
	defer os.RemoveAll(dir)
	inventory := l.Inventory()
	if opts.KnownHosts != "" {
		if inventory, err = l.inventoryWithKnownHosts(dir, opts.KnownHosts); err != nil {
			return nil, fmt.Errorf("run playbook: %w", err)
		}
		defer closeMasters(filepath.Join(dir, "cp"))
	}
	vars, err := filepath.Abs(opts.VarsFile)
	if err != nil {
		return nil, fmt.Errorf("run playbook: %w", err)
	}
	resultFile := filepath.Join(dir, "result.json")
	args := []string{"-i", inventory, "-e", "@" + vars}
	if opts.Limit != "" {
		args = append(args, "--limit", opts.Limit)
	}
	args = append(args, playbook)
	cmd := exec.CommandContext(ctx, "ansible-playbook", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(),
		"ANSIBLE_CONFIG="+filepath.Join(l.opts.Root, "ansible", "ansible.cfg"),
		"KUBEFTP_RESULT_FILE="+resultFile,
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "tmp"),
		"ANSIBLE_NOCOLOR=1",
	)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	run := &PlaybookRun{Duration: time.Since(start), Output: out.String()}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr) && ctx.Err() == nil:
		run.ExitCode = exitErr.ExitCode()
	case err != nil:
		return run, fmt.Errorf("running ansible-playbook: %w", err)
	}
	l.log.Debug("ansible-playbook", "rc", run.ExitCode, "took", run.Duration)
	hosts, err := apply.ReadCallbackResults(resultFile)
	if err != nil {
		return run, fmt.Errorf("ansible-playbook exited %d, results: %w\n%s", run.ExitCode, err, run.Output)
	}
	if len(hosts) == 0 {
		return run, fmt.Errorf("ansible-playbook exited %d with no host in its results\n%s", run.ExitCode, run.Output)
	}
	run.Hosts = hosts
	return run, nil
}

// inventoryWithKnownHosts writes a copy of the lab's inventory that pins host keys from
// another known_hosts file. It also gets its own ControlPersist directory: an SSH master left
// by an earlier run would be reused without any host key check.
func (l *Lab) inventoryWithKnownHosts(dir, knownHosts string) (string, error) {
	data, err := os.ReadFile(l.Inventory())
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(knownHosts)
	if err != nil {
		return "", err
	}
	text := string(data)
	for old, repl := range map[string]string{
		"UserKnownHostsFile=" + l.KnownHosts():                         "UserKnownHostsFile=" + abs,
		"ansible_control_path_dir: " + filepath.Join(l.opts.Dir, "cp"): "ansible_control_path_dir: " + filepath.Join(dir, "cp"),
	} {
		if !strings.Contains(text, old) {
			return "", fmt.Errorf("inventory %s does not set %q", l.Inventory(), old)
		}
		text = strings.ReplaceAll(text, old, repl)
	}
	path := filepath.Join(dir, "inventory.yml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// closeMasters ends the SSH ControlPersist masters whose sockets are in dir.
func closeMasters(dir string) {
	socks, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, s := range socks {
		_ = exec.Command("ssh", "-o", "ControlPath="+s, "-O", "exit", "lab-edge").Run()
	}
}
