package helm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeftp/kubeftp-edge/lab"
	"github.com/kubeftp/kubeftp-edge/lab/kube"
	"github.com/kubeftp/kubeftp-edge/watcher/apply"
	"github.com/kubeftp/kubeftp-edge/watcher/controller"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// Namespace of the FTP Service in the lab test.
const ftpNamespace = "ftp"

// TestChartWatcherReconcilesTheLab installs the chart in a real kube-apiserver (RBAC, audit
// log on) with the network-namespace lab's edge as its only edge host, the lab's SSH key and
// pinned known_hosts, and runs the watcher as the Deployment runs it, as the chart's
// ServiceAccount. Nodes and a labelled Service mirror the lab's nodes and vsftpd NodePorts; the
// edge must then serve the Service on both nodes and carry real FTP transfers, the watcher must
// write its state ConfigMap and an Applied Event, and the API server must have refused it
// nothing.
func TestChartWatcherReconcilesTheLab(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the lab, etcd and kube-apiserver")
	}
	for _, bin := range []string{"kubectl", "ansible-playbook", "haproxy", "ssh", "curl", "lftp"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is required (make test installs it): %v", bin, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	dir := t.TempDir()
	policy := filepath.Join(dir, "audit-policy.yaml")
	auditLog := filepath.Join(dir, "audit.log")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cluster, err := kube.Start(ctx, kube.Options{Dir: filepath.Join(dir, "kube"), ExtraAPIServerArgs: []string{
		"--audit-policy-file=" + policy, "--audit-log-path=" + auditLog,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Stop)
	_, must := kubectlFor(t, cluster.Kubeconfig)
	admin := adminClient(t, cluster.Kubeconfig)

	l := lab.UpForTest(ctx, t, lab.Options{Prefix: "kfhelm", Net: "10.253", Nodes: 2, Edges: 1, Clients: 2})
	const host = "e1"
	edgeAddr := l.EdgeAddr(1)

	// The chart's values: the lab's edge as its one host, with the role settings the lab's own
	// inventory gives it; the chart sets the connection itself.
	values := map[string]any{
		"watcher": map[string]any{"defaultEdgeAddress": edgeAddr.String()},
		"edge": map[string]any{"hosts": []any{map[string]any{
			"name": host, "address": edgeAddr.String(), "port": 22, "user": "root",
			"vars": labRoleVars(t, l.Inventory(), host),
		}}},
	}
	valuesFile := filepath.Join(dir, "values.yaml")
	b, err := yaml.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(valuesFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{namespace, ftpNamespace} {
		must("create", "namespace", ns)
	}
	objs := installChart(t, namespace, must, "-f", valuesFile,
		"--set-file", "ssh.privateKey="+l.SSHKey(), "--set-file", "ssh.knownHosts="+l.KnownHosts())

	nodes := map[string]netip.Addr{}
	for k := 1; k <= l.Nodes(); k++ {
		name := "n" + strconv.Itoa(k)
		nodes[name] = l.NodeAddr(k)
		createReadyNode(ctx, t, admin, name, l.NodeAddr(k))
	}

	w := startChartWatcher(t, cluster.Kubeconfig, namespace, objs)
	stateName := w.arg(t, "--state-configmap")
	if slices.Contains(objs.find("ConfigMap").names(), "ConfigMap/"+stateName) {
		t.Fatalf("the chart renders the state ConfigMap %s: the watcher is meant to create it", stateName)
	}

	// The first sync pushes the empty state: the edge is reachable and the watcher may write.
	start := time.Now()
	waitFor(ctx, t, w, 90*time.Second, "the first push (no Service yet) recorded as ok", func() bool {
		_, hosts, err := readState(ctx, admin, stateName)
		return err == nil && hosts[host].Result == controller.ResultOK
	})
	t.Logf("watcher start → first push recorded: %s", time.Since(start).Round(time.Millisecond))

	pasvN := l.PassiveMax() - l.PassiveMin() + 1
	svc := labService(l.ControlNodePort(), l.PassiveMin(), pasvN, l.PassiveMin()+l.PassiveOffset())
	created := time.Now()
	if _, err := admin.CoreV1().Services(ftpNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the FTP Service: %v", err)
	}

	var cfg []byte
	waitFor(ctx, t, w, 90*time.Second, "the Service on both nodes in the edge's haproxy.cfg", func() bool {
		cfg, _, err = l.EdgeConfig(1)
		return err == nil && edgeConfigServes(cfg, l, nodes)
	})
	configured := time.Since(created)
	waitFor(ctx, t, w, 30*time.Second, "the edge's HAProxy with both nodes up", func() bool {
		states, err := l.ServersState(ctx, 1)
		return err == nil && controlServersUp(states, nodes)
	})
	serving := time.Since(created)

	edge := netip.AddrPortFrom(edgeAddr, 21)
	for i, c := range []lab.Client{lab.CurlEPSV, lab.CurlPASV, lab.Lftp} {
		tr := lab.Transfer{Client: c, Source: l.ClientAddrs()[i%len(l.ClientAddrs())], Server: edge,
			Path: "pub/helm-" + string(c) + ".bin"}
		if err := l.RoundTrip(ctx, tr, 2<<20); err != nil {
			t.Errorf("%s through the edge: %v", c, err)
		}
	}
	t.Logf("Service created → in the edge's haproxy.cfg: %s; → edge HAProxy serving it on %d nodes (health checks up): %s; → 3 × 2 MiB up and down through it: %s",
		configured.Round(time.Millisecond), len(nodes), serving.Round(time.Millisecond), time.Since(created).Round(time.Millisecond))

	t.Run("state ConfigMap", func(t *testing.T) {
		var cm *corev1.ConfigMap
		var hosts map[string]controller.HostState
		waitFor(ctx, t, w, 60*time.Second, "hosts.json: "+host+" ok after the Service", func() bool {
			cm, hosts, err = readState(ctx, admin, stateName)
			return err == nil && hosts[host].Result == controller.ResultOK && hosts[host].LastSuccess.After(created)
		})
		if h := hosts[host]; h.Hash == "" || h.Failures != 0 || h.Preflight != apply.StatusOK {
			t.Errorf("hosts.json %s: %+v, want a hash, no failures and pre-flight ok", host, h)
		}
		gen := cm.Data[controller.KeyGeneration]
		if gen == "" || !bytes.Contains(cfg, []byte("# generation "+gen+":")) {
			t.Errorf("state generation %q is not the one on the edge:\n%s", gen, headLines(cfg, 3))
		}
		state := decodeVars(t, cm.Data[controller.KeyVars])
		if state.Generation != gen {
			t.Errorf("vars.json generation %q, ConfigMap generation %q", state.Generation, gen)
		}
		var wantNodes []desired.Node
		for name, addr := range nodes {
			wantNodes = append(wantNodes, desired.Node{Name: name, Address: addr.String()})
		}
		if diff := cmp.Diff(wantNodes, state.Nodes, cmpopts.IgnoreFields(desired.Node{}, "ID"),
			cmpopts.SortSlices(func(a, b desired.Node) bool { return a.Name < b.Name })); diff != "" {
			t.Errorf("vars.json nodes (-want +got):\n%s", diff)
		}
		offset := l.PassiveOffset()
		want := []servedService{{
			Source: ftpNamespace + "/" + svc.Name, EdgeGroup: "all", BindAddress: edgeAddr.String(),
			ControlPort: 21, ControlNodePort: l.ControlNodePort(), PassiveMin: l.PassiveMin(),
			PassiveMax: l.PassiveMax(), PassiveOffset: &offset, TrafficPolicy: "Cluster",
		}}
		var got []servedService
		for _, s := range state.Services {
			got = append(got, servedService{s.Source, s.EdgeGroup, s.BindAddress, s.ControlPort,
				s.ControlNodePort, s.PassiveMin, s.PassiveMax, s.PassiveOffset, s.TrafficPolicy})
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("vars.json services (-want +got):\n%s", diff)
		}
	})

	t.Run("Applied Event", func(t *testing.T) {
		var ev corev1.Event
		waitFor(ctx, t, w, 30*time.Second, "an Applied Event on the Service", func() bool {
			list, err := admin.CoreV1().Events(ftpNamespace).List(ctx, metav1.ListOptions{
				FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + svc.Name + ",reason=" + controller.ReasonApplied,
			})
			if err != nil || len(list.Items) == 0 {
				return false
			}
			ev = list.Items[0]
			return true
		})
		if ev.Type != corev1.EventTypeNormal || ev.Source.Component != controller.Component ||
			!strings.Contains(ev.Message, "applied to 1 edge host") {
			t.Errorf("Applied Event: type %s, source %q, message %q", ev.Type, ev.Source.Component, ev.Message)
		}
	})

	// Everything the watcher asked the API server, as the API server recorded it.
	t.Run("API server audit", func(t *testing.T) {
		w.stop()
		w.checkNotForbidden(t)
		events := readAudit(t, auditLog)
		var denied []string
		var requests int
		wrote := map[string]bool{}
		for _, e := range events {
			if e.ImpersonatedUser == nil || e.ImpersonatedUser.Username != w.serviceAccount || e.Stage != "ResponseComplete" {
				continue
			}
			requests++
			if e.ResponseStatus.Code == 401 || e.ResponseStatus.Code == 403 {
				denied = append(denied, fmt.Sprintf("%s %s → %d", e.Verb, e.RequestURI, e.ResponseStatus.Code))
			}
			if e.ObjectRef != nil && e.ResponseStatus.Code/100 == 2 && (e.Verb == "create" || e.Verb == "update" || e.Verb == "patch") {
				wrote[e.Verb+" "+e.ObjectRef.Resource+" "+e.ObjectRef.Namespace] = true
			}
		}
		if requests == 0 {
			t.Fatalf("no request as %s in the audit log (%d events)", w.serviceAccount, len(events))
		}
		if len(denied) > 0 {
			t.Errorf("the API server refused the watcher %d of %d requests:\n%s", len(denied), requests, strings.Join(denied, "\n"))
		}
		for _, want := range []string{
			"create configmaps " + namespace, // the state ConfigMap
			"create leases " + namespace,
			"create events " + ftpNamespace,
		} {
			if !wrote[want] {
				t.Errorf("no successful %q as %s; wrote %v", want, w.serviceAccount, wrote)
			}
		}
		t.Logf("%d requests as %s, none refused", requests, w.serviceAccount)
	})

	// Where the time went, from the watcher's own log.
	for _, line := range strings.Split(w.logs(), "\n") {
		for _, msg := range []string{`"msg":"sync done"`, `"msg":"playbook run finished"`} {
			if strings.Contains(line, msg) {
				t.Logf("watcher: %s", line)
			}
		}
	}
}

// auditPolicy records every request with its metadata: who, as whom, what, and the answer.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
`

// auditEvent is the part of an audit.k8s.io/v1 Event the test reads.
type auditEvent struct {
	Stage            string `json:"stage"`
	Verb             string `json:"verb"`
	RequestURI       string `json:"requestURI"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

func readAudit(t *testing.T, path string) []auditEvent {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	defer f.Close()
	var events []auditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var e auditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit log line %q: %v", sc.Text(), err)
		}
		events = append(events, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("audit log: %v", err)
	}
	return events
}

// servedService is the part of a vars.json Service that the lab's Service determines.
type servedService struct {
	Source, EdgeGroup, BindAddress string
	ControlPort, ControlNodePort   int
	PassiveMin, PassiveMax         int
	PassiveOffset                  *int
	TrafficPolicy                  string
}

// labRoleVars are the role settings the lab's inventory gives host (config path, sockets,
// reload method, ...): its host and group vars without the connection ones (ansible_*), which
// the chart's inventory and the watcher's SSH settings provide.
func labRoleVars(t *testing.T, inventory, host string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(inventory)
	if err != nil {
		t.Fatal(err)
	}
	var inv struct {
		All struct {
			Children struct {
				Edge struct {
					Hosts map[string]map[string]any `yaml:"hosts"`
					Vars  map[string]any            `yaml:"vars"`
				} `yaml:"edge"`
			} `yaml:"children"`
		} `yaml:"all"`
	}
	if err := yaml.Unmarshal(data, &inv); err != nil {
		t.Fatalf("lab inventory %s: %v", inventory, err)
	}
	edge := inv.All.Children.Edge
	hv, ok := edge.Hosts[host]
	if !ok {
		t.Fatalf("lab inventory %s has no host %s", inventory, host)
	}
	vars := map[string]any{}
	for _, layer := range []map[string]any{edge.Vars, hv} {
		for k, v := range layer {
			if !strings.HasPrefix(k, "ansible_") {
				vars[k] = v
			}
		}
	}
	for _, k := range []string{"haproxy_ftp_config_path", "haproxy_ftp_master_socket", "haproxy_ftp_reload_method"} {
		if _, ok := vars[k]; !ok {
			t.Fatalf("lab inventory %s: no %s for %s", inventory, k, host)
		}
	}
	return vars
}

func adminClient(t *testing.T, kubeconfig string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// createReadyNode creates a Node that is Ready with addr as its InternalIP. Without a kubelet
// the status is set through the /status subresource, as a kubelet would.
func createReadyNode(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string, addr netip.Addr) {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node %s: %v", name, err)
	}
	n.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
		}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr.String()}, {Type: corev1.NodeHostName, Address: name}},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("setting the status of node %s: %v", name, err)
	}
}

// labService is the opted-in FTP Service whose NodePorts are the ones the lab's nodes forward
// to its vsftpd: control, and n passive ports from pasvLo at NodePorts from pasvNodeLo. It has
// no edge-address annotation: the chart's watcher.defaultEdgeAddress applies.
func labService(ctrlNodePort, pasvLo, n, pasvNodeLo int) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "ftp", Namespace: ftpNamespace, Labels: map[string]string{"kubeftp.io/expose": "true"}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: map[string]string{"app": "ftp"},
			Ports:    []corev1.ServicePort{{Name: "ftp", Protocol: corev1.ProtocolTCP, Port: 21, NodePort: int32(ctrlNodePort)}},
		},
	}
	for i := range n {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("pasv-%d", pasvLo+i),
			Protocol: corev1.ProtocolTCP, Port: int32(pasvLo + i), NodePort: int32(pasvNodeLo + i)})
	}
	return s
}

// edgeConfigServes tells whether cfg binds the lab's control port and passive range on the edge
// address and sends both to every node, at the control NodePort and the passive offset.
func edgeConfigServes(cfg []byte, l *lab.Lab, nodes map[string]netip.Addr) bool {
	edge := l.EdgeAddr(1).String()
	want := []string{
		fmt.Sprintf("bind %s:21\n", edge),
		fmt.Sprintf("bind %s:%d-%d\n", edge, l.PassiveMin(), l.PassiveMax()),
	}
	for name, addr := range nodes {
		want = append(want,
			fmt.Sprintf("server %s %s:%d ", name, addr, l.ControlNodePort()),
			fmt.Sprintf("server %s %s:+%d ", name, addr, l.PassiveOffset()))
	}
	for _, s := range want {
		if !bytes.Contains(cfg, []byte(s)) {
			return false
		}
	}
	return true
}

// controlServersUp tells whether the running HAProxy's control backends hold exactly the
// nodes, every one of them up (its FTP health check saw vsftpd's 220).
func controlServersUp(states []lab.ServerState, nodes map[string]netip.Addr) bool {
	up := map[string]bool{}
	for _, s := range states {
		if !strings.HasSuffix(s.Backend, "_ctrl") {
			continue
		}
		if _, ok := nodes[s.Server]; !ok || s.OpState != 2 {
			return false
		}
		up[s.Server] = true
	}
	return len(up) == len(nodes)
}

// readState reads the watcher's state ConfigMap and its hosts.json.
func readState(ctx context.Context, cs kubernetes.Interface, name string) (*corev1.ConfigMap, map[string]controller.HostState, error) {
	cm, err := cs.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	var hosts map[string]controller.HostState
	if err := json.Unmarshal([]byte(cm.Data[controller.KeyHosts]), &hosts); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", controller.KeyHosts, err)
	}
	return cm, hosts, nil
}

// decodeVars reads vars.json as ansible-playbook would see it: every string wrapped as unsafe
// for Jinja, which the test unwraps (and so requires) before decoding the contract.
func decodeVars(t *testing.T, raw string) desired.State {
	t.Helper()
	var tree any
	if err := json.Unmarshal([]byte(raw), &tree); err != nil {
		t.Fatalf("vars.json: %v", err)
	}
	var unwrap func(v any) (any, error)
	unwrap = func(v any) (any, error) {
		switch v := v.(type) {
		case string:
			return nil, fmt.Errorf("string %q not marked unsafe", v)
		case map[string]any:
			if s, ok := v["__ansible_unsafe"]; ok && len(v) == 1 {
				return s, nil
			}
			out := map[string]any{}
			for k, e := range v {
				u, err := unwrap(e)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", k, err)
				}
				out[k] = u
			}
			return out, nil
		case []any:
			out := make([]any, len(v))
			for i, e := range v {
				u, err := unwrap(e)
				if err != nil {
					return nil, fmt.Errorf("[%d]: %w", i, err)
				}
				out[i] = u
			}
			return out, nil
		}
		return v, nil
	}
	plain, err := unwrap(tree)
	if err != nil {
		t.Fatalf("vars.json: %v", err)
	}
	b, err := json.Marshal(plain)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		State desired.State `json:"haproxy_ftp_state"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("vars.json: %v", err)
	}
	return doc.State
}

// waitFor polls cond every 200ms until it holds; it fails the test at the timeout, when ctx
// ends, or when the watcher exits.
func waitFor(ctx context.Context, t *testing.T, w *chartWatcher, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		select {
		case <-w.exited:
			t.Fatalf("%s: the watcher exited", what)
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// headLines is the first n lines of b, for messages.
func headLines(b []byte, n int) string {
	lines := strings.SplitN(string(b), "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
