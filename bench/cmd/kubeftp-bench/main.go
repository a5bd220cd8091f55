// Command kubeftp-bench runs the benchmarks of kubeftp-edge on the local machine (root: it
// creates network namespaces) and writes the report, docs/BENCHMARKS.md by default.
//
//	go run ./bench/cmd/kubeftp-bench -out docs/BENCHMARKS.md
//	go run ./bench/cmd/kubeftp-bench -parts scale -nodes 10,100 -ports 11 -out /tmp/b.md
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kubeftp/kubeftp-edge/bench"
)

type config struct {
	root, out, workDir string
	parts              []string
	nodes, ports       []int
	reps               int
	memLimitGiB        int
	transferMB         int
	sessions           int
	events             int
	edges              []int
	burst              int
	watcherBin         string
	shortWindow        string
	latencyBudget      time.Duration
}

var allParts = []string{"scale", "datapath", "watcher", "coalescing", "latency"}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kubeftp-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	work, err := os.MkdirTemp(cfg.workDir, "kubeftp-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	rep := &bench.Report{Started: time.Now()}
	if rep.Machine, err = bench.DescribeMachine(ctx); err != nil {
		return err
	}
	rep.Command = "make bench"
	rep.LoadStart = bench.LoadAverage()
	for _, part := range cfg.parts {
		start := time.Now()
		log.Info("part", "name", part)
		dir := filepath.Join(work, part)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		var perr error
		switch part {
		case "scale":
			rep.Scale = &bench.ScaleResult{Reps: cfg.reps, MemLimit: int64(cfg.memLimitGiB) << 30}
			rep.Scale.Rows, perr = bench.ConfigScale(ctx, bench.ScaleOptions{
				Root: cfg.root, Dir: dir, Nodes: cfg.nodes, Ports: cfg.ports, Reps: cfg.reps,
				BigServers: 20_000, MemLimit: rep.Scale.MemLimit, Logger: log,
			})
		case "datapath":
			rep.DataPath, perr = bench.DataPath(ctx, bench.DataPathOptions{
				Root: cfg.root, Dir: dir, Size: int64(cfg.transferMB) << 20, Reps: 3,
				Sessions: cfg.sessions, Logger: log,
			})
		case "watcher":
			rep.WatcherCost, perr = bench.WatcherCost(ctx, bench.WatcherCostOptions{
				Root: cfg.root, Dir: dir, Binary: cfg.watcherBin, Nodes: 5000, Services: 1000,
				Idle: 45 * time.Second, BenchTime: "10x", RoleCounts: []int{10, 100, 1000}, Logger: log,
			})
		case "latency":
			for i, edges := range cfg.edges {
				var row *bench.LatencyRow
				profile := 0
				if edges == 1 {
					profile = 3
				}
				row, perr = bench.Latency(ctx, bench.LatencyOptions{Events: cfg.events, Budget: cfg.latencyBudget, ProfileRuns: profile, EdgeOptions: bench.EdgeOptions{
					Root: cfg.root, Dir: filepath.Join(dir, strconv.Itoa(edges)), Binary: cfg.watcherBin, Edges: edges,
					Prefix: fmt.Sprintf("kfblat%d", edges), Net: fmt.Sprintf("10.%d", 244+i), Logger: log,
				}})
				if row != nil {
					rep.Latency = append(rep.Latency, row)
				}
				if perr != nil {
					break
				}
			}
			if perr == nil && cfg.shortWindow != "" {
				var row *bench.LatencyRow
				row, perr = bench.Latency(ctx, bench.LatencyOptions{Events: cfg.events, EdgeOptions: bench.EdgeOptions{
					Root: cfg.root, Dir: filepath.Join(dir, "window"), Binary: cfg.watcherBin, Edges: 1,
					Prefix: "kfblatw", Net: "10.247", Logger: log,
					WatcherFlags: []string{"--coalesce-window=" + cfg.shortWindow},
				}})
				if row != nil {
					rep.Latency = append(rep.Latency, row)
				}
			}
		case "coalescing":
			rep.Coalescing, perr = bench.Coalescing(ctx, bench.CoalescingOptions{
				EdgeOptions: bench.EdgeOptions{Root: cfg.root, Dir: dir, Binary: cfg.watcherBin, Edges: 1,
					Prefix: "kfbcoal", Net: "10.243", Logger: log},
				Updates: cfg.burst, ExtraNodes: 50, Resyncs: 10, ResyncPeriod: 3 * time.Second,
			})
		}
		rep.Durations = append(rep.Durations, bench.PartDuration{Part: part, Took: time.Since(start)})
		if perr != nil {
			// keep what was measured: the report says which part failed and why
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", part, perr))
			log.Error("part failed", "name", part, "err", perr)
			if ctx.Err() != nil {
				break
			}
		}
	}
	rep.Finished = time.Now()
	rep.LoadEnd = bench.LoadAverage()
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(cfg.out, []byte(rep.Markdown()), 0o644); err != nil {
		return err
	}
	log.Info("report written", "path", cfg.out, "took", rep.Finished.Sub(rep.Started).Round(time.Second))
	if len(rep.Errors) > 0 {
		return errors.New(strings.Join(rep.Errors, "; "))
	}
	return nil
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("kubeftp-bench", flag.ContinueOnError)
	fs.StringVar(&cfg.root, "root", ".", "repository checkout")
	fs.StringVar(&cfg.out, "out", "docs/BENCHMARKS.md", "report to write")
	fs.StringVar(&cfg.workDir, "work-dir", os.TempDir(), "where temporary files go")
	parts := fs.String("parts", strings.Join(allParts, ","), "parts to run, comma-separated: "+strings.Join(allParts, ","))
	nodes := fs.String("nodes", "10,100,500,1000,5000", "config scale: node counts")
	ports := fs.String("ports", "11,100,1000", "config scale: passive port counts")
	fs.IntVar(&cfg.reps, "reps", 5, "config scale: timed repetitions of haproxy -c and reload per cell")
	fs.IntVar(&cfg.memLimitGiB, "mem-limit-gib", 6, "config scale: address-space limit of each HAProxy")
	fs.IntVar(&cfg.transferMB, "transfer-mb", 200, "data path: size of the timed transfer")
	fs.IntVar(&cfg.sessions, "sessions", 50, "data path: parallel FTP sessions")
	fs.IntVar(&cfg.events, "events", 20, "latency: Node events per edge count")
	edges := fs.String("edges", "1,5,20", "latency: edge host counts")
	fs.IntVar(&cfg.burst, "burst", 1000, "coalescing: Node updates in the burst")
	fs.DurationVar(&cfg.latencyBudget, "latency-budget", 0, "latency: stop taking events for one edge count after this long (0: none)")
	fs.StringVar(&cfg.shortWindow, "short-window", "", "latency: also measure 1 edge host with this coalesce window (empty: skip)")
	fs.StringVar(&cfg.watcherBin, "watcher", "bin/kubeftp-edge", "the watcher binary")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	var err error
	cfg.parts = strings.Split(*parts, ",")
	for _, p := range cfg.parts {
		if !slices.Contains(allParts, p) {
			return cfg, fmt.Errorf("-parts: unknown part %q (want %s)", p, strings.Join(allParts, ","))
		}
	}
	if cfg.nodes, err = intList("-nodes", *nodes); err != nil {
		return cfg, err
	}
	if cfg.ports, err = intList("-ports", *ports); err != nil {
		return cfg, err
	}
	if cfg.edges, err = intList("-edges", *edges); err != nil {
		return cfg, err
	}
	if cfg.root, err = filepath.Abs(cfg.root); err != nil {
		return cfg, err
	}
	if !filepath.IsAbs(cfg.watcherBin) {
		cfg.watcherBin = filepath.Join(cfg.root, cfg.watcherBin)
	}
	if _, err := os.Stat(filepath.Join(cfg.root, "ansible", "render.yml")); err != nil {
		return cfg, fmt.Errorf("-root %s is not the kubeftp-edge checkout: %w", cfg.root, err)
	}
	return cfg, nil
}

func intList(flagName, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: %q is not a positive integer", flagName, f)
		}
		out = append(out, n)
	}
	return out, nil
}
