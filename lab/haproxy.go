package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Proc is one line of the master CLI's "show proc".
type Proc struct {
	PID     int
	Type    string // master, worker, program
	Reloads int
}

// Procs is the parsed "show proc" of an edge's HAProxy master.
type Procs struct {
	Master Proc
	Failed int // reloads the master gave up on (the old workers kept running)
	// Workers are the current worker and old ones still draining their connections.
	Workers []Proc
}

// CurrentWorker is the newest worker: the one serving new connections. Every reload, even a
// failed one, bumps the reload count of the workers it finds, so the newest has the lowest.
func (p Procs) CurrentWorker() (Proc, bool) {
	var cur Proc
	for i, w := range p.Workers {
		if i == 0 || w.Reloads < cur.Reloads {
			cur = w
		}
	}
	return cur, len(p.Workers) > 0
}

// MasterCLI sends one command to edge i's HAProxy master socket and returns the answer.
func (l *Lab) MasterCLI(ctx context.Context, i int, command string) (string, error) {
	return SocketCommand(ctx, l.EdgeMasterSocket(i), command)
}

// StatsCLI sends one command to edge i's HAProxy stats socket and returns the answer.
func (l *Lab) StatsCLI(ctx context.Context, i int, command string) (string, error) {
	return SocketCommand(ctx, l.EdgeStatsSocket(i), command)
}

// ShowProc reads and parses "show proc" of edge i's master.
func (l *Lab) ShowProc(ctx context.Context, i int) (Procs, error) {
	out, err := l.MasterCLI(ctx, i, "show proc")
	if err != nil {
		return Procs{}, err
	}
	return parseShowProc(out)
}

func parseShowProc(out string) (Procs, error) {
	var p Procs
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			return Procs{}, fmt.Errorf("show proc: line %q", sc.Text())
		}
		reloads, err := strconv.Atoi(f[2])
		if err != nil {
			return Procs{}, fmt.Errorf("show proc: line %q", sc.Text())
		}
		proc := Proc{PID: pid, Type: f[1], Reloads: reloads}
		switch f[1] {
		case "master":
			p.Master = proc
			// "<reloads> [failed: N]"
			if len(f) >= 5 && f[3] == "[failed:" {
				if p.Failed, err = strconv.Atoi(strings.TrimSuffix(f[4], "]")); err != nil {
					return Procs{}, fmt.Errorf("show proc: line %q", sc.Text())
				}
			}
		case "worker":
			p.Workers = append(p.Workers, proc)
		}
	}
	if p.Master.PID == 0 {
		return Procs{}, fmt.Errorf("show proc: no master in %q", out)
	}
	return p, nil
}

// ServerState is one server of "show servers state".
type ServerState struct {
	Backend string
	Server  string
	Addr    string
	// OpState is srv_op_state: 0 stopped (down), 1 starting, 2 running (up), 3 stopping.
	OpState int
	// Weight is srv_uweight, the current weight: 0 for a drained (NotReady) node.
	Weight int
}

// ServersState reads "show servers state" of every backend of edge i.
func (l *Lab) ServersState(ctx context.Context, i int) ([]ServerState, error) {
	out, err := l.StatsCLI(ctx, i, "show servers state")
	if err != nil {
		return nil, err
	}
	var states []ServerState
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// the first line is the format version, the second the column names
		if len(f) < 8 || strings.HasPrefix(f[0], "#") {
			continue
		}
		op, err1 := strconv.Atoi(f[5])
		w, err2 := strconv.Atoi(f[7])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("show servers state: line %q", sc.Text())
		}
		states = append(states, ServerState{Backend: f[1], Server: f[3], Addr: f[4], OpState: op, Weight: w})
	}
	return states, nil
}

// DrainedLines counts the server lines of node in a haproxy.cfg, and how many of them carry
// weight 0 (the role drains a NotReady node so).
func DrainedLines(cfg []byte, node string) (lines, drained int) {
	prefix := []byte("    server " + node + " ")
	for _, line := range bytes.Split(cfg, []byte("\n")) {
		if bytes.HasPrefix(line, prefix) {
			lines++
			if bytes.Contains(line, []byte(" weight 0 ")) {
				drained++
			}
		}
	}
	return lines, drained
}

// EdgeConfig is edge i's haproxy.cfg: its bytes and its file info (for mtime checks).
func (l *Lab) EdgeConfig(i int) ([]byte, os.FileInfo, error) {
	path := l.EdgeConfigPath(i)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the config of edge %d: %w", i, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the config of edge %d: %w", i, err)
	}
	return data, info, nil
}

// WriteEdgeConfig replaces edge i's haproxy.cfg (atomically) without reloading HAProxy.
// Tests use it to start from a hand-written config; the role is what manages it otherwise.
func (l *Lab) WriteEdgeConfig(i int, cfg []byte) error {
	path := l.EdgeConfigPath(i)
	tmp := path + ".lab-tmp"
	if err := os.WriteFile(tmp, cfg, 0o644); err != nil {
		return fmt.Errorf("writing the config of edge %d: %w", i, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing the config of edge %d: %w", i, err)
	}
	return nil
}

// Reload reloads edge i's HAProxy through its master socket (lab.sh haproxy-reload): it
// returns once a new worker runs, or an error when the master refused the new config.
func (l *Lab) Reload(ctx context.Context, i int) error {
	_, err := l.Script(ctx, "haproxy-reload", strconv.Itoa(i))
	return err
}

// SocketCommand sends one command to an HAProxy stats or master CLI socket and returns the
// answer; it waits until ctx's deadline, or 5 s when ctx has none.
func SocketCommand(ctx context.Context, path, command string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("HAProxy socket %s: %w", path, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, command+"\n"); err != nil {
		return "", fmt.Errorf("HAProxy socket %s: %s: %w", path, command, err)
	}
	// without "prompt" mode HAProxy answers once the request side is closed, then hangs up
	if uc, ok := conn.(*net.UnixConn); ok {
		if err := uc.CloseWrite(); err != nil {
			return "", fmt.Errorf("HAProxy socket %s: %s: %w", path, command, err)
		}
	}
	out, err := io.ReadAll(conn)
	if err != nil {
		return "", fmt.Errorf("HAProxy socket %s: %s: %w", path, command, err)
	}
	return string(out), nil
}
