// Package desired computes the edge configuration that the cluster asks for. It is pure: it
// reads Kubernetes objects handed to it and returns the vars contract (schema 1) that the
// haproxy-ftp role consumes, plus per-Service warnings. No clientset, no I/O, no clock.
package desired

// Schema is the version of the vars contract (ansible/README.md) this package emits.
const Schema = 1

// State is the whole desired edge configuration: the value of the Ansible variable
// haproxy_ftp_state. Field names and JSON tags are the contract; change them only with Schema.
type State struct {
	Schema     int    `json:"schema"`
	Generation string `json:"generation"`
	// Nodes are the HAProxy servers any Service uses, sorted by name, each listed once: the
	// document grows with nodes + services, not nodes × services (it is kept in a ConfigMap,
	// which holds at most 1 MiB).
	Nodes    []Node    `json:"nodes"`
	Services []Service `json:"services"`
}

// Service is one FTP Service served by the edge: a control listener and its passive range.
type Service struct {
	ID                  string   `json:"id"`
	Source              string   `json:"source"`
	EdgeGroup           string   `json:"edge_group"`
	BindAddress         string   `json:"bind_address"`
	ControlPort         int      `json:"control_port"`
	ControlNodePort     int      `json:"control_node_port"`
	PassiveMin          int      `json:"passive_min"`
	PassiveMax          int      `json:"passive_max"`
	PassiveOffset       *int     `json:"passive_offset"`
	PassiveNodePorts    []int    `json:"passive_node_ports"`
	TrafficPolicy       string   `json:"traffic_policy"`
	HealthCheckNodePort int      `json:"health_check_node_port"`
	Timeouts            Timeouts `json:"timeouts"`
	MaxConn             int      `json:"maxconn"`
	SendProxy           string   `json:"send_proxy"`
	// NodeNames is nil (JSON null) for traffic policy Cluster: every node of State.Nodes.
	// For Local it lists the nodes with a ready endpoint of the Service, sorted, maybe none.
	NodeNames []string `json:"node_names"`
}

// Timeouts are HAProxy time values (e.g. "5s", "1h").
type Timeouts struct {
	Connect string `json:"connect"`
	Client  string `json:"client"`
	Server  string `json:"server"`
	Check   string `json:"check"`
}

// Node is one HAProxy server: a Kubernetes node that carries Services' NodePorts.
//
// Drain marks a node that is not Ready. It stays on the edge as a server of weight 0: out of
// the hash ring for new clients, still reached by the sessions stuck to it. A node flapping
// Ready then changes server weights only, which the role applies through HAProxy's runtime
// API without a reload; a reload (two workers, two rings for a moment) could send a new
// session's data connection to another node than its control connection.
type Node struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	ID      int    `json:"id"`
	Drain   bool   `json:"drain,omitempty"`
}

// ServiceNodes returns the servers of svc: every node for traffic policy Cluster (NodeNames
// nil), else the nodes NodeNames lists, in State.Nodes order.
func (s State) ServiceNodes(svc Service) []Node {
	if svc.NodeNames == nil {
		return s.Nodes
	}
	want := make(map[string]bool, len(svc.NodeNames))
	for _, n := range svc.NodeNames {
		want[n] = true
	}
	out := make([]Node, 0, len(svc.NodeNames))
	for _, n := range s.Nodes {
		if want[n.Name] {
			out = append(out, n)
		}
	}
	return out
}
