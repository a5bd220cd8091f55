package bench

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeftp/kubeftp-edge/lab"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// WatcherCostOptions size part 5.
type WatcherCostOptions struct {
	Root, Dir string
	// Binary is the watcher (bin/kubeftp-edge).
	Binary   string
	Nodes    int
	Services int
	// Idle is how long the watcher is watched after its first push.
	Idle time.Duration
	// BenchTime is passed to `go test -benchtime` for BenchmarkCompute; empty skips it.
	BenchTime string
	// RoleCounts are the Service counts the role is rendered for (RoleCost).
	RoleCounts  []int
	Prefix, Net string
	Logger      *slog.Logger
}

// WatcherCostResult is part 5.
type WatcherCostResult struct {
	Nodes, Services int
	Created         time.Duration // creating the objects in the API server
	Computed        time.Duration // watcher start → first desired state computed
	FirstPush       time.Duration // watcher start → first playbook run finished; 0: not within Idle
	ServedServices  float64
	EligibleNodes   float64
	AtComputed      procStat
	AfterIdle       procStat
	Idle            time.Duration
	PlaybookSeconds float64
	Compute         []GoBench
	Role            []RoleCostRow
}

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Name                    string
	NsPerOp, BPerOp, Allocs float64
	Iterations              int
}

// WatcherCost fills a real API server with Nodes Ready nodes and Services FTP Services
// (externalTrafficPolicy Local, ready endpoints on two nodes each, ten Services per edge
// address), starts the real watcher against it and the lab's edge over SSH, and reads the
// watcher's own CPU time and memory from /proc: at its first push and after Idle more.
// The Services belong to an edge group no host is in, so the edge host receives the whole
// document (and the role checks all of it) but binds none of it: 1000 edge addresses do not
// exist in the lab. Then it runs BenchmarkCompute of package desired at that size.
func WatcherCost(ctx context.Context, opts WatcherCostOptions) (*WatcherCostResult, error) {
	if opts.Prefix == "" {
		opts.Prefix, opts.Net = "kfbwc", "10.242"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	res := &WatcherCostResult{Nodes: opts.Nodes, Services: opts.Services, Idle: opts.Idle}
	cluster, client, err := startKube(ctx, filepath.Join(opts.Dir, "kube"))
	if err != nil {
		return nil, err
	}
	defer cluster.Stop()
	start := time.Now()
	err = parallel(ctx, opts.Nodes, 16, func(ctx context.Context, i int) error {
		return createNode(ctx, client, readyNode(fmt.Sprintf("node-%05d", i),
			fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256)))
	})
	if err != nil {
		return nil, err
	}
	const ns = "tenants"
	if _, err := client.CoreV1().Namespaces().Create(ctx, namespace(ns), metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	err = parallel(ctx, opts.Services, 16, func(ctx context.Context, i int) error {
		name := fmt.Sprintf("ftp-%04d", i)
		k := int32(i % 10)
		svc := ftpService(ns, name, 2100+k, 20000+int32(i), 21100+20*k, 10, 21000+10*int32(i), map[string]string{
			desired.AnnotationEdgeAddress: fmt.Sprintf("10.209.%d.%d", i/10/250, 1+i/10%250),
			desired.AnnotationEdgeGroup:   "bench_unassigned",
		})
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		svc.Spec.HealthCheckNodePort = 31000 + int32(i)
		if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating service %s: %w", name, err)
		}
		sl := endpointSlice(ns, name, fmt.Sprintf("node-%05d", (i*7)%opts.Nodes), fmt.Sprintf("node-%05d", (i*13+1)%opts.Nodes))
		if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating the endpoint slice of %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Created = time.Since(start)

	l, err := lab.Up(ctx, lab.Options{Root: opts.Root, Prefix: opts.Prefix, Net: opts.Net, Nodes: 1, Edges: 1,
		Clients: 1, Dir: filepath.Join(opts.Dir, "lab"), Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	defer l.Down()
	start = time.Now()
	w, err := StartWatcher(ctx, WatcherOptions{
		Binary: opts.Binary, Kubeconfig: cluster.Kubeconfig, Inventory: l.Inventory(), SSHKey: l.SSHKey(),
		KnownHosts: l.KnownHosts(), EdgeAddr: l.EdgeAddr(1).String(), WorkDir: opts.Dir,
		LogFile: filepath.Join(opts.Dir, "watcher.log"),
	})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	var m Series
	err = waitFor(ctx, 5*time.Minute, 100*time.Millisecond, "the watcher's first desired state", func() (bool, error) {
		var err error
		m, err = w.Metrics(ctx)
		return err == nil && m.Sum("kubeftp_edge_services", `state="served"`) > 0, err
	})
	if err != nil {
		return res, fmt.Errorf("%w\nwatcher log: %s", err, lastLines(w.Log(), 10))
	}
	res.Computed = time.Since(start)
	if res.AtComputed, err = readProcStat(w.PID()); err != nil {
		return res, err
	}
	res.ServedServices = m.Sum("kubeftp_edge_services", `state="served"`)
	res.EligibleNodes = m.Sum("kubeftp_edge_eligible_nodes")
	if res.ServedServices != float64(opts.Services) {
		return res, fmt.Errorf("the watcher serves %v of %d Services\nwatcher log: %s", res.ServedServices, opts.Services, lastLines(w.Log(), 10))
	}
	opts.Logger.Info("watcher cost: desired state computed", "after", res.Computed, "rss", res.AtComputed.RSS)
	// then it marshals the vars, pre-flights the host and waits for ansible-playbook
	windowEnd := time.Now().Add(opts.Idle)
	for time.Now().Before(windowEnd) {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		if m, err = w.Metrics(ctx); err != nil {
			return res, err
		}
		if res.FirstPush == 0 && m.Sum("kubeftp_edge_playbook_runs_total", `mode="apply"`) >= 1 {
			res.FirstPush = time.Since(start)
			res.PlaybookSeconds = m.Sum("kubeftp_edge_playbook_duration_seconds_sum", `mode="apply"`)
		}
	}
	if res.AfterIdle, err = readProcStat(w.PID()); err != nil {
		return res, err
	}
	w.Stop()
	if res.Role, err = RoleCost(ctx, opts.Root, opts.Dir, opts.RoleCounts); err != nil {
		return res, err
	}
	if opts.BenchTime != "" {
		if res.Compute, err = benchCompute(ctx, opts.Root, opts.BenchTime); err != nil {
			return res, err
		}
	}
	return res, nil
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+([\d.]+) ns/op(?:\s+([\d.]+) B/op)?(?:\s+([\d.]+) allocs/op)?`)

// benchCompute runs BenchmarkCompute of package desired (5000 nodes, 1000 Services).
func benchCompute(ctx context.Context, root, benchtime string) ([]GoBench, error) {
	out, err := runOutEnv(ctx, nil, "go", "-C", root, "test", "-run", "^$", "-bench", "BenchmarkCompute",
		"-benchmem", "-benchtime", benchtime, "./watcher/desired")
	if err != nil {
		return nil, fmt.Errorf("BenchmarkCompute: %w: %s", err, lastLines(out, 5))
	}
	var res []GoBench
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		g := GoBench{Name: m[1]}
		g.Iterations, _ = strconv.Atoi(m[2])
		g.NsPerOp, _ = strconv.ParseFloat(m[3], 64)
		g.BPerOp, _ = strconv.ParseFloat(m[4], 64)
		g.Allocs, _ = strconv.ParseFloat(m[5], 64)
		res = append(res, g)
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("BenchmarkCompute printed no result: %s", lastLines(out, 5))
	}
	return res, nil
}

func (r *WatcherCostResult) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "\n## 5. Watcher cost\n\n")
	fmt.Fprintf(b, "The real watcher (`kubeftp-edge watch`, no leader election) against a real kube-apiserver + etcd holding "+
		"%d Ready Nodes and %d FTP Services (externalTrafficPolicy Local with ready endpoints on two nodes each, 10 "+
		"passive ports, ten Services per edge address; all in an edge group no host is in, so the lab's edge host gets "+
		"the whole document and checks it but binds nothing). Creating the objects took %s. Figures are the watcher "+
		"process's own (VmRSS, VmHWM, utime+stime from /proc), without its ansible-playbook children.\n\n",
		r.Nodes, r.Services, r.Created.Round(time.Second))
	b.WriteString("| moment | RSS | peak RSS | CPU time (own) |\n| --- | ---: | ---: | ---: |\n")
	fmt.Fprintf(b, "| first desired state computed, %s after start (informers listed and synced, Compute) | %s | %s | %.2f s |\n",
		r.Computed.Round(100*time.Millisecond), size(r.AtComputed.RSS), size(r.AtComputed.HWM), r.AtComputed.CPU.Seconds())
	cpu := r.AfterIdle.CPU - r.AtComputed.CPU
	fmt.Fprintf(b, "| %s later (vars marshalled, SSH pre-flight, playbook running or done) | %s | %s | +%.2f s (%.1f%% of one core) |\n",
		r.Idle, size(r.AfterIdle.RSS), size(r.AfterIdle.HWM), cpu.Seconds(), 100*cpu.Seconds()/r.Idle.Seconds())
	push := fmt.Sprintf("had not finished within %s: ansible-playbook spends that time in the role's preflight (see the playbook cost table below)", r.Idle)
	if r.FirstPush > 0 {
		push = fmt.Sprintf("finished %s after the watcher started (playbook %.1f s)", r.FirstPush.Round(100*time.Millisecond), r.PlaybookSeconds)
	}
	fmt.Fprintf(b, "\nServed Services %v, eligible nodes %v. The first push %s. Target RSS < 150 MB: %s (peak %s).\n",
		r.ServedServices, r.EligibleNodes, push, met(r.AfterIdle.HWM < 150<<20), size(r.AfterIdle.HWM))
	roleCostMarkdown(b, r.Role)
	if len(r.Compute) > 0 {
		b.WriteString("\n`BenchmarkCompute` (package desired, 5000 nodes × 1000 Services; all-local is the case above, " +
			"all-cluster puts every node behind every Service: 5 million servers):\n\n")
		b.WriteString("| case | time per Compute | memory per Compute | allocations | iterations | target < 50 ms |\n")
		b.WriteString("| --- | ---: | ---: | ---: | ---: | --- |\n")
		for _, g := range r.Compute {
			d := time.Duration(g.NsPerOp)
			fmt.Fprintf(b, "| %s | %.1f ms | %s | %.0f | %d | %s |\n", g.Name, float64(d)/1e6, size(int64(g.BPerOp)),
				g.Allocs, g.Iterations, met(d < 50*time.Millisecond))
		}
		b.WriteString("\nThe all-local case is the cluster measured above. The cluster cases put every one of the 5000 " +
			"nodes behind each Cluster Service (500 thousand and 5 million node entries in the document); Compute is " +
			"then bound by building and hashing that document, and an edge HAProxy could not load the result anyway " +
			"(part 1: even the compact layout carries two servers per node and Service).\n")
	}
}
