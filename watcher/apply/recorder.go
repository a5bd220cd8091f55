package apply

import (
	"context"
	"slices"
	"sync"
)

// Recorder is a fake Applier for tests of the controller: it records every Request and answers
// with an OK result for each inventory host the request covers, unless Fail says otherwise.
type Recorder struct {
	// Hosts are the inventory host names; a Request with an empty Limit covers all of them.
	Hosts []string
	// Fail, when set, decides the result of one host: a non-nil result replaces the OK one.
	Fail func(req Request, host string) *HostResult

	mu       sync.Mutex
	requests []Request
}

// NewRecorder returns a Recorder for the given inventory host names.
func NewRecorder(hosts ...string) *Recorder {
	return &Recorder{Hosts: hosts}
}

// Apply records req and returns one result per covered host.
func (r *Recorder) Apply(ctx context.Context, req Request) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	req.Limit = slices.Clone(req.Limit)
	r.mu.Lock()
	r.requests = append(r.requests, req)
	fail := r.Fail
	hosts := slices.Clone(r.Hosts)
	r.mu.Unlock()

	if len(req.Limit) > 0 {
		hosts = req.Limit
	}
	res := Result{Hosts: make(map[string]HostResult, len(hosts))}
	for _, h := range hosts {
		hr := HostResult{Host: h, OK: true, Changed: !req.Check, Reloaded: !req.Check}
		if fail != nil {
			if f := fail(req, h); f != nil {
				hr = *f
				hr.Host = h
			}
		}
		res.Hosts[h] = hr
	}
	return res, nil
}

// Requests returns a copy of the requests recorded so far, oldest first.
func (r *Recorder) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

// Count returns the number of recorded requests.
func (r *Recorder) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.requests)
}

// Reset forgets the recorded requests.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = nil
}
