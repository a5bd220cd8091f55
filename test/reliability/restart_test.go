package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// playbookRunning reports whether an ansible-playbook of the watcher with work dir work runs.
func playbookRunning(work string) bool {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(data)
		if strings.Contains(s, "ansible-playbook") && strings.Contains(s, work) {
			return true
		}
	}
	return false
}

// processesOf counts the processes whose command line mentions work (the watcher's work dir:
// ansible-playbook, its workers, ssh).
func processesOf(work string) int {
	n := 0
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		if data, err := os.ReadFile(p); err == nil && strings.Contains(string(data), work) {
			n++
		}
	}
	return n
}

// TestWatcherKilledMidRun SIGKILLs the watcher (the whole container: watcher, ansible-playbook,
// ssh) while a playbook run is changing the edges, at different points of the run. Every edge
// keeps a config that passes haproxy -c with a worker serving it — the old generation or the
// new one, nothing in between — and a new watcher converges all of them to the desired config.
func TestWatcherKilledMidRun(t *testing.T) {
	e := newEnv(t, 8*time.Minute)
	w := e.served(watcherConfig{})
	inv := e.inventory("w2", "")
	// into the run by a fixed delay, and right after edge 1's file was replaced (mid-reload)
	for round, delay := range []time.Duration{500 * time.Millisecond, 3 * time.Second, -1} {
		before := map[int]string{}
		for i := 1; i <= labEdges; i++ {
			before[i] = e.edgeGeneration(i)
		}
		if err := e.setReady(e.ctx, 3, round%2 == 1); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "a playbook run", func() (bool, string) { return playbookRunning(w.work), "" })
		if delay < 0 {
			eventually(t, 60*time.Second, "edge 1's config replaced", func() (bool, string) {
				return e.edgeGeneration(1) != before[1], ""
			})
		} else {
			time.Sleep(delay)
		}
		running := playbookRunning(w.work)
		w.kill()
		when := delay.String() + " into the run"
		if delay < 0 {
			when = "as soon as edge 1's config was replaced"
		}
		t.Logf("round %d: SIGKILL %s (playbook still running: %v)", round+1, when, running)
		time.Sleep(time.Second)
		if n := processesOf(w.work); n != 0 {
			t.Errorf("round %d: %d processes of the killed watcher still run", round+1, n)
		}
		var gens []string
		for i := 1; i <= labEdges; i++ {
			if err := e.haproxyCheck(i); err != nil {
				t.Errorf("round %d: %v", round+1, err)
			}
			procs, err := e.lab.ShowProc(e.ctx, i)
			if _, ok := procs.CurrentWorker(); err != nil || !ok {
				t.Errorf("round %d: edge %d has no HAProxy worker after the kill: %v", round+1, i, err)
			}
			gens = append(gens, fmt.Sprintf("e%d %s→%s", i, short(before[i]), short(e.edgeGeneration(i))))
		}
		t.Logf("round %d: generations after the kill: %s", round+1, strings.Join(gens, ", "))
		restarted := time.Now()
		w = e.startWatcher(fmt.Sprintf("w1-restart%d", round+1), watcherConfig{inventory: inv})
		e.waitConverged(90*time.Second, fmt.Sprintf("round %d: every edge after the restart", round+1))
		t.Logf("round %d: restart → every edge at the desired config: %s", round+1, time.Since(restarted).Round(time.Millisecond))
	}
	if err := e.roundTrip(e.ctx, "after-kills", 1<<20); err != nil {
		t.Errorf("FTP after the kills: %v", err)
	}
}

func short(gen string) string { return gen[:min(len(gen), 8)] }

// TestControlPlaneRestart restarts kube-apiserver, then etcd, under a running watcher (with
// leader election, as deployed). After each, a change in the cluster reaches every edge. A
// watcher that exits on the way (lost Lease) is started again, as its Deployment would.
func TestControlPlaneRestart(t *testing.T) {
	e := newEnv(t, 8*time.Minute)
	w := e.served(watcherConfig{leaderElect: true})
	restarts := 0
	// converged restarts an exited watcher (restartPolicy: Always) before it looks
	converged := func() (bool, string) {
		if w.exited() {
			restarts++
			t.Logf("the watcher exited (%d restarts so far); log tail:\n%s", restarts, w.logTail(3))
			w = e.startWatcher(fmt.Sprintf("w1-restart%d", restarts), watcherConfig{leaderElect: true, inventory: e.inventory(fmt.Sprintf("r%d", restarts), "")})
		}
		return e.converged()
	}

	world.cluster.StopAPIServer()
	down := time.Now()
	time.Sleep(5 * time.Second)
	if err := world.cluster.StartAPIServer(e.ctx); err != nil {
		t.Fatalf("starting kube-apiserver again: %v", err)
	}
	t.Logf("kube-apiserver down for %s", time.Since(down).Round(time.Millisecond))
	changed := time.Now()
	if err := e.setReady(e.ctx, 3, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "a change after the API server restart", converged)
	t.Logf("change after the API server restart → every edge: %s", time.Since(changed).Round(time.Millisecond))

	if err := world.cluster.RestartEtcd(e.ctx); err != nil {
		t.Fatalf("restarting etcd: %v", err)
	}
	changed = time.Now()
	if err := e.setReady(e.ctx, 3, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "a change after the etcd restart", converged)
	t.Logf("change after the etcd restart → every edge: %s; watcher restarts: %d", time.Since(changed).Round(time.Millisecond), restarts)
	if err := e.roundTrip(e.ctx, "after-control-plane", 1<<20); err != nil {
		t.Errorf("FTP after the control plane restarts: %v", err)
	}
}

// TestInterruptedBeforeReload leaves edge 1 the way a watcher killed between the role's
// replace and its reload does: the new file in place, HAProxy still serving the old one. The
// next watcher's run finds the file already as rendered; it must still put it into service.
func TestInterruptedBeforeReload(t *testing.T) {
	e := newEnv(t, 5*time.Minute)
	w := e.served(watcherConfig{})
	w.kill()
	if err := e.setReady(e.ctx, 3, false); err != nil {
		t.Fatal(err)
	}
	gen, err := e.desiredGeneration()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := e.expectedConfig(1, gen)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.lab.WriteEdgeConfig(1, cfg); err != nil {
		t.Fatal(err)
	}
	running, err := e.lab.ServersState(e.ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want, got := configServers(cfg), runningServers(running); want == got {
		t.Fatalf("edge 1 already serves the new file (%q): the setup does not leave it mid-run", got)
	}
	restarted := time.Now()
	e.startWatcher("w2", watcherConfig{inventory: e.inventory("w2", "")})
	e.waitConverged(90*time.Second, "edge 1 serving the file the interrupted run left")
	t.Logf("restart → every edge serves the desired config: %s", time.Since(restarted).Round(time.Millisecond))
	if err := e.roundTrip(e.ctx, "after-interrupted-reload", 1<<20); err != nil {
		t.Errorf("FTP after the interrupted reload: %v", err)
	}
}
