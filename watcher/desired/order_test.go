package desired

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// mixedInput is a cluster with a bit of everything: ready and unready nodes, a bad node,
// Cluster and Local Services, conflicts, ambiguous ids, skipped and warned Services.
func mixedInput() Input {
	var in Input
	for i := range 40 {
		var mods []func(*corev1.Node)
		if i%7 == 3 {
			mods = append(mods, notReady)
		}
		in.Nodes = append(in.Nodes, node(fmt.Sprintf("node-%02d", i), fmt.Sprintf("10.213.2.%d", 10+i), mods...))
	}
	in.Nodes = append(in.Nodes, node("Bad_Node", "10.213.2.200"), node("badaddr", "nope"))
	for i := range 30 {
		ns := fmt.Sprintf("team-%d", i%4)
		if i%5 == 0 {
			ns = "team" // a-b/c vs a/b-c style ambiguity with team-N
		}
		mods := []func(*corev1.Service){age(time.Duration(i%3) * time.Minute),
			annotate(AnnotationEdgeAddress, fmt.Sprintf("10.213.1.%d", 1+i%6))}
		if i%3 == 0 {
			mods = append(mods, local(32000+int32(i)))
			in.Slices = append(in.Slices, slice(ns, fmt.Sprintf("ftp-%d", i),
				endpoint(fmt.Sprintf("node-%02d", i%40), "true"), endpoint(fmt.Sprintf("node-%02d", (i+9)%40), "")))
		}
		if i%8 == 7 {
			mods = append(mods, annotate(AnnotationMaxConn, "lots"))
		}
		if i%6 == 5 {
			mods = append(mods, annotate("kubeftp.io/maxconns", "10"))
		}
		lo := int32(21100 + 20*(i%9))
		in.Services = append(in.Services, plainService(ns, fmt.Sprintf("ftp-%d", i), 2000+int32(i), 30000+int32(i), lo, 11, 31000+int32(20*i), mods...))
	}
	in.Services = append(in.Services, chartService("team", "1-ftp"), chartService("team-1", "ftp"))
	return in
}

func shuffled(in Input, r *rand.Rand) Input {
	out := Input{
		Nodes:    append([]*corev1.Node(nil), in.Nodes...),
		Services: append([]*corev1.Service(nil), in.Services...),
		Slices:   append([]*discoveryv1.EndpointSlice(nil), in.Slices...),
	}
	r.Shuffle(len(out.Nodes), func(i, j int) { out.Nodes[i], out.Nodes[j] = out.Nodes[j], out.Nodes[i] })
	r.Shuffle(len(out.Services), func(i, j int) { out.Services[i], out.Services[j] = out.Services[j], out.Services[i] })
	r.Shuffle(len(out.Slices), func(i, j int) { out.Slices[i], out.Slices[j] = out.Slices[j], out.Slices[i] })
	return out
}

func TestComputeOrderIndependent(t *testing.T) {
	in := mixedInput()
	want, wantWarns := Compute(in, baseOpts)
	if len(want.Services) < 10 || len(wantWarns) < 10 {
		t.Fatalf("mixed input too tame: %d services, %d warnings", len(want.Services), len(wantWarns))
	}
	var conflicts, local int
	for _, w := range wantWarns {
		if w.Reason == ReasonPortConflict {
			conflicts++
		}
	}
	for _, s := range want.Services {
		if s.TrafficPolicy == TrafficPolicyLocal {
			local++
		}
	}
	if conflicts == 0 || local == 0 {
		t.Fatalf("mixed input lacks conflicts (%d) or Local Services (%d)", conflicts, local)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		got, gotWarns := Compute(shuffled(in, r), baseOpts)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("shuffle %d: State (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(wantWarns, gotWarns); diff != "" {
			t.Fatalf("shuffle %d: warnings (-want +got):\n%s", i, diff)
		}
		if got.Hash() != want.Hash() {
			t.Fatalf("shuffle %d: hash changed", i)
		}
	}
}

// TestComputeDuplicates: two copies of one object (as a stale and a fresh cache entry
// could be) give the same answer in any order.
func TestComputeDuplicates(t *testing.T) {
	a := plainService("demo", "ftp", 21, 30021, 21100, 11, 32100)
	b := plainService("demo", "ftp", 2121, 30021, 21100, 11, 32100)
	b.ResourceVersion = "2"
	n1 := node("n1", "10.213.2.11")
	n1b := node("n1", "10.213.2.99")
	n1b.ResourceVersion = "2"
	s1, w1 := Compute(Input{Nodes: []*corev1.Node{n1, n1b}, Services: []*corev1.Service{a, b}}, baseOpts)
	s2, w2 := Compute(Input{Nodes: []*corev1.Node{n1b, n1}, Services: []*corev1.Service{b, a}}, baseOpts)
	if diff := cmp.Diff(s1, s2); diff != "" {
		t.Errorf("State (-first +second):\n%s", diff)
	}
	if diff := cmp.Diff(w1, w2); diff != "" {
		t.Errorf("warnings (-first +second):\n%s", diff)
	}
	if len(s1.Services) != 1 || len(s1.ServiceNodes(s1.Services[0])) != 1 {
		t.Errorf("duplicates not collapsed: %+v", s1)
	}
}

func TestComputeNilAndEmpty(t *testing.T) {
	got, warns := Compute(Input{Nodes: []*corev1.Node{nil}, Services: []*corev1.Service{nil}, Slices: []*discoveryv1.EndpointSlice{nil}}, baseOpts)
	want := State{Schema: Schema, Nodes: []Node{}, Services: []Service{}}
	want.Generation = want.Hash()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("State (-want +got):\n%s", diff)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %+v", warns)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("empty State invalid: %v", err)
	}
}
