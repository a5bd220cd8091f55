package lab

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseShowProc(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Procs
		wantErr bool
	}{
		{
			name: "after a reload, one old worker still draining",
			in: `#<PID>          <type>          <reloads>       <uptime>        <version>
14895           master          1 [failed: 0]   0d00h00m08s     2.6.12-1+deb12u4
# workers
15281           worker          0               0d00h00m05s     2.6.12-1+deb12u4
14896           worker          1               0d00h00m08s     2.6.12-1+deb12u4
# programs

`,
			want: Procs{
				Master:  Proc{PID: 14895, Type: "master", Reloads: 1},
				Workers: []Proc{{PID: 15281, Type: "worker"}, {PID: 14896, Type: "worker", Reloads: 1}},
			},
		},
		{
			name: "a failed reload",
			in: `#<PID>          <type>          <reloads>       <uptime>        <version>
16822           master          1 [failed: 1]   0d00h00m12s     2.6.12-1+deb12u4
# workers
16824           worker          1               0d00h00m12s     2.6.12-1+deb12u4
`,
			want: Procs{
				Master:  Proc{PID: 16822, Type: "master", Reloads: 1},
				Failed:  1,
				Workers: []Proc{{PID: 16824, Type: "worker", Reloads: 1}},
			},
		},
		{name: "no master", in: "# workers\n", wantErr: true},
		{name: "garbage", in: "x worker 0\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseShowProc(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseShowProc() error = %v, wantErr %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseShowProc() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCurrentWorker(t *testing.T) {
	for _, tt := range []struct {
		name    string
		workers []Proc
		want    int
	}{
		{"after a reload", []Proc{{PID: 7, Reloads: 2}, {PID: 9, Reloads: 0}, {PID: 8, Reloads: 1}}, 9},
		{"after a failed reload", []Proc{{PID: 7, Reloads: 1}}, 7},
	} {
		if w, ok := (Procs{Workers: tt.workers}).CurrentWorker(); !ok || w.PID != tt.want {
			t.Errorf("%s: CurrentWorker() = %v, %v; want pid %d", tt.name, w, ok, tt.want)
		}
	}
	if _, ok := (Procs{}).CurrentWorker(); ok {
		t.Error("CurrentWorker() of no workers reported one")
	}
}

func TestParseEnv(t *testing.T) {
	got := parseEnv("LAB_PREFIX=kfe\nLAB_CLIENT_IPS=\"10.1.1.10 10.1.1.11\"\nnoise\n")
	want := map[string]string{"LAB_PREFIX": "kfe", "LAB_CLIENT_IPS": "10.1.1.10 10.1.1.11"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseEnv() (-want +got):\n%s", diff)
	}
}

// TestLab exercises the lab and its driver on real parts, with a hand-written edge config
// instead of the role: HAProxy master-worker reloads, the NodePort emulation, every FTP client,
// a session held across a reload, a node failure, and a clean teardown.
func TestLab(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root and builds a network-namespace lab")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := UpForTest(ctx, t, Options{Prefix: "kflab", Net: "10.231", Nodes: 3, Edges: 1, Clients: 3})

	if err := l.WriteEdgeConfig(1, handwrittenConfig(t, l)); err != nil {
		t.Fatal(err)
	}
	if err := l.Reload(ctx, 1); err != nil {
		t.Fatal(err)
	}
	waitServers(ctx, t, l, "ftp_ctrl", map[string]int{"n1": 2, "n2": 2, "n3": 2})
	edge := netip.AddrPortFrom(l.EdgeAddr(1), 21)

	t.Run("transfers", func(t *testing.T) {
		for _, c := range Clients {
			tr := Transfer{Client: c, Server: edge, Path: "pub/" + string(c) + ".bin"}
			if err := l.RoundTrip(ctx, tr, 1<<20); err != nil {
				t.Errorf("%s: %v", c, err)
			}
		}
	})

	t.Run("a refused transfer is an error", func(t *testing.T) {
		// every client must report what the server refused: no directory "nope" exists
		for _, c := range Clients {
			tr := Transfer{Client: c, Server: edge, Path: "nope/x.bin"}
			if err := l.RoundTrip(ctx, tr, 1024); err == nil {
				t.Errorf("%s: upload into a missing directory succeeded", c)
			}
		}
	})

	t.Run("a session held open survives a reload", func(t *testing.T) {
		src := l.ClientAddrs()[1]
		s, err := l.Dial(ctx, src, edge)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Login(ctx); err != nil {
			t.Fatal(err)
		}
		content := bytes.Repeat([]byte("kubeftp "), 4096)
		if err := s.Stor(ctx, "pub/session.bin", content); err != nil {
			t.Fatal(err)
		}
		before := currentWorker(ctx, t, l)
		if err := l.Reload(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if after := currentWorker(ctx, t, l); after == before {
			t.Fatalf("worker pid %d unchanged after a reload", after)
		}
		got, err := s.Retr(ctx, "pub/session.bin")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content) {
			t.Errorf("RETR after the reload returned %d bytes, want the %d stored", len(got), len(content))
		}
	})

	t.Run("node failure", func(t *testing.T) {
		if err := l.NodeFail(ctx, 2); err != nil {
			t.Fatal(err)
		}
		waitServers(ctx, t, l, "ftp_ctrl", map[string]int{"n1": 2, "n2": 0, "n3": 2})
		for _, src := range l.ClientAddrs() {
			s, err := l.Dial(ctx, src, edge)
			if err != nil {
				t.Fatal(err)
			}
			err = s.Login(ctx)
			s.Close()
			if err != nil {
				t.Errorf("login from %s with n2 failed: %v", src, err)
			}
		}
		if err := l.NodeRestore(ctx, 2); err != nil {
			t.Fatal(err)
		}
		waitServers(ctx, t, l, "ftp_ctrl", map[string]int{"n1": 2, "n2": 2, "n3": 2})
	})

	t.Run("nodeport add and delete", func(t *testing.T) {
		greeting := func() (string, error) {
			return l.Exec(ctx, "e1", "bash", "-c",
				fmt.Sprintf("exec 3<>/dev/tcp/%s/30121 && head -c 3 <&3", l.NodeAddr(3)))
		}
		if _, err := l.Script(ctx, "nodeport-add", "3", "30121", "21100", "21102", "32105,32100,32101"); err != nil {
			t.Fatal(err)
		}
		if got, err := greeting(); err != nil || got != "220" {
			t.Errorf("control NodePort 30121 after nodeport-add: %q, %v; want 220", got, err)
		}
		if _, err := l.Script(ctx, "nodeport-del", "3", "30121"); err != nil {
			t.Fatal(err)
		}
		if got, err := greeting(); err == nil {
			t.Errorf("control NodePort 30121 after nodeport-del still answers %q", got)
		}
		for _, bad := range [][]string{
			{"3", "70000", "21100", "21102", "+11000"},
			{"3", "30121", "21100", "21102", "32105,32100"},
			{"4", "30121", "21100", "21102", "+11000"},
			{"3", "30121", "21100", "21102", "+x"},
		} {
			if _, err := l.Script(ctx, append([]string{"nodeport-add"}, bad...)...); err == nil {
				t.Errorf("nodeport-add %v: no error", bad)
			}
		}
	})

	t.Run("healthz of a Local service", func(t *testing.T) {
		url := fmt.Sprintf("http://%s:32456/healthz", l.NodeAddr(2))
		status := func() (string, error) {
			return l.Exec(ctx, "e1", "curl", "-sS", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}", url)
		}
		for _, tt := range []struct{ state, want string }{{"ok", "200"}, {"fail", "503"}} {
			if _, err := l.Script(ctx, "healthz", "2", "32456", tt.state); err != nil {
				t.Fatal(err)
			}
			if got, err := status(); err != nil || got != tt.want {
				t.Errorf("healthz %s: status %q, %v; want %s", tt.state, got, err, tt.want)
			}
		}
		if _, err := l.Script(ctx, "healthz", "2", "32456", "off"); err != nil {
			t.Fatal(err)
		}
		if got, err := status(); err == nil {
			t.Errorf("healthz off still answers %q", got)
		}
	})

	t.Run("a failed reload keeps the old worker", func(t *testing.T) {
		before := currentWorker(ctx, t, l)
		good, _, err := l.EdgeConfig(1)
		if err != nil {
			t.Fatal(err)
		}
		stop, err := l.Start(ctx, "e1", "socat", fmt.Sprintf("TCP-LISTEN:2121,bind=%s,reuseaddr,fork", l.EdgeAddr(1)), "/dev/null")
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		waitListening(ctx, t, l, "e1", netip.AddrPortFrom(l.EdgeAddr(1), 2121))
		bad := append(append([]byte{}, good...), fmt.Sprintf("\nfrontend taken\n    bind %s:2121\n    default_backend ftp_ctrl\n", l.EdgeAddr(1))...)
		if err := l.WriteEdgeConfig(1, bad); err != nil {
			t.Fatal(err)
		}
		err = l.Reload(ctx, 1)
		if err == nil || !strings.Contains(err.Error(), "reload of e1 failed") {
			t.Errorf("reload onto a taken port: %v; want 'reload of e1 failed'", err)
		}
		if after := currentWorker(ctx, t, l); after != before {
			t.Errorf("worker %d replaced by %d after a failed reload", before, after)
		}
		if err := l.WriteEdgeConfig(1, good); err != nil {
			t.Fatal(err)
		}
		if err := l.RoundTrip(ctx, Transfer{Client: CurlPASV, Server: edge, Path: "pub/after-failed.bin"}, 1<<16); err != nil {
			t.Error(err)
		}
	})

	t.Run("playbook over SSH with pinned host keys", func(t *testing.T) {
		vars := filepath.Join(t.TempDir(), "vars.yml")
		if err := os.WriteFile(vars, []byte("probe: true\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		probe, err := filepath.Abs("testdata/probe.yml")
		if err != nil {
			t.Fatal(err)
		}
		run, err := l.RunPlaybook(ctx, PlaybookOptions{VarsFile: vars, Playbook: probe})
		if err != nil {
			t.Fatal(err)
		}
		if h := run.Hosts["e1"]; run.ExitCode != 0 || h.Failed() || h.OK == 0 {
			t.Errorf("probe with the lab's known_hosts: exit %d, %+v\n%s", run.ExitCode, run.Hosts, run.Output)
		}

		// the same edge pinned with another key: ssh must refuse before anything runs
		wrong := filepath.Join(t.TempDir(), "known_hosts")
		key := filepath.Join(t.TempDir(), "key")
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
		pub, err := os.ReadFile(key + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(pub))
		if err := os.WriteFile(wrong, []byte(l.EdgeAddr(1).String()+" "+f[0]+" "+f[1]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		run, err = l.RunPlaybook(ctx, PlaybookOptions{VarsFile: vars, Playbook: probe, KnownHosts: wrong})
		if err != nil {
			t.Fatal(err)
		}
		h := run.Hosts["e1"]
		if run.ExitCode == 0 || h.Unreachable == 0 || !strings.Contains(h.Msg, "Host key verification failed") {
			t.Errorf("probe with a wrong host key: exit %d, %+v; want unreachable, 'Host key verification failed'", run.ExitCode, h)
		}
	})

	t.Run("down twice removes everything", func(t *testing.T) {
		for i := 0; i < 2; i++ {
			if err := l.Down(); err != nil {
				t.Fatalf("down #%d: %v", i+1, err)
			}
		}
		left, _ := filepath.Glob("/run/netns/kflab-*")
		if len(left) > 0 {
			t.Errorf("namespaces left: %v", left)
		}
		if _, err := os.Stat(l.EdgeMasterSocket(1)); err == nil {
			t.Error("master socket left")
		}
		if out, err := l.Script(ctx, "status"); err == nil {
			t.Errorf("status of a lab that is down succeeded:\n%s", out)
		}
	})
}

func handwrittenConfig(t *testing.T, l *Lab) []byte {
	t.Helper()
	tmpl, err := template.ParseFiles("testdata/handwritten.cfg.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	type node struct {
		Name string
		Addr netip.Addr
		ID   int
	}
	var nodes []node
	for k := 1; k <= l.Nodes(); k++ {
		nodes = append(nodes, node{Name: fmt.Sprintf("n%d", k), Addr: l.NodeAddr(k), ID: k})
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]any{
		"StatsSocket": l.EdgeStatsSocket(1), "Edge": l.EdgeAddr(1), "Nodes": nodes,
		"ControlNodePort": l.ControlNodePort(), "PassiveMin": l.PassiveMin(),
		"PassiveMax": l.PassiveMax(), "PassiveOffset": l.PassiveOffset(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func currentWorker(ctx context.Context, t *testing.T, l *Lab) int {
	t.Helper()
	p, err := l.ShowProc(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	w, ok := p.CurrentWorker()
	if !ok {
		t.Fatalf("no current worker: %+v", p)
	}
	return w.PID
}

// waitServers waits up to 10 s until the backend's servers have the wanted op states.
func waitServers(ctx context.Context, t *testing.T, l *Lab, backend string, want map[string]int) {
	t.Helper()
	var got map[string]int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		states, err := l.ServersState(ctx, 1)
		if err != nil {
			continue // the stats socket is briefly away during a reload
		}
		got = map[string]int{}
		for _, s := range states {
			if s.Backend == backend {
				got[s.Server] = s.OpState
			}
		}
		if cmp.Equal(want, got) {
			return
		}
	}
	t.Fatalf("servers of %s (-want +got):\n%s", backend, cmp.Diff(want, got))
}

func waitListening(ctx context.Context, t *testing.T, l *Lab, ns string, addr netip.AddrPort) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out, err := l.Exec(ctx, ns, "ss", "-Hltn", fmt.Sprintf("src %s and sport = :%d", addr.Addr(), addr.Port()))
		if err == nil && strings.TrimSpace(out) != "" {
			return
		}
	}
	t.Fatalf("nothing listens on %s in %s", addr, ns)
}

func TestDrainedLines(t *testing.T) {
	cfg := []byte(`backend demo-ftp_ctrl
    server n1 10.0.0.1:30021 id 1 check
    server n2 10.0.0.2:30021 id 2 weight 0 check
    server n20 10.0.0.20:30021 id 20 check
backend demo-ftp_pasv
    server n1 10.0.0.1:+11000 id 1 track demo-ftp_ctrl/n1
    server n2 10.0.0.2:+11000 id 2 weight 0 track demo-ftp_ctrl/n2
    server n20 10.0.0.20:+11000 id 20 weight 10 track demo-ftp_ctrl/n20
`)
	for _, tc := range []struct {
		node           string
		lines, drained int
	}{
		{"n1", 2, 0},
		{"n2", 2, 2},
		{"n20", 2, 0}, // weight 10 is not weight 0; n2 is not a prefix of n20
		{"n3", 0, 0},
	} {
		if l, d := DrainedLines(cfg, tc.node); l != tc.lines || d != tc.drained {
			t.Errorf("DrainedLines(%s) = %d, %d; want %d, %d", tc.node, l, d, tc.lines, tc.drained)
		}
	}
}
