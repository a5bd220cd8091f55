package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// repoRoot is the checkout: the package directory's parent.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

func needRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root, network namespaces and HAProxy; runs without -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces); run as root or with -short")
	}
}

func TestConfigScaleSmallestCell(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rows, err := ConfigScale(ctx, ScaleOptions{
		Root: repoRoot(t), Dir: t.TempDir(), Nodes: []int{10}, Ports: []int{11}, Reps: 1,
		MemLimit: 2 << 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("got %d rows, want compact and per-port: %+v", len(rows), rows)
	}
	for _, r := range rows {
		if r.Skipped != "" {
			t.Errorf("%s skipped: %s", r.Layout, r.Skipped)
		}
		if r.Bytes == 0 || r.Check <= 0 || r.Start <= 0 || r.RSS < 1<<20 || r.Reload <= 0 {
			t.Errorf("%s: implausible measurement %+v", r.Layout, r)
		}
	}
	if rows[0].Layout != LayoutCompact || rows[1].Layout != LayoutPerPort {
		t.Fatalf("layouts %s, %s", rows[0].Layout, rows[1].Layout)
	}
	if rows[1].Bytes <= rows[0].Bytes {
		t.Errorf("per-port config (%d bytes) should be larger than compact (%d bytes)", rows[1].Bytes, rows[0].Bytes)
	}
}

func TestDataPathSmallest(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := DataPath(ctx, DataPathOptions{
		Root: repoRoot(t), Dir: t.TempDir(), Size: 8 << 20, Reps: 1, Sessions: 3, SessionSize: 1 << 20,
		Prefix: "kfbtdata", Net: "10.241",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 6 {
		t.Fatalf("want download and upload over three paths, got %+v", res.Rows)
	}
	for _, r := range res.Rows {
		if r.Median <= 0 || len(r.Runs) != 1 {
			t.Errorf("%s %s: no throughput measured: %+v", r.Direction, r.Path, r)
		}
	}
	if res.SessionsOK != 3 {
		t.Errorf("%d of 3 parallel sessions sha256-equal: %v", res.SessionsOK, res.SessionErrs)
	}
}

// buildWatcher builds the watcher program (with the role embedded as it is now).
func buildWatcher(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kubeftp-edge")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := runOut(ctx, "go", "-C", repoRoot(t), "build", "-o", bin, "./watcher"); err != nil {
		t.Fatalf("building the watcher: %v\n%s", err, out)
	}
	return bin
}

func TestWatcherCostSmallest(t *testing.T) {
	needRoot(t)
	bin := buildWatcher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := WatcherCost(ctx, WatcherCostOptions{
		Root: repoRoot(t), Dir: t.TempDir(), Binary: bin, Nodes: 20, Services: 10, Idle: 2 * time.Second,
		RoleCounts: []int{2}, Prefix: "kfbtwc", Net: "10.239",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ServedServices != 10 || res.AtComputed.RSS < 1<<20 || res.AfterIdle.HWM < res.AtComputed.RSS {
		t.Errorf("implausible watcher cost: %+v", res)
	}
	if len(res.Role) != 1 || res.Role[0].Wall <= 0 || len(res.Role[0].Tasks) == 0 {
		t.Errorf("role cost not measured: %+v", res.Role)
	}
}

func TestLatencySmallest(t *testing.T) {
	needRoot(t)
	bin := buildWatcher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	row, err := Latency(ctx, LatencyOptions{Events: 2, EdgeOptions: EdgeOptions{
		Root: repoRoot(t), Dir: t.TempDir(), Binary: bin, Edges: 1, Prefix: "kfbtlat", Net: "10.248",
		WatcherFlags: []string{"--coalesce-window=200ms"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(row.Events) != 2 || row.P50 <= 0 || row.PlaybookMean <= 0 {
		t.Errorf("implausible latency: %+v", row)
	}
}

func TestCoalescingSmallest(t *testing.T) {
	needRoot(t)
	bin := buildWatcher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := Coalescing(ctx, CoalescingOptions{
		EdgeOptions: EdgeOptions{Root: repoRoot(t), Dir: t.TempDir(), Binary: bin, Edges: 1, Prefix: "kfbtco",
			Net: "10.249"},
		Updates: 20, ExtraNodes: 4, Resyncs: 2, ResyncPeriod: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Runs < 1 || res.Reloads < 1 {
		t.Errorf("the burst changed the state but nothing ran: %+v", res)
	}
	if res.IdleApplyRuns != 0 || res.IdleReloads != 0 || res.IdleResyncsCounted < 2 {
		t.Errorf("idle resyncs: %+v", res)
	}
}
