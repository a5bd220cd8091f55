package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// payloads are values an attacker with write access to a Service or Node would try. Each
// would leave a canary file if anything evaluated it: Jinja on the watcher (Ansible runs
// lookups on the controller), a shell on the watcher or on an edge host (same file system
// in the lab), or a line injected into haproxy.cfg (marked with "kfrelinjected").
func payloads(canary string) map[string]string {
	return map[string]string{
		"jinja-lookup":  "{{ lookup('pipe', 'touch " + canary + "-jinja') }}",
		"jinja-stmt":    "{% set x = lookup('pipe', 'touch " + canary + "-stmt') %}21",
		"jinja-comment": "{# x #}{{ 7*7 }}",
		"shell":         "$(touch " + canary + "-shell); `touch " + canary + "-tick`",
		"quotes":        `21" kfrelinjected '`,
		"newline":       "10.252.1.1\n    server kfrelinjected 10.252.2.11:21",
		"crlf":          "1h\r\n    option kfrelinjected",
		"long":          strings.Repeat("1", 10000) + "s",
		"non-ascii":     "１０.２５２.1.1", // fullwidth digits
		"rtl-zero":      "all\u202e\u200bgroup",
	}
}

// TestHostileInput sends hostile values through the API server in every field the watcher
// reads that can hold them (Service annotations, Node addresses; names and labels the API
// server itself restricts, which the test checks too), plus Services claiming reserved edge
// ports. Nothing executes, no line reaches haproxy.cfg, each such Service is skipped with a
// Warning Event giving the reason, and the good Service is still served with FTP working.
func TestHostileInput(t *testing.T) {
	e := newEnv(t, 6*time.Minute)
	canary := filepath.Join(t.TempDir(), "canary")
	for k := 1; k <= 3; k++ {
		e.createNode(k)
	}
	e.createService(e.labService("ftp"))

	type bad struct {
		svc    string
		reason string
		want   string // in the Warning Event
	}
	var bads []bad
	n := int32(0)
	add := func(name string, mod func(*corev1.Service), reason, want string) {
		n++
		s := ftpService(name, 30300+n, 3000+n*10, 1, 30400+n, map[string]string{})
		s.Spec.Ports[0].Port = 2100 + n
		mod(s)
		e.createService(s)
		bads = append(bads, bad{name, reason, want})
	}
	annotations := []string{desired.AnnotationEdgeAddress, desired.AnnotationEdgeGroup, desired.AnnotationControlPort,
		desired.AnnotationPassivePorts, desired.AnnotationTimeoutClient, desired.AnnotationMaxConn, desired.AnnotationProxyProtocol}
	i := 0
	for pname, value := range payloads(canary) {
		// each payload in one annotation, rotating through them
		ann := annotations[i%len(annotations)]
		i++
		name := fmt.Sprintf("bad-%s", pname)
		add(name, func(s *corev1.Service) { s.Annotations[ann] = value }, desired.ReasonInvalidAnnotation, ann)
	}
	// and every payload in the edge address, the field that becomes a bind line
	for pname, value := range payloads(canary) {
		add("addr-"+pname, func(s *corev1.Service) { s.Annotations[desired.AnnotationEdgeAddress] = value },
			desired.ReasonInvalidAnnotation, desired.AnnotationEdgeAddress)
	}
	// reserved edge ports: SSH, the peers port, the stats port, and a 60000-port range
	add("claims-ssh", func(s *corev1.Service) { s.Spec.Ports[0].Port = 22 }, desired.ReasonReservedPort, "22")
	add("claims-peers", func(s *corev1.Service) { s.Spec.Ports[0].Port = peersPort }, desired.ReasonReservedPort, fmt.Sprint(peersPort))
	add("claims-stats", func(s *corev1.Service) { s.Spec.Ports[0].Port = statsPort }, desired.ReasonReservedPort, fmt.Sprint(statsPort))
	add("claims-pasv-ssh", func(s *corev1.Service) { s.Spec.Ports[1].Name, s.Spec.Ports[1].Port = "pasv-22", 22 },
		desired.ReasonReservedPort, "22")
	add("claims-60000", func(s *corev1.Service) { s.Annotations[desired.AnnotationPassivePorts] = "1024-61023" },
		desired.ReasonInvalidAnnotation, "2000")

	// Node addresses are free text in the API: hostile ones must skip that node only
	nodeBad := map[string]string{}
	for pname, value := range payloads(canary) {
		name := fmt.Sprintf("%s-x%s", e.ns[:min(len(e.ns), 30)], pname)
		nodeBad[name] = value
	}
	accepted := 0
	for name, value := range nodeBad {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubeftp-test": e.ns}}}
		if e.tryCreateNode(node, value) {
			accepted++
		}
	}
	t.Logf("the API server stored %d of %d hostile node addresses", accepted, len(nodeBad))

	// hostile names and labels: the API server refuses them before the watcher sees them
	for _, name := range []string{"{{x}}", "a\nb", "ftp'", "ｆｔｐ"} {
		s := ftpService(name, 30399, 3999, 1, 30499, nil)
		s.Namespace = e.ns
		if _, err := world.client.CoreV1().Services(e.ns).Create(e.ctx, s, metav1.CreateOptions{}); err == nil {
			t.Errorf("the API server accepted Service name %q", name)
		}
	}
	s := ftpService("badlabel", 30398, 3998, 1, 30498, nil)
	s.Labels["kubeftp.io/x"] = "{{x}}"
	s.Namespace = e.ns
	if _, err := world.client.CoreV1().Services(e.ns).Create(e.ctx, s, metav1.CreateOptions{}); err == nil {
		t.Errorf("the API server accepted a label value with Jinja")
	}

	start := time.Now()
	w := e.startWatcher("w1", watcherConfig{inventory: e.inventory("w1", "")})
	e.firstPush(start, "the good Service on every edge")
	if err := e.roundTrip(e.ctx, "hostile", 1<<20); err != nil {
		t.Errorf("FTP through the edge next to hostile Services: %v", err)
	}

	for _, b := range bads {
		t.Run(b.svc, func(t *testing.T) {
			ev := e.waitEvent(b.svc, corev1.EventTypeWarning, b.reason, 30*time.Second, b.want, "not served")
			t.Logf("%s: %s", ev.Reason, trunc(ev.Message, 160))
		})
	}
	hosts, gen, err := e.stateHosts(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"e1", "e2", "e3"} {
		if hosts[h].Hash != gen {
			t.Errorf("%s not at the current generation: %+v", h, hosts[h])
		}
	}
	m, err := w.scrape(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v := metric(m, "kubeftp_edge_services", `state="served"`); v != 1 {
		t.Errorf("kubeftp_edge_services{state=served} = %v, want 1", v)
	}
	if v := metric(m, "kubeftp_edge_services", `state="skipped"`); v != float64(len(bads)) {
		t.Errorf("kubeftp_edge_services{state=skipped} = %v, want %d", v, len(bads))
	}

	// nothing executed, nothing injected
	if found, _ := filepath.Glob(canary + "*"); len(found) > 0 {
		t.Errorf("hostile values executed: %v", found)
	}
	for i := 1; i <= labEdges; i++ {
		cfg, _, err := e.lab.EdgeConfig(i)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"kfrelinjected", "lookup", "{{", "{%", "touch", "bad-", "addr-", "claims-"} {
			if strings.Contains(string(cfg), bad) {
				t.Errorf("edge %d's haproxy.cfg contains %q", i, bad)
			}
		}
		for name := range nodeBad {
			if strings.Contains(string(cfg), name) {
				t.Errorf("edge %d serves node %s with a hostile address", i, name)
			}
		}
	}
	if _, err := os.Stat(canary + "-jinja"); err == nil {
		t.Errorf("canary of the Jinja lookup exists")
	}
}

// tryCreateNode creates a Ready node with the given InternalIP, deleted at the end; it
// reports false when the API server refuses the address.
func (e *env) tryCreateNode(n *corev1.Node, addr string) bool {
	e.t.Helper()
	n, err := world.client.CoreV1().Nodes().Create(e.ctx, n, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating node: %v", err)
	}
	name := n.Name
	e.t.Cleanup(func() { _ = world.client.CoreV1().Nodes().Delete(e.ctx, name, metav1.DeleteOptions{}) })
	n.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}},
	}
	if _, err := world.client.CoreV1().Nodes().UpdateStatus(e.ctx, n, metav1.UpdateOptions{}); err != nil {
		e.t.Logf("the API server refused node address %q: %v", trunc(addr, 40), trunc(err.Error(), 120))
		return false
	}
	return true
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
