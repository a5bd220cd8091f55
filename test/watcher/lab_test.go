package watcher

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubeftp/kubeftp-edge/lab"
	"github.com/kubeftp/kubeftp-edge/watcher/apply"
	"github.com/kubeftp/kubeftp-edge/watcher/controller"
)

// TestWatcherDrivesTheLabEdge runs the watcher with the real runner: ansible-playbook over SSH
// with pinned host keys to the lab's edge HAProxy, in front of nodes with real NodePorts and
// vsftpd. The Kubernetes objects mirror the lab: the Service's NodePorts are the ones the lab's
// nodes forward, and the Nodes' InternalIPs are the lab nodes' addresses.
func TestWatcherDrivesTheLabEdge(t *testing.T) {
	e := newEnv(t)
	for _, bin := range []string{"ansible-playbook", "haproxy", "curl", "lftp", "ssh"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is required (make test installs it): %v", bin, err)
		}
	}
	ctx, cancel := context.WithTimeout(e.ctx, 3*time.Minute)
	defer cancel()
	l := lab.UpForTest(ctx, t, lab.Options{Prefix: "kfwatch", Net: "10.241", Nodes: 3, Edges: 1, Clients: 2})
	edge := netip.AddrPortFrom(l.EdgeAddr(1), 21)
	pasvN := int32(l.PassiveMax() - l.PassiveMin() + 1)
	e.createService(ftpService("ftp", int32(l.ControlNodePort()), int32(l.PassiveMin()), pasvN,
		int32(l.PassiveMin()+l.PassiveOffset()), map[string]string{"kubeftp.io/edge-address": l.EdgeAddr(1).String()}))
	e.createNode("n1", l.NodeAddr(1).String())
	e.createNode("n2", l.NodeAddr(2).String())
	n1, n2, n3 := e.nodeName("n1"), e.nodeName("n2"), e.nodeName("n3")

	inv, err := apply.LoadInventory(l.Inventory())
	if err != nil {
		t.Fatal(err)
	}
	work, err := os.MkdirTemp("", "kfw-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	runner, err := apply.NewRunner(apply.RunnerConfig{
		InventoryPath: l.Inventory(), SSHKeyPath: l.SSHKey(), KnownHostsPath: l.KnownHosts(), WorkDir: work,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runner.Close() })
	preflight, err := apply.NewPreflight(l.SSHKey(), l.KnownHosts(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	opts := e.desiredOptions()
	opts.DefaultEdgeAddress = ""
	opts.NodeSelector = labels.SelectorFromSet(labels.Set{"kubeftp-test": e.nodeTag})
	w := e.startWatcher(watcherOpts{
		applier: runner, preflight: preflight, inventory: inv.Hosts, desired: &opts,
		resync: 4 * time.Second, window: 500 * time.Millisecond,
	})

	e.waitPushWithin(w, 60*time.Second, "n1 and n2", servedOn(e.ns, "ftp", n1, n2))
	waitEdge(ctx, t, l, "both nodes on the edge", n1, n2)
	roundTrip(ctx, t, l, edge, "before")
	e.waitEventMessage("ftp", controller.ReasonApplied, "applied to 1 edge hosts")

	t.Run("a node added in the API server appears on the edge", func(t *testing.T) {
		start := time.Now()
		e.createNode("n3", l.NodeAddr(3).String())
		took := waitEdge(ctx, t, l, "n3 on the edge", n1, n2, n3)
		e.waitPushWithin(w, 60*time.Second, "n3 push finished", servedOn(e.ns, "ftp", n1, n2, n3))
		t.Logf("node created → edge HAProxy serving it: %s; → playbook run finished: %s",
			took(start).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		for i := range 3 {
			roundTrip(ctx, t, l, edge, "after-"+string(rune('a'+i)))
		}
	})

	t.Run("vars.json of the state ConfigMap re-applied by hand gives the same haproxy.cfg", func(t *testing.T) {
		applied, _, err := l.EdgeConfig(1)
		if err != nil {
			t.Fatal(err)
		}
		// the ConfigMap is written when the run ended; the edge's file changed during it
		last := w.pushes()[len(w.pushes())-1].State
		eventually(t, 60*time.Second, "state ConfigMap at the last push", func() bool {
			return e.stateConfigMap().Data[controller.KeyGeneration] == last.Generation
		})
		if !bytes.Contains(applied, []byte("generation "+last.Generation)) {
			t.Fatalf("edge config is not the last pushed generation %s:\n%s", last.Generation, applied)
		}
		cm := e.stateConfigMap()
		varsFile := filepath.Join(t.TempDir(), "vars.json")
		if err := os.WriteFile(varsFile, []byte(cm.Data[controller.KeyVars]), 0o600); err != nil {
			t.Fatal(err)
		}
		// the edge lost its config (a reinstall, a bad hand edit): a person recovers it
		if err := l.WriteEdgeConfig(1, append(bytes.Clone(applied), []byte("# edited by hand\n")...)); err != nil {
			t.Fatal(err)
		}
		run, err := l.RunPlaybook(ctx, lab.PlaybookOptions{VarsFile: varsFile})
		if err != nil {
			t.Fatal(err)
		}
		if h := run.Hosts["e1"]; run.ExitCode != 0 || h.Failed() || !h.ConfigChanged {
			t.Fatalf("by-hand run: exit %d, %+v\n%s", run.ExitCode, h, run.Output)
		}
		got, _, err := l.EdgeConfig(1)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, applied) {
			t.Errorf("haproxy.cfg from vars.json differs from the watcher's:\n%s\n---\n%s", got, applied)
		}
	})

	t.Run("resync converges a hand edit back", func(t *testing.T) {
		// Syncs are serial and a resync ends after its drift check and any push: two whole
		// resyncs after now mean nothing from the earlier steps is still in flight.
		settle := func() {
			t.Helper()
			resyncs := value(t, w.ctrl.Metrics().Syncs.WithLabelValues("ok", "resync"))
			// a wait for progress, not a speed bound: a drift check run takes 15-20 s on a
			// loaded 2-core machine, and a resync may wait for a push before it
			eventually(t, 3*time.Minute, "two more resyncs", func() bool {
				return value(t, w.ctrl.Metrics().Syncs.WithLabelValues("ok", "resync")) >= resyncs+2
			})
		}
		settle()
		applied, _, err := l.EdgeConfig(1)
		if err != nil {
			t.Fatal(err)
		}
		before := len(w.pushes())
		if err := l.WriteEdgeConfig(1, append(bytes.Clone(applied), []byte("# drift\n")...)); err != nil {
			t.Fatal(err)
		}
		// a drift check, then the push (after a resync that may be in flight): 10 s on a
		// quiet machine, over a minute on a loaded one
		deadline := time.Now().Add(3 * time.Minute)
		for {
			got, _, err := l.EdgeConfig(1)
			if err == nil && bytes.Equal(got, applied) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("hand edit not reverted within 3m; pushes %d → %d", before, len(w.pushes()))
			}
			time.Sleep(200 * time.Millisecond)
		}
		settle()
		if got := len(w.pushes()) - before; got != 1 {
			t.Errorf("%d pushes to revert one drifted host, want 1", got)
		}
		// idle resyncs after that push nothing
		n := len(w.pushes())
		settle()
		if got := len(w.pushes()); got != n {
			t.Errorf("idle resyncs pushed %d times", got-n)
		}
	})
}

// waitEdge waits until edge 1's config and its running HAProxy list exactly the given servers
// in the control backend (all up), and returns a func measuring from a start time to then.
func waitEdge(ctx context.Context, t *testing.T, l *lab.Lab, what string, nodes ...string) func(time.Time) time.Duration {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		cfg, _, cfgErr := l.EdgeConfig(1)
		states, err := l.ServersState(ctx, 1)
		if cfgErr == nil && err == nil && edgeHas(cfg, states, nodes) {
			at := time.Now()
			return func(start time.Time) time.Duration { return at.Sub(start) }
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: edge not serving %v within 60s; servers %+v (err %v)\n%s", what, nodes, states, err, cfg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func edgeHas(cfg []byte, states []lab.ServerState, nodes []string) bool {
	for _, n := range nodes {
		if !bytes.Contains(cfg, []byte("server "+n+" ")) {
			return false
		}
	}
	var ctrl []string
	for _, s := range states {
		if strings.HasSuffix(s.Backend, "_ctrl") {
			if s.OpState != 2 {
				return false
			}
			ctrl = append(ctrl, s.Server)
		}
	}
	return len(ctrl) == len(nodes)
}

func roundTrip(ctx context.Context, t *testing.T, l *lab.Lab, edge netip.AddrPort, name string) {
	t.Helper()
	for i, c := range []lab.Client{lab.CurlEPSV, lab.Lftp} {
		tr := lab.Transfer{Client: c, Source: l.ClientAddrs()[i%len(l.ClientAddrs())], Server: edge,
			Path: "pub/" + name + "-" + string(c) + ".bin"}
		if err := l.RoundTrip(ctx, tr, 2<<20); err != nil {
			t.Errorf("%s through the edge (%s): %v", c, name, err)
		}
	}
}
