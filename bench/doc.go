// Package bench measures kubeftp-edge on real parts: HAProxy configs at scale in throwaway
// network namespaces, FTP transfers through the lab's edge, the watcher against a real API
// server, and Node events travelling to the lab's edge hosts over SSH. `make bench` runs every
// driver through cmd/kubeftp-bench and writes docs/BENCHMARKS.md; bench_test.go runs each
// driver once on its smallest cell so that the code keeps working.
package bench
