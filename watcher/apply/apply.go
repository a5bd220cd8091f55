// Package apply pushes a desired edge state to the edge hosts: it writes the vars contract for
// Ansible (every string marked unsafe), runs the embedded playbook with go-ansible over SSH with
// pinned host keys, and reads per-host results back. It also reads the Ansible inventory and
// checks SSH reachability and host keys before a push, and offers a recording fake Applier for
// tests of the layers above.
package apply

import (
	"context"
	"sort"
	"time"

	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// Request asks for one playbook run.
type Request struct {
	State desired.State
	// Limit restricts the run to these inventory host names; empty means every host.
	Limit []string
	// Check runs in check mode with diff: nothing on the edge changes.
	Check bool
}

// HostResult is the outcome of a run on one edge host.
type HostResult struct {
	Host string
	// OK is true when the host had no failed and no unreachable task.
	OK bool
	// Changed is true when the edge configuration was (or, in check mode, would be) changed.
	Changed bool
	// Reloaded is true when HAProxy was reloaded.
	Reloaded bool
	// Runtime is true when the change (server weights alone: nodes drained or undrained) was
	// applied through HAProxy's runtime API, without a reload.
	Runtime bool
	// RolledBack is true when a failure made the role restore the previous configuration.
	RolledBack bool
	// Unreachable is true when Ansible could not connect to the host.
	Unreachable bool
	// Message is the first failure message or the reason the host was unreachable.
	Message string
}

// Result is the outcome of one playbook run.
type Result struct {
	Hosts    map[string]HostResult
	Duration time.Duration
}

// Failed returns the names of the hosts that did not end OK, sorted.
func (r Result) Failed() []string {
	var names []string
	for name, h := range r.Hosts {
		if !h.OK {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// Applier pushes a desired state to the edge hosts. An error means the run could not happen at
// all; failures of single hosts are reported in Result.Hosts.
type Applier interface {
	Apply(ctx context.Context, req Request) (Result, error)
}
