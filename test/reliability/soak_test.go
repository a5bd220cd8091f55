package reliability

import (
	"context"
	"fmt"
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
// timeout annotation changing — while FTP round trips run through edge 1 all the time. Nodes
// 1 and 2 stay healthy and node 3's data path too (only the API says it flaps), so no transfer
// may fail. The watcher's goroutines and memory must not grow, and the edge's reloads stay
// bounded by the coalescing window. `make soak` runs it for 30 minutes (-soak=30m); make test
// runs 60 seconds of it.
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
	ctx, cancel := context.WithTimeout(e.ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup

	// churn
	var flaps, svcChanges, churnErrs atomic.Int64
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
			if err := e.setReady(ctx, 3, i%2 == 0); err != nil && ctx.Err() == nil {
				churnErrs.Add(1)
			} else {
				flaps.Add(1)
			}
			if i%4 == 0 {
				err := e.annotate(ctx, "ftp", desired.AnnotationTimeoutClient, fmt.Sprintf("%dm", 30+i%2))
				if err != nil && ctx.Err() == nil {
					churnErrs.Add(1)
				} else {
					svcChanges.Add(1)
				}
			}
		}
	}()

	// FTP all the time: two clients in parallel, small files, fresh sessions
	var okXfers, failed atomic.Int64
	var failMu sync.Mutex
	var failures []string
	for c, client := range []lab.Client{lab.CurlEPSV, lab.Lftp} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				tr := lab.Transfer{Client: client, Source: e.lab.ClientAddrs()[c], Server: netipPort(e.lab, 21),
					Path: fmt.Sprintf("pub/soak-%s-%d.bin", client, i%4)}
				xctx, xcancel := context.WithTimeout(context.Background(), 60*time.Second)
				err := e.lab.RoundTrip(xctx, tr, 256<<10)
				xcancel()
				switch {
				case err == nil:
					okXfers.Add(1)
				default:
					failed.Add(1)
					failMu.Lock()
					failures = append(failures, fmt.Sprintf("%s: %v", time.Since(start).Round(time.Second), err))
					failMu.Unlock()
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

	t.Logf("soak %s: %d node flaps, %d Service changes (%d API errors); %d FTP round trips ok, %d failed",
		elapsed.Round(time.Second), flaps.Load(), svcChanges.Load(), churnErrs.Load(), okXfers.Load(), failed.Load())
	for _, f := range failures[:min(len(failures), 5)] {
		t.Errorf("failed transfer at %s", f)
	}
	if okXfers.Load() == 0 {
		t.Errorf("no FTP transfer completed")
	}

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
