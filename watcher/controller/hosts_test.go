package controller

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		name string
		n    int
		want time.Duration
	}{
		{"first failure waits the base", 1, 2 * time.Second},
		{"doubles", 2, 4 * time.Second},
		{"doubles again", 4, 16 * time.Second},
		{"capped", 9, 5 * time.Minute},
		{"stays capped far out", 1000, 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := backoff(tt.n, 2*time.Second, 5*time.Minute); got != tt.want {
				t.Errorf("backoff(%d) = %s, want %s", tt.n, got, tt.want)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	hosts := []string{"e1", "e2", "e3"}
	tests := []struct {
		name     string
		states   map[string]*HostState
		hash     string
		wantDue  []string
		wantWait time.Duration
	}{
		{
			name:    "unknown hosts are due",
			states:  map[string]*HostState{},
			hash:    "h1",
			wantDue: []string{"e1", "e2", "e3"},
		},
		{
			name: "hosts that have the hash are skipped",
			states: map[string]*HostState{
				"e1": {Hash: "h1"}, "e2": {Hash: "h1"}, "e3": {Hash: "h0"},
			},
			hash:    "h1",
			wantDue: []string{"e3"},
		},
		{
			name: "nothing due when every host has the hash",
			states: map[string]*HostState{
				"e1": {Hash: "h1"}, "e2": {Hash: "h1"}, "e3": {Hash: "h1"},
			},
			hash: "h1",
		},
		{
			name: "a host that failed this hash waits for its backoff without holding others",
			states: map[string]*HostState{
				"e1": {Hash: "h0", attempted: "h1", nextRetry: now.Add(8 * time.Second)},
				"e2": {Hash: "h0"},
				"e3": {Hash: "h1"},
			},
			hash:     "h1",
			wantDue:  []string{"e2"},
			wantWait: 8 * time.Second,
		},
		{
			name: "a failed host is due when its backoff expired",
			states: map[string]*HostState{
				"e1": {Hash: "h0", attempted: "h1", nextRetry: now},
				"e2": {Hash: "h1"}, "e3": {Hash: "h1"},
			},
			hash:    "h1",
			wantDue: []string{"e1"},
		},
		{
			name: "a new hash is tried at once even during a backoff",
			states: map[string]*HostState{
				"e1": {Hash: "h0", attempted: "h1", nextRetry: now.Add(time.Minute)},
				"e2": {Hash: "h1"}, "e3": {Hash: "h1"},
			},
			hash:    "h2",
			wantDue: []string{"e1", "e2", "e3"},
		},
		{
			name: "the earliest retry sets the wait",
			states: map[string]*HostState{
				"e1": {attempted: "h1", nextRetry: now.Add(30 * time.Second)},
				"e2": {attempted: "h1", nextRetry: now.Add(4 * time.Second)},
				"e3": {Hash: "h1"},
			},
			hash:     "h1",
			wantWait: 4 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			due, wait := plan(hosts, tt.states, tt.hash, now)
			if diff := cmp.Diff(tt.wantDue, due); diff != "" {
				t.Errorf("due (-want +got):\n%s", diff)
			}
			if wait != tt.wantWait {
				t.Errorf("wait = %s, want %s", wait, tt.wantWait)
			}
		})
	}
}

func TestHostStateRetryCycle(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	base, max := time.Second, 10*time.Second
	st := &HostState{}
	hosts := []string{"e1"}
	states := map[string]*HostState{"e1": st}

	var waits []time.Duration
	for range 6 {
		due, _ := plan(hosts, states, "h1", now)
		if diff := cmp.Diff([]string{"e1"}, due); diff != "" {
			t.Fatalf("at %s due (-want +got):\n%s", now, diff)
		}
		st.fail(ResultFailed, "unreachable", "h1", now, base, max)
		due, wait := plan(hosts, states, "h1", now)
		if len(due) != 0 {
			t.Fatalf("host retried before its backoff: %v", due)
		}
		waits = append(waits, wait)
		now = now.Add(wait)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	if diff := cmp.Diff(want, waits); diff != "" {
		t.Errorf("retry waits (-want +got):\n%s", diff)
	}
	st.succeed("h1", now)
	if st.Failures != 0 || st.Result != ResultOK || !st.LastSuccess.Equal(now) {
		t.Errorf("after success: %+v", st)
	}
	if due, wait := plan(hosts, states, "h1", now); len(due) != 0 || wait != 0 {
		t.Errorf("after success: due %v wait %s, want nothing", due, wait)
	}
}
