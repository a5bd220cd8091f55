package apply

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	goexec "github.com/apenella/go-ansible/v2/pkg/execute/exec"
)

// groupExec starts ansible-playbook as the leader of a new session, and so of a new process
// group, and when the context is cancelled kills the whole group: ansible forks workers and
// modules fork commands, and killing only the leader (what exec.CommandContext does) leaves them
// running. A new session rather than only a new group: go-ansible hands the process our stdin,
// and a background group of a terminal's session would be stopped (SIGTTIN/SIGTTOU) if it
// touched that terminal. It implements go-ansible's execute.Executabler.
type groupExec struct {
	cmd *exec.Cmd // the last command made, to read its pid and exit status
}

func (g *groupExec) Command(name string, arg ...string) goexec.Cmder {
	return g.CommandContext(context.Background(), name, arg...)
}

func (g *groupExec) CommandContext(ctx context.Context, name string, arg ...string) goexec.Cmder {
	cmd := exec.CommandContext(ctx, name, arg...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Cancel = func() error {
		killGroup(cmd.Process.Pid)
		return nil
	}
	// Should something outside the group hold the output pipes open, Wait gives up after this.
	cmd.WaitDelay = 5 * time.Second
	g.cmd = cmd
	return cmd
}

// killGroup sends SIGKILL to every process of the group pgid. A group that no longer exists
// is not an error.
func killGroup(pgid int) {
	if pgid > 1 {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// reapGroup kills what is left of the group pgid and waits, up to timeout, until no process of
// it is alive. Killed workers whose parent died are re-parented to init, or to this process when
// it runs as PID 1 in a container: those it reaps itself, by pid, so that no zombie stays behind
// and no other child's exit status is taken. Zombies of another parent are dead already; their
// parent (init) collects them. It returns the number of processes still alive or ours to reap.
func reapGroup(pgid int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	self := os.Getpid()
	for {
		killGroup(pgid)
		left := 0
		for _, m := range groupMembers(pgid) {
			if m.ppid == self {
				var ws syscall.WaitStatus
				if pid, _ := syscall.Wait4(m.pid, &ws, syscall.WNOHANG, nil); pid == m.pid {
					continue
				}
			}
			if m.state != 'Z' || m.ppid == self {
				left++
			}
		}
		if left == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type procInfo struct {
	pid, ppid, pgid int
	state           byte // R, S, D, Z, ...
}

// groupMembers lists the processes (zombies included) of group pgid from /proc.
func groupMembers(pgid int) []procInfo {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []procInfo
	for _, path := range stats {
		p, ok := readProcStat(path)
		if ok && p.pgid == pgid {
			out = append(out, p)
		}
	}
	return out
}

// readProcStat parses pid, ppid and pgrp from a /proc/<pid>/stat file. The command name may
// contain spaces and parentheses, so fields are counted from the last ')'.
func readProcStat(path string) (procInfo, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return procInfo{}, false
	}
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 1 || end < open {
		return procInfo{}, false
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(data[:open])))
	if err != nil {
		return procInfo{}, false
	}
	// After ") ": state ppid pgrp ...
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 3 {
		return procInfo{}, false
	}
	ppid, err1 := strconv.Atoi(string(fields[1]))
	pgrp, err2 := strconv.Atoi(string(fields[2]))
	if err := errors.Join(err1, err2); err != nil || len(fields[0]) != 1 {
		return procInfo{}, false
	}
	return procInfo{pid: pid, ppid: ppid, pgid: pgrp, state: fields[0][0]}, true
}
