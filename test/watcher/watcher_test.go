package watcher

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
	"github.com/kubeftp/kubeftp-edge/watcher/controller"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
	"github.com/kubeftp/kubeftp-edge/watcher/source"
)

func TestNodes(t *testing.T) {
	e := newEnv(t)
	e.createService(ftpService("ftp", 30021, 21100, 11, 32100, nil))
	e.createNode("n1", "10.213.2.11")
	w := e.startWatcher(watcherOpts{})
	n1, n2 := e.nodeName("n1"), e.nodeName("n2")

	first := e.waitPush(w, "n1", servedOn(e.ns, "ftp", n1))
	if diff := cmp.Diff([]string{"e1", "e2"}, first.Limit); diff != "" {
		t.Errorf("first push limit (-want +got):\n%s", diff)
	}
	svc, _ := served(first.State, e.ns, "ftp")
	if svc.PassiveOffset == nil || *svc.PassiveOffset != 11000 || svc.ControlNodePort != 30021 || svc.BindAddress != "10.213.1.1" {
		t.Errorf("served service = %+v", svc)
	}

	steps := []struct {
		name string
		do   func()
		want []string
	}{
		{"node added", func() { e.createNode("n2", "10.213.2.12") }, []string{n1, n2}},
		// kept with weight 0: no new clients, the sessions on it go on
		{"node NotReady", func() { e.setReady("n2", false) }, []string{n1, drained(n2)}},
		{"node Ready again", func() { e.setReady("n2", true) }, []string{n1, n2}},
		{"node excluded by label", func() {
			e.patchNode("n1", `{"metadata":{"labels":{"node.kubernetes.io/exclude-from-external-load-balancers":"true"}}}`)
		}, []string{n2}},
		{"node deleted", func() { e.deleteNode("n2") }, nil},
		{"exclusion removed", func() {
			e.patchNode("n1", `{"metadata":{"labels":{"node.kubernetes.io/exclude-from-external-load-balancers":null}}}`)
		}, []string{n1}},
	}
	for _, s := range steps {
		before := len(w.pushes())
		s.do()
		e.waitPush(w, s.name, servedOn(e.ns, "ftp", s.want...))
		if got := len(w.pushes()) - before; got != 1 {
			t.Errorf("%s: %d pushes, want 1", s.name, got)
		}
	}

	// heartbeat-only status updates (what every kubelet sends) make no sync at all
	time.Sleep(time.Second) // the last step's sync may still be finishing
	syncs := value(t, w.ctrl.Metrics().Syncs.WithLabelValues("ok", "change"))
	for range 5 {
		e.updateNodeStatus("n1", func(n *corev1.Node) { n.Status.Conditions[0].LastHeartbeatTime = metav1.Now() })
	}
	time.Sleep(time.Second)
	if got := value(t, w.ctrl.Metrics().Syncs.WithLabelValues("ok", "change")); got != syncs {
		t.Errorf("heartbeat updates caused %v syncs, want 0", got-syncs)
	}
}

func TestServices(t *testing.T) {
	e := newEnv(t)
	e.createNode("n1", "10.213.2.11")
	w := e.startWatcher(watcherOpts{})
	n1 := e.nodeName("n1")

	e.createService(ftpService("ftp", 30121, 21100, 11, 32200, nil))
	e.waitPush(w, "service added", servedOn(e.ns, "ftp", n1))

	e.updateService("ftp", func(s *corev1.Service) {
		*s = *ftpService("ftp", 30121, 21200, 5, 32300, nil).DeepCopy()
		s.Namespace = e.ns
	})
	p := e.waitPush(w, "passive ports changed", func(st desired.State) bool {
		svc, ok := served(st, e.ns, "ftp")
		return ok && svc.PassiveMin == 21200 && svc.PassiveMax == 21204
	})
	if svc, _ := served(p.State, e.ns, "ftp"); svc.PassiveOffset == nil || *svc.PassiveOffset != 11100 {
		t.Errorf("passive offset after the change: %+v", svc.PassiveOffset)
	}

	e.updateService("ftp", func(s *corev1.Service) { delete(s.Labels, source.ExposeLabel) })
	e.waitPush(w, "label removed", notServed(e.ns, "ftp"))

	e.updateService("ftp", func(s *corev1.Service) { s.Labels = map[string]string{source.ExposeLabel: "true"} })
	e.waitPush(w, "label back", servedOn(e.ns, "ftp", n1))

	if err := client.CoreV1().Services(e.ns).Delete(e.ctx, "ftp", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitPush(w, "service deleted", notServed(e.ns, "ftp"))
}

func TestLocalTrafficPolicyFollowsEndpointSlices(t *testing.T) {
	e := newEnv(t)
	e.createNode("n1", "10.213.2.11")
	e.createNode("n2", "10.213.2.12")
	svc := ftpService("ftp", 30221, 21100, 11, 32400, nil)
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	svc.Spec.HealthCheckNodePort = 32490
	e.createService(svc)
	w := e.startWatcher(watcherOpts{})
	n1, n2 := e.nodeName("n1"), e.nodeName("n2")

	p := e.waitPush(w, "no endpoints yet", servedOn(e.ns, "ftp"))
	if got, _ := served(p.State, e.ns, "ftp"); got.TrafficPolicy != "Local" || got.HealthCheckNodePort != 32490 {
		t.Errorf("service = %+v", got)
	}
	e.applySlice("ftp", map[string]bool{"n2": true})
	e.waitPush(w, "endpoint on n2", servedOn(e.ns, "ftp", n2))
	e.applySlice("ftp", map[string]bool{"n1": true, "n2": false})
	e.waitPush(w, "endpoint moved to n1", servedOn(e.ns, "ftp", n1))
	e.applySlice("ftp", map[string]bool{"n1": true, "n2": true})
	e.waitPush(w, "endpoints on both", servedOn(e.ns, "ftp", n1, n2))
}

func TestInvalidAnnotationWarnsAndOthersStayServed(t *testing.T) {
	e := newEnv(t)
	e.createNode("n1", "10.213.2.11")
	e.createService(ftpService("good", 30321, 21100, 11, 32500, nil))
	e.createService(ftpService("bad", 30322, 21100, 11, 32600, map[string]string{
		"kubeftp.io/edge-address": "10.213.1.9",
		"kubeftp.io/maxconn":      "{{ lookup('pipe','id') }}",
	}))
	w := e.startWatcher(watcherOpts{})

	p := e.waitPush(w, "good served", servedOn(e.ns, "good", e.nodeName("n1")))
	if _, ok := served(p.State, e.ns, "bad"); ok {
		t.Errorf("bad service served: %s", summary(p.State))
	}
	ev := e.waitEvent("bad", corev1.EventTypeWarning, desired.ReasonInvalidAnnotation)
	if !strings.Contains(ev.Message, "kubeftp.io/maxconn") {
		t.Errorf("warning does not name the annotation: %q", ev.Message)
	}
	e.waitEvent("good", corev1.EventTypeNormal, controller.ReasonApplied)

	// fixing the annotation serves it
	e.updateService("bad", func(s *corev1.Service) { s.Annotations["kubeftp.io/maxconn"] = "100" })
	e.waitPush(w, "fixed service served", func(st desired.State) bool {
		svc, ok := served(st, e.ns, "bad")
		return ok && svc.MaxConn == 100
	})

	// the warning was emitted once, not per sync
	for _, ev := range e.events("bad") {
		if ev.Reason == desired.ReasonInvalidAnnotation && ev.Count != 1 {
			t.Errorf("InvalidAnnotation emitted %d times", ev.Count)
		}
	}
}

func TestPortConflictSkipsNewerService(t *testing.T) {
	e := newEnv(t)
	e.createNode("n1", "10.213.2.11")
	e.createService(ftpService("older", 30421, 21100, 11, 32700, nil))
	// creationTimestamp has a resolution of one second
	time.Sleep(1100 * time.Millisecond)
	e.createService(ftpService("newer", 30422, 21105, 11, 32720, nil))
	w := e.startWatcher(watcherOpts{})

	p := e.waitPush(w, "older served", servedOn(e.ns, "older", e.nodeName("n1")))
	if _, ok := served(p.State, e.ns, "newer"); ok {
		t.Errorf("newer service served despite the conflict: %s", summary(p.State))
	}
	ev := e.waitEvent("newer", corev1.EventTypeWarning, desired.ReasonPortConflict)
	if !strings.Contains(ev.Message, e.ns+"/older") {
		t.Errorf("conflict warning does not name the older service: %q", ev.Message)
	}
	if evs := e.events("older"); len(evs) > 0 {
		for _, ev := range evs {
			if ev.Type == corev1.EventTypeWarning {
				t.Errorf("older service got a warning: %s %q", ev.Reason, ev.Message)
			}
		}
	}
}

func TestBurstOfNodeUpdatesCoalesces(t *testing.T) {
	e := newEnv(t)
	e.createService(ftpService("ftp", 30521, 21100, 11, 31400, nil))
	const nodes, updates = 20, 200
	for i := range nodes {
		e.createNode(nodeShort(i), ipOf(i))
	}
	w := e.startWatcher(watcherOpts{window: 2 * time.Second})
	e.waitPush(w, "all nodes", func(s desired.State) bool {
		svc, ok := served(s, e.ns, "ftp")
		return ok && len(s.ServiceNodes(svc)) == nodes
	})
	before := len(w.pushes())
	syncsBefore := value(t, w.ctrl.Metrics().Syncs.WithLabelValues("ok", "change"))

	// 200 updates that each change the edge: the exclusion label goes on and off, 10 rounds per
	// node; in the end every even node is excluded.
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, updates)
	for g := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < updates; i += 10 {
				node := nodeShort(i % nodes)
				round := i / nodes
				val := "null"
				if (i%nodes)%2 == 0 && round%2 == 1 || round%2 == 0 {
					val = `"true"`
				}
				if round == updates/nodes-1 && (i%nodes)%2 == 1 {
					val = "null"
				}
				patch := `{"metadata":{"labels":{"node.kubernetes.io/exclude-from-external-load-balancers":` + val + `}}}`
				if _, err := client.CoreV1().Nodes().Patch(e.ctx, e.nodeName(node), "application/merge-patch+json",
					[]byte(patch), metav1.PatchOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	burst := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var want []string
	for i := 1; i < nodes; i += 2 {
		want = append(want, e.nodeName(nodeShort(i)))
	}
	final := e.waitPush(w, "odd nodes only", servedOn(e.ns, "ftp", want...))
	_ = final
	settled := time.Since(start)
	time.Sleep(3 * time.Second) // a late sync would show up here
	applies := len(w.pushes()) - before
	syncs := value(t, w.ctrl.Metrics().Syncs.WithLabelValues("ok", "change")) - syncsBefore
	t.Logf("%d node updates in %s → %v syncs, %d applies; edge state final %s after the first update",
		updates, burst.Round(time.Millisecond), syncs, applies, settled.Round(time.Millisecond))
	if applies > 3 {
		t.Errorf("%d applies for a burst of %d updates, want at most 3", applies, updates)
	}
}

func nodeShort(i int) string { return "b" + strings.Repeat("0", 2-len(itoa(i))) + itoa(i) }
func ipOf(i int) string      { return "10.213.4." + itoa(10+i) }

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestIdleResyncPushesNothing(t *testing.T) {
	e := newEnv(t)
	e.createNode("n1", "10.213.2.11")
	e.createService(ftpService("ftp", 30621, 21100, 11, 31500, nil))
	w := e.startWatcher(watcherOpts{resync: 500 * time.Millisecond})
	e.waitPush(w, "first push", servedOn(e.ns, "ftp", e.nodeName("n1")))
	resyncs := func() float64 { return value(t, w.ctrl.Metrics().Syncs.WithLabelValues("ok", "resync")) }
	eventually(t, 10*time.Second, "three resyncs", func() bool { return resyncs() >= 3 })

	if got := len(w.pushes()); got != 1 {
		t.Errorf("%d pushes after idle resyncs, want only the first", got)
	}
	var checks int
	for _, r := range w.rec.Requests() {
		if r.Check {
			checks++
		}
	}
	if checks < 3 {
		t.Errorf("%d drift checks for %v resyncs, want one per resync", checks, resyncs())
	}
}

func TestStateConfigMapAndFailedHosts(t *testing.T) {
	e := newEnv(t)
	e.createNode("n1", "10.213.2.11")
	e.createService(ftpService("ftp", 30721, 21100, 11, 31100, nil))
	var mu sync.Mutex
	e2Fails := true
	w := e.startWatcher(watcherOpts{hosts: []string{"e1", "e2", "e3"}, maxBackoff: time.Second})
	w.rec.Fail = func(req apply.Request, host string) *apply.HostResult {
		mu.Lock()
		defer mu.Unlock()
		if host == "e2" && e2Fails && !req.Check {
			return &apply.HostResult{Message: "haproxy reload failed", RolledBack: true}
		}
		return nil
	}
	first := e.waitPush(w, "first push", servedOn(e.ns, "ftp", e.nodeName("n1")))

	// e2 is retried alone with backoff; e1 and e3 are not pushed to again
	eventually(t, 10*time.Second, "two retries of e2", func() bool { return len(w.pushes()) >= 3 })
	for _, p := range w.pushes()[1:] {
		if diff := cmp.Diff([]string{"e2"}, p.Limit); diff != "" {
			t.Errorf("retry limit (-want +got):\n%s", diff)
		}
	}
	ev := e.waitEvent("ftp", corev1.EventTypeWarning, controller.ReasonEdgeHostFailed)
	if !strings.Contains(ev.Message, "e2") || !strings.Contains(ev.Message, "2 of 3") {
		t.Errorf("EdgeHostFailed message: %q", ev.Message)
	}

	cm := e.stateConfigMap()
	wantVars, err := apply.MarshalVars(first.State)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data[controller.KeyVars] != string(wantVars) {
		t.Errorf("vars.json is not MarshalVars of the applied state:\n%s", cm.Data[controller.KeyVars])
	}
	if cm.Data[controller.KeyGeneration] != first.State.Generation {
		t.Errorf("generation = %q, want %q", cm.Data[controller.KeyGeneration], first.State.Generation)
	}
	hosts := hostsJSON(t, cm)
	if h := hosts["e1"]; h.Hash != first.State.Hash() || h.Result != controller.ResultOK || h.LastSuccess.IsZero() {
		t.Errorf("hosts.json e1 = %+v", h)
	}
	if h := hosts["e2"]; h.Hash != "" || h.Result != controller.ResultFailed || h.Failures < 1 ||
		!strings.Contains(h.Message, "haproxy reload failed") {
		t.Errorf("hosts.json e2 = %+v", h)
	}
	for k, v := range cm.Data {
		if strings.Contains(strings.ToLower(v), "private key") {
			t.Errorf("%s holds key material", k)
		}
	}

	// e2 recovers on a retry: Applied to 3, hosts.json all ok
	mu.Lock()
	e2Fails = false
	mu.Unlock()
	eventually(t, 10*time.Second, "e2 recovered in hosts.json", func() bool {
		h := hostsJSON(t, e.stateConfigMap())["e2"]
		return h.Result == controller.ResultOK && h.Hash == first.State.Hash() && h.Failures == 0
	})
	e.waitEventMessage("ftp", controller.ReasonApplied, "applied to 3 edge hosts")
}

func (e *env) stateConfigMap() *corev1.ConfigMap {
	e.t.Helper()
	cm, err := client.CoreV1().ConfigMaps(e.ns).Get(e.ctx, "kubeftp-edge-state", metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return cm
}

func hostsJSON(t *testing.T, cm *corev1.ConfigMap) map[string]controller.HostState {
	t.Helper()
	var hosts map[string]controller.HostState
	if err := json.Unmarshal([]byte(cm.Data[controller.KeyHosts]), &hosts); err != nil {
		t.Fatalf("hosts.json: %v", err)
	}
	return hosts
}

func (e *env) waitEventMessage(svc, reason, msg string) {
	e.t.Helper()
	eventually(e.t, 20*time.Second, reason+" "+msg, func() bool {
		for _, ev := range e.events(svc) {
			if ev.Reason == reason && ev.Message == msg {
				return true
			}
		}
		return false
	})
}

func TestLeaderElection(t *testing.T) {
	e := newEnv(t)
	e.createNode("n1", "10.213.2.11")
	e.createService(ftpService("ftp", 30821, 21100, 11, 31200, nil))
	elect := func(id string) *controller.LeaderElection {
		return &controller.LeaderElection{
			Enabled: true, Namespace: e.ns, Name: "kubeftp-edge", Identity: id,
			LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 500 * time.Millisecond,
		}
	}
	a := e.startWatcher(watcherOpts{elect: elect("a")})
	eventually(t, 10*time.Second, "a leads", a.ctrl.Leading)
	b := e.startWatcher(watcherOpts{elect: elect("b")})
	e.waitPush(a, "leader pushes", servedOn(e.ns, "ftp", e.nodeName("n1")))

	// a follower is ready once its caches synced, and never pushes
	eventually(t, 10*time.Second, "b ready", b.ctrl.Ready)
	e.createNode("n2", "10.213.2.12")
	e.waitPush(a, "leader pushes the new node", servedOn(e.ns, "ftp", e.nodeName("n1"), e.nodeName("n2")))
	time.Sleep(time.Second)
	if b.ctrl.Leading() || b.rec.Count() != 0 {
		t.Fatalf("follower leading=%v with %d requests", b.ctrl.Leading(), b.rec.Count())
	}

	// the leader stops (SIGTERM: the Lease is released) and b takes over
	stopped := time.Now()
	if err := a.stop(t); err != nil {
		t.Fatalf("leader stopped with %v", err)
	}
	eventually(t, 10*time.Second, "b leads", b.ctrl.Leading)
	t.Logf("takeover %s after the leader stopped", time.Since(stopped).Round(time.Millisecond))
	// b read hosts.json: every host already has the state, nothing to push
	time.Sleep(time.Second)
	if n := len(b.pushes()); n != 0 {
		t.Errorf("new leader pushed %d times with nothing changed", n)
	}
	e.setReady("n2", false)
	e.waitPush(b, "new leader pushes a change", servedOn(e.ns, "ftp", e.nodeName("n1"), drained(e.nodeName("n2"))))
}

func TestOnceFailsWhenAHostFails(t *testing.T) {
	e := newEnv(t)
	e.createNode("n1", "10.213.2.11")
	e.createService(ftpService("ftp", 30921, 21100, 11, 31300, nil))
	rec := apply.NewRecorder("e1", "e2")
	rec.Fail = func(_ apply.Request, host string) *apply.HostResult {
		if host == "e2" {
			return &apply.HostResult{Unreachable: true, Message: "ssh: connect to host timed out"}
		}
		return nil
	}
	src, err := source.New(client, func() {})
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := controller.New(controller.Options{
		Client: client, Source: src, HasSynced: src.HasSynced, Applier: rec,
		Hosts: []apply.Host{{Name: "e1"}, {Name: "e2"}}, Desired: e.desiredOptions(),
		Namespace: e.ns, StateConfigMap: "kubeftp-edge-state",
		ResyncPeriod: time.Hour, RetryMaxBackoff: time.Second, Once: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	src.Start(ctx)
	err = ctrl.Run(ctx)
	cancel()
	src.Shutdown()
	if err == nil || !strings.Contains(err.Error(), "e2") {
		t.Fatalf("once run: err = %v, want ErrHostsFailed naming e2", err)
	}
	if rec.Count() != 1 {
		t.Errorf("once run made %d requests, want 1", rec.Count())
	}
}

func TestHealthEndpoints(t *testing.T) {
	e := newEnv(t)
	e.createNode("n1", "10.213.2.11")
	w := e.startWatcher(watcherOpts{})
	srv := httptest.NewServer(w.ctrl.HealthHandler())
	defer srv.Close()
	eventually(t, 10*time.Second, "ready", func() bool {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz = %d", resp.StatusCode)
	}
	if w.rec.Count() == 0 {
		t.Errorf("ready before the first sync was attempted")
	}
	metrics := httptest.NewServer(w.ctrl.MetricsHandler())
	defer metrics.Close()
	resp, err = http.Get(metrics.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body strings.Builder
	buf := make([]byte, 1<<16)
	for {
		n, err := resp.Body.Read(buf)
		body.Write(buf[:n])
		if err != nil {
			break
		}
	}
	for _, m := range []string{"kubeftp_edge_syncs_total", "kubeftp_edge_playbook_runs_total", "kubeftp_edge_playbook_duration_seconds",
		"kubeftp_edge_host_last_success_timestamp_seconds", "kubeftp_edge_services", "kubeftp_edge_eligible_nodes", "kubeftp_edge_leader"} {
		if !strings.Contains(body.String(), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// value reads a counter or gauge.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	switch {
	case out.Counter != nil:
		return out.Counter.GetValue()
	case out.Gauge != nil:
		return out.Gauge.GetValue()
	}
	t.Fatalf("not a counter or gauge")
	return 0
}
