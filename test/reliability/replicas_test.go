package reliability

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runSpan is one module execution on an edge host, as the interpreter wrapper logged it.
type runSpan struct {
	replica, host string
	start, end    float64
}

// interpreterWrapper writes a Python interpreter for the edges that logs the start and end of
// every module run into runs.log with the replica's name and the host. Every task Ansible runs
// on an edge goes through it: the log is evidence kept on the edge side, independent of what
// the watchers say about themselves.
func interpreterWrapper(t *testing.T, dir, replica, runsLog string) string {
	t.Helper()
	path := filepath.Join(dir, "python-"+replica)
	// SIGHUP ignored: when a killed watcher's SSH connection drops, the module keeps running
	// on the edge, and its end must still be logged.
	script := fmt.Sprintf(`#!/bin/sh
trap '' HUP
h=$(ip -o -4 addr show scope global | awk '{print $4; exit}')
echo "%[1]s $h start $(date +%%s.%%N) $$" >> %[2]s
/usr/bin/python3 "$@"
rc=$?
echo "%[1]s $h end $(date +%%s.%%N) $$" >> %[2]s
exit $rc
`, replica, runsLog)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func readSpans(t *testing.T, path string) []runSpan {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("runs log: %v", err)
	}
	defer f.Close()
	open := map[string]*runSpan{}
	var out []runSpan
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) != 5 {
			continue
		}
		ts, err := strconv.ParseFloat(fl[3], 64)
		if err != nil {
			continue
		}
		key := fl[0] + fl[1] + fl[4]
		switch fl[2] {
		case "start":
			open[key] = &runSpan{replica: fl[0], host: fl[1], start: ts}
		case "end":
			if s := open[key]; s != nil {
				s.end = ts
				out = append(out, *s)
				delete(open, key)
			}
		}
	}
	for _, s := range open { // killed mid-module: open until the end of the log
		s.end = 1e18
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	return out
}

// TestTwoReplicas runs two watchers with leader election against the same edges while the
// cluster changes, then SIGKILLs the leader mid-run. Evidence from the edges (every module
// execution, logged by the interpreter each replica's inventory points at) shows that module
// runs of the two replicas never overlap on a host and that pushing switched replica only at
// the takeover.
func TestTwoReplicas(t *testing.T) {
	e := newEnv(t, 8*time.Minute)
	dir := t.TempDir()
	runsLog := filepath.Join(dir, "runs.log")
	for k := 1; k <= 3; k++ {
		e.createNode(k)
	}
	e.createService(e.labService("ftp"))
	ws := map[string]*watcherProc{}
	start := time.Now()
	for _, r := range []string{"a", "b"} {
		ws[r] = e.startWatcher("replica-"+r, watcherConfig{leaderElect: true,
			inventory: e.inventory("replica-"+r, interpreterWrapper(t, dir, r, runsLog))})
	}
	e.firstPush(start, "first push by the leader")
	leader := func() (string, string) {
		var leaders []string
		for r, w := range ws {
			m, err := w.scrape(e.ctx)
			if err == nil && metric(m, "kubeftp_edge_leader") == 1 {
				leaders = append(leaders, r)
			}
		}
		sort.Strings(leaders)
		if len(leaders) != 1 {
			return "", fmt.Sprintf("leaders %v", leaders)
		}
		return leaders[0], ""
	}
	first, why := leader()
	if first == "" {
		t.Fatalf("want exactly one leader: %s", why)
	}
	for round := range 2 {
		if err := e.setReady(e.ctx, 3, round%2 == 1); err != nil {
			t.Fatal(err)
		}
		e.waitConverged(90*time.Second, fmt.Sprintf("change %d", round+1))
	}
	// kill the leader in the middle of a run
	if err := e.setReady(e.ctx, 2, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a playbook run of the leader", func() (bool, string) { return playbookRunning(ws[first].work), "" })
	time.Sleep(time.Second)
	ws[first].kill()
	killed := time.Now()
	other := map[string]string{"a": "b", "b": "a"}[first]
	eventually(t, 60*time.Second, "the other replica leads", func() (bool, string) {
		m, err := ws[other].scrape(e.ctx)
		if err != nil {
			return false, err.Error()
		}
		return metric(m, "kubeftp_edge_leader") == 1, ""
	})
	t.Logf("leader %s killed mid-run → replica %s leads after %s", first, other, time.Since(killed).Round(time.Millisecond))
	e.waitConverged(90*time.Second, "every edge after the takeover")
	if err := e.setReady(e.ctx, 2, true); err != nil {
		t.Fatal(err)
	}
	e.waitConverged(90*time.Second, "a change after the takeover")

	spans := readSpans(t, runsLog)
	byReplica := map[string]int{}
	for _, s := range spans {
		byReplica[s.replica]++
	}
	t.Logf("module runs on the edges: %v", byReplica)
	if byReplica["a"] == 0 || byReplica["b"] == 0 {
		t.Fatalf("want module runs of both replicas (one before, one after the takeover), got %v", byReplica)
	}
	overlaps := 0
	for i, s := range spans {
		for _, o := range spans[i+1:] {
			if o.start >= s.end {
				break
			}
			if o.replica != s.replica && o.host == s.host {
				overlaps++
				if overlaps <= 3 {
					t.Errorf("on %s, a module of replica %s (%.3f–%.3f) overlaps one of %s (%.3f–%.3f)",
						s.host, s.replica, s.start, s.end, o.replica, o.start, o.end)
				}
			}
		}
	}
	switches := 0
	for i := 1; i < len(spans); i++ {
		if spans[i].replica != spans[i-1].replica {
			switches++
		}
	}
	t.Logf("replica switches in the time-ordered module runs: %d, overlapping runs: %d", switches, overlaps)
	if switches != 1 {
		t.Errorf("pushing switched replica %d times, want once (at the takeover)", switches)
	}
}
