package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
)

// Metrics are the watcher's Prometheus metrics, on a registry of their own so that tests and
// several controllers in one process do not collide.
type Metrics struct {
	Registry *prometheus.Registry

	Syncs            *prometheus.CounterVec
	PlaybookRuns     *prometheus.CounterVec
	PlaybookDuration *prometheus.HistogramVec
	HostLastSuccess  *prometheus.GaugeVec
	HostFailures     *prometheus.GaugeVec
	HostPreflight    *prometheus.GaugeVec
	Services         *prometheus.GaugeVec
	EligibleNodes    prometheus.Gauge
	Leader           prometheus.Gauge
}

var preflightStatuses = []apply.HostStatus{
	apply.StatusOK, apply.StatusUnknownHost, apply.StatusKeyMismatch, apply.StatusUnreachable, apply.StatusAuthFailed,
}

// NewMetrics creates and registers the metrics, plus the Go and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeftp_edge_syncs_total",
			Help: "Syncs (full recompute of the desired state), by result (ok, error) and trigger (event, resync, retry).",
		}, []string{"result", "trigger"}),
		PlaybookRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeftp_edge_playbook_runs_total",
			Help: "ansible-playbook runs, by mode (apply, check) and result (ok, partial, failed, error).",
		}, []string{"mode", "result"}),
		PlaybookDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kubeftp_edge_playbook_duration_seconds",
			Help:    "Wall time of ansible-playbook runs, by mode.",
			Buckets: []float64{0.5, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89},
		}, []string{"mode"}),
		HostLastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeftp_edge_host_last_success_timestamp_seconds",
			Help: "Unix time of the last successful push to an edge host.",
		}, []string{"host"}),
		HostFailures: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeftp_edge_host_consecutive_failures",
			Help: "Failed pushes to an edge host since its last success.",
		}, []string{"host"}),
		HostPreflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeftp_edge_host_preflight",
			Help: "1 for the last SSH pre-flight status of an edge host, 0 for the others.",
		}, []string{"host", "status"}),
		Services: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kubeftp_edge_services",
			Help: "Labelled FTP Services, by state (served, skipped).",
		}, []string{"state"}),
		EligibleNodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeftp_edge_eligible_nodes",
			Help: "Nodes that carry traffic for at least one served Service (Ready ones; drained NotReady nodes are not counted).",
		}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeftp_edge_leader",
			Help: "1 while this replica holds the Lease (or runs without leader election).",
		}),
	}
	m.Registry.MustRegister(m.Syncs, m.PlaybookRuns, m.PlaybookDuration, m.HostLastSuccess, m.HostFailures,
		m.HostPreflight, m.Services, m.EligibleNodes, m.Leader,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) setPreflight(host string, status apply.HostStatus) {
	for _, s := range preflightStatuses {
		v := 0.0
		if s == status {
			v = 1
		}
		m.HostPreflight.WithLabelValues(host, string(s)).Set(v)
	}
}

func (m *Metrics) setHost(host string, st *HostState) {
	m.HostFailures.WithLabelValues(host).Set(float64(st.Failures))
	if !st.LastSuccess.IsZero() {
		m.HostLastSuccess.WithLabelValues(host).Set(float64(st.LastSuccess.UnixNano()) / 1e9)
	}
}
