package scenario

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPlanNodes(t *testing.T) {
	p := Plan{NotReady: 2, Added: 4}
	for _, tc := range []struct {
		name string
		step int
		want []int
	}{
		{"registered at start", 1, []int{1, 2, 3}},
		{"NotReady node dropped", 2, []int{1, 3}},
		{"added node joins", 3, []int{1, 3, 4}},
		{"passive range change keeps the nodes", 4, []int{1, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, p.Nodes(tc.step)); diff != "" {
				t.Errorf("Nodes(%d) (-want +got):\n%s", tc.step, diff)
			}
		})
	}
	for step, want := range map[int][]int{1: nil, 2: {2}, 4: {2}} {
		if diff := cmp.Diff(want, p.Drained(step)); diff != "" {
			t.Errorf("Drained(%d) (-want +got):\n%s", step, diff)
		}
	}
	// each call gets its own slice: a caller appending to one cannot change the next
	a := p.Nodes(2)
	_ = append(a, 9)
	if diff := cmp.Diff([]int{1, 3, 4}, p.Nodes(3)); diff != "" {
		t.Errorf("Nodes(3) after appending to Nodes(2) (-want +got):\n%s", diff)
	}
}

func TestPortRanges(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ports []int
		want  string
	}{
		{"none", nil, "none"},
		{"one", []int{21}, "21"},
		{"range", []int{21100, 21101, 21102}, "21100-21102"},
		{"control and range", []int{21, 21100, 21101}, "21 21100-21101"},
		{"gaps", []int{1, 3, 4, 6}, "1 3-4 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, portRanges(tc.ports)); diff != "" {
				t.Errorf("portRanges(%v) (-want +got):\n%s", tc.ports, diff)
			}
		})
	}
}

func TestServedString(t *testing.T) {
	got := Served{Service: "demo/ftp", Nodes: []int{1, 3}, PassiveMin: 21100, PassiveMax: 21110}.String()
	if diff := cmp.Diff("demo/ftp on [n1 n3] passive 21100-21110", got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
