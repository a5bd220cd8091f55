package desired

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// benchInput is a 5000-node cluster with 1000 FTP Services, every clusterEvery-th of them
// with externalTrafficPolicy Cluster (all nodes behind it), the rest Local with endpoints
// on two nodes. Services share 100 edge addresses, 10 passive ranges each.
func benchInput(clusterEvery int) Input {
	var in Input
	for i := range 5000 {
		in.Nodes = append(in.Nodes, node(fmt.Sprintf("node-%04d.zone-%d.example.internal", i, i%3),
			fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256)))
	}
	for i := range 1000 {
		ns, name := fmt.Sprintf("tenant-%03d", i/10), fmt.Sprintf("ftp-%d", i%10)
		mods := []func(*corev1.Service){annotate(AnnotationEdgeAddress, fmt.Sprintf("10.213.1.%d", 1+i/10))}
		if clusterEvery == 0 || i%clusterEvery != 0 {
			mods = append(mods, local(int32(30000+i)))
			in.Slices = append(in.Slices, slice(ns, name,
				endpoint(in.Nodes[(i*7)%5000].Name, "true"), endpoint(in.Nodes[(i*13+1)%5000].Name, "true")))
		}
		k := int32(i % 10)
		in.Services = append(in.Services, plainService(ns, name, 2100+k, 30000+int32(i), 21100+20*k, 11, 31000+11*int32(i%1000), mods...))
	}
	return in
}

// BenchmarkCompute: the target is < 50 ms per Compute at 5000 nodes and 1000 Services.
// "all-cluster" is the worst case: every Service lists every node, 5 million servers and a
// ~300 MB document; Compute is then bound by hashing that document.
func BenchmarkCompute(b *testing.B) {
	for _, bc := range []struct {
		name         string
		clusterEvery int
	}{{"all-local", 0}, {"10pct-cluster", 10}, {"all-cluster", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			in := benchInput(bc.clusterEvery)
			s, warns := Compute(in, baseOpts)
			if len(s.Services) != 1000 || len(warns) != 0 {
				b.Fatalf("bench input: %d services, %d warnings, first %+v", len(s.Services), len(warns), warns[:min(1, len(warns))])
			}
			b.ReportAllocs()
			for b.Loop() {
				Compute(in, baseOpts)
			}
		})
	}
}
