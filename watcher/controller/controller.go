// Package controller keeps the edge hosts at the desired state: informer events schedule one
// coalesced sync; a sync recomputes everything from the caches, pushes only to the hosts that
// lack the new state's hash (after an SSH pre-flight), retries failed hosts with backoff
// without holding back healthy ones, and records the outcome in a ConfigMap, Events and
// metrics. Only the Lease holder pushes.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// syncKey is the only key of the queue: every event asks for the same full sync.
const syncKey = "edge"

// Snapshotter hands out the cluster objects the desired state is computed from.
type Snapshotter interface {
	Snapshot() (desired.Input, error)
}

// Preflighter checks SSH reachability and host keys before a push (apply.Preflight).
type Preflighter interface {
	Check(ctx context.Context, hosts []apply.Host) []apply.HostCheck
}

// LeaderElection configures the Lease; zero durations take the defaults below.
type LeaderElection struct {
	Enabled       bool
	Namespace     string
	Name          string
	Identity      string
	LeaseDuration time.Duration // 15s
	RenewDeadline time.Duration // 10s
	RetryPeriod   time.Duration // 2s
}

// Options wire a Controller.
type Options struct {
	Client    kubernetes.Interface
	Source    Snapshotter
	HasSynced cache.InformerSynced
	Applier   apply.Applier
	Preflight Preflighter
	Hosts     []apply.Host // the inventory
	Desired   desired.Options

	Namespace      string // of the state ConfigMap
	StateConfigMap string

	CoalesceWindow   time.Duration
	ResyncPeriod     time.Duration
	RetryBaseBackoff time.Duration // 2s when zero
	RetryMaxBackoff  time.Duration

	// DryRun runs the playbook in check mode and never writes the state ConfigMap.
	DryRun bool
	// Once makes Run do a single sync and return ErrHostsFailed if a host failed.
	Once bool
	// DriftCheck runs the playbook in check mode on the hosts that are in sync at every resync;
	// a host whose config would change is pushed to again. See driftCheck.
	DriftCheck bool

	LeaderElection LeaderElection

	Clock   clock.WithTicker // clock.RealClock{} when nil
	Events  record.EventRecorder
	Metrics *Metrics // NewMetrics() when nil
	Logger  *slog.Logger
}

// ErrHostsFailed is returned by a --once run in which at least one edge host failed.
var ErrHostsFailed = errors.New("edge hosts failed")

// Controller is the sync loop. Create with New, feed Enqueue from the informers, Run.
type Controller struct {
	opts    Options
	log     *slog.Logger
	clock   clock.WithTicker
	metrics *Metrics
	queue   workqueue.TypedRateLimitingInterface[string]
	store   *stateStore
	events  *events

	// owned by the worker goroutine
	hosts      map[string]*HostState
	hostNames  []string
	appliedVar []byte
	appliedGen string
	lastHash   string

	resyncDue atomic.Bool
	lastStart atomic.Int64 // UnixNano of the last sync's start; see Enqueue
	leading   atomic.Bool
	attempted atomic.Bool // a sync ran since this replica started leading
}

// New checks the options and builds the queue.
func New(opts Options) (*Controller, error) {
	switch {
	case opts.Source == nil:
		return nil, errors.New("controller: a source is required")
	case opts.Applier == nil:
		return nil, errors.New("controller: an applier is required")
	case opts.HasSynced == nil:
		return nil, errors.New("controller: HasSynced is required")
	case len(opts.Hosts) == 0:
		return nil, errors.New("controller: the inventory has no hosts")
	case opts.ResyncPeriod <= 0:
		return nil, errors.New("controller: resync period must be positive")
	case opts.RetryMaxBackoff <= 0:
		return nil, errors.New("controller: retry max backoff must be positive")
	case !opts.DryRun && (opts.Client == nil || opts.Namespace == "" || opts.StateConfigMap == ""):
		return nil, errors.New("controller: the state ConfigMap needs a client, a namespace and a name")
	case opts.LeaderElection.Enabled && (opts.Client == nil || opts.LeaderElection.Namespace == "" ||
		opts.LeaderElection.Name == "" || opts.LeaderElection.Identity == ""):
		return nil, errors.New("controller: leader election needs a client, namespace, name and identity")
	}
	if opts.RetryBaseBackoff <= 0 {
		opts.RetryBaseBackoff = 2 * time.Second
	}
	opts.RetryBaseBackoff = min(opts.RetryBaseBackoff, opts.RetryMaxBackoff)
	c := &Controller{opts: opts, log: opts.Logger, clock: opts.Clock, metrics: opts.Metrics, hosts: map[string]*HostState{}}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.clock == nil {
		c.clock = clock.RealClock{}
	}
	if c.metrics == nil {
		c.metrics = NewMetrics()
	}
	for _, h := range opts.Hosts {
		c.hostNames = append(c.hostNames, h.Name)
	}
	sort.Strings(c.hostNames)
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](opts.RetryBaseBackoff, opts.RetryMaxBackoff),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "kubeftp-edge", Clock: c.clock})
	if opts.Client != nil {
		c.store = &stateStore{client: opts.Client, namespace: opts.Namespace, name: opts.StateConfigMap}
	}
	c.events = newEvents(opts.Events)
	return c, nil
}

// Metrics returns the controller's metrics.
func (c *Controller) Metrics() *Metrics { return c.metrics }

// settleDelay is how long the first event after a quiet period waits before its sync, so that
// the rest of a small burst (a node's status and its EndpointSlices) lands in the same sync.
const settleDelay = 200 * time.Millisecond

// Enqueue asks for a sync. After a quiet period the sync starts settleDelay later; while a sync
// runs or the window of the last one is open, events join one sync that starts when the window
// closes: at most one sync starts per CoalesceWindow, however long a burst lasts. It only
// schedules: safe from informer handlers.
func (c *Controller) Enqueue() {
	if c.opts.CoalesceWindow <= 0 {
		c.queue.Add(syncKey)
		return
	}
	delay := min(settleDelay, c.opts.CoalesceWindow)
	if last := c.lastStart.Load(); last != 0 {
		if open := time.Unix(0, last).Add(c.opts.CoalesceWindow).Sub(c.clock.Now()); open > delay {
			delay = open
		}
	}
	// The delaying queue keeps the earliest ready time of a waiting key, so later calls do
	// not push a scheduled sync further out.
	c.queue.AddAfter(syncKey, delay)
}

// syncStarting opens the coalescing window of the sync that starts now.
func (c *Controller) syncStarting() { c.lastStart.Store(c.clock.Now().UnixNano()) }

// Ready reports whether the caches are synced and, on the replica that pushes, the first
// sync was attempted.
func (c *Controller) Ready() bool {
	if !c.opts.HasSynced() {
		return false
	}
	if c.opts.LeaderElection.Enabled && !c.leading.Load() {
		return true // a follower is ready to take over
	}
	return c.attempted.Load()
}

// Leading reports whether this replica pushes (holds the Lease or runs without election).
func (c *Controller) Leading() bool { return c.leading.Load() }

// Run waits for the caches, then syncs until ctx ends — directly, or while holding the Lease.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.opts.HasSynced) {
		if err := ctx.Err(); err != nil {
			return err
		}
		return errors.New("informer caches did not sync")
	}
	c.log.Info("caches synced", "hosts", len(c.hostNames))
	if !c.opts.LeaderElection.Enabled {
		c.setLeading(true)
		defer c.setLeading(false)
		return c.lead(ctx)
	}
	return c.runElected(ctx)
}

func (c *Controller) setLeading(v bool) {
	c.leading.Store(v)
	if v {
		c.metrics.Leader.Set(1)
	} else {
		c.metrics.Leader.Set(0)
	}
}

// lead is the pushing replica's loop.
func (c *Controller) lead(ctx context.Context) error {
	if c.store != nil {
		hosts, _, err := c.store.load(ctx)
		if err != nil {
			// not fatal: without it every host is pushed to once, which is safe
			c.log.Warn("state configmap unreadable, pushing to every host", "err", err)
		}
		for _, name := range c.hostNames {
			if st, ok := hosts[name]; ok {
				c.hosts[name] = st
			}
		}
	}
	if c.opts.Once {
		c.attempted.Store(true)
		rep, err := c.sync(ctx)
		if err != nil {
			return err
		}
		if len(rep.failed) > 0 {
			return fmt.Errorf("%w: %s", ErrHostsFailed, strings.Join(rep.failed, ", "))
		}
		return nil
	}

	ticker := c.clock.NewTicker(c.opts.ResyncPeriod)
	defer ticker.Stop()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				c.queue.ShutDown()
				return
			case <-ticker.C():
				c.resyncDue.Store(true)
				c.queue.Add(syncKey)
			}
		}
	}()
	c.queue.Add(syncKey)
	for c.processNext(ctx) {
	}
	return nil
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if ctx.Err() != nil {
		return false
	}
	c.syncStarting()
	_, err := c.sync(ctx)
	c.attempted.Store(true)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		c.log.Error("sync failed, retrying", "err", err)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// syncReport is what one sync did.
type syncReport struct {
	hash    string
	pushed  []string // hosts a push was attempted on
	failed  []string // hosts without the current hash after the sync
	checked []string // hosts drift-checked
}

// sync is one full pass: snapshot → compute → drift check (on resync) → pre-flight → push to
// the hosts that need it → record. It returns an error only when it could not do its job at
// all (no snapshot, no playbook run, state not written); host failures are in the report.
func (c *Controller) sync(ctx context.Context) (rep syncReport, err error) {
	start := c.clock.Now()
	trigger := "change"
	if c.resyncDue.Swap(false) {
		trigger = "resync"
	}
	defer func() {
		result := "ok"
		if err != nil {
			result = "error"
		}
		c.metrics.Syncs.WithLabelValues(result, trigger).Inc()
	}()

	in, err := c.opts.Source.Snapshot()
	if err != nil {
		return rep, fmt.Errorf("snapshot: %w", err)
	}
	state, warnings := desired.Compute(in, c.opts.Desired)
	hash := state.Hash()
	rep.hash = hash
	svcs := make(map[string]*corev1.Service, len(in.Services))
	for _, s := range in.Services {
		svcs[s.Namespace+"/"+s.Name] = s
	}
	c.events.warnings(warnings, svcs)
	c.observeState(state, warnings)
	if hash != c.lastHash {
		c.log.Info("desired state", "generation", state.Generation, "services", len(state.Services), "warnings", len(warnings))
		c.lastHash = hash
	}

	if trigger == "resync" && c.opts.DriftCheck && !c.opts.DryRun {
		checked, err := c.driftCheck(ctx, state, hash)
		if err != nil {
			return rep, err
		}
		rep.checked = checked
	}

	now := c.clock.Now()
	due, _ := plan(c.hostNames, c.hosts, hash, now)
	if len(due) > 0 {
		rep.pushed = due
		if err := c.push(ctx, state, hash, due); err != nil {
			return rep, err
		}
	}

	c.serviceEvents(state, svcs, hash)
	for _, name := range c.hostNames {
		if st := c.host(name); st.Hash != hash {
			rep.failed = append(rep.failed, name)
		}
		c.metrics.setHost(name, c.host(name))
	}
	if !c.opts.DryRun && c.store != nil {
		if err := c.store.save(ctx, c.appliedVar, c.appliedGen, c.hosts); err != nil {
			return rep, err
		}
	}
	switch due, wait := plan(c.hostNames, c.hosts, hash, c.clock.Now()); {
	case len(due) > 0:
		// a retry fell due while this sync ran: a playbook run outlasted a pre-flight backoff
		c.queue.Add(syncKey)
	case wait > 0:
		c.queue.AddAfter(syncKey, wait)
	}
	c.log.Info("sync done", "trigger", trigger, "generation", state.Generation, "pushed", len(rep.pushed),
		"failed", rep.failed, "duration", c.clock.Since(start).Round(time.Millisecond))
	return rep, nil
}

func (c *Controller) host(name string) *HostState {
	st, ok := c.hosts[name]
	if !ok {
		st = &HostState{Result: ResultPending}
		c.hosts[name] = st
	}
	return st
}

// push pre-flights the due hosts and runs the playbook on those that passed.
func (c *Controller) push(ctx context.Context, state desired.State, hash string, due []string) error {
	now := c.clock.Now()
	targets := due
	if c.opts.Preflight != nil {
		var hosts []apply.Host
		for _, h := range c.opts.Hosts {
			if slices.Contains(due, h.Name) {
				hosts = append(hosts, h)
			}
		}
		targets = nil
		for _, chk := range c.opts.Preflight.Check(ctx, hosts) {
			st := c.host(chk.Host)
			st.Preflight = chk.Status
			c.metrics.setPreflight(chk.Host, chk.Status)
			if chk.Status == apply.StatusOK {
				targets = append(targets, chk.Host)
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			st.fail(ResultPreflightFailed, fmt.Sprintf("ssh pre-flight: %s: %s", chk.Status, chk.Message), hash, now,
				c.opts.RetryBaseBackoff, c.opts.RetryMaxBackoff)
			c.log.Warn("edge host failed ssh pre-flight, not pushing to it", "host", chk.Host, "status", chk.Status,
				"message", chk.Message, "retry_in", st.nextRetry.Sub(now))
		}
	}
	if len(targets) == 0 {
		return nil
	}
	sort.Strings(targets)
	mode := "apply"
	if c.opts.DryRun {
		mode = "check"
	}
	res, err := c.opts.Applier.Apply(ctx, apply.Request{State: state, Limit: targets, Check: c.opts.DryRun})
	c.metrics.PlaybookDuration.WithLabelValues(mode).Observe(res.Duration.Seconds())
	if err != nil {
		c.metrics.PlaybookRuns.WithLabelValues(mode, "error").Inc()
		if ctx.Err() != nil {
			// cancelled mid-run: what the hosts have is unknown, record nothing
			return fmt.Errorf("playbook run cancelled: %w", ctx.Err())
		}
		for _, name := range targets {
			c.host(name).fail(ResultFailed, "playbook did not run: "+err.Error(), hash, now, c.opts.RetryBaseBackoff, c.opts.RetryMaxBackoff)
		}
		c.log.Error("playbook did not run", "hosts", targets, "err", err)
		return nil
	}
	now = c.clock.Now()
	var okCount int
	for _, name := range targets {
		st := c.host(name)
		hr, found := res.Hosts[name]
		switch {
		case !found:
			st.fail(ResultFailed, "no result from the playbook for this host", hash, now, c.opts.RetryBaseBackoff, c.opts.RetryMaxBackoff)
		case hr.OK:
			st.succeed(hash, now)
			okCount++
			c.log.Info("edge host updated", "host", name, "changed", hr.Changed, "reloaded", hr.Reloaded, "runtime_api", hr.Runtime, "check", c.opts.DryRun)
		default:
			msg := hr.Message
			if hr.RolledBack {
				msg = "rolled back to the previous config: " + msg
			}
			if hr.Unreachable {
				msg = "unreachable: " + msg
			}
			st.fail(ResultFailed, msg, hash, now, c.opts.RetryBaseBackoff, c.opts.RetryMaxBackoff)
		}
		if st.Result != ResultOK {
			c.log.Warn("edge host failed", "host", name, "message", st.Message, "failures", st.Failures,
				"retry_in", st.nextRetry.Sub(now))
		}
	}
	result := "ok"
	switch okCount {
	case len(targets):
	case 0:
		result = "failed"
	default:
		result = "partial"
	}
	c.metrics.PlaybookRuns.WithLabelValues(mode, result).Inc()
	if okCount > 0 && !c.opts.DryRun {
		vars, err := apply.MarshalVars(state)
		if err != nil {
			return fmt.Errorf("encoding applied vars: %w", err)
		}
		c.appliedVar, c.appliedGen = vars, state.Generation
	}
	return nil
}

// driftCheck runs the playbook in check mode on the hosts that have the current hash. The role
// makes that run cheap and reload-free; a host whose config would change (edited by hand,
// restored from a backup, reinstalled) loses its recorded hash and is pushed to in this same
// sync. Without drift, a resync therefore pushes nothing and reloads nothing.
func (c *Controller) driftCheck(ctx context.Context, state desired.State, hash string) ([]string, error) {
	var inSync []string
	for _, name := range c.hostNames {
		if c.host(name).Hash == hash {
			inSync = append(inSync, name)
		}
	}
	if len(inSync) == 0 {
		return nil, nil
	}
	res, err := c.opts.Applier.Apply(ctx, apply.Request{State: state, Limit: inSync, Check: true})
	c.metrics.PlaybookDuration.WithLabelValues("check").Observe(res.Duration.Seconds())
	if err != nil {
		c.metrics.PlaybookRuns.WithLabelValues("check", "error").Inc()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("drift check cancelled: %w", ctx.Err())
		}
		c.log.Error("drift check did not run", "err", err)
		return inSync, nil
	}
	result := "ok"
	for _, name := range inSync {
		hr, found := res.Hosts[name]
		switch {
		case !found || !hr.OK:
			// unknown state: let the normal push path (with pre-flight and backoff) handle it
			c.host(name).Hash = ""
			result = "partial"
			c.log.Warn("drift check failed on edge host", "host", name, "message", hr.Message)
		case hr.Changed:
			c.host(name).Hash = ""
			c.log.Warn("edge host drifted from the applied state, pushing again", "host", name)
		}
	}
	c.metrics.PlaybookRuns.WithLabelValues("check", result).Inc()
	return inSync, nil
}

// hostsOf returns the inventory hosts that serve an edge group.
func (c *Controller) hostsOf(group string) []string {
	if group == "" || group == "all" {
		return c.hostNames
	}
	var out []string
	for _, h := range c.opts.Hosts {
		if slices.Contains(h.Groups, group) {
			out = append(out, h.Name)
		}
	}
	sort.Strings(out)
	return out
}

// serviceEvents tells each served Service where it is served.
func (c *Controller) serviceEvents(state desired.State, svcs map[string]*corev1.Service, hash string) {
	for _, s := range state.Services {
		svc, ok := svcs[s.Source]
		if !ok {
			continue
		}
		hosts := c.hostsOf(s.EdgeGroup)
		var served []string
		var failed []string
		for _, name := range hosts {
			st := c.host(name)
			switch {
			case st.Hash == hash:
				served = append(served, name)
			case st.Result == ResultFailed || st.Result == ResultPreflightFailed:
				failed = append(failed, fmt.Sprintf("%s (%s)", name, shortReason(st)))
			}
		}
		if len(served) > 0 {
			digest, _ := json.Marshal(s)
			c.events.emitDedupe(svc, corev1.EventTypeNormal, ReasonApplied,
				fmt.Sprintf("applied to %d edge hosts", len(served)), string(digest))
		}
		switch {
		case len(hosts) == 0:
			c.events.serviceEvent(svc, corev1.EventTypeWarning, ReasonNotServed,
				fmt.Sprintf("no edge host of the inventory is in group %q (kubeftp.io/edge-group)", s.EdgeGroup))
		case len(served) == 0 && len(failed) > 0:
			c.events.serviceEvent(svc, corev1.EventTypeWarning, ReasonNotServed,
				"no edge host has the current config: "+strings.Join(failed, ", "))
			c.events.serviceEvent(svc, "", ReasonEdgeHostFailed, "")
		case len(failed) > 0:
			c.events.serviceEvent(svc, corev1.EventTypeWarning, ReasonEdgeHostFailed,
				fmt.Sprintf("served by %d of %d edge hosts; failed: %s", len(served), len(hosts), strings.Join(failed, ", ")))
			c.events.serviceEvent(svc, "", ReasonNotServed, "")
		default:
			c.events.serviceEvent(svc, "", ReasonNotServed, "")
			c.events.serviceEvent(svc, "", ReasonEdgeHostFailed, "")
		}
	}
}

// shortReason says why a host failed without repeating Ansible's output into an Event.
func shortReason(st *HostState) string {
	if st.Result == ResultPreflightFailed {
		return "ssh pre-flight: " + string(st.Preflight)
	}
	if strings.HasPrefix(st.Message, "unreachable") {
		return "unreachable"
	}
	if strings.HasPrefix(st.Message, "rolled back") {
		return "playbook failed, previous config restored"
	}
	return "playbook failed"
}

func (c *Controller) observeState(state desired.State, warnings []desired.Warning) {
	skipped := map[string]bool{}
	for _, w := range warnings {
		if w.Skipped && w.Namespace != "" {
			skipped[w.Namespace+"/"+w.Name] = true
		}
	}
	c.metrics.Services.WithLabelValues("served").Set(float64(len(state.Services)))
	c.metrics.Services.WithLabelValues("skipped").Set(float64(len(skipped)))
	c.metrics.EligibleNodes.Set(float64(desired.Serving(state.Nodes, nil)))
}
