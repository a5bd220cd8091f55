package reliability

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubeftp/kubeftp-edge/watcher/controller"
)

// served brings the test's nodes and the lab's FTP Service up, starts a watcher and waits
// until every edge serves them with FTP working through edge 1.
func (e *env) served(c watcherConfig) *watcherProc {
	e.t.Helper()
	for k := 1; k <= 3; k++ {
		e.createNode(k)
	}
	e.createService(e.labService("ftp"))
	if c.inventory == "" {
		c.inventory = e.inventory("w1", "")
	}
	start := time.Now()
	w := e.startWatcher("w1", c)
	e.push = e.firstPush(start, "first push to every edge")
	if err := e.roundTrip(e.ctx, "first", 1<<20); err != nil {
		e.t.Fatalf("FTP through the edge after the first push: %v", err)
	}
	return w
}

// TestEdgeUnreachable stops sshd on edge 3 of 3: edges 1 and 2 get every change on time, edge
// 3 is reported (metric, Event, state ConfigMap) and retried with backoff, and converges on
// its own once sshd is back.
func TestEdgeUnreachable(t *testing.T) {
	e := newEnv(t, 5*time.Minute)
	w := e.served(watcherConfig{maxBackoff: 8 * time.Second})
	if _, err := e.lab.Script(e.ctx, "edge-sshd", "stop", "3"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = e.lab.Script(e.ctx, "edge-sshd", "start", "3") })
	before := e.edgeGeneration(3)

	start := time.Now()
	if err := e.setReady(e.ctx, 3, false); err != nil {
		t.Fatal(err)
	}
	// edges 1 and 2 converge while 3 is down
	eventually(t, 30*time.Second, "edges 1 and 2 with node 3 drained", func() (bool, string) {
		for i := 1; i <= 2; i++ {
			cfg, _, _ := e.lab.EdgeConfig(i)
			if !drainedIn(cfg, e.nodeName(3)) || generationOf(cfg) == before {
				return false, "edge " + strconv.Itoa(i) + " at " + generationOf(cfg)
			}
		}
		return true, ""
	})
	tookHealthy := time.Since(start)
	t.Logf("node NotReady → edges 1 and 2 updated while edge 3 is down: %s", tookHealthy.Round(time.Millisecond))
	// on time: within one playbook run as long as the first push to all three, plus 15 s
	if limit := e.push + 15*time.Second; tookHealthy > limit {
		t.Errorf("healthy edges updated after %s, more than %s: held back by the dead one", tookHealthy, limit)
	}
	if got := e.edgeGeneration(3); got != before {
		t.Errorf("edge 3 changed without sshd: generation %s → %s", before, got)
	}

	// reported: metric, Event, state ConfigMap
	eventually(t, 30*time.Second, "edge 3 reported unreachable in the metrics", func() (bool, string) {
		m, err := w.scrape(e.ctx)
		if err != nil {
			return false, err.Error()
		}
		fails := metric(m, "kubeftp_edge_host_consecutive_failures", `host="e3"`)
		pre := metric(m, "kubeftp_edge_host_preflight", `host="e3"`, `status="unreachable"`)
		ok := metric(m, "kubeftp_edge_host_consecutive_failures", `host="e1"`)
		return fails >= 2 && pre == 1 && ok == 0, "e3 failures " + strconv.FormatFloat(fails, 'f', 0, 64) +
			", preflight unreachable " + strconv.FormatFloat(pre, 'f', 0, 64)
	})
	ev := e.waitEvent("ftp", corev1.EventTypeWarning, controller.ReasonEdgeHostFailed, 30*time.Second, "e3", "unreachable")
	t.Logf("event: %s %s", ev.Reason, ev.Message)
	hosts, gen, err := e.stateHosts(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h := hosts["e3"]; h.Result != controller.ResultPreflightFailed || h.Preflight != "unreachable" || h.Hash == gen {
		t.Errorf("state ConfigMap, e3: %+v (generation %s)", h, gen)
	}
	for _, n := range []string{"e1", "e2"} {
		if h := hosts[n]; h.Result != controller.ResultOK {
			t.Errorf("state ConfigMap, %s: %+v", n, h)
		}
	}

	// retried with backoff: the gaps between pre-flights of e3 grow
	m1, _ := w.scrape(e.ctx)
	f1 := metric(m1, "kubeftp_edge_host_consecutive_failures", `host="e3"`)
	time.Sleep(12 * time.Second)
	m2, _ := w.scrape(e.ctx)
	f2 := metric(m2, "kubeftp_edge_host_consecutive_failures", `host="e3"`)
	t.Logf("edge 3 failures: %.0f, 12 s later %.0f (base 2 s, doubling, cap 8 s)", f1, f2)
	if f2 <= f1 || f2-f1 > 4 {
		t.Errorf("retries of edge 3 in 12 s: %.0f; want 1 to 4 with a 2-8 s backoff", f2-f1)
	}
	if err := e.roundTrip(e.ctx, "one-edge-down", 1<<20); err != nil {
		t.Errorf("FTP through edge 1 while edge 3 is down: %v", err)
	}

	// back: converges without anyone
	if _, err := e.lab.Script(e.ctx, "edge-sshd", "start", "3"); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	e.waitConverged(30*time.Second, "edge 3 after sshd came back")
	t.Logf("sshd back → edge 3 converged: %s", time.Since(back).Round(time.Millisecond))
	eventually(t, 15*time.Second, "e3 ok in the state ConfigMap", func() (bool, string) {
		hosts, gen, err := e.stateHosts(e.ctx)
		if err != nil {
			return false, err.Error()
		}
		h := hosts["e3"]
		return h.Result == controller.ResultOK && h.Hash == gen && h.Failures == 0, h.Result
	})
}

// TestChangedHostKey gives edge 2 a new host key (reinstalled, or someone in the middle): the
// watcher refuses it with key-mismatch before any playbook touches it, writes nothing there,
// and keeps serving edges 1 and 3.
func TestChangedHostKey(t *testing.T) {
	e := newEnv(t, 5*time.Minute)
	w := e.served(watcherConfig{})
	keyFile := filepath.Join(e.lab.Dir(), "e2", "ssh_host_ed25519_key")
	saved := map[string][]byte{}
	for _, f := range []string{keyFile, keyFile + ".pub"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		saved[f] = data
	}
	restore := func() {
		_, _ = e.lab.Script(e.ctx, "edge-sshd", "stop", "2")
		for f, data := range saved {
			_ = os.WriteFile(f, data, 0o600)
		}
		_, _ = e.lab.Script(e.ctx, "edge-sshd", "start", "2")
	}
	t.Cleanup(restore)
	if _, err := e.lab.Script(e.ctx, "edge-sshd", "stop", "2"); err != nil {
		t.Fatal(err)
	}
	for f := range saved {
		os.Remove(f)
	}
	if out, err := runCmd(e.ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keyFile); err != nil {
		t.Fatalf("new host key: %v: %s", err, out)
	}
	if _, err := e.lab.Script(e.ctx, "edge-sshd", "start", "2"); err != nil {
		t.Fatal(err)
	}
	cfgBefore, infoBefore, err := e.lab.EdgeConfig(2)
	if err != nil {
		t.Fatal(err)
	}
	filesBefore := dirList(t, filepath.Join(e.lab.Dir(), "e2"))
	logBefore := len(readAll(w.logPath)) // the first push did update e2

	if err := e.setReady(e.ctx, 2, false); err != nil {
		t.Fatal(err)
	}
	ev := e.waitEvent("ftp", corev1.EventTypeWarning, controller.ReasonEdgeHostFailed, 30*time.Second, "e2", "key-mismatch")
	t.Logf("event: %s", ev.Message)
	eventually(t, 30*time.Second, "edges 1 and 3 with node 2 drained", func() (bool, string) {
		for _, i := range []int{1, 3} {
			cfg, _, _ := e.lab.EdgeConfig(i)
			if !drainedIn(cfg, e.nodeName(2)) {
				return false, "edge " + strconv.Itoa(i)
			}
		}
		return true, ""
	})
	m, err := w.scrape(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v := metric(m, "kubeftp_edge_host_preflight", `host="e2"`, `status="key-mismatch"`); v != 1 {
		t.Errorf("kubeftp_edge_host_preflight{host=e2,status=key-mismatch} = %v, want 1", v)
	}
	hosts, _, err := e.stateHosts(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h := hosts["e2"]; h.Preflight != "key-mismatch" || !bytes.Contains([]byte(h.Message), []byte("does not match known_hosts")) {
		t.Errorf("state ConfigMap, e2: %+v", h)
	}
	// a few retries later: nothing was written to edge 2
	time.Sleep(6 * time.Second)
	cfgAfter, infoAfter, err := e.lab.EdgeConfig(2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cfgBefore, cfgAfter) || !infoBefore.ModTime().Equal(infoAfter.ModTime()) {
		t.Errorf("edge 2's haproxy.cfg changed behind a changed host key (mtime %s → %s)", infoBefore.ModTime(), infoAfter.ModTime())
	}
	if got := dirList(t, filepath.Join(e.lab.Dir(), "e2")); got != filesBefore {
		t.Errorf("files of edge 2 changed behind a changed host key:\nbefore %s\nafter  %s", filesBefore, got)
	}
	if log := readAll(w.logPath)[logBefore:]; strings.Contains(log, `"msg":"edge host updated","host":"e2"`) {
		t.Errorf("the watcher reports e2 updated behind a changed host key")
	}

	// the right key back: it converges
	restore()
	e.waitConverged(40*time.Second, "edge 2 with its pinned key back")
}

// dirList names the files of dir with size and mtime, one per line.
func dirList(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, en := range entries {
		info, err := en.Info()
		if err != nil || info.Mode()&os.ModeSocket != 0 {
			continue
		}
		b.WriteString(en.Name() + " " + strconv.FormatInt(info.Size(), 10) + " " + info.ModTime().Format(time.RFC3339Nano) + "\n")
	}
	return b.String()
}
