// Package watcher tests the watcher against a real kube-apiserver and etcd (lab/kube): the
// informers, the controller's sync, the state ConfigMap, Events and leader election, with
// apply.Recorder standing in for ansible-playbook — and, in lab_test.go, with the real runner
// against the network-namespace lab.
package watcher

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kubeftp/kubeftp-edge/lab/kube"
	"github.com/kubeftp/kubeftp-edge/watcher/apply"
	"github.com/kubeftp/kubeftp-edge/watcher/controller"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
	"github.com/kubeftp/kubeftp-edge/watcher/source"
)

var (
	cluster    *kube.Cluster
	restConfig *rest.Config
	client     kubernetes.Interface
	verbose    = flag.Bool("watcher-log", false, "show the watcher's log")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if !*verbose {
		klog.SetSlogLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
	if testing.Short() {
		// every test here skips under -short: nothing to start
		os.Exit(m.Run())
	}
	os.Exit(runWithCluster(m))
}

func runWithCluster(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kubeftp-watcher-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cluster, err = kube.MustStart(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cluster.Stop()
	if restConfig, err = cluster.RESTConfig(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	restConfig.QPS, restConfig.Burst = 500, 1000
	if client, err = kubernetes.NewForConfig(restConfig); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func needCluster(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real kube-apiserver (not in -short)")
	}
	if client == nil {
		t.Fatal("no test cluster")
	}
}

// env is one test's world: a namespace, and a node label that only this test's nodes carry
// (Nodes are cluster-wide; the watcher's --node-selector keeps other tests' nodes out).
type env struct {
	t        *testing.T
	ctx      context.Context
	ns       string
	nodeTag  string
	edgeAddr string
}

func newEnv(t *testing.T) *env {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	ns := kube.Namespace(t, client)
	return &env{t: t, ctx: ctx, ns: ns, nodeTag: ns, edgeAddr: "10.213.1.1"}
}

func (e *env) desiredOptions() desired.Options {
	return desired.Options{
		DefaultEdgeAddress: e.edgeAddr,
		DefaultEdgeGroup:   "all",
		NodeSelector:       labels.SelectorFromSet(labels.Set{"kubeftp-test": e.nodeTag}),
		NodeAddressType:    corev1.NodeInternalIP,
		ReservedPorts:      []int{22, 10000},
	}
}

// watcherOpts shape one in-process watcher.
type watcherOpts struct {
	hosts      []string
	window     time.Duration
	resync     time.Duration
	maxBackoff time.Duration
	elect      *controller.LeaderElection
	applier    apply.Applier
	preflight  controller.Preflighter
	inventory  []apply.Host
	desired    *desired.Options
}

// watcher is the program's watch command minus flags: the real source on the real API server
// and the controller, with a Recorder (or the given applier) behind it.
type watcher struct {
	ctrl     *controller.Controller
	rec      *apply.Recorder // nil when a real applier runs
	requests func() []apply.Request
	cancel   context.CancelFunc
	done     chan error
}

// recording wraps a real Applier and keeps the requests it served.
type recording struct {
	apply.Applier
	mu   sync.Mutex
	reqs []apply.Request
}

func (r *recording) Apply(ctx context.Context, req apply.Request) (apply.Result, error) {
	res, err := r.Applier.Apply(ctx, req)
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	return res, err
}

func (r *recording) Requests() []apply.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func (e *env) startWatcher(o watcherOpts) *watcher {
	t := e.t
	t.Helper()
	if len(o.hosts) == 0 {
		o.hosts = []string{"e1", "e2"}
	}
	if o.window == 0 {
		o.window = 200 * time.Millisecond
	}
	if o.resync == 0 {
		o.resync = time.Hour
	}
	if o.maxBackoff == 0 {
		o.maxBackoff = 5 * time.Second
	}
	w := &watcher{done: make(chan error, 1)}
	if o.applier == nil {
		w.rec = apply.NewRecorder(o.hosts...)
		o.applier = w.rec
		w.requests = w.rec.Requests
	} else {
		r := &recording{Applier: o.applier}
		o.applier = r
		w.requests = r.Requests
	}
	if o.inventory == nil {
		for _, h := range o.hosts {
			o.inventory = append(o.inventory, apply.Host{Name: h, Groups: []string{"edge"}})
		}
	}
	opts := e.desiredOptions()
	if o.desired != nil {
		opts = *o.desired
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	recorder, stopEvents := controller.NewEventRecorder(client)
	t.Cleanup(stopEvents)

	var ctrl *controller.Controller
	src, err := source.New(client, func() { ctrl.Enqueue() })
	if err != nil {
		t.Fatal(err)
	}
	copts := controller.Options{
		Client: client, Source: src, HasSynced: src.HasSynced,
		Applier: o.applier, Preflight: o.preflight, Hosts: o.inventory, Desired: opts,
		Namespace: e.ns, StateConfigMap: "kubeftp-edge-state",
		CoalesceWindow: o.window, ResyncPeriod: o.resync,
		RetryBaseBackoff: 500 * time.Millisecond, RetryMaxBackoff: o.maxBackoff,
		DriftCheck: true, Events: recorder, Logger: log,
	}
	if o.elect != nil {
		copts.LeaderElection = *o.elect
	}
	ctrl, err = controller.New(copts)
	if err != nil {
		t.Fatal(err)
	}
	w.ctrl = ctrl
	ctx, cancel := context.WithCancel(e.ctx)
	w.cancel = cancel
	src.Start(ctx)
	go func() {
		err := ctrl.Run(ctx)
		cancel()
		src.Shutdown()
		w.done <- err
	}()
	t.Cleanup(func() { w.stop(t) })
	return w
}

// stop cancels the watcher and waits for it to return.
func (w *watcher) stop(t *testing.T) error {
	w.cancel()
	select {
	case err, ok := <-w.done:
		if ok {
			close(w.done)
			return err
		}
		return nil
	case <-time.After(30 * time.Second):
		t.Errorf("watcher did not stop within 30s")
		return nil
	}
}

// pushes are the recorded non-check requests.
func (w *watcher) pushes() []apply.Request {
	var out []apply.Request
	for _, r := range w.requests() {
		if !r.Check {
			out = append(out, r)
		}
	}
	return out
}

// waitPush waits until the last recorded push satisfies ok, and returns it.
func (e *env) waitPush(w *watcher, what string, ok func(desired.State) bool) apply.Request {
	e.t.Helper()
	return e.waitPushWithin(w, 20*time.Second, what, ok)
}

func (e *env) waitPushWithin(w *watcher, d time.Duration, what string, ok func(desired.State) bool) apply.Request {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		p := w.pushes()
		if len(p) > 0 && ok(p[len(p)-1].State) {
			return p[len(p)-1]
		}
		if time.Now().After(deadline) {
			var last string
			if len(p) > 0 {
				last = summary(p[len(p)-1].State)
			}
			e.t.Fatalf("no push with %s within %s (%d pushes; last: %s)", what, d, len(p), last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// summary names services and their nodes, for failure messages.
func summary(s desired.State) string {
	var parts []string
	for _, svc := range s.Services {
		parts = append(parts, fmt.Sprintf("%s%v", svc.Source, nodeNames(s, svc)))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// nodeNames lists the servers of s, a drained (NotReady) node as drained(name).
func nodeNames(st desired.State, s desired.Service) []string {
	out := []string{}
	for _, n := range st.ServiceNodes(s) {
		if n.Drain {
			out = append(out, drained(n.Name))
		} else {
			out = append(out, n.Name)
		}
	}
	return out
}

func drained(node string) string { return node + " (drained)" }

// served returns the service of ns/name in s.
func served(s desired.State, ns, name string) (desired.Service, bool) {
	for _, svc := range s.Services {
		if svc.Source == ns+"/"+name {
			return svc, true
		}
	}
	return desired.Service{}, false
}

// servedOn reports whether ns/name is served on exactly the given nodes.
func servedOn(ns, name string, nodes ...string) func(desired.State) bool {
	return func(s desired.State) bool {
		svc, ok := served(s, ns, name)
		if nodes == nil {
			nodes = []string{}
		}
		return ok && slices.Equal(nodeNames(s, svc), nodes)
	}
}

func notServed(ns, name string) func(desired.State) bool {
	return func(s desired.State) bool { _, ok := served(s, ns, name); return !ok }
}

// ---- objects ----

func (e *env) nodeName(short string) string { return e.ns[:min(len(e.ns), 40)] + "-" + short }

// createNode creates a Ready node with an InternalIP, tagged for this test, and deletes it at
// the end. Status only changes through the /status subresource.
func (e *env) createNode(short, ip string) *corev1.Node {
	e.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   e.nodeName(short),
		Labels: map[string]string{"kubeftp-test": e.nodeTag},
	}}
	n, err := client.CoreV1().Nodes().Create(e.ctx, n, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating node: %v", err)
	}
	name := n.Name
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			e.t.Logf("deleting node %s: %v", name, err)
		}
	})
	n.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
		}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}},
	}
	n, err = client.CoreV1().Nodes().UpdateStatus(e.ctx, n, metav1.UpdateOptions{})
	if err != nil {
		e.t.Fatalf("setting node status: %v", err)
	}
	return n
}

// setReady flips a node's Ready condition through /status.
func (e *env) setReady(short string, ready bool) {
	e.t.Helper()
	e.updateNodeStatus(short, func(n *corev1.Node) {
		st := corev1.ConditionTrue
		if !ready {
			st = corev1.ConditionFalse
		}
		n.Status.Conditions[0].Status = st
		n.Status.Conditions[0].LastTransitionTime = metav1.Now()
	})
}

func (e *env) updateNodeStatus(short string, mod func(*corev1.Node)) {
	e.t.Helper()
	n, err := client.CoreV1().Nodes().Get(e.ctx, e.nodeName(short), metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	mod(n)
	if _, err := client.CoreV1().Nodes().UpdateStatus(e.ctx, n, metav1.UpdateOptions{}); err != nil {
		e.t.Fatalf("updating node status: %v", err)
	}
}

func (e *env) patchNode(short, patch string) {
	e.t.Helper()
	if _, err := client.CoreV1().Nodes().Patch(e.ctx, e.nodeName(short), types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		e.t.Fatalf("patching node: %v", err)
	}
}

func (e *env) deleteNode(short string) {
	e.t.Helper()
	if err := client.CoreV1().Nodes().Delete(e.ctx, e.nodeName(short), metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// ftpService is an opted-in NodePort Service: control port "ftp" → ctrlNode, n passive ports
// from pasvLo with NodePorts from pasvNodeLo (constant offset).
func ftpService(name string, ctrlNode, pasvLo, n, pasvNodeLo int32, annotations map[string]string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Labels: map[string]string{source.ExposeLabel: "true"}, Annotations: annotations,
		},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "ftp", Protocol: corev1.ProtocolTCP, Port: 21, NodePort: ctrlNode}},
		},
	}
	for i := int32(0); i < n; i++ {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{
			Name: fmt.Sprintf("pasv-%d", pasvLo+i), Protocol: corev1.ProtocolTCP, Port: pasvLo + i, NodePort: pasvNodeLo + i,
		})
	}
	return s
}

// createService creates svc in the test namespace and deletes it at the end: without a
// controller-manager a deleted namespace keeps its objects, which other tests would see.
func (e *env) createService(svc *corev1.Service) *corev1.Service {
	e.t.Helper()
	svc.Namespace = e.ns
	got, err := client.CoreV1().Services(e.ns).Create(e.ctx, svc, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating service %s: %v", svc.Name, err)
	}
	name := got.Name
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := client.CoreV1().Services(e.ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			e.t.Logf("deleting service %s: %v", name, err)
		}
	})
	return got
}

func (e *env) updateService(name string, mod func(*corev1.Service)) {
	e.t.Helper()
	svc, err := client.CoreV1().Services(e.ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	mod(svc)
	if _, err := client.CoreV1().Services(e.ns).Update(e.ctx, svc, metav1.UpdateOptions{}); err != nil {
		e.t.Fatalf("updating service %s: %v", name, err)
	}
}

// applySlice creates or replaces the EndpointSlice of a Service with endpoints on the given
// nodes (node short name → ready). Nothing else makes slices: no controller-manager runs.
func (e *env) applySlice(svc string, ready map[string]bool) {
	e.t.Helper()
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svc + "-slice", Namespace: e.ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	var shorts []string
	for s := range ready {
		shorts = append(shorts, s)
	}
	sort.Strings(shorts)
	for i, s := range shorts {
		nodeName := e.nodeName(s)
		r := ready[s]
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{fmt.Sprintf("10.244.0.%d", i+10)}, NodeName: &nodeName,
			Conditions: discoveryv1.EndpointConditions{Ready: &r},
		})
	}
	slices := client.DiscoveryV1().EndpointSlices(e.ns)
	cur, err := slices.Get(e.ctx, sl.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := slices.Create(e.ctx, sl, metav1.CreateOptions{}); err != nil {
			e.t.Fatalf("creating endpointslice: %v", err)
		}
		e.t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = client.DiscoveryV1().EndpointSlices(e.ns).Delete(ctx, sl.Name, metav1.DeleteOptions{})
		})
	case err != nil:
		e.t.Fatal(err)
	default:
		cur.Endpoints = sl.Endpoints
		if _, err := slices.Update(e.ctx, cur, metav1.UpdateOptions{}); err != nil {
			e.t.Fatalf("updating endpointslice: %v", err)
		}
	}
}

// ---- events ----

// waitEvent waits for an Event on the Service with the given type and reason, and returns it.
func (e *env) waitEvent(svc, typ, reason string) corev1.Event {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs := e.events(svc)
		for _, ev := range evs {
			if ev.Type == typ && ev.Reason == reason {
				return ev
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no %s %s event on service %s within 20s; events: %v", typ, reason, svc, eventList(evs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) events(svc string) []corev1.Event {
	e.t.Helper()
	list, err := client.CoreV1().Events(e.ns).List(e.ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + svc,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return list.Items
}

func eventList(evs []corev1.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, fmt.Sprintf("%s %s %q x%d", ev.Type, ev.Reason, ev.Message, ev.Count))
	}
	return out
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
