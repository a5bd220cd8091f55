//go:build linux && (amd64 || arm64)

package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
)

// dialInNamespace opens a TCP connection from src to dst inside the network namespace at
// nsPath. A socket belongs to the namespace it was created in, so only the dial runs there:
// a goroutine locked to its thread switches the thread in and back. A thread that cannot
// switch back is left locked, and Go discards it when the goroutine ends.
func dialInNamespace(ctx context.Context, nsPath string, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		conn, restored, err := dialLocked(ctx, nsPath, src, dst)
		if restored {
			runtime.UnlockOSThread()
		}
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.conn, r.err
}

func dialLocked(ctx context.Context, nsPath string, src netip.Addr, dst netip.AddrPort) (net.Conn, bool, error) {
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
	if err != nil {
		return nil, true, fmt.Errorf("opening the current network namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, true, fmt.Errorf("opening network namespace %s: %w", nsPath, err)
	}
	defer target.Close()
	if err := setns(target.Fd()); err != nil {
		return nil, true, fmt.Errorf("entering network namespace %s: %w", nsPath, err)
	}
	d := net.Dialer{}
	if src.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	conn, dialErr := d.DialContext(ctx, "tcp", dst.String())
	if err := setns(orig.Fd()); err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, false, fmt.Errorf("leaving network namespace %s: %w", nsPath, err)
	}
	if dialErr != nil {
		return nil, true, fmt.Errorf("dialing %s from %s in %s: %w", dst, src, nsPath, dialErr)
	}
	return conn, true, nil
}

func setns(fd uintptr) error {
	if _, _, errno := syscall.RawSyscall(sysSetns, fd, syscall.CLONE_NEWNET, 0); errno != 0 {
		return errno
	}
	return nil
}
