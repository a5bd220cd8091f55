//go:build !(linux && (amd64 || arm64))

package lab

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

func dialInNamespace(ctx context.Context, nsPath string, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	return nil, errors.New("dialing inside a network namespace needs linux on amd64 or arm64")
}
