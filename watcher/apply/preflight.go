package apply

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/user"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostStatus is the outcome of the SSH pre-flight check of one host.
type HostStatus string

// Pre-flight outcomes. Only StatusOK means ansible-playbook can reach the host.
const (
	StatusOK          HostStatus = "ok"
	StatusUnknownHost HostStatus = "unknown-host" // no known_hosts entry for the host
	StatusKeyMismatch HostStatus = "key-mismatch" // the host presented another key than the pinned one
	StatusUnreachable HostStatus = "unreachable"  // no TCP connection or no SSH handshake
	StatusAuthFailed  HostStatus = "auth-failed"  // host key fine, our key not accepted
)

// HostCheck is the pre-flight result of one host.
type HostCheck struct {
	Host    string
	Status  HostStatus
	Message string
}

// maxPreflightConcurrency bounds the parallel handshakes so that a large inventory does not
// open hundreds of connections at once.
const maxPreflightConcurrency = 16

// Preflight checks, quickly and with typed outcomes, that each edge host is reachable over SSH,
// presents the host key pinned in known_hosts, and accepts our key: the same checks ssh makes
// with StrictHostKeyChecking=yes, answered in milliseconds instead of a failed playbook run.
type Preflight struct {
	signer      ssh.Signer
	hostKeys    ssh.HostKeyCallback
	timeout     time.Duration
	defaultUser string
}

// NewPreflight reads the private key and the known_hosts file. An empty known_hosts file is
// accepted here (every host then reports unknown-host); CheckSSHFiles refuses it at startup.
func NewPreflight(keyPath, knownHostsPath string, timeout time.Duration) (*Preflight, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("pre-flight timeout must be positive, got %s", timeout)
	}
	signer, err := loadSigner(keyPath)
	if err != nil {
		return nil, err
	}
	hostKeys, err := loadKnownHosts(knownHostsPath)
	if err != nil {
		return nil, err
	}
	p := &Preflight{signer: signer, hostKeys: hostKeys, timeout: timeout}
	// ssh logs in as the local user when the inventory names none; so do we.
	if u, err := user.Current(); err == nil {
		p.defaultUser = u.Username
	}
	return p, nil
}

// Check checks every host concurrently and returns one HostCheck per host, in the order given.
func (p *Preflight) Check(ctx context.Context, hosts []Host) []HostCheck {
	out := make([]HostCheck, len(hosts))
	sem := make(chan struct{}, maxPreflightConcurrency)
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				out[i] = HostCheck{Host: h.Name, Status: StatusUnreachable, Message: "not checked: " + ctx.Err().Error()}
				return
			}
			out[i] = p.checkHost(ctx, h)
		}()
	}
	wg.Wait()
	return out
}

func (p *Preflight) checkHost(ctx context.Context, h Host) HostCheck {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	port := h.Port
	if port == 0 {
		port = 22
	}
	addr := net.JoinHostPort(h.Address, strconv.Itoa(port))
	res := HostCheck{Host: h.Name}

	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		res.Status, res.Message = StatusUnreachable, fmt.Sprintf("connecting to %s: %v", addr, err)
		return res
	}
	defer conn.Close()
	// The handshake has no context of its own: bound it by the deadline, and by ctx.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var hostKeyErr error
	hostKeyChecked := false
	usr := h.User
	if usr == "" {
		usr = p.defaultUser
	}
	cfg := &ssh.ClientConfig{
		User: usr,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(p.signer)},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			hostKeyChecked = true
			hostKeyErr = p.verifyHostKey(hostname, remote, key)
			return hostKeyErr
		},
		Timeout: p.timeout,
	}
	// addr (what ansible_host and ansible_port say) is what ssh looks up in known_hosts too:
	// "host" for port 22, "[host]:port" otherwise.
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err == nil {
		_ = ssh.NewClient(c, chans, reqs).Close()
		res.Status, res.Message = StatusOK, fmt.Sprintf("host key and login accepted at %s", addr)
		return res
	}
	switch {
	case hostKeyErr != nil:
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case errors.As(hostKeyErr, &ke) && len(ke.Want) > 0:
			res.Status = StatusKeyMismatch
			res.Message = fmt.Sprintf("%s presented a host key that does not match known_hosts (%s line %d)", addr, ke.Want[0].Filename, ke.Want[0].Line)
		case errors.As(hostKeyErr, &ke):
			res.Status = StatusUnknownHost
			res.Message = fmt.Sprintf("%s (as %s) has no entry in known_hosts", addr, knownhosts.Normalize(addr))
		case errors.As(hostKeyErr, &re):
			res.Status = StatusKeyMismatch
			res.Message = fmt.Sprintf("%s presented a host key revoked in known_hosts (%s line %d)", addr, re.Revoked.Filename, re.Revoked.Line)
		default:
			res.Status = StatusKeyMismatch
			res.Message = fmt.Sprintf("%s: host key check failed: %v", addr, hostKeyErr)
		}
	case hostKeyChecked:
		res.Status = StatusAuthFailed
		res.Message = fmt.Sprintf("%s accepted its host key but refused user %q with our key: %v", addr, usr, err)
	default:
		res.Status = StatusUnreachable
		res.Message = fmt.Sprintf("no SSH handshake with %s: %v", addr, err)
	}
	return res
}

// verifyHostKey checks key against known_hosts the way OpenSSH does: an entry for
// "[host]:port" decides; with none, an entry for the bare host that matches the key is accepted
// too ("found matching key w/out port"), but one that does not match only leaves it unknown.
func (p *Preflight) verifyHostKey(hostname string, remote net.Addr, key ssh.PublicKey) error {
	err := p.hostKeys(hostname, remote, key)
	var ke *knownhosts.KeyError
	if err == nil || !errors.As(err, &ke) || len(ke.Want) > 0 {
		return err
	}
	host, port, splitErr := net.SplitHostPort(hostname)
	if splitErr != nil || port == "22" {
		return err
	}
	if p.hostKeys(net.JoinHostPort(host, "22"), remote, key) == nil {
		return nil
	}
	return err
}
