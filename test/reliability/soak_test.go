package reliability

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeftp/kubeftp-edge/lab"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// sample is one reading of the watcher's own metrics.
type sample struct {
	at         time.Duration
	goroutines float64
	heap       float64 // go_memstats_heap_inuse_bytes
	rss        float64 // process_resident_memory_bytes
	runs       float64 // apply playbook runs
}

// TestSoak churns the cluster — node 3 flapping Ready every few seconds, the Service's
// timeout annotation changing — while FTP round trips run through edge 1 all the time. A
// session whose control connection went through node 3 may lose its data connection when the
// watcher removes node 3 (the new worker sends it to another node, where vsftpd refuses it:
// 425); a transfer that fails on node 1 or 2, or that the vsftpd log cannot put on a node,
// fails the test. The watcher's goroutines and memory must not grow, and the edge's reloads
// stay bounded by the coalescing window. `make soak` runs it for 30 minutes (-soak=30m); make
// test runs 60 seconds of it.
func TestSoak(t *testing.T) {
	d := *soakFor
	if d == 0 {
		d = 60 * time.Second
	}
	e := newEnv(t, d+6*time.Minute)
	window := 2 * time.Second
	w := e.served(watcherConfig{window: window})
	procs, err := e.lab.ShowProc(e.ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	reloads0 := procs.Master.Reloads
	const flapped = 3
	xferLog := filepath.Join(e.lab.Dir(), "log", "vsftpd-xfer.log")
	logStart := int64(0)
	if fi, err := os.Stat(xferLog); err == nil {
		logStart = fi.Size()
	}
	// every transfer's file is unique (run tag, client, sequence): a failed one can be found
	// in the vsftpd log
	prefix := "soak-" + strconv.FormatInt(time.Now().Unix(), 36) + "-"
	sources := e.soakSources(60)
	ctx, cancel := context.WithTimeout(e.ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup

	// churn
	var flaps, svcChanges, churnErrs atomic.Int64
	var firstChurnErr error // only the churn goroutine writes it; read after wg.Wait
	churnErr := func(err error) {
		if churnErrs.Add(1) == 1 {
			firstChurnErr = err
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(3 * time.Second)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if dl, _ := ctx.Deadline(); time.Until(dl) < time.Second {
				return // the client's rate limiter refuses a call that could outlast the deadline
			}
			if err := e.setReady(ctx, flapped, i%2 == 0); err != nil && ctx.Err() == nil {
				churnErr(fmt.Errorf("node %d Ready=%t: %w", flapped, i%2 == 0, err))
			} else {
				flaps.Add(1)
			}
			if i%4 == 0 {
				// 30m, 31m, 30m, ...: every one a change of the Service's config on the edge
				err := e.annotate(ctx, "ftp", desired.AnnotationTimeoutClient, fmt.Sprintf("%dm", 30+(i/4)%2))
				if err != nil && ctx.Err() == nil {
					churnErr(fmt.Errorf("annotating the Service: %w", err))
				} else {
					svcChanges.Add(1)
				}
			}
		}
	}()

	// FTP all the time: two clients in parallel, small files, fresh sessions
	var okXfers, failed atomic.Int64
	var failMu sync.Mutex
	var failures []soakFailure
	for _, client := range []lab.Client{lab.CurlEPSV, lab.Lftp} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				file := fmt.Sprintf("%s%s-%d.bin", prefix, client, i)
				src := sources.take(e.ctx)
				tr := lab.Transfer{Client: client, Source: src, Server: netipPort(e.lab, 21), Path: "pub/" + file}
				at := time.Since(start)
				xctx, xcancel := context.WithTimeout(context.Background(), 60*time.Second)
				err := e.lab.RoundTrip(xctx, tr, 256<<10)
				xcancel()
				sources.give(src)
				if err == nil {
					okXfers.Add(1)
					// a failed transfer's file stays, for a look at it
					if err := os.Remove(filepath.Join(e.lab.FTPRoot(), tr.Path)); err != nil {
						t.Errorf("removing %s after its round trip: %v", tr.Path, err)
					}
					continue
				}
				failed.Add(1)
				failMu.Lock()
				failures = append(failures, soakFailure{at: at, client: string(client), file: file, err: err})
				failMu.Unlock()
			}
		}()
	}

	// and long sessions, each on one control connection through every reload: a STOR and a
	// RETR every second or so. One that fails is opened again (as a client would), so a
	// session that was on node 3 moves to node 1 or 2 and stays there across every later
	// reload, node 3 coming back included.
	var sessionOps, reopened atomic.Int64
	for j, src := range e.addClientAddrs(220, 6) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			who := fmt.Sprintf("session %d from %s", j, src)
			var sess *lab.Session
			defer func() {
				if sess != nil {
					sess.Close()
				}
			}()
			for i := 0; ctx.Err() == nil; i++ {
				file := fmt.Sprintf("%ssession%d-%d.bin", prefix, j, i)
				at := time.Since(start)
				err := func() error {
					octx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
					defer cancel()
					if sess == nil {
						s, err := e.lab.Dial(octx, src, netipPort(e.lab, 21))
						if err != nil {
							return err
						}
						if err := s.Login(octx); err != nil {
							s.Close()
							return err
						}
						sess = s
					}
					want := []byte(file + strings.Repeat(".", 64<<10))
					if err := sess.Stor(octx, "pub/"+file, want); err != nil {
						return err
					}
					got, err := sess.Retr(octx, "pub/"+file)
					if err != nil {
						return err
					}
					if string(got) != string(want) {
						return fmt.Errorf("RETR pub/%s: %d bytes differ from the %d stored", file, len(got), len(want))
					}
					return nil
				}()
				if err == nil {
					sessionOps.Add(1)
					if err := os.Remove(filepath.Join(e.lab.FTPRoot(), "pub", file)); err != nil {
						t.Errorf("removing %s after its round trip: %v", file, err)
					}
				} else {
					failed.Add(1)
					failMu.Lock()
					failures = append(failures, soakFailure{at: at, client: who, file: file, err: err})
					failMu.Unlock()
					if sess != nil {
						sess.Close()
						sess = nil
						reopened.Add(1)
					}
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}()
	}

	// the watcher's goroutines and memory, every 5 s
	var samples []sample
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			if m, err := w.scrape(ctx); err == nil {
				samples = append(samples, sample{at: time.Since(start), goroutines: metric(m, "go_goroutines"),
					heap: metric(m, "go_memstats_heap_inuse_bytes"), rss: metric(m, "process_resident_memory_bytes"),
					runs: metric(m, "kubeftp_edge_playbook_runs_total", `mode="apply"`, `result="ok"`)})
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)

	t.Logf("soak %s: %d node flaps, %d Service changes (%d API errors); FTP round trips: %d in fresh sessions and %d in 6 long sessions ok (long sessions opened again: %d), %d failed",
		elapsed.Round(time.Second), flaps.Load(), svcChanges.Load(), churnErrs.Load(), okXfers.Load(), sessionOps.Load(), reopened.Load(), failed.Load())
	if firstChurnErr != nil {
		t.Logf("first of %d API errors of the churn: %v", churnErrs.Load(), firstChurnErr)
	}
	if okXfers.Load() == 0 || sessionOps.Load() == 0 {
		t.Errorf("no FTP round trip completed (%d in fresh sessions, %d in long ones)", okXfers.Load(), sessionOps.Load())
	}
	if n := sources.clearErrs.Load(); n > 0 {
		t.Logf("%d stick entries could not be cleared (first: %v): those sources kept their node", n, sources.firstErr)
	}
	e.checkSoakTransfers(xferLog, logStart, prefix, flapped, failures, int(okXfers.Load()+sessionOps.Load()))

	if len(samples) < 4 {
		t.Fatalf("only %d metric samples", len(samples))
	}
	// growth: the last quarter against the first quarter after warm-up
	q := len(samples) / 4
	avg := func(ss []sample, f func(sample) float64) float64 {
		sum := 0.0
		for _, s := range ss {
			sum += f(s)
		}
		return sum / float64(len(ss))
	}
	early, late := samples[1:1+q], samples[len(samples)-q:]
	g0, g1 := avg(early, func(s sample) float64 { return s.goroutines }), avg(late, func(s sample) float64 { return s.goroutines })
	h0, h1 := avg(early, func(s sample) float64 { return s.heap }), avg(late, func(s sample) float64 { return s.heap })
	r0, r1 := avg(early, func(s sample) float64 { return s.rss }), avg(late, func(s sample) float64 { return s.rss })
	t.Logf("watcher goroutines %.0f → %.0f, heap in use %.1f → %.1f MiB, RSS %.1f → %.1f MiB, playbook runs %.0f (%d samples)",
		g0, g1, h0/(1<<20), h1/(1<<20), r0/(1<<20), r1/(1<<20), samples[len(samples)-1].runs, len(samples))
	if g1 > g0+10 {
		t.Errorf("goroutines grew from %.0f to %.0f", g0, g1)
	}
	if h1 > h0*1.5+8<<20 {
		t.Errorf("heap in use grew from %.1f to %.1f MiB", h0/(1<<20), h1/(1<<20))
	}
	if r1 > r0*1.5+16<<20 {
		t.Errorf("RSS grew from %.1f to %.1f MiB", r0/(1<<20), r1/(1<<20))
	}

	// and it settles: node 3 Ready, every edge at the desired config
	if err := e.setReady(e.ctx, 3, true); err != nil {
		t.Fatal(err)
	}
	e.waitConverged(90*time.Second, "every edge after the churn")

	// reloads from the start of the churn until it settled: a playbook run can outlast a
	// short soak, so they are counted once the last change is served
	procs, err = e.lab.ShowProc(e.ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	reloads, total := procs.Master.Reloads-reloads0, time.Since(start)
	t.Logf("edge 1 reloads in %s (churn and settling): %d, coalescing window %s", total.Round(time.Second), reloads, window)
	if limit := int(total/window) + 2; reloads > limit {
		t.Errorf("edge 1 reloaded %d times in %s: more than one per coalescing window (%d)", reloads, total, limit)
	}
	if reloads == 0 {
		t.Errorf("edge 1 never reloaded: the churn did not reach it")
	}
}

// annotate sets one annotation of a Service in the test's namespace.
func (e *env) annotate(ctx context.Context, svc, key, value string) error {
	s, err := world.client.CoreV1().Services(e.ns).Get(ctx, svc, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[key] = value
	_, err = world.client.CoreV1().Services(e.ns).Update(ctx, s, metav1.UpdateOptions{})
	return err
}

// soakFailure is one failed round trip of the soak.
type soakFailure struct {
	at     time.Duration // since the churn started
	client string        // the client program, or which long session
	file   string
	err    error
}

// checkSoakTransfers puts every failed round trip on the node vsftpd saw its session come
// from: failures on the flapped node are allowed and counted, any other fails the test with
// its sessions' log lines. It logs the transfers per node, counted from the vsftpd log.
func (e *env) checkSoakTransfers(xferLog string, from int64, prefix string, flapped int, failures []soakFailure, okRoundTrips int) {
	t := e.t
	t.Helper()
	data, err := os.ReadFile(xferLog)
	if err != nil {
		t.Errorf("vsftpd log: %v", err)
		return
	}
	log := string(data[min(from, int64(len(data))):])
	nodes := map[netip.Addr]int{}
	for k := 1; k <= e.lab.Nodes(); k++ {
		nodes[nodePodAddr(e.lab, k)] = k
	}
	allowed := map[int]int{}
	byFile := sessionsByFile(ftpSessions(log))
	for _, f := range failures {
		a, err := attribute(byFile, f.file, nodes)
		if err == nil && len(a.nodes) == 1 && a.nodes[0] == flapped {
			allowed[flapped]++
			t.Logf("failed transfer at %s on node %d (allowed: it flaps): %s %s: %v", f.at.Round(time.Second), flapped, f.client, f.file, f.err)
			continue
		}
		where := fmt.Sprintf("on node(s) %v", a.nodes)
		if err != nil {
			where = "not attributable: " + err.Error()
		}
		var lines []string
		for _, s := range a.sessions {
			lines = append(lines, s.excerpt(f.file, 40)...)
		}
		t.Errorf("failed transfer at %s, %s %s, %s: %v\nits sessions in the vsftpd log:\n%s",
			f.at.Round(time.Second), f.client, f.file, where, f.err, strings.Join(lines, "\n"))
	}

	ok, bad := transfersByNode(log, prefix, nodes)
	var per []string
	total := 0
	for k := 0; k <= e.lab.Nodes(); k++ {
		total += ok[k]
		if k == 0 && ok[0]+bad[0] == 0 {
			continue
		}
		s := fmt.Sprintf("n%d: %d ok", k, ok[k])
		if k == 0 {
			s = fmt.Sprintf("no node: %d ok", ok[0])
		}
		if bad[k] > 0 {
			s += fmt.Sprintf(", %d failed", bad[k])
			if k == flapped {
				s += " (allowed)"
			}
		}
		per = append(per, s)
	}
	t.Logf("FTP transfers (uploads and downloads) per node, from the vsftpd log: %s; failed round trips on node %d (allowed): %d",
		strings.Join(per, ", "), flapped, allowed[flapped])
	// each round trip that passed is an upload and a download vsftpd logged as OK: fewer
	// means the log is not the one these transfers went to
	if total < 2*okRoundTrips {
		t.Errorf("the vsftpd log has %d OK transfers of this soak, want at least %d (2 per round trip)", total, 2*okRoundTrips)
	}
	for k := 1; k <= e.lab.Nodes(); k++ {
		if ok[k] == 0 {
			t.Errorf("node %d carried no transfer: the soak did not exercise it", k)
		}
	}
	if ok[0]+bad[0] > 0 {
		t.Errorf("%d transfers in the vsftpd log came from an address of no node", ok[0]+bad[0])
	}
}

// nodePodAddr is lab node k's address on the pod network (NET.3.(10+k), lab/lab.sh): the
// nodes MASQUERADE towards the pod, so vsftpd sees a session forwarded by node k from it.
func nodePodAddr(l *lab.Lab, k int) netip.Addr {
	a := l.PodAddr().As4()
	a[3] = byte(10 + k)
	return netip.AddrFrom4(a)
}

// sourcePool hands out the client source addresses of the soak, one round trip at a time,
// each as a new client: HAProxy pins a source to its node (stick on src, 2 h), and after node
// 3's first removal every source would stay on nodes 1 and 2 and the flapping node would carry
// no session. Clearing a source's stick entry before its next round trip lets the hash ring
// place it again, as it places a client it has not seen.
type sourcePool struct {
	e         *env
	table     string // the control backend's stick table on edge 1
	mu        sync.Mutex
	free      []netip.Addr
	clearErrs atomic.Int64
	firstErr  error
}

// soakSources adds n source addresses (NET.1.150 on) to the lab's client namespace and hands
// them out.
func (e *env) soakSources(n int) *sourcePool {
	e.t.Helper()
	p := &sourcePool{e: e}
	tables, err := e.lab.StatsCLI(e.ctx, 1, "show table")
	if err != nil {
		e.t.Fatal(err)
	}
	for _, line := range strings.Split(tables, "\n") {
		// # table: svc_ctrl, type: ip, size:102400, used:1
		if name, ok := strings.CutPrefix(line, "# table: "); ok {
			name, _, _ = strings.Cut(name, ",")
			if strings.HasSuffix(name, "_ctrl") {
				if p.table != "" {
					e.t.Fatalf("edge 1 has two control stick tables, %s and %s; the soak serves one Service", p.table, name)
				}
				p.table = name
			}
		}
	}
	if p.table == "" {
		e.t.Fatalf("edge 1 has no control stick table: %q", tables)
	}
	p.free = e.addClientAddrs(150, n)
	return p
}

// addClientAddrs adds n source addresses NET.1.first on to the lab's client namespace for the
// test's time (the lab's layout leaves .150-.253 free: edges take .1-.40 and .101-.140,
// clients .10-.49).
func (e *env) addClientAddrs(first, n int) []netip.Addr {
	e.t.Helper()
	var out []netip.Addr
	base := e.lab.ClientAddrs()[0].As4()
	for j := range n {
		a := base
		a[3] = byte(first + j)
		addr := netip.AddrFrom4(a)
		if _, err := e.lab.Exec(e.ctx, "client", "ip", "addr", "add", addr.String()+"/24", "dev", "eth0"); err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := e.lab.Exec(ctx, "client", "ip", "addr", "del", addr.String()+"/24", "dev", "eth0"); err != nil {
				e.t.Errorf("removing source address %s: %v", addr, err)
			}
		})
		out = append(out, addr)
	}
	return out
}

// take returns the source that waited longest, its stick entry cleared; a source is never
// handed out twice at once, so no running session loses its entry.
func (p *sourcePool) take(ctx context.Context) netip.Addr {
	p.mu.Lock()
	src := p.free[0]
	p.free = p.free[1:]
	p.mu.Unlock()
	// the master's socket is gone for a moment while it reloads: try again
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := p.clear(ctx, src)
	for err != nil && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		err = p.clear(ctx, src)
	}
	if err != nil {
		p.clearErrs.Add(1)
		p.mu.Lock()
		if p.firstErr == nil {
			p.firstErr = err
		}
		p.mu.Unlock()
	}
	return src
}

// clear removes src's stick entry from every worker, old ones first: a worker still draining
// after a reload keeps a table of its own, and the stats socket reaches only one worker. An
// entry left in one would pin src to its earlier node there while another worker places it
// anew: a control and a data connection on different nodes, a failure of the test's making.
func (p *sourcePool) clear(ctx context.Context, src netip.Addr) error {
	procs, err := p.e.lab.ShowProc(ctx, 1)
	if err != nil {
		return err
	}
	workers := procs.Workers
	sort.Slice(workers, func(i, j int) bool { return workers[i].Reloads > workers[j].Reloads })
	for _, w := range workers {
		out, err := p.e.lab.MasterCLI(ctx, 1, fmt.Sprintf("@!%d clear table %s key %s", w.PID, p.table, src))
		if err == nil && strings.TrimSpace(out) != "" {
			err = fmt.Errorf("worker %d: %s", w.PID, strings.TrimSpace(out))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *sourcePool) give(src netip.Addr) {
	p.mu.Lock()
	p.free = append(p.free, src)
	p.mu.Unlock()
}
