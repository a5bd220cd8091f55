package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// fakeSource serves a snapshot the test edits.
type fakeSource struct {
	mu sync.Mutex
	in desired.Input
}

func (f *fakeSource) Snapshot() (desired.Input, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.in, nil
}

func (f *fakeSource) addNode(name, ip string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.in.Nodes = append(f.in.Nodes, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}},
		},
	})
}

// fakePreflight answers ok unless a host is listed in bad.
type fakePreflight struct {
	mu  sync.Mutex
	bad map[string]apply.HostStatus
}

func (f *fakePreflight) Check(_ context.Context, hosts []apply.Host) []apply.HostCheck {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []apply.HostCheck
	for _, h := range hosts {
		st := apply.StatusOK
		if s, ok := f.bad[h.Name]; ok {
			st = s
		}
		out = append(out, apply.HostCheck{Host: h.Name, Status: st, Message: string(st)})
	}
	return out
}

func ftpService() *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "demo", Name: "ftp", UID: "uid-ftp",
			Labels:            map[string]string{"kubeftp.io/expose": "true"},
			Annotations:       map[string]string{"kubeftp.io/edge-address": "10.213.1.1"},
			CreationTimestamp: metav1.NewTime(t0),
		},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{Name: "ftp", Protocol: corev1.ProtocolTCP, Port: 21, NodePort: 30021}},
		},
	}
	for i := int32(0); i < 3; i++ {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{
			Name: fmt.Sprintf("pasv-%d", 21100+i), Protocol: corev1.ProtocolTCP, Port: 21100 + i, NodePort: 32100 + i,
		})
	}
	return s
}

type rig struct {
	c     *Controller
	clk   *clocktesting.FakeClock
	src   *fakeSource
	rec   *apply.Recorder
	pre   *fakePreflight
	kube  *fake.Clientset
	event *record.FakeRecorder
}

func newRig(t *testing.T, mod func(*Options)) *rig {
	t.Helper()
	r := &rig{
		clk:   clocktesting.NewFakeClock(t0),
		src:   &fakeSource{},
		rec:   apply.NewRecorder("e1", "e2", "e3"),
		pre:   &fakePreflight{bad: map[string]apply.HostStatus{}},
		kube:  fake.NewClientset(),
		event: record.NewFakeRecorder(100),
	}
	r.src.in.Services = []*corev1.Service{ftpService()}
	r.src.addNode("n1", "10.213.2.11")
	opts := Options{
		Client: r.kube, Source: r.src, HasSynced: func() bool { return true },
		Applier: r.rec, Preflight: r.pre,
		Hosts:     []apply.Host{{Name: "e1"}, {Name: "e2"}, {Name: "e3"}},
		Namespace: "kubeftp", StateConfigMap: "kubeftp-edge-state",
		CoalesceWindow: 2 * time.Second, ResyncPeriod: 10 * time.Minute,
		RetryBaseBackoff: 2 * time.Second, RetryMaxBackoff: 30 * time.Second,
		DriftCheck: true,
		Clock:      r.clk, Events: r.event,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.queue.ShutDown)
	r.c = c
	return r
}

// waitLen polls the queue: the delaying queue moves keys on its own goroutine.
func waitLen(t *testing.T, c *Controller, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for c.queue.Len() != want {
		if time.Now().After(deadline) {
			t.Fatalf("queue length %d, want %d", c.queue.Len(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stayLen asserts that the queue length stays at want for a moment.
func stayLen(t *testing.T, c *Controller, want int) {
	t.Helper()
	for range 20 {
		if got := c.queue.Len(); got != want {
			t.Fatalf("queue length %d, want %d", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCoalescingWindow(t *testing.T) {
	r := newRig(t, nil)
	c := r.c

	// quiet so far: the first event syncs after the settle delay, the burst's next ones join it
	c.Enqueue()
	r.clk.Step(100 * time.Millisecond)
	c.Enqueue()
	stayLen(t, c, 0)
	r.clk.Step(100 * time.Millisecond) // settleDelay after the first event
	waitLen(t, c, 1)

	// the sync starts and opens the window; the rest of the burst, during the sync and after
	// it, makes exactly one more sync, when the window closes
	key, _ := c.queue.Get()
	c.syncStarting()
	c.Enqueue()
	r.clk.Step(1500 * time.Millisecond)
	c.queue.Done(key)
	for range 100 {
		c.Enqueue()
	}
	stayLen(t, c, 0)
	r.clk.Step(499 * time.Millisecond)
	stayLen(t, c, 0)
	r.clk.Step(time.Millisecond) // 2s after the first sync started
	waitLen(t, c, 1)
	key, _ = c.queue.Get()
	c.syncStarting()

	// events while that sync runs are held back, not doubled: one sync after it
	c.Enqueue()
	c.Enqueue()
	r.clk.Step(3 * time.Second) // a run longer than the window
	stayLen(t, c, 0)
	c.queue.Done(key)
	waitLen(t, c, 1)
	key, _ = c.queue.Get()
	c.syncStarting()
	c.queue.Done(key)
	stayLen(t, c, 0)

	// quiet for longer than the window: the next event syncs after the settle delay again
	r.clk.Step(5 * time.Second)
	c.Enqueue()
	stayLen(t, c, 0)
	r.clk.Step(settleDelay)
	waitLen(t, c, 1)
}

func TestCoalescingWindowZeroSyncsAtOnce(t *testing.T) {
	r := newRig(t, func(o *Options) { o.CoalesceWindow = 0 })
	r.c.Enqueue()
	r.c.Enqueue()
	waitLen(t, r.c, 1)
}

func pushes(rec *apply.Recorder) [][]string {
	var out [][]string
	for _, req := range rec.Requests() {
		if !req.Check {
			out = append(out, req.Limit)
		}
	}
	return out
}

func TestSyncRetriesFailedHostWithBackoff(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	failing := true
	var mu sync.Mutex
	r.rec.Fail = func(_ apply.Request, host string) *apply.HostResult {
		mu.Lock()
		defer mu.Unlock()
		if host == "e2" && failing {
			return &apply.HostResult{Message: "haproxy -c failed", RolledBack: true}
		}
		return nil
	}

	rep, err := r.c.sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"e2"}, rep.failed); diff != "" {
		t.Errorf("failed hosts (-want +got):\n%s", diff)
	}
	// an event before the backoff expired: the healthy hosts have the hash, e2 waits
	if _, err := r.c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	r.clk.Step(1999 * time.Millisecond)
	if _, err := r.c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"e1", "e2", "e3"}}
	if diff := cmp.Diff(want, pushes(r.rec)); diff != "" {
		t.Fatalf("pushes before the backoff expired (-want +got):\n%s", diff)
	}

	// backoff expired: only e2 is retried, and fails again (next wait doubles)
	r.clk.Step(time.Millisecond)
	if _, err := r.c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	r.clk.Step(3 * time.Second)
	if _, err := r.c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	want = append(want, []string{"e2"})
	if diff := cmp.Diff(want, pushes(r.rec)); diff != "" {
		t.Fatalf("pushes after first retry (-want +got):\n%s", diff)
	}

	// a change while e2 is in backoff goes to every host at once, e2 included
	r.src.addNode("n2", "10.213.2.12")
	mu.Lock()
	failing = false
	mu.Unlock()
	rep, err = r.c.sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, []string{"e1", "e2", "e3"})
	if diff := cmp.Diff(want, pushes(r.rec)); diff != "" {
		t.Fatalf("pushes after a change (-want +got):\n%s", diff)
	}
	if len(rep.failed) != 0 {
		t.Errorf("failed after recovery: %v", rep.failed)
	}

	// nothing changed: no push at all
	if _, err := r.c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(pushes(r.rec)); got != 3 {
		t.Errorf("pushes after an idle sync = %d, want 3", got)
	}

	// hosts.json in the state ConfigMap
	cm, err := r.kube.CoreV1().ConfigMaps("kubeftp").Get(ctx, "kubeftp-edge-state", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var hosts map[string]HostState
	if err := json.Unmarshal([]byte(cm.Data[KeyHosts]), &hosts); err != nil {
		t.Fatal(err)
	}
	if h := hosts["e2"]; h.Result != ResultOK || h.Failures != 0 || h.Hash != rep.hash || !h.LastSuccess.Equal(r.clk.Now()) {
		t.Errorf("hosts.json e2 = %+v, want ok with hash %s", h, rep.hash)
	}
}

func TestPreflightFailureIsNotPushedAndRetried(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	r.pre.bad["e3"] = apply.StatusKeyMismatch

	rep, err := r.c.sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]string{{"e1", "e2"}}, pushes(r.rec)); diff != "" {
		t.Fatalf("pushes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"e3"}, rep.failed); diff != "" {
		t.Errorf("failed (-want +got):\n%s", diff)
	}
	st := r.c.hosts["e3"]
	if st.Result != ResultPreflightFailed || st.Preflight != apply.StatusKeyMismatch {
		t.Errorf("e3 state = %+v", st)
	}
	// the retry is scheduled on the queue, after the backoff
	stayLen(t, r.c, 0)
	r.clk.Step(2 * time.Second)
	waitLen(t, r.c, 1)

	r.pre.mu.Lock()
	delete(r.pre.bad, "e3")
	r.pre.mu.Unlock()
	if _, err := r.c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]string{{"e1", "e2"}, {"e3"}}, pushes(r.rec)); diff != "" {
		t.Fatalf("pushes (-want +got):\n%s", diff)
	}
}

// slowApplier is a playbook run that takes d of the fake clock.
type slowApplier struct {
	*apply.Recorder
	clk *clocktesting.FakeClock
	d   time.Duration
}

func (a slowApplier) Apply(ctx context.Context, req apply.Request) (apply.Result, error) {
	a.clk.Step(a.d)
	return a.Recorder.Apply(ctx, req)
}

// A playbook run to the healthy hosts that outlasts the pre-flight backoff of a dead one must
// not swallow its retry: the sync asks for the next one at once.
func TestPreflightRetryDueDuringLongRun(t *testing.T) {
	r := newRig(t, nil)
	r.c.opts.Applier = slowApplier{Recorder: r.rec, clk: r.clk, d: 40 * time.Second}
	r.pre.bad["e3"] = apply.StatusUnreachable
	if _, err := r.c.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]string{{"e1", "e2"}}, pushes(r.rec)); diff != "" {
		t.Fatalf("pushes (-want +got):\n%s", diff)
	}
	waitLen(t, r.c, 1)
}

func TestResyncDriftCheck(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	if _, err := r.c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	drifted := map[string]bool{}
	r.rec.Fail = func(req apply.Request, host string) *apply.HostResult {
		if req.Check && drifted[host] {
			return &apply.HostResult{OK: true, Changed: true}
		}
		return nil
	}

	// idle resync: one check run, no push
	r.c.resyncDue.Store(true)
	rep, err := r.c.sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"e1", "e2", "e3"}, rep.checked); diff != "" {
		t.Errorf("checked (-want +got):\n%s", diff)
	}
	if got := len(pushes(r.rec)); got != 1 {
		t.Errorf("pushes after idle resync = %d, want 1 (the first sync)", got)
	}

	// e1's config was edited by hand: the resync pushes to e1 only
	drifted["e1"] = true
	r.c.resyncDue.Store(true)
	if _, err := r.c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]string{{"e1", "e2", "e3"}, {"e1"}}, pushes(r.rec)); diff != "" {
		t.Errorf("pushes (-want +got):\n%s", diff)
	}
}

func TestDryRunChecksAndWritesNothing(t *testing.T) {
	r := newRig(t, func(o *Options) { o.DryRun = true })
	ctx := context.Background()
	if _, err := r.c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	reqs := r.rec.Requests()
	if len(reqs) != 1 || !reqs[0].Check {
		t.Fatalf("requests = %+v, want one check-mode run", reqs)
	}
	cms, err := r.kube.CoreV1().ConfigMaps("kubeftp").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cms.Items) != 0 {
		t.Errorf("dry run wrote %d ConfigMaps", len(cms.Items))
	}
}

func TestWarningEventsAreNotRepeated(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	svc := ftpService()
	svc.Name, svc.UID = "bad", "uid-bad"
	svc.Annotations = map[string]string{"kubeftp.io/edge-address": "10.213.1.2", "kubeftp.io/maxconn": "lots"}
	r.src.mu.Lock()
	r.src.in.Services = append(r.src.in.Services, svc)
	r.src.mu.Unlock()

	for range 3 {
		if _, err := r.c.sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for len(r.event.Events) > 0 {
		got = append(got, <-r.event.Events)
	}
	var warnings, applied int
	for _, e := range got {
		switch {
		case strings.Contains(e, "Warning InvalidAnnotation") && strings.Contains(e, "kubeftp.io/maxconn"):
			warnings++
		case strings.Contains(e, "Normal Applied applied to 3 edge hosts"):
			applied++
		}
	}
	if warnings != 1 || applied != 1 {
		t.Errorf("events over 3 syncs: %d InvalidAnnotation warnings, %d Applied, want 1 and 1; all: %q", warnings, applied, got)
	}
}
