package apply

import (
	"context"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRecorder(t *testing.T) {
	rec := NewRecorder("edge1", "edge2", "edge3")
	rec.Fail = func(req Request, host string) *HostResult {
		if host == "edge2" {
			return &HostResult{Unreachable: true, Message: "down"}
		}
		return nil
	}
	ctx := context.Background()
	state := exampleState()

	res, err := rec.Apply(ctx, Request{State: state})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]HostResult{
		"edge1": {Host: "edge1", OK: true, Changed: true, Reloaded: true},
		"edge2": {Host: "edge2", Unreachable: true, Message: "down"},
		"edge3": {Host: "edge3", OK: true, Changed: true, Reloaded: true},
	}
	if diff := cmp.Diff(want, res.Hosts); diff != "" {
		t.Errorf("Apply() hosts (-want +got):\n%s", diff)
	}

	res, err = rec.Apply(ctx, Request{State: state, Limit: []string{"edge3"}, Check: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]HostResult{"edge3": {Host: "edge3", OK: true}}, res.Hosts); diff != "" {
		t.Errorf("Apply(limit, check) hosts (-want +got):\n%s", diff)
	}

	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = rec.Apply(ctx, Request{State: state})
		}()
	}
	wg.Wait()
	reqs := rec.Requests()
	if len(reqs) != 52 || rec.Count() != 52 {
		t.Fatalf("recorded %d requests (Count %d), want 52", len(reqs), rec.Count())
	}
	if diff := cmp.Diff(Request{State: state, Limit: []string{"edge3"}, Check: true}, reqs[1]); diff != "" {
		t.Errorf("second request (-want +got):\n%s", diff)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := rec.Apply(cancelled, Request{State: state}); err == nil {
		t.Error("Apply with a cancelled context: want an error")
	}
	rec.Reset()
	if rec.Count() != 0 {
		t.Errorf("Count after Reset = %d", rec.Count())
	}
}
