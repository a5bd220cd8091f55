package scenario

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kubeftp/kubeftp-edge/lab"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// Served is what one Service must look like on the edge's running HAProxy.
type Served struct {
	// Service is "namespace/name".
	Service string
	// Nodes are the lab nodes that must be the Service's only servers taking new clients
	// (weight > 0), all up, in both its control and passive backends.
	Nodes []int
	// Drained are the lab nodes that must be there with weight 0 (NotReady): no new clients,
	// only the sessions stuck to them.
	Drained []int
	// PassiveMin..PassiveMax, when not zero, must be exactly the ports HAProxy listens on at
	// the Service's edge address besides its control port.
	PassiveMin, PassiveMax int
}

func (s Served) String() string {
	out := fmt.Sprintf("%s on [%s]", s.Service, strings.Join(nodeNames(s.Nodes), " "))
	if len(s.Drained) > 0 {
		out += fmt.Sprintf(" drained [%s]", strings.Join(nodeNames(s.Drained), " "))
	}
	if s.PassiveMin != 0 {
		out += fmt.Sprintf(" passive %d-%d", s.PassiveMin, s.PassiveMax)
	}
	return out
}

// edge is the edge host every Service of the scenario is served by.
const edge = 1

// WaitServed polls edge 1 until its running HAProxy serves every expectation, and returns the
// moment it first did. The Service's HAProxy section names come from the desired state.
func (e *Env) WaitServed(ctx context.Context, timeout time.Duration, want ...Served) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		why, err := e.served(ctx, want)
		if err != nil {
			return time.Time{}, err
		}
		if why == "" {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("edge not serving %v within %s: %s\nwatcher log:\n%s", want, timeout, why, e.WatcherLogTail(15))
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("waiting for the edge to serve %v: %w (last: %s)", want, ctx.Err(), why)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// served says why the edge does not serve want yet ("" when it does).
func (e *Env) served(ctx context.Context, want []Served) (string, error) {
	st, _, err := e.Desired(ctx)
	if err != nil {
		return "", err
	}
	states, err := e.Lab.ServersState(ctx, edge)
	if err != nil {
		return err.Error(), nil // the stats socket is briefly gone during a reload
	}
	backends := map[string][]lab.ServerState{}
	for _, s := range states {
		backends[s.Backend] = append(backends[s.Backend], s)
	}
	for _, w := range want {
		svc, ok := serviceOf(st, w.Service)
		if !ok {
			return fmt.Sprintf("%s is not in the desired state (skipped? see the watcher's Events)", w.Service), nil
		}
		names, drainedNames := nodeNames(w.Nodes), nodeNames(w.Drained)
		for _, b := range []string{svc.ID + "_ctrl", svc.ID + "_pasv"} {
			var got, drained []string
			for _, s := range backends[b] {
				if s.Weight == 0 {
					drained = append(drained, s.Server) // up or down: its node may be gone
					continue
				}
				if s.OpState != 2 {
					return fmt.Sprintf("backend %s: server %s is not up (state %d)", b, s.Server, s.OpState), nil
				}
				got = append(got, s.Server)
			}
			slices.Sort(got)
			slices.Sort(drained)
			if !slices.Equal(got, names) {
				return fmt.Sprintf("backend %s has servers %v, want %v", b, got, names), nil
			}
			if !slices.Equal(drained, drainedNames) {
				return fmt.Sprintf("backend %s has drained servers %v, want %v", b, drained, drainedNames), nil
			}
		}
		if w.PassiveMin != 0 {
			ports, err := e.listening(ctx, svc.BindAddress)
			if err != nil {
				return err.Error(), nil
			}
			var wantPorts []int
			for p := w.PassiveMin; p <= w.PassiveMax; p++ {
				wantPorts = append(wantPorts, p)
			}
			ports = slices.DeleteFunc(ports, func(p int) bool { return p == svc.ControlPort })
			if !slices.Equal(ports, wantPorts) {
				return fmt.Sprintf("%s: HAProxy listens on passive ports %s, want %d-%d", w.Service, portRanges(ports), w.PassiveMin, w.PassiveMax), nil
			}
		}
	}
	return "", nil
}

// nodeNames are the sorted names of lab nodes.
func nodeNames(ks []int) []string {
	names := make([]string, len(ks))
	for i, k := range ks {
		names[i] = NodeName(k)
	}
	slices.Sort(names)
	return names
}

// listening lists the TCP ports HAProxy listens on at addr inside the edge's namespace, sorted.
func (e *Env) listening(ctx context.Context, addr string) ([]int, error) {
	out, err := e.Lab.Exec(ctx, "e"+strconv.Itoa(edge), "ss", "-Hltnp")
	if err != nil {
		return nil, err
	}
	var ports []int
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.Contains(line, `"haproxy"`) {
			continue
		}
		ap, err := netip.ParseAddrPort(f[3])
		if err != nil || ap.Addr().String() != addr {
			continue
		}
		ports = append(ports, int(ap.Port()))
	}
	slices.Sort(ports)
	return slices.Compact(ports), nil
}

// portRanges prints sorted ports as ranges: "21 21100-21110".
func portRanges(ports []int) string {
	var parts []string
	for i := 0; i < len(ports); {
		j := i
		for j+1 < len(ports) && ports[j+1] == ports[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(ports[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ports[i], ports[j]))
		}
		i = j + 1
	}
	if parts == nil {
		return "none"
	}
	return strings.Join(parts, " ")
}

func serviceOf(st desired.State, source string) (desired.Service, bool) {
	for _, s := range st.Services {
		if s.Source == source {
			return s, true
		}
	}
	return desired.Service{}, false
}

// WaitApplied waits until the watcher has finished pushing what the cluster asks for now: its
// state ConfigMap and the edge's haproxy.cfg both carry the generation of the desired state.
// Steps wait for it so that no playbook run of one step overlaps the next.
func (e *Env) WaitApplied(ctx context.Context, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		st, _, err := e.Desired(ctx)
		if err != nil {
			return "", err
		}
		gen, err := e.StateGeneration(ctx)
		if err != nil {
			last = err.Error()
		} else if cfg, _, err := e.Lab.EdgeConfig(edge); err != nil {
			last = err.Error()
		} else if gen != st.Generation {
			last = fmt.Sprintf("state ConfigMap at generation %q, desired %s", gen, st.Generation)
		} else if !bytes.Contains(cfg, []byte("# generation "+st.Generation+":")) {
			last = "the edge's haproxy.cfg is not at generation " + st.Generation
		} else {
			return st.Generation, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("watcher did not apply the desired state within %s: %s\nwatcher log:\n%s", timeout, last, e.WatcherLogTail(15))
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Reloads is how often edge 1's HAProxy master has reloaded.
func (e *Env) Reloads(ctx context.Context) (int, error) {
	p, err := e.Lab.ShowProc(ctx, edge)
	if err != nil {
		return 0, err
	}
	return p.Master.Reloads, nil
}

// RoundTrips uploads and downloads size random bytes through server:21 with each client, from
// the lab client addresses given by index (cycled), and checks every sha256. It returns a
// one-line account.
func (e *Env) RoundTrips(ctx context.Context, server netip.Addr, size int64, tag string, clients []lab.Client, sources ...int) (string, error) {
	if len(sources) == 0 {
		sources = []int{0}
	}
	start := time.Now()
	var names []string
	for i, c := range clients {
		src := e.Lab.ClientAddrs()[sources[i%len(sources)]]
		t := lab.Transfer{Client: c, Source: src, Server: netip.AddrPortFrom(server, 21),
			Path: fmt.Sprintf("pub/%s-%s-%d.bin", tag, c, i)}
		if err := e.Lab.RoundTrip(ctx, t, size); err != nil {
			return "", fmt.Errorf("from %s: %w", src, err)
		}
		names = append(names, string(c))
	}
	took := time.Since(start)
	mb := float64(size) / (1 << 20)
	return fmt.Sprintf("%s: %.0f MiB up+down each, sha256 equal (%.1f s)", strings.Join(names, ", "), mb, took.Seconds()), nil
}

// OpenSession opens a real FTP session from client address src to server:21 and logs in.
func (e *Env) OpenSession(ctx context.Context, src int, server netip.Addr) (*lab.Session, error) {
	s, err := e.Lab.Dial(ctx, e.Lab.ClientAddrs()[src], netip.AddrPortFrom(server, 21))
	if err != nil {
		return nil, err
	}
	if err := s.Login(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// CheckSession stores and retrieves 256 KiB over new data connections of the open session.
func CheckSession(ctx context.Context, s *lab.Session, path string) error {
	content := make([]byte, 256<<10)
	if _, err := rand.Read(content); err != nil {
		return err
	}
	if err := s.Stor(ctx, path, content); err != nil {
		return err
	}
	got, err := s.Retr(ctx, path)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, content) {
		return fmt.Errorf("RETR %s: %d bytes differ from the %d stored", path, len(got), len(content))
	}
	return nil
}

// ErrNoStickEntry: the edge's stick table holds no entry for the client address.
var ErrNoStickEntry = errors.New("no stick entry")

// StickNode is the node the edge's stick table pins client address src to, for Service
// source ("namespace/name"): where that client's control and data connections go.
func (e *Env) StickNode(ctx context.Context, source string, src netip.Addr) (string, error) {
	st, _, err := e.Desired(ctx)
	if err != nil {
		return "", err
	}
	svc, ok := serviceOf(st, source)
	if !ok {
		return "", fmt.Errorf("%s is not in the desired state", source)
	}
	backend := svc.ID + "_ctrl"
	table, err := e.Lab.StatsCLI(ctx, edge, "show table "+backend)
	if err != nil {
		return "", err
	}
	var id string
	for _, line := range strings.Split(table, "\n") {
		if !strings.Contains(line, " key="+src.String()+" ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "server_id="); ok {
				id = v
			}
		}
	}
	if id == "" {
		return "", fmt.Errorf("%w for %s in %s:\n%s", ErrNoStickEntry, src, backend, table)
	}
	// "show servers state": be_id be_name srv_id srv_name ...
	servers, err := e.Lab.StatsCLI(ctx, edge, "show servers state "+backend)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(servers, "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[1] == backend && f[2] == id {
			return f[3], nil
		}
	}
	return "", fmt.Errorf("stick entry of %s names server id %s, not a server of %s", src, id, backend)
}
