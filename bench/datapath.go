package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kubeftp/kubeftp-edge/lab"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// DataPathOptions size the data path part.
type DataPathOptions struct {
	Root string
	// Dir holds the lab's run dir and downloads.
	Dir string
	// Size of the timed transfer in bytes; Reps transfers per direction and path.
	Size int64
	Reps int
	// Sessions is the number of parallel FTP sessions through the edge; each moves
	// SessionSize bytes up and down again.
	Sessions    int
	SessionSize int64
	// Prefix and Net of the lab (defaults kfbdata, 10.240).
	Prefix, Net string
	Logger      *slog.Logger
}

// Paths of the timed transfer.
const (
	PathEdge         = "edge (role's config, splice)"
	PathEdgeNoSplice = "edge without splice"
	PathDirect       = "direct to the pod"
)

// Throughput is one direction over one path: median bytes per second over the runs.
type Throughput struct {
	Direction string // download (RETR) or upload (STOR)
	Path      string
	Median    float64
	Runs      []float64
}

// DataPathResult is part 4.
type DataPathResult struct {
	Size        int64
	Reps        int
	Rows        []Throughput
	Sessions    int
	SessionSize int64
	SessionsOK  int
	SessionWall time.Duration
	SessionErrs []string
}

// spliceOptions make HAProxy move data with splice(2) between the sockets, without copying
// it through user space: the role renders them into its defaults section (haproxy_ftp_splice).
const spliceOptions = "    option splice-request\n    option splice-response\n"

// DataPath moves a large file in passive mode (curl, EPSV) between the lab's client and the
// vsftpd pod through the edge HAProxy (the config the role renders, and the same without splice),
// and between node n1 and the pod directly (no edge, no NodePort), in turn, and compares
// throughput. Then it runs Sessions parallel FTP sessions through the edge (role's config),
// each uploading its own random file and downloading it again, and counts those whose sha256
// matched on both legs.
func DataPath(ctx context.Context, opts DataPathOptions) (*DataPathResult, error) {
	if opts.Prefix == "" {
		opts.Prefix, opts.Net = "kfbdata", "10.240"
	}
	if opts.Reps < 1 {
		opts.Reps = 1
	}
	if opts.SessionSize == 0 {
		opts.SessionSize = 4 << 20
	}
	l, err := lab.Up(ctx, lab.Options{Root: opts.Root, Prefix: opts.Prefix, Net: opts.Net, Nodes: 3, Edges: 1,
		Clients: 40, Dir: filepath.Join(opts.Dir, "lab"), Logger: opts.Logger,
		// 11 passive ports (the lab's default) run out under 50 parallel sessions: vsftpd
		// answers "500 OOPS: vsf_sysutil_bind" when every port of its range is listening
		PassiveMin: 21100, PassiveMax: 21199})
	if err != nil {
		return nil, err
	}
	defer l.Down()
	roleCfg, err := labConfig(ctx, l, opts.Root, opts.Dir)
	if err != nil {
		return nil, err
	}
	copyCfg, err := withoutSplice(roleCfg)
	if err != nil {
		return nil, err
	}
	res := &DataPathResult{Size: opts.Size, Reps: opts.Reps, Sessions: opts.Sessions, SessionSize: opts.SessionSize}

	big := filepath.Join(l.FTPRoot(), "pub", "big.bin")
	want, err := randomFile(big, opts.Size)
	if err != nil {
		return nil, err
	}
	paths := []struct {
		name   string
		ns     string
		server netip.AddrPort
		cfg    []byte // edge config to load first; nil: direct
	}{
		{PathEdge, "client", netip.AddrPortFrom(l.EdgeAddr(1), 21), roleCfg},
		{PathEdgeNoSplice, "client", netip.AddrPortFrom(l.EdgeAddr(1), 21), copyCfg},
		{PathDirect, "n1", netip.AddrPortFrom(l.PodAddr(), 21), nil},
	}
	runs := map[string][]float64{}
	local := filepath.Join(opts.Dir, "big.down")
	defer os.Remove(local)
	for rep := range opts.Reps {
		for _, p := range paths {
			if p.cfg != nil {
				if err := serveEdge(ctx, l, p.cfg); err != nil {
					return res, err
				}
			}
			bps, err := curlTimed(ctx, l, p.ns, p.server, "pub/big.bin", local, false)
			if err != nil {
				return res, err
			}
			if got, err := fileSHA256(local); err != nil || got != want {
				return res, fmt.Errorf("download via %s: sha256 %s, want %s (%v)", p.name, got, want, err)
			}
			remote := fmt.Sprintf("pub/up-%d.bin", rep)
			ubps, err := curlTimed(ctx, l, p.ns, p.server, remote, big, true)
			if err != nil {
				return res, err
			}
			if got, err := fileSHA256(filepath.Join(l.FTPRoot(), remote)); err != nil || got != want {
				return res, fmt.Errorf("upload via %s: sha256 %s, want %s (%v)", p.name, got, want, err)
			}
			if err := os.Remove(filepath.Join(l.FTPRoot(), remote)); err != nil {
				return res, err
			}
			runs["download (RETR)|"+p.name] = append(runs["download (RETR)|"+p.name], bps)
			runs["upload (STOR)|"+p.name] = append(runs["upload (STOR)|"+p.name], ubps)
		}
	}
	for _, dir := range []string{"download (RETR)", "upload (STOR)"} {
		for _, p := range paths {
			r := runs[dir+"|"+p.name]
			res.Rows = append(res.Rows, Throughput{Direction: dir, Path: p.name, Median: medianF(r), Runs: r})
		}
	}

	if opts.Sessions > 0 {
		if err := serveEdge(ctx, l, roleCfg); err != nil {
			return res, err
		}
		res.SessionsOK, res.SessionWall, res.SessionErrs = parallelSessions(ctx, l, paths[0].server, opts.Sessions, opts.SessionSize)
	}
	return res, nil
}

// withoutSplice takes spliceOptions out of the role's defaults section: HAProxy then copies
// every byte through its buffers.
func withoutSplice(cfg []byte) ([]byte, error) {
	s := string(cfg)
	if strings.Count(s, spliceOptions) != 1 {
		return nil, fmt.Errorf("the role's config does not carry %q once in its defaults section", strings.TrimSpace(spliceOptions))
	}
	return []byte(strings.Replace(s, spliceOptions, "", 1)), nil
}

// labConfig renders the compact config that serves the lab's vsftpd pod on edge 1, with
// the role (ansible/render.yml).
func labConfig(ctx context.Context, l *lab.Lab, root, dir string) ([]byte, error) {
	cfg := filepath.Join(dir, "edge.cfg")
	if err := RenderCompact(ctx, root, dir, LabState(l, l.Nodes()), cfg, l.EdgeStatsSocket(1)); err != nil {
		return nil, err
	}
	return os.ReadFile(cfg)
}

// serveEdge loads cfg on edge 1, reloads it and waits until every node's control server is up.
func serveEdge(ctx context.Context, l *lab.Lab, cfg []byte) error {
	if err := l.WriteEdgeConfig(1, cfg); err != nil {
		return err
	}
	if err := l.Reload(ctx, 1); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		states, err := l.ServersState(ctx, 1)
		up := 0
		for _, s := range states {
			if s.Backend == "lab-ftp_ctrl" && s.OpState == 2 {
				up++
			}
		}
		if err == nil && up == l.Nodes() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("edge 1: %d of %d control servers up after 30 s (%v)", up, l.Nodes(), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// LabState is the desired state serving the lab's pod (the NodePorts lab.sh gives it) on
// edge 1's address through the first nodes nodes.
func LabState(l *lab.Lab, nodes int) desired.State {
	offset := l.PassiveOffset()
	svc := desired.Service{
		ID: "lab-ftp", Source: "lab/ftp", EdgeGroup: "all", BindAddress: l.EdgeAddr(1).String(),
		ControlPort: 21, ControlNodePort: l.ControlNodePort(),
		PassiveMin: l.PassiveMin(), PassiveMax: l.PassiveMax(), PassiveOffset: &offset,
		PassiveNodePorts: []int{}, TrafficPolicy: "Cluster",
		Timeouts: desired.Timeouts{Connect: "5s", Client: "1h", Server: "1h", Check: "2s"},
		MaxConn:  2000,
	}
	st := desired.State{Schema: desired.Schema, Services: []desired.Service{svc}}
	for k := 1; k <= nodes; k++ {
		st.Nodes = append(st.Nodes, desired.Node{Name: "n" + strconv.Itoa(k), Address: l.NodeAddr(k).String(), ID: k})
	}
	st.Generation = st.Hash()
	return st
}

// curlTimed runs one curl transfer (EPSV) in namespace ns and returns curl's own average
// speed in bytes per second, so process start-up is not counted.
func curlTimed(ctx context.Context, l *lab.Lab, ns string, server netip.AddrPort, remote, local string, upload bool) (float64, error) {
	url := fmt.Sprintf("ftp://%s/%s", server, remote)
	args := []string{"-sS", "--fail", "--max-time", "300", "--connect-timeout", "10"}
	metric := "%{speed_download}"
	if upload {
		args = append(args, "-T", local, url)
		metric = "%{speed_upload}"
	} else {
		args = append(args, "-o", local, url)
	}
	out, err := l.Exec(ctx, ns, "curl", append(args, "-w", metric)...)
	if err != nil {
		return 0, fmt.Errorf("curl in %s: %w", ns, err)
	}
	bps, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil || bps <= 0 {
		return 0, fmt.Errorf("curl in %s: speed %q", ns, out)
	}
	return bps, nil
}

// parallelSessions runs n round trips at once through the edge, rotating the FTP clients
// and the client source addresses.
func parallelSessions(ctx context.Context, l *lab.Lab, edge netip.AddrPort, n int, size int64) (int, time.Duration, []string) {
	clients := []lab.Client{lab.CurlEPSV, lab.CurlPASV, lab.Lftp}
	srcs := l.ClientAddrs()
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.RoundTrip(ctx, lab.Transfer{Client: clients[i%len(clients)], Source: srcs[i%len(srcs)],
				Server: edge, Path: fmt.Sprintf("pub/par-%02d.bin", i)}, size)
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	ok := 0
	var msgs []string
	for _, err := range errs {
		if err == nil {
			ok++
		} else if len(msgs) < 5 {
			msgs = append(msgs, err.Error())
		}
	}
	return ok, wall, msgs
}

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func randomFile(path string, size int64) (string, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.Reader, size)
	err = errors.Join(err, f.Close())
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (d *DataPathResult) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "\n## 4. Data path\n\n")
	fmt.Fprintf(b, "A %s file in passive mode with curl (EPSV), through the edge (client namespace → edge HAProxy → "+
		"node NodePort (DNAT + MASQUERADE) → vsftpd pod) and straight to the pod (from node n1's namespace, which sits "+
		"on the pod bridge: no edge, no NodePort). Edge configs: the one the role renders (with `option "+
		"splice-request` / `option splice-response` in `defaults`, haproxy_ftp_splice), and the same without them. Paths in turn; median of %d runs each; "+
		"speed as curl reports it; every transfer sha256-checked.\n\n", size(d.Size), d.Reps)
	b.WriteString("| direction | path | throughput | ratio to direct | runs (MB/s) |\n")
	b.WriteString("| --- | --- | ---: | ---: | --- |\n")
	direct := map[string]float64{}
	for _, r := range d.Rows {
		if r.Path == PathDirect {
			direct[r.Direction] = r.Median
		}
	}
	for _, r := range d.Rows {
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", r.Direction, r.Path, mbps(r.Median),
			ratio(r.Median, direct[r.Direction]), mbpsList(r.Runs))
	}
	for _, dir := range []string{"download (RETR)", "upload (STOR)"} {
		var role, noSplice float64
		for _, r := range d.Rows {
			if r.Direction != dir || direct[dir] == 0 {
				continue
			}
			switch r.Path {
			case PathEdge:
				role = r.Median / direct[dir]
			case PathEdgeNoSplice:
				noSplice = r.Median / direct[dir]
			}
		}
		if role > 0 {
			fmt.Fprintf(b, "\nTarget ≥ 0.9× direct, %s: %s with the role's config (%.2f×; without splice %.2f×).",
				dir, met(role >= 0.9), role, noSplice)
		}
	}
	b.WriteString("\n\nEverything here shares one machine's cores, so throughput is bounded by CPU, not by a link, and " +
		"varies with the other load on the machine (see the runs). The edge path adds a user-space proxy that copies " +
		"every byte into and out of HAProxy's buffers, and two forwarding namespaces with NAT. The row without splice " +
		"isolates the proxy's copies: with `option splice-request` and `option splice-response` HAProxy moves the data " +
		"between the sockets inside the kernel (splice(2)), which is why the role renders them (TCP mode; FTPS passes " +
		"through untouched either way). What remains between the edge and direct is the NodePort hop (DNAT + " +
		"MASQUERADE in one more namespace) and the extra socket pair, all on the same two cores as client and server.\n")
	if d.Sessions > 0 {
		fmt.Fprintf(b, "\n%d parallel sessions through the edge (role's config; curl EPSV, curl PASV and lftp in turn, from "+
			"40 client addresses; vsftpd passive range 21100-21199, as 11 ports run out under 50 sessions), each "+
			"uploading its own random %s file and downloading it again: **%d of %d** sha256-equal on the server and "+
			"after download, in %s.\n", d.Sessions, size(d.SessionSize), d.SessionsOK, d.Sessions,
			d.SessionWall.Round(100*time.Millisecond))
		for _, e := range d.SessionErrs {
			fmt.Fprintf(b, "- failed: %s\n", mdEscape(e))
		}
	}
}

func mbps(bps float64) string { return fmt.Sprintf("%.0f MB/s", bps/1e6) }

func mbpsList(v []float64) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprintf("%.0f", x/1e6))
	}
	return strings.Join(s, ", ")
}
