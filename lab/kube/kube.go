// Package kube runs a real control plane for tests and the demo: etcd and kube-apiserver built
// from the Go module proxy by tools/build-control-plane.sh, bound to loopback only, with a
// throwaway PKI generated in Go. There is no controller-manager: nothing creates EndpointSlices
// or marks Nodes NotReady unless the caller does.
package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options configure Start.
type Options struct {
	// Dir holds the PKI, etcd data, logs and the kubeconfig. Required; created if missing.
	Dir string
	// BinDir holds etcd and kube-apiserver. Default: $KUBEFTP_CACHE/bin, else <repo>/.cache/bin.
	BinDir string
	// Authorization is kube-apiserver's --authorization-mode. Default "RBAC".
	Authorization string
	// ExtraAPIServerArgs are appended to kube-apiserver's arguments.
	ExtraAPIServerArgs []string
}

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	// Kubeconfig is the path of an admin kubeconfig (client certificate in system:masters).
	Kubeconfig string
	// Server is the API server's URL.
	Server string

	opts     Options
	pki      *pki
	etcdPort int
	kasPort  int
	etcd     *exec.Cmd
	kas      *exec.Cmd
}

// Start launches etcd and kube-apiserver on free loopback ports and waits for /readyz.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("kube: Options.Dir is required")
	}
	if opts.Authorization == "" {
		opts.Authorization = "RBAC"
	}
	if opts.BinDir == "" {
		dir, err := DefaultBinDir()
		if err != nil {
			return nil, err
		}
		opts.BinDir = dir
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil {
			return nil, fmt.Errorf("kube: %s not found in %s (run tools/build-control-plane.sh): %w", b, opts.BinDir, err)
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	p, err := newPKI(filepath.Join(opts.Dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("kube: generating PKI: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	c := &Cluster{opts: opts, pki: p, etcdPort: ports[0], kasPort: ports[2]}
	c.Server = "https://127.0.0.1:" + strconv.Itoa(c.kasPort)
	c.Kubeconfig = filepath.Join(opts.Dir, "kubeconfig")
	if err := c.writeKubeconfig(); err != nil {
		return nil, err
	}
	if err := c.startEtcd(ports[1]); err != nil {
		return nil, err
	}
	if err := c.StartAPIServer(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// DefaultBinDir is where tools/build-control-plane.sh puts the binaries.
func DefaultBinDir() (string, error) {
	if cache := os.Getenv("KUBEFTP_CACHE"); cache != "" {
		return filepath.Join(cache, "bin"), nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache", "bin"), nil
}

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("kube: no go.mod above the working directory")
		}
		dir = parent
	}
}

func (c *Cluster) startEtcd(peerPort int) error {
	data := filepath.Join(c.opts.Dir, "etcd")
	client := "http://127.0.0.1:" + strconv.Itoa(c.etcdPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	cmd, err := c.spawn("etcd",
		"--name=test", "--data-dir="+data,
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=test="+peer,
		// Test data only: fsync buys nothing here and costs seconds per test on slow disks.
		"--unsafe-no-fsync", "--quota-backend-bytes=2147483648",
	)
	if err != nil {
		return err
	}
	c.etcd = cmd
	return nil
}

// StartAPIServer (re)starts kube-apiserver against the running etcd and waits for /readyz.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	args := []string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(c.etcdPort),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.kasPort),
		"--tls-cert-file=" + c.pki.serverCert, "--tls-private-key-file=" + c.pki.serverKey,
		"--client-ca-file=" + c.pki.caCert,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + c.pki.saPub,
		"--service-account-signing-key-file=" + c.pki.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		// FTP Services in tests use explicit NodePorts such as 30021; the range also admits the
		// low ports some users choose for order-preserving passive NodePorts.
		"--service-node-port-range=20-32767",
		"--authorization-mode=" + c.opts.Authorization,
		"--allow-privileged=true",
		// No controller-manager runs: without it the ServiceAccount admission would wait for tokens.
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}
	args = append(args, c.opts.ExtraAPIServerArgs...)
	cmd, err := c.spawn("kube-apiserver", args...)
	if err != nil {
		return err
	}
	c.kas = cmd
	return c.waitReady(ctx, 60*time.Second)
}

// StopAPIServer stops kube-apiserver only (etcd keeps running).
func (c *Cluster) StopAPIServer() { stop(c.kas); c.kas = nil }

// RestartEtcd stops and starts etcd on the same ports and data.
func (c *Cluster) RestartEtcd(ctx context.Context) error {
	peer := c.etcd.Args // keep the same flags
	stop(c.etcd)
	cmd, err := c.spawn("etcd", peer[1:]...)
	if err != nil {
		return err
	}
	c.etcd = cmd
	return c.waitReady(ctx, 60*time.Second)
}

// Stop stops kube-apiserver, then etcd. Safe to call more than once.
func (c *Cluster) Stop() {
	stop(c.kas)
	stop(c.etcd)
	c.kas, c.etcd = nil, nil
}

// PIDs are the process ids of the running etcd and kube-apiserver, for callers that must be
// able to stop them from another process.
func (c *Cluster) PIDs() []int {
	var pids []int
	for _, cmd := range []*exec.Cmd{c.etcd, c.kas} {
		if cmd != nil && cmd.Process != nil {
			pids = append(pids, cmd.Process.Pid)
		}
	}
	return pids
}

// RESTConfig returns an admin client configuration.
func (c *Cluster) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kube: loading %s: %w", c.Kubeconfig, err)
	}
	return cfg, nil
}

// Clientset returns an admin clientset.
func (c *Cluster) Clientset() (*kubernetes.Clientset, error) {
	cfg, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

func (c *Cluster) spawn(name string, args ...string) (*exec.Cmd, error) {
	logf, err := os.OpenFile(filepath.Join(c.opts.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	cmd := exec.Command(filepath.Join(c.opts.BinDir, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, and killed with the test binary if that dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("kube: starting %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); logf.Close() }()
	return cmd, nil
}

func stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cmd.Process.Signal(syscall.Signal(0)) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
}

func (c *Cluster) waitReady(ctx context.Context, timeout time.Duration) error {
	cert, err := tls.LoadX509KeyPair(c.pki.adminCert, c.pki.adminKey)
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	caPEM, err := os.ReadFile(c.pki.caCert)
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool},
	}}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Server+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("/readyz: %s", resp.Status)
		} else {
			last = err
		}
		if c.kas == nil || c.kas.ProcessState != nil {
			return fmt.Errorf("kube: kube-apiserver exited; see %s", filepath.Join(c.opts.Dir, "kube-apiserver.log"))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube: waiting for /readyz (see %s): %w", filepath.Join(c.opts.Dir, "kube-apiserver.log"), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) writeKubeconfig() error {
	ca, err := os.ReadFile(c.pki.caCert)
	if err != nil {
		return err
	}
	crt, err := os.ReadFile(c.pki.adminCert)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(c.pki.adminKey)
	if err != nil {
		return err
	}
	cfg := clientcmdapiConfig(c.Server, ca, crt, key)
	if err := clientcmd.WriteToFile(*cfg, c.Kubeconfig); err != nil {
		return fmt.Errorf("kube: writing kubeconfig: %w", err)
	}
	return os.Chmod(c.Kubeconfig, 0o600)
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
