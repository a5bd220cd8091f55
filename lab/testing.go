package lab

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// UpForTest brings a lab up for a test and tears it down when the test ends, also when the
// test binary is interrupted (SIGINT/SIGTERM). A failing test gets the tail of the lab's logs.
// Without root the test fails: the lab is a prerequisite, not an option.
func UpForTest(ctx context.Context, t testing.TB, opts Options) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the lab needs root (network namespaces, iptables); run as root or with -short")
	}
	l, err := Up(ctx, opts)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			_ = l.Down()
			os.Exit(2)
		case <-done:
		}
	}()
	t.Cleanup(func() {
		signal.Stop(sigs)
		close(done)
		if t.Failed() {
			t.Logf("lab logs:\n%s", l.Logs(30))
		}
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	return l
}
