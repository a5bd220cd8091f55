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
