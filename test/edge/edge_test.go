// Package edge holds the acceptance tests of the edge: the project's playbook run over real
// SSH (pinned host keys, strict checking) against HAProxy on the lab's edge host, with real
// FTP clients moving real files through it to vsftpd behind kube-proxy-like NodePorts.
package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubeftp/kubeftp-edge/lab"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

const serviceID = "lab-ftp"

// TestEdge runs the acceptance scenarios in order on one lab: each step starts from the edge
// state the previous one left, as an operator's edge would.
func TestEdge(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root, builds a network-namespace lab and runs ansible-playbook over SSH")
	}
	for _, bin := range []string{"ansible-playbook", "haproxy", "curl", "lftp", "socat", "ssh-keygen"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is required (make test installs it): %v", bin, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l := lab.UpForTest(ctx, t, lab.Options{Prefix: "kfedge", Net: "10.232", Nodes: 3, Edges: 1, Clients: 6})
	e := &edgeTest{lab: l, dir: t.TempDir(), edge: netip.AddrPortFrom(l.EdgeAddr(1), 21)}

	// v1: the lab's vsftpd Service on every node; v2: the same with other limits (a change
	// that needs a reload); v3: v2 plus a Service on a port something else holds on the edge.
	v1 := e.state("1a", 2000, nil)
	v2 := e.state("2b", 1500, nil)
	taken := e.service("taken-ftp", 2121, 30121, 21200, 21202)
	v3 := e.state("3c", 1500, &taken)

	t.Run("first run applies the config and reloads", func(t *testing.T) {
		before := e.worker(ctx, t)
		run := e.apply(ctx, t, v1, "")
		h := e.host(t, run)
		if h.Failed() || !h.ConfigChanged || !h.Reloaded {
			t.Fatalf("first run: %+v, want ok, config changed, reloaded\n%s", h, run.Output)
		}
		if after := e.worker(ctx, t); after == before {
			t.Errorf("worker pid %d unchanged after the first run", after)
		}
		cfg, _ := e.config(t)
		if !bytes.Contains(cfg, []byte("generation 1a")) {
			t.Errorf("config on the edge lacks generation 1a:\n%s", cfg)
		}
		if out, err := l.Exec(ctx, "e1", "haproxy", "-c", "-f", l.EdgeConfigPath(1)); err != nil {
			t.Errorf("haproxy -c of the edge config: %v\n%s", err, out)
		}
		e.waitServers(ctx, t, map[string]int{"n1": 2, "n2": 2, "n3": 2})
	})

	t.Run("10 MB up and down in passive mode", func(t *testing.T) {
		for i, c := range []lab.Client{lab.CurlEPSV, lab.CurlPASV, lab.Lftp} {
			tr := lab.Transfer{Client: c, Source: l.ClientAddrs()[i], Server: e.edge, Path: "pub/10m-" + string(c) + ".bin"}
			if err := l.RoundTrip(ctx, tr, 10<<20); err != nil {
				t.Errorf("%s from %s: %v", c, tr.Source, err)
			}
		}
	})

	t.Run("explicit FTPS through the same edge", func(t *testing.T) {
		tr := lab.Transfer{Client: lab.CurlFTPS, Source: l.ClientAddrs()[3], Server: e.edge, Path: "pub/10m-ftps.bin"}
		if err := l.RoundTrip(ctx, tr, 10<<20); err != nil {
			t.Error(err)
		}
	})

	t.Run("a second run with the same vars changes nothing", func(t *testing.T) {
		cfg, info := e.config(t)
		before := e.procs(ctx, t)
		run := e.apply(ctx, t, v1, "")
		h := e.host(t, run)
		if h.Failed() || h.ConfigChanged || h.Reloaded {
			t.Fatalf("same vars again: %+v, want ok, no change, no reload\n%s", h, run.Output)
		}
		t.Logf("no-change run: %v", run.Duration.Round(time.Millisecond))
		e.assertUntouched(ctx, t, cfg, info, before)
	})

	t.Run("a wrong host key fails the run and changes nothing", func(t *testing.T) {
		cfg, info := e.config(t)
		before := e.procs(ctx, t)
		run := e.apply(ctx, t, v2, e.wrongKnownHosts(t))
		h := e.host(t, run)
		if run.ExitCode == 0 || !h.Failed() || h.Unreachable == 0 {
			t.Errorf("run with a wrong host key: exit %d, %+v; want a failed, unreachable host", run.ExitCode, h)
		}
		if !strings.Contains(h.Msg+run.Output, "Host key verification failed") {
			t.Errorf("no 'Host key verification failed' in the result %q or the output:\n%s", h.Msg, run.Output)
		}
		e.assertUntouched(ctx, t, cfg, info, before)
	})

	t.Run("a session opened before a reload transfers after it", func(t *testing.T) {
		content := bytes.Repeat([]byte("passive ftp survives reloads\n"), 10000)
		var sessions []*lab.Session
		for i, src := range l.ClientAddrs()[:5] {
			s, err := l.Dial(ctx, src, e.edge)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			if err := s.Login(ctx); err != nil {
				t.Fatal(err)
			}
			if err := s.Stor(ctx, fmt.Sprintf("pub/session-%d.bin", i), content); err != nil {
				t.Fatal(err)
			}
			sessions = append(sessions, s)
		}
		sticky := e.stickTable(ctx, t)
		for _, src := range l.ClientAddrs()[:5] {
			if sticky[src.String()] == "" {
				t.Fatalf("no stick entry for session source %s: %v", src, sticky)
			}
		}
		before := e.worker(ctx, t)
		run := e.apply(ctx, t, v2, "")
		h := e.host(t, run)
		if h.Failed() || !h.ConfigChanged || !h.Reloaded {
			t.Fatalf("changed vars: %+v, want ok, config changed, reloaded\n%s", h, run.Output)
		}
		t.Logf("change + reload run: %v", run.Duration.Round(time.Millisecond))
		after := e.worker(ctx, t)
		if after == before {
			t.Fatalf("worker pid %d unchanged: no reload happened", after)
		}
		if got := e.stickTable(ctx, t); !maps.Equal(got, sticky) {
			t.Errorf("stick table of the new worker %d = %v, want the old one's %v", after, got, sticky)
		}
		for i, s := range sessions {
			got, err := s.Retr(ctx, fmt.Sprintf("pub/session-%d.bin", i))
			if err != nil {
				t.Errorf("session %d after the reload: %v", i, err)
				continue
			}
			if !bytes.Equal(got, content) {
				t.Errorf("session %d after the reload read %d bytes, want %d", i, len(got), len(content))
			}
		}
	})

	t.Run("a reload that fails is rolled back", func(t *testing.T) {
		stop, err := l.Start(ctx, "e1", "socat", fmt.Sprintf("TCP-LISTEN:2121,bind=%s,reuseaddr,fork", l.EdgeAddr(1)), "/dev/null")
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		e.waitListening(ctx, t, netip.AddrPortFrom(l.EdgeAddr(1), 2121))
		cfg, _ := e.config(t)
		run := e.apply(ctx, t, v3, "")
		h := e.host(t, run)
		if run.ExitCode == 0 || !h.Failed() || !h.RolledBack {
			t.Errorf("run onto a taken port: exit %d, %+v; want a failed host, rolled back\n%s", run.ExitCode, h, run.Output)
		}
		// the cause and the outcome, not ssh's noise
		if !strings.Contains(h.Msg, "refused the new configuration") || !strings.Contains(h.Msg, "restored") {
			t.Errorf("message %q: want the cause (HAProxy refused the new configuration) and the rollback (restored)", h.Msg)
		}
		t.Logf("failed run's message: %s", h.Msg)
		if got, _ := e.config(t); !bytes.Equal(got, cfg) {
			t.Errorf("config after the rollback differs from the previous one:\n%s", got)
		}
		if out, err := l.Exec(ctx, "e1", "haproxy", "-c", "-f", l.EdgeConfigPath(1)); err != nil {
			t.Errorf("haproxy -c of the restored config: %v\n%s", err, out)
		}
		e.waitServers(ctx, t, map[string]int{"n1": 2, "n2": 2, "n3": 2})
		tr := lab.Transfer{Client: lab.CurlPASV, Source: l.ClientAddrs()[2], Server: e.edge, Path: "pub/after-rollback.bin"}
		if err := l.RoundTrip(ctx, tr, 1<<20); err != nil {
			t.Errorf("transfer through the restored config: %v", err)
		}
	})

	t.Run("new logins reach another node when the session's node fails", func(t *testing.T) {
		src := l.ClientAddrs()[5]
		s, err := l.Dial(ctx, src, e.edge)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Login(ctx); err != nil {
			t.Fatal(err)
		}
		s.Close()
		node, ok := e.stickTable(ctx, t)[src.String()]
		if !ok {
			t.Fatalf("no stick entry for %s", src)
		}
		k, err := strconv.Atoi(strings.TrimPrefix(node, "n"))
		if err != nil {
			t.Fatalf("stick entry of %s names server %q", src, node)
		}
		if err := l.NodeFail(ctx, k); err != nil {
			t.Fatal(err)
		}
		failedAt := time.Now()
		t.Cleanup(func() { _ = l.NodeRestore(context.Background(), k) })
		// every client, the failed node's too, logs in again and moves a file
		var lastErr error
		var took time.Duration
		for deadline := failedAt.Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if lastErr = e.everyoneTransfers(ctx); lastErr == nil {
				took = time.Since(failedAt)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("10 s after node n%d failed, transfers still fail: %v", k, lastErr)
			}
		}
		t.Logf("node n%d failed: every client logged in and transferred again after %v", k, took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("recovery took %v, want at most 5 s", took)
		}
		want := map[string]int{"n1": 2, "n2": 2, "n3": 2}
		want[node] = 0
		e.waitServers(ctx, t, want)
		if err := l.NodeRestore(ctx, k); err != nil {
			t.Fatal(err)
		}
		e.waitServers(ctx, t, map[string]int{"n1": 2, "n2": 2, "n3": 2})
	})
}

type edgeTest struct {
	lab  *lab.Lab
	dir  string
	edge netip.AddrPort
}

// service is an FTP Service of the lab's vsftpd pod as the watcher would describe it; it is
// served by every node of the state (traffic policy Cluster).
func (e *edgeTest) service(id string, controlPort, controlNodePort, pasvMin, pasvMax int) desired.Service {
	offset := e.lab.PassiveOffset()
	s := desired.Service{
		ID: id, Source: "lab/" + id, EdgeGroup: "all", BindAddress: e.lab.EdgeAddr(1).String(),
		ControlPort: controlPort, ControlNodePort: controlNodePort,
		PassiveMin: pasvMin, PassiveMax: pasvMax, PassiveOffset: &offset, PassiveNodePorts: []int{},
		TrafficPolicy: "Cluster",
		Timeouts:      desired.Timeouts{Connect: "5s", Client: "1h", Server: "1h", Check: "2s"},
		MaxConn:       2000,
	}
	return s
}

func (e *edgeTest) state(generation string, maxconn int, extra *desired.Service) desired.State {
	s := e.service(serviceID, 21, e.lab.ControlNodePort(), e.lab.PassiveMin(), e.lab.PassiveMax())
	s.MaxConn = maxconn
	st := desired.State{Schema: desired.Schema, Generation: generation, Services: []desired.Service{s}}
	for k := 1; k <= e.lab.Nodes(); k++ {
		st.Nodes = append(st.Nodes, desired.Node{Name: fmt.Sprintf("n%d", k), Address: e.lab.NodeAddr(k).String(), ID: k})
	}
	if extra != nil {
		st.Services = append(st.Services, *extra)
	}
	return st
}

// apply writes the vars file and runs the playbook; knownHosts overrides the lab's.
func (e *edgeTest) apply(ctx context.Context, t *testing.T, st desired.State, knownHosts string) *lab.PlaybookRun {
	t.Helper()
	data, err := json.MarshalIndent(map[string]desired.State{"haproxy_ftp_state": st}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(e.dir, "vars-"+st.Generation+".json")
	if err := os.WriteFile(vars, data, 0o600); err != nil {
		t.Fatal(err)
	}
	run, err := e.lab.RunPlaybook(ctx, lab.PlaybookOptions{VarsFile: vars, KnownHosts: knownHosts})
	if err != nil {
		t.Fatalf("playbook: %v", err)
	}
	return run
}

func (e *edgeTest) host(t *testing.T, run *lab.PlaybookRun) lab.HostResult {
	t.Helper()
	h, ok := run.Hosts["e1"]
	if !ok || len(run.Hosts) != 1 {
		t.Fatalf("results for hosts %v, want exactly e1\n%s", run.Hosts, run.Output)
	}
	return h
}

func (e *edgeTest) config(t *testing.T) ([]byte, os.FileInfo) {
	t.Helper()
	cfg, info, err := e.lab.EdgeConfig(1)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, info
}

func (e *edgeTest) procs(ctx context.Context, t *testing.T) lab.Procs {
	t.Helper()
	p, err := e.lab.ShowProc(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *edgeTest) worker(ctx context.Context, t *testing.T) int {
	t.Helper()
	w, ok := e.procs(ctx, t).CurrentWorker()
	if !ok {
		t.Fatal("the edge HAProxy has no worker")
	}
	return w.PID
}

// assertUntouched checks that the edge's config file and HAProxy are as before: same bytes,
// same mtime, same worker, no reload attempted.
func (e *edgeTest) assertUntouched(ctx context.Context, t *testing.T, cfg []byte, info os.FileInfo, before lab.Procs) {
	t.Helper()
	gotCfg, gotInfo := e.config(t)
	if !bytes.Equal(gotCfg, cfg) {
		t.Errorf("config on the edge changed:\n%s", gotCfg)
	}
	if !gotInfo.ModTime().Equal(info.ModTime()) {
		t.Errorf("config mtime changed: %v -> %v", info.ModTime(), gotInfo.ModTime())
	}
	after := e.procs(ctx, t)
	bw, _ := before.CurrentWorker()
	aw, _ := after.CurrentWorker()
	if aw.PID != bw.PID || after.Master.Reloads != before.Master.Reloads || after.Failed != before.Failed {
		t.Errorf("HAProxy touched: before master %+v failed %d worker %d, after master %+v failed %d worker %d",
			before.Master, before.Failed, bw.PID, after.Master, after.Failed, aw.PID)
	}
}

// wrongKnownHosts pins a freshly generated key for the edge's address.
func (e *edgeTest) wrongKnownHosts(t *testing.T) string {
	t.Helper()
	key := filepath.Join(e.dir, "other_host_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(pub))
	path := filepath.Join(e.dir, "wrong_known_hosts")
	line := fmt.Sprintf("%s %s %s\n", e.lab.EdgeAddr(1), fields[0], fields[1])
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// stickTable reads the control backend's stick table: client address -> server name.
func (e *edgeTest) stickTable(ctx context.Context, t *testing.T) map[string]string {
	t.Helper()
	out, err := e.lab.StatsCLI(ctx, 1, "show table "+serviceID+"_ctrl")
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var key, server string
		for _, f := range strings.Fields(sc.Text()) {
			if v, ok := strings.CutPrefix(f, "key="); ok {
				key = v
			}
			if v, ok := strings.CutPrefix(f, "server_key="); ok {
				server = v
			}
		}
		if key != "" {
			table[key] = server
		}
	}
	return table
}

// everyoneTransfers logs in from every client address and moves a small file.
func (e *edgeTest) everyoneTransfers(ctx context.Context) error {
	for i, src := range e.lab.ClientAddrs() {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		tr := lab.Transfer{Client: lab.CurlPASV, Source: src, Server: e.edge, Path: fmt.Sprintf("pub/failover-%d.bin", i)}
		err := e.lab.RoundTrip(tctx, tr, 64<<10)
		cancel()
		if err != nil {
			return fmt.Errorf("from %s: %w", src, err)
		}
	}
	return nil
}

// waitServers waits up to 10 s until the control backend's servers have the wanted op states
// (2 up, 0 down).
func (e *edgeTest) waitServers(ctx context.Context, t *testing.T, want map[string]int) {
	t.Helper()
	var got map[string]int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		states, err := e.lab.ServersState(ctx, 1)
		if err != nil {
			continue // the stats socket is briefly away during a reload
		}
		got = map[string]int{}
		for _, s := range states {
			if s.Backend == serviceID+"_ctrl" {
				got[s.Server] = s.OpState
			}
		}
		if maps.Equal(got, want) {
			return
		}
	}
	t.Fatalf("servers of %s_ctrl: %v, want %v", serviceID, got, want)
}

func (e *edgeTest) waitListening(ctx context.Context, t *testing.T, addr netip.AddrPort) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out, err := e.lab.Exec(ctx, "e1", "ss", "-Hltn", fmt.Sprintf("src %s and sport = :%d", addr.Addr(), addr.Port()))
		if err == nil && strings.TrimSpace(out) != "" {
			return
		}
	}
	t.Fatalf("nothing listens on %s on the edge", addr)
}
