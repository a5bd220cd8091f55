package bench

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// Layouts compared by ConfigScale.
const (
	// LayoutCompact is what the role renders: one passive listener for the whole range,
	// servers with a port offset tracking their control twin.
	LayoutCompact = "compact"
	// LayoutPerPort is one frontend and one backend per passive port with a server per node,
	// the way hand-written and chart-generated configs do it.
	LayoutPerPort = "per-port"
)

// Addresses used inside the sandbox: the edge binds scaleBind, nodes live in 10.251.0.0/16
// (no route there, so health checks fail immediately).
const (
	scaleBind     = "10.250.1.1"
	scaleOffset   = 11000
	scalePasvBase = 21100
)

// ScaleOptions say which cells ConfigScale measures and how often.
type ScaleOptions struct {
	// Root is the repository checkout (ansible/render.yml renders the compact layout).
	Root string
	// Dir holds the rendered configs and sockets; it is removed afterwards.
	Dir   string
	Nodes []int
	Ports []int
	// Reps is how many times `haproxy -c` and a reload are timed per cell (the median is
	// reported); cells with more than BigServers per-port servers get one repetition.
	Reps       int
	BigServers int
	// MemLimit caps each HAProxy's address space, in bytes.
	MemLimit int64
	Logger   *slog.Logger
}

// ScaleRow is the measurement of one layout in one cell.
type ScaleRow struct {
	Nodes, Ports int
	Layout       string
	Servers      int   // server lines in the config
	Bytes        int64 // rendered size
	Check        time.Duration
	Start        time.Duration
	RSS          int64 // current worker after start
	MasterRSS    int64
	Reload       time.Duration
	Reps         int
	// Skipped says why HAProxy could not run this cell; the measurements are then zero
	// except those taken before the failure.
	Skipped string
}

// ConfigScale renders the compact and the per-port layout for every cell and measures each
// with a real HAProxy in a throwaway network namespace: `haproxy -c` time, start time, worker
// RSS after start, and reload time through the master CLI.
func ConfigScale(ctx context.Context, opts ScaleOptions) ([]ScaleRow, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Reps < 1 {
		opts.Reps = 1
	}
	sb, err := NewSandbox(ctx, opts.Dir, scaleBind, opts.MemLimit)
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	var rows []ScaleRow
	for _, ports := range opts.Ports {
		for _, nodes := range opts.Nodes {
			st := scaleState(nodes, ports)
			compact := filepath.Join(opts.Dir, fmt.Sprintf("compact-%d-%d.cfg", nodes, ports))
			if err := RenderCompact(ctx, opts.Root, opts.Dir, st, compact, filepath.Join(opts.Dir, "stats.sock")); err != nil {
				return rows, fmt.Errorf("cell %d nodes × %d ports: %w", nodes, ports, err)
			}
			perPort := filepath.Join(opts.Dir, fmt.Sprintf("per-port-%d-%d.cfg", nodes, ports))
			if err := WritePerPort(perPort, st, filepath.Join(opts.Dir, "stats.sock")); err != nil {
				return rows, fmt.Errorf("cell %d nodes × %d ports: %w", nodes, ports, err)
			}
			for _, c := range []struct {
				layout, path string
				servers      int
			}{
				{LayoutCompact, compact, 2 * nodes},
				{LayoutPerPort, perPort, nodes * (1 + ports)},
			} {
				reps := opts.Reps
				if c.layout == LayoutPerPort && opts.BigServers > 0 && c.servers > opts.BigServers {
					reps = 1
				}
				row, err := measureCell(ctx, sb, c.path, reps)
				row.Nodes, row.Ports, row.Layout, row.Servers = nodes, ports, c.layout, c.servers
				if err != nil {
					if c.layout == LayoutCompact {
						return rows, fmt.Errorf("compact layout, %d nodes × %d ports: %w", nodes, ports, err)
					}
					row.Skipped = err.Error()
				}
				log.Info("config scale", "nodes", nodes, "ports", ports, "layout", c.layout,
					"bytes", row.Bytes, "check", row.Check, "rss", row.RSS, "reload", row.Reload, "skipped", row.Skipped)
				rows = append(rows, row)
				if err := os.Remove(c.path); err != nil {
					return rows, err
				}
			}
		}
	}
	return rows, nil
}

// measureCell times `haproxy -c` reps times, starts HAProxy, reads the worker's RSS, times
// reps reloads and stops it. Medians are reported.
func measureCell(ctx context.Context, sb *Sandbox, cfg string, reps int) (ScaleRow, error) {
	row := ScaleRow{Reps: reps}
	info, err := os.Stat(cfg)
	if err != nil {
		return row, err
	}
	row.Bytes = info.Size()
	var checks, reloads []time.Duration
	for range reps {
		d, err := sb.Check(ctx, cfg)
		if err != nil {
			return row, err
		}
		checks = append(checks, d)
	}
	row.Check = median(checks)
	h, started, err := sb.Start(ctx, cfg)
	if err != nil {
		return row, err
	}
	defer h.Stop()
	row.Start = started
	// let the worker finish its start-up allocations (first health checks, listeners)
	time.Sleep(500 * time.Millisecond)
	if row.RSS, err = h.WorkerRSS(ctx); err != nil {
		return row, err
	}
	if row.MasterRSS, err = processRSS(h.cmd.Process.Pid); err != nil {
		return row, err
	}
	for range reps {
		d, err := h.Reload(ctx)
		if err != nil {
			return row, err
		}
		reloads = append(reloads, d)
	}
	row.Reload = median(reloads)
	return row, nil
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// scaleState is one Cluster-policy Service with nodes nodes and a passive range of ports
// ports whose NodePorts keep a constant offset.
func scaleState(nodes, ports int) desired.State {
	offset := scaleOffset
	svc := desired.Service{
		ID: "bench-ftp", Source: "bench/ftp", EdgeGroup: "all", BindAddress: scaleBind,
		ControlPort: 21, ControlNodePort: 30021,
		PassiveMin: scalePasvBase, PassiveMax: scalePasvBase + ports - 1, PassiveOffset: &offset,
		PassiveNodePorts: []int{}, TrafficPolicy: "Cluster",
		Timeouts: desired.Timeouts{Connect: "5s", Client: "1h", Server: "1h", Check: "2s"},
		MaxConn:  2000,
	}
	st := desired.State{Schema: desired.Schema, Services: []desired.Service{svc}}
	for i := range nodes {
		st.Nodes = append(st.Nodes, desired.Node{
			Name:    fmt.Sprintf("node-%05d", i+1),
			Address: fmt.Sprintf("10.251.%d.%d", (i+1)/250, 1+(i+1)%250),
			ID:      i + 1,
		})
	}
	st.Generation = st.Hash()
	return st
}

// RenderCompact renders st into dest with the role, through ansible/render.yml (the same
// path as `kubeftp-edge render --format haproxy`), with the given admin stats socket. dir
// holds its temporary files.
func RenderCompact(ctx context.Context, root, dir string, st desired.State, dest, statsSocket string) error {
	vars, err := apply.MarshalVars(st)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(dir, "render-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	varsFile := filepath.Join(work, "vars.json")
	if err := os.WriteFile(varsFile, vars, 0o600); err != nil {
		return err
	}
	out, err := runOutEnv(ctx, []string{
		"ANSIBLE_CONFIG=" + filepath.Join(root, "ansible", "ansible.cfg"),
		"ANSIBLE_HOME=" + filepath.Join(work, "home"),
		"ANSIBLE_LOCAL_TEMP=" + filepath.Join(work, "tmp"),
		"ANSIBLE_NOCOLOR=1",
		"KUBEFTP_RESULT_FILE=" + filepath.Join(work, "result.json"),
	}, "ansible-playbook", "-i", "localhost,", filepath.Join(root, "ansible", "render.yml"),
		"-e", "@"+varsFile,
		"-e", "haproxy_ftp_render_dest="+dest,
		"-e", "haproxy_ftp_stats_socket="+statsSocket)
	if err != nil {
		return fmt.Errorf("rendering with ansible/render.yml: %w: %s", err, lastLines(out, 5))
	}
	if _, err := os.Stat(dest); err != nil {
		return fmt.Errorf("ansible/render.yml wrote no config: %w", err)
	}
	return nil
}

// WritePerPort writes the per-port layout of st: the same global, peers, defaults and control
// sections as the role, then for every passive port a frontend binding that one port and a
// backend with a server per node on that port's NodePort. Its passive servers follow the
// control servers (track) and share the control stick table, so the two layouts do the same
// job and differ only in shape. Chart-generated configs often have neither (and then break
// stickiness); with them the per-port layout would only be larger.
func WritePerPort(path string, st desired.State, statsSocket string) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintf(w, `# Per-port layout (benchmark comparison), generation %s
global
    maxconn 4000
    stats socket %s mode 600 level admin
    stats timeout 30s
    localpeer bench

peers bench_peers
    peer bench 127.0.0.1:10000

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    retries 2
    option redispatch 1
`, st.Generation, statsSocket)
	for _, s := range st.Services {
		if s.PassiveOffset == nil && len(s.PassiveNodePorts) != s.PassiveMax-s.PassiveMin+1 {
			return fmt.Errorf("service %s: no passive offset and %d NodePorts for %d passive ports",
				s.ID, len(s.PassiveNodePorts), s.PassiveMax-s.PassiveMin+1)
		}
		fmt.Fprintf(w, `
frontend %[1]s_ctrl
    bind %[2]s:%[3]d
    maxconn %[4]d
    timeout client %[5]s
    default_backend %[1]s_ctrl

backend %[1]s_ctrl
    balance source
    hash-type consistent
    timeout connect %[6]s
    timeout server %[7]s
    timeout check %[8]s
    stick-table type ip size 100k expire 2h peers bench_peers
    stick on src
    option tcp-check
    tcp-check expect rstring ^220
    tcp-check send QUIT\r\n
    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
`, s.ID, s.BindAddress, s.ControlPort, s.MaxConn, s.Timeouts.Client, s.Timeouts.Connect, s.Timeouts.Server, s.Timeouts.Check)
		for _, n := range st.ServiceNodes(s) {
			fmt.Fprintf(w, "    server %s %s:%d id %d check\n", n.Name, n.Address, s.ControlNodePort, n.ID)
		}
		for p := s.PassiveMin; p <= s.PassiveMax; p++ {
			np := p + derefOr(s.PassiveOffset, 0)
			if s.PassiveOffset == nil {
				np = s.PassiveNodePorts[p-s.PassiveMin]
			}
			fmt.Fprintf(w, `
frontend %[1]s_pasv_%[2]d
    bind %[3]s:%[2]d
    maxconn %[4]d
    timeout client %[5]s
    default_backend %[1]s_pasv_%[2]d

backend %[1]s_pasv_%[2]d
    balance source
    hash-type consistent
    timeout connect %[6]s
    timeout server %[7]s
    stick match src table %[1]s_ctrl
`, s.ID, p, s.BindAddress, s.MaxConn, s.Timeouts.Client, s.Timeouts.Connect, s.Timeouts.Server)
			for _, n := range st.ServiceNodes(s) {
				fmt.Fprintf(w, "    server %s %s:%d id %d track %s_ctrl/%s\n", n.Name, n.Address, np, n.ID, s.ID, n.Name)
			}
		}
	}
	return w.Flush()
}

func derefOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}
