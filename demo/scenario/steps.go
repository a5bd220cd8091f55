package scenario

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/kubeftp/kubeftp-edge/lab"
)

// Plan fixes what the four steps of the demo change.
type Plan struct {
	// NotReady is the lab node that goes NotReady in step 2 (its NodePorts die with it). The
	// edge keeps it drained (weight 0) from then on.
	NotReady int
	// Added is the lab node registered in step 3 (Start registers n1-n3).
	Added int
	// PassiveMin..PassiveMax is the passive range step 4 moves the Service and vsftpd to.
	PassiveMin, PassiveMax int
	// TransferSize is the size of every file moved through the edge.
	TransferSize int64
}

// DefaultPlan is the demo's plan.
func DefaultPlan() Plan {
	return Plan{NotReady: 2, Added: 4, PassiveMin: 21200, PassiveMax: 21210, TransferSize: 4 << 20}
}

// Outcome is what one step measured.
type Outcome struct {
	// EdgeAfter runs from the change (step 1: the watcher's start) until the edge's running
	// HAProxy served the new state; Applied until the watcher's push had finished (its state
	// ConfigMap and the edge's haproxy.cfg at the new generation).
	EdgeAfter, Applied time.Duration
	// Reloads the edge's HAProxy made during the step.
	Reloads int
	// Served is what the edge was checked to serve.
	Served Served
	// FTP is the account of the transfers through the edge after the change.
	FTP string
}

// Step is one step of the demo: a change to the cluster (and the lab, where a real cluster
// would change too), then checks on the edge and real FTP transfers through it.
type Step struct {
	Title string
	Run   func(ctx context.Context, e *Env) (Outcome, error)
}

// Drained are the lab nodes kept on the edge with weight 0 after step n (1-4): NotReady ones.
func (p Plan) Drained(step int) []int {
	if step >= 2 {
		return []int{p.NotReady}
	}
	return nil
}

// Nodes are the lab nodes that take new clients after step n (1-4) of the plan.
func (p Plan) Nodes(step int) []int {
	nodes := []int{1, 2, 3}
	if step >= 2 {
		nodes = slices.DeleteFunc(nodes, func(k int) bool { return k == p.NotReady })
	}
	if step >= 3 {
		nodes = append(nodes, p.Added)
	}
	return nodes
}

// Steps are the four steps of the demo, in order; each builds on the one before. A step keeps
// no state of its own: the plan says what each one expects.
func (p Plan) Steps() []Step {
	all := []lab.Client{lab.CurlEPSV, lab.CurlPASV, lab.Lftp}
	served := func(e *Env, step int) Served {
		// until step 4 the lab's vsftpd keeps the range lab.sh up gave it
		return Served{Service: Namespace + "/" + Service, Nodes: p.Nodes(step), Drained: p.Drained(step), PassiveMin: e.Lab.PassiveMin(), PassiveMax: e.Lab.PassiveMax()}
	}
	return []Step{
		{
			Title: "the watcher configures the edge from nothing; FTP upload + download through it",
			Run: func(ctx context.Context, e *Env) (Outcome, error) {
				cfg, _, err := e.Lab.EdgeConfig(edge)
				if err != nil {
					return Outcome{}, err
				}
				if bytes.Contains(cfg, []byte("\nfrontend ")) {
					return Outcome{}, fmt.Errorf("the edge serves something before the watcher ran:\n%s", cfg)
				}
				return e.measure(ctx, served(e, 1),
					func() (time.Time, error) {
						if err := e.StartWatcher(ctx); err != nil {
							return time.Time{}, err
						}
						return e.WatcherStarted(), nil
					},
					func() (string, error) {
						return e.RoundTrips(ctx, e.Lab.EdgeAddr(edge), p.TransferSize, "step1", all, 0, 1, 2)
					})
			},
		},
		{
			Title: fmt.Sprintf("node %s goes NotReady (and drops its traffic): the edge drains it, no reload; transfers still work", NodeName(p.NotReady)),
			Run: func(ctx context.Context, e *Env) (Outcome, error) {
				return e.measure(ctx, served(e, 2),
					func() (time.Time, error) {
						start := time.Now()
						if err := e.SetReady(ctx, p.NotReady, false); err != nil {
							return start, err
						}
						return start, e.Lab.NodeFail(ctx, p.NotReady)
					},
					// four client addresses: the source hash spreads them over the nodes left
					func() (string, error) {
						return e.RoundTrips(ctx, e.Lab.EdgeAddr(edge), p.TransferSize, "step2", append(all, lab.CurlEPSV), 0, 1, 2, 3)
					})
			},
		},
		{
			Title: fmt.Sprintf("node %s joins the cluster: the edge adds it", NodeName(p.Added)),
			Run: func(ctx context.Context, e *Env) (Outcome, error) {
				return e.measure(ctx, served(e, 3),
					func() (time.Time, error) { return time.Now(), e.AddNode(ctx, p.Added) },
					func() (string, error) {
						return e.RoundTrips(ctx, e.Lab.EdgeAddr(edge), p.TransferSize, "step3", append(all, lab.CurlEPSV), 0, 1, 2, 3)
					})
			},
		},
		{
			Title: fmt.Sprintf("the Service's passive range moves to %d-%d: the edge and vsftpd follow", p.PassiveMin, p.PassiveMax),
			Run: func(ctx context.Context, e *Env) (Outcome, error) {
				l := e.Lab
				if l.PassiveMin() == p.PassiveMin && l.PassiveMax() == p.PassiveMax {
					return Outcome{}, fmt.Errorf("the passive range is %d-%d already: nothing would change", p.PassiveMin, p.PassiveMax)
				}
				want := Served{Service: Namespace + "/" + Service, Nodes: p.Nodes(4), Drained: p.Drained(4), PassiveMin: p.PassiveMin, PassiveMax: p.PassiveMax}
				return e.measure(ctx, want,
					func() (time.Time, error) {
						// what kube-proxy and a rollout of the FTP server do once the chart changed:
						// new passive NodePorts on every node, vsftpd restarted with the new range
						if _, err := l.Script(ctx, "nodeport-add", "all", strconv.Itoa(l.ControlNodePort()),
							strconv.Itoa(p.PassiveMin), strconv.Itoa(p.PassiveMax), "+"+strconv.Itoa(l.PassiveOffset())); err != nil {
							return time.Time{}, err
						}
						if err := l.RestartFTPServer(ctx, p.PassiveMin, p.PassiveMax); err != nil {
							return time.Time{}, err
						}
						start := time.Now()
						return start, e.SetPassiveRange(ctx, Service, p.PassiveMin, p.PassiveMax, l.PassiveOffset())
					},
					func() (string, error) {
						return e.RoundTrips(ctx, l.EdgeAddr(edge), p.TransferSize, "step4", all, 0, 1, 2)
					})
			},
		},
	}
}

// waitEdge bounds each wait for the edge: a playbook run takes seconds, longer on a busy machine.
const waitEdge = 2 * time.Minute

// measure makes the change, waits for the edge to serve want and the push to finish, counts
// the reloads in between, then runs the transfers.
func (e *Env) measure(ctx context.Context, want Served, change func() (time.Time, error), ftp func() (string, error)) (Outcome, error) {
	out := Outcome{Served: want}
	r0, err := e.Reloads(ctx)
	if err != nil {
		return out, err
	}
	start, err := change()
	if err != nil {
		return out, err
	}
	at, err := e.WaitServed(ctx, waitEdge, want)
	if err != nil {
		return out, err
	}
	out.EdgeAfter = at.Sub(start)
	if _, err := e.WaitApplied(ctx, waitEdge); err != nil {
		return out, err
	}
	out.Applied = time.Since(start)
	r1, err := e.Reloads(ctx)
	if err != nil {
		return out, err
	}
	out.Reloads = r1 - r0
	if out.FTP, err = ftp(); err != nil {
		return out, err
	}
	return out, nil
}
