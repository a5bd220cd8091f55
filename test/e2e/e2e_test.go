// Package e2e runs the whole system the way `make demo` does — a real kube-apiserver + etcd,
// the network-namespace lab, the kubeftp-edge binary pushing the embedded playbook over SSH —
// through the demo's own scenario (demo/scenario), with assertions: the four demo steps, two
// FTP Services on two edge addresses, a Local-policy Service whose pod moves to another node,
// and one FTP session that stays usable across every reload the watcher causes.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubeftp/kubeftp-edge/demo/scenario"
	"github.com/kubeftp/kubeftp-edge/lab"
	"github.com/kubeftp/kubeftp-edge/lab/kube"
)

// The e2e lab's own prefix and net: the demo uses kfdemo/10.250, other suites theirs.
const (
	prefix = "kfe2e"
	net    = "10.251"
)

// watcherBin is the kubeftp-edge binary built for this run from the checkout.
var watcherBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kubeftp-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := kube.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	watcherBin = filepath.Join(dir, "kubeftp-edge")
	build := exec.Command("go", "build", "-trimpath", "-o", watcherBin, "./watcher")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the watcher: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// start brings the scenario up for one test and tears it down at its end, also on SIGINT or
// SIGTERM; a failed test gets the watcher's log and the lab's logs.
func start(ctx context.Context, t *testing.T) *scenario.Env {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root, the lab and a real kube-apiserver (not in -short)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the end-to-end tests need root (network namespaces); run as root or with -short")
	}
	for _, bin := range []string{"ansible-playbook", "haproxy", "vsftpd", "sshd", "curl", "lftp", "socat"} {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + bin); err2 != nil {
				t.Fatalf("%s is required (make test installs it): %v", bin, err)
			}
		}
	}
	dir, err := os.MkdirTemp("", "kubeftp-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	env, err := scenario.Start(ctx, scenario.Options{Dir: dir, Prefix: prefix, Net: net, WatcherBin: watcherBin})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("starting the scenario: %v", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			_ = env.Close()
			os.Exit(2)
		case <-done:
		}
	}()
	t.Cleanup(func() {
		signal.Stop(sigs)
		close(done)
		if t.Failed() {
			t.Logf("watcher log:\n%s", env.WatcherLogTail(60))
			t.Logf("lab logs:\n%s", env.Lab.Logs(20))
		}
		if err := env.Close(); err != nil {
			t.Errorf("tearing the scenario down: %v", err)
		}
		os.RemoveAll(dir)
	})
	return env
}

// TestEndToEnd walks the demo's steps and more on one scenario (starting one costs seconds,
// each playbook run a few more). Each part needs the ones before it.
func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	env := start(ctx, t)
	plan := scenario.DefaultPlan()
	plan.TransferSize = 1 << 20
	edgeAddr := env.Lab.EdgeAddr(1)
	ftp := scenario.Namespace + "/" + scenario.Service

	part := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}
	// reload: whether the step's change needs one (a node drained or undrained does not)
	step := func(t *testing.T, s scenario.Step, reload bool) scenario.Outcome {
		t.Helper()
		o, err := s.Run(ctx, env)
		if err != nil {
			t.Fatalf("%s: %v", s.Title, err)
		}
		if reload && o.Reloads < 1 {
			t.Errorf("%s: the edge reloaded %d times, want at least once", s.Title, o.Reloads)
		}
		if !reload && o.Reloads != 0 {
			t.Errorf("%s: the edge reloaded %d times, want none (runtime API)", s.Title, o.Reloads)
		}
		if o.EdgeAfter <= 0 || o.Applied < o.EdgeAfter {
			t.Errorf("%s: edge updated after %s, push done after %s", s.Title, o.EdgeAfter, o.Applied)
		}
		t.Logf("%s: edge after %s, push done after %s, %d reload(s); %s", s.Title, o.EdgeAfter, o.Applied, o.Reloads, o.FTP)
		return o
	}

	part("1 the edge is configured from nothing and carries FTP", func(t *testing.T) {
		step(t, plan.Steps()[0], true)
		metrics := metricsOf(ctx, t, env)
		wantMetric(t, metrics, `kubeftp_edge_services{state="served"}`, 1)
		wantMetric(t, metrics, `kubeftp_edge_host_consecutive_failures{host="e1"}`, 0)
		if got := metricValue(metrics, `kubeftp_edge_playbook_runs_total{mode="apply",result="ok"}`); got < 1 {
			t.Errorf("apply runs ok = %v, want at least 1", got)
		}
	})

	// One FTP session, opened now from its own client address, is used after every change from
	// here on: its control connection stays on the HAProxy worker it started on, each new data
	// connection reaches the current worker, and the stick table (kept across reloads through
	// the local peer) must send it to the node of the control connection, or vsftpd refuses it
	// ("425 Security: Bad IP connecting").
	sessSrc := 3
	sess, err := env.OpenSession(ctx, sessSrc, edgeAddr)
	if err != nil {
		t.Fatalf("opening the long FTP session: %v", err)
	}
	defer sess.Close()
	sessionOK := func(t *testing.T, what string) {
		t.Helper()
		if err := scenario.CheckSession(ctx, sess, "pub/session-"+what+".bin"); err != nil {
			t.Fatalf("the FTP session opened before the reloads, after %s: %v", what, err)
		}
	}
	sessionOK(t, "open")
	sessNode, err := env.StickNode(ctx, ftp, env.Lab.ClientAddrs()[sessSrc])
	if err != nil {
		t.Fatal(err)
	}
	reloadsAtOpen := reloads(ctx, t, env)
	// the node that goes NotReady is not the session's: a session on a node that leaves ends
	for _, k := range plan.Nodes(1) {
		if scenario.NodeName(k) != sessNode {
			plan.NotReady = k
			break
		}
	}
	t.Logf("the session runs through %s; %s goes NotReady", sessNode, scenario.NodeName(plan.NotReady))
	steps := plan.Steps()
	changes := 0

	part("2 a NotReady node is drained on the edge, without a reload", func(t *testing.T) {
		// weights alone change: set through the runtime API, one worker, one hash ring
		step(t, steps[1], false)
		sessionOK(t, "notready")
		// drained in the file too, not only in the running HAProxy: a reload keeps it so
		cfg, _, err := env.Lab.EdgeConfig(1)
		if err != nil {
			t.Fatal(err)
		}
		// its control and passive server lines, both at weight 0
		if lines, drained := lab.DrainedLines(cfg, scenario.NodeName(plan.NotReady)); lines != 2 || drained != 2 {
			t.Errorf("haproxy.cfg has %d server lines of %s, %d at weight 0; want 2 and 2:\n%s",
				lines, scenario.NodeName(plan.NotReady), drained, cfg)
		}
	})

	part("3 an added node joins the edge", func(t *testing.T) {
		step(t, steps[2], true)
		changes++
		sessionOK(t, "added")
	})

	nodes := plan.Nodes(3)
	nodeList := func(ks ...int) string {
		var s []string
		for _, k := range ks {
			s = append(s, strconv.Itoa(k))
		}
		return strings.Join(s, ",")
	}

	part("two FTP Services on two edge addresses", func(t *testing.T) {
		addr2, err := env.AddEdgeAddress(ctx, 1, 200)
		if err != nil {
			t.Fatal(err)
		}
		// the second Service's NodePorts on every node (kube-proxy), to the same vsftpd pod
		if _, err := env.Lab.Script(ctx, "nodeport-add", "all", "30022", "21100", "21110", "+10000"); err != nil {
			t.Fatal(err)
		}
		if _, err := env.CreateService(ctx, scenario.FTPService{
			Name: "ftp2", EdgeAddress: addr2.String(), ControlNodePort: 30022,
			PassiveMin: 21100, PassiveMax: 21110, PassiveOffset: 10000,
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := env.WaitServed(ctx, 2*time.Minute,
			scenario.Served{Service: ftp, Nodes: nodes, Drained: plan.Drained(3), PassiveMin: 21100, PassiveMax: 21110},
			scenario.Served{Service: scenario.Namespace + "/ftp2", Nodes: nodes, Drained: plan.Drained(3), PassiveMin: 21100, PassiveMax: 21110},
		); err != nil {
			t.Fatal(err)
		}
		if _, err := env.WaitApplied(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		changes++
		// vsftpd's PASV replies name edge 1's first address; curl connects to the control
		// connection's host instead, so both clients exercise the second address's listeners
		for _, a := range []netip.Addr{edgeAddr, addr2} {
			if _, err := env.RoundTrips(ctx, a, plan.TransferSize, "two-"+a.String(),
				[]lab.Client{lab.CurlEPSV, lab.CurlPASV}, 0, 1); err != nil {
				t.Errorf("through %s: %v", a, err)
			}
		}
		sessionOK(t, "second-service")
	})

	part("a Local-policy Service follows its pod to another node", func(t *testing.T) {
		addr3, err := env.AddEdgeAddress(ctx, 1, 201)
		if err != nil {
			t.Fatal(err)
		}
		const ctrlNP, hcNP = 30023, 32523
		from, to := nodes[0], nodes[len(nodes)-1]
		// kube-proxy for a Local Service: the NodePorts forward only where the pod runs, and
		// /healthz on the health check NodePort says 200 there, 503 on every other node
		podOn := func(k int) {
			t.Helper()
			for _, n := range nodes {
				state := "fail"
				if n == k {
					state = "ok"
				}
				if _, err := env.Lab.Script(ctx, "healthz", strconv.Itoa(n), strconv.Itoa(hcNP), state); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := env.Lab.Script(ctx, "nodeport-del", nodeList(nodes...), strconv.Itoa(ctrlNP)); err != nil {
				t.Fatal(err)
			}
			if _, err := env.Lab.Script(ctx, "nodeport-add", nodeList(k), strconv.Itoa(ctrlNP), "21100", "21110", "+9000"); err != nil {
				t.Fatal(err)
			}
			if err := env.SetEndpoints(ctx, "local", k); err != nil {
				t.Fatal(err)
			}
		}
		podOn(from)
		if _, err := env.CreateService(ctx, scenario.FTPService{
			Name: "local", EdgeAddress: addr3.String(), ControlNodePort: ctrlNP,
			PassiveMin: 21100, PassiveMax: 21110, PassiveOffset: 9000, HealthCheckNodePort: hcNP,
		}); err != nil {
			t.Fatal(err)
		}
		local := scenario.Namespace + "/local"
		for i, k := range []int{from, to} {
			if i == 1 {
				podOn(to)
			}
			if _, err := env.WaitServed(ctx, 2*time.Minute, scenario.Served{Service: local, Nodes: []int{k}, PassiveMin: 21100, PassiveMax: 21110}); err != nil {
				t.Fatalf("pod on %s: %v", scenario.NodeName(k), err)
			}
			if _, err := env.WaitApplied(ctx, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
			changes++
			if _, err := env.RoundTrips(ctx, addr3, plan.TransferSize, "local-"+scenario.NodeName(k),
				[]lab.Client{lab.CurlEPSV, lab.CurlPASV}, 0, 1); err != nil {
				t.Errorf("pod on %s: %v", scenario.NodeName(k), err)
			}
			sessionOK(t, "local-"+scenario.NodeName(k))
		}
	})

	part("the FTP session stayed usable across every reload", func(t *testing.T) {
		got := reloads(ctx, t, env) - reloadsAtOpen
		if got < changes {
			t.Errorf("%d reloads while the session was open, want at least %d (one per change)", got, changes)
		}
		sessionOK(t, "end")
		// The transfers on the session prove its data connections still reach its node: vsftpd
		// refuses (425) a data connection from another node's address. The stick entry must
		// still be there and name that node: each reload waits for the new worker's peers
		// resync, so no reload, however soon after the last, loses the table.
		switch n, err := env.StickNode(ctx, ftp, env.Lab.ClientAddrs()[sessSrc]); {
		case err != nil:
			t.Errorf("after %d reloads: %v", got, err)
		case n != sessNode:
			t.Errorf("the session's stick entry moved to %s, want %s", n, sessNode)
		}
		t.Logf("one session, %d reloads, every transfer on it fine", got)
	})
	// the next step restarts the FTP server, as a rollout would: its sessions end there
	sess.Close()

	part("4 the passive range moves; edge and vsftpd follow", func(t *testing.T) {
		o := step(t, steps[3], true)
		// the old range's listeners are gone, the new ones carry real transfers (checked in
		// the step); a fresh session gets a PASV port from the new range
		s, err := env.OpenSession(ctx, 0, edgeAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		rep, err := s.Cmd(ctx, "PASV")
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`,(\d+),(\d+)\)`).FindStringSubmatch(rep.Text)
		if rep.Code != 227 || m == nil {
			t.Fatalf("PASV: %s", rep)
		}
		hi, _ := strconv.Atoi(m[1])
		lo, _ := strconv.Atoi(m[2])
		if port := hi*256 + lo; port < plan.PassiveMin || port > plan.PassiveMax {
			t.Errorf("PASV port %d outside %d-%d", port, plan.PassiveMin, plan.PassiveMax)
		}
		if o.Served.PassiveMin != plan.PassiveMin {
			t.Errorf("step checked passive %d-%d", o.Served.PassiveMin, o.Served.PassiveMax)
		}
	})

	part("the watcher's state matches the edge", func(t *testing.T) {
		gen, err := env.WaitApplied(ctx, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		metrics := metricsOf(ctx, t, env)
		wantMetric(t, metrics, `kubeftp_edge_services{state="served"}`, 3)
		wantMetric(t, metrics, `kubeftp_edge_host_consecutive_failures{host="e1"}`, 0)
		for _, r := range []string{"failed", "partial", "error"} {
			if v := metricValue(metrics, `kubeftp_edge_playbook_runs_total{mode="apply",result="`+r+`"}`); v > 0 {
				t.Errorf("%v playbook runs %s", v, r)
			}
		}
		t.Logf("edge, state ConfigMap and desired state at generation %s", gen)
	})
}

func reloads(ctx context.Context, t *testing.T, env *scenario.Env) int {
	t.Helper()
	n, err := env.Reloads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func metricsOf(ctx context.Context, t *testing.T, env *scenario.Env) string {
	t.Helper()
	m, err := env.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// metricValue is the value of the sample whose name and labels are exactly series (-1: none).
func metricValue(text, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

func wantMetric(t *testing.T, text, series string, want float64) {
	t.Helper()
	if got := metricValue(text, series); got != want {
		t.Errorf("%s = %v, want %v", series, got, want)
	}
}
