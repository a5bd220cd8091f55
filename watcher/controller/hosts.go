package controller

import (
	"sort"
	"time"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
)

// Result values of a host in hosts.json and the logs.
const (
	ResultOK              = "ok"
	ResultFailed          = "failed"
	ResultPreflightFailed = "preflight-failed"
	ResultPending         = "pending"
)

// HostState is what the controller knows about one edge host. It is kept in memory and
// mirrored in the state ConfigMap (hosts.json) so that a restarted or newly elected watcher
// does not push again what every host already has.
type HostState struct {
	// Hash is the state hash last applied successfully; "" when unknown.
	Hash string `json:"hash"`
	// Result of the last attempt: ok, failed, preflight-failed or pending.
	Result string `json:"result"`
	// Message explains a failure; empty when OK.
	Message string `json:"message,omitempty"`
	// Preflight is the last SSH pre-flight status.
	Preflight apply.HostStatus `json:"preflight,omitempty"`
	// LastSuccess is when a push to this host last succeeded.
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	// Failures counts consecutive failed attempts; 0 after a success.
	Failures int `json:"failures"`

	// attempted is the hash of the last attempt; a new hash is tried at once, a failed one
	// again only after nextRetry.
	attempted string
	nextRetry time.Time
}

// backoff is the delay before retrying a host after its n-th consecutive failure (n ≥ 1):
// base, 2·base, 4·base … capped at max.
func backoff(n int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// plan decides which hosts to push hash to at now. A host that already has hash is skipped. A
// host that has not been tried with hash is due at once; one that failed with it is due when
// its backoff expired. wait is the time until the earliest host that is not due yet (0 = none).
func plan(hosts []string, states map[string]*HostState, hash string, now time.Time) (due []string, wait time.Duration) {
	for _, name := range hosts {
		st := states[name]
		if st == nil {
			due = append(due, name)
			continue
		}
		if st.Hash == hash {
			continue
		}
		if st.attempted != hash || !now.Before(st.nextRetry) {
			due = append(due, name)
			continue
		}
		if d := st.nextRetry.Sub(now); wait == 0 || d < wait {
			wait = d
		}
	}
	sort.Strings(due)
	return due, wait
}

// succeed records a successful push of hash.
func (st *HostState) succeed(hash string, now time.Time) {
	st.Hash, st.attempted = hash, hash
	st.Result, st.Message = ResultOK, ""
	st.LastSuccess = now
	st.Failures = 0
	st.nextRetry = time.Time{}
}

// fail records a failed attempt with hash and schedules the retry.
func (st *HostState) fail(result, message, hash string, now time.Time, base, max time.Duration) {
	st.attempted = hash
	st.Result, st.Message = result, message
	st.Failures++
	st.nextRetry = now.Add(backoff(st.Failures, base, max))
}
