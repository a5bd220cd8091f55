package scenario

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeftp/kubeftp-edge/watcher/desired"
	"github.com/kubeftp/kubeftp-edge/watcher/source"
)

// NodeName is the Kubernetes name of lab node k.
func NodeName(k int) string { return "n" + strconv.Itoa(k) }

// AddNode registers lab node k as a Ready Node with its lab address as InternalIP, the way a
// kubelet joining the cluster would (no kubelet runs: status goes through /status).
func (e *Env) AddNode(ctx context.Context, k int) error {
	n, err := e.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName(k)}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating node %s: %w", NodeName(k), err)
	}
	now := metav1.Now()
	n.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: e.Lab.NodeAddr(k).String()},
			{Type: corev1.NodeHostName, Address: NodeName(k)},
		},
	}
	if _, err := e.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting the status of node %s: %w", NodeName(k), err)
	}
	return nil
}

// SetReady sets node k's Ready condition, as the node lifecycle controller does when a
// kubelet stops (or resumes) posting status.
func (e *Env) SetReady(ctx context.Context, k int, ready bool) error {
	n, err := e.Client.CoreV1().Nodes().Get(ctx, NodeName(k), metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node %s: %w", NodeName(k), err)
	}
	st, reason := corev1.ConditionTrue, "KubeletReady"
	if !ready {
		st, reason = corev1.ConditionUnknown, "NodeStatusUnknown"
	}
	for i := range n.Status.Conditions {
		if c := &n.Status.Conditions[i]; c.Type == corev1.NodeReady {
			c.Status, c.Reason, c.LastTransitionTime = st, reason, metav1.Now()
		}
	}
	if _, err := e.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating the status of node %s: %w", NodeName(k), err)
	}
	return nil
}

// FTPService describes an opted-in FTP Service of the scenario's namespace.
type FTPService struct {
	Name string
	// EdgeAddress is the kubeftp.io/edge-address annotation; empty: the watcher's default.
	EdgeAddress string
	// ControlNodePort is the NodePort of the control port 21.
	ControlNodePort int
	// PassiveMin..PassiveMax are the passive ports (named pasv-<port>), each with the NodePort
	// port+PassiveOffset: order-preserving, so the edge needs one listener for the range.
	PassiveMin, PassiveMax, PassiveOffset int
	// HealthCheckNodePort, when not zero, makes the Service a LoadBalancer with
	// externalTrafficPolicy Local.
	HealthCheckNodePort int
}

func (s FTPService) object() *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: s.Name, Namespace: Namespace,
			Labels: map[string]string{source.ExposeLabel: "true"},
		},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: map[string]string{"app": s.Name},
		},
	}
	if s.EdgeAddress != "" {
		svc.Annotations = map[string]string{"kubeftp.io/edge-address": s.EdgeAddress}
	}
	if s.HealthCheckNodePort != 0 {
		// the API server allows a health check NodePort on LoadBalancer Services only; with no
		// cloud controller nothing provisions one, and the edge serves its NodePorts
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		svc.Spec.HealthCheckNodePort = int32(s.HealthCheckNodePort)
	}
	svc.Spec.Ports = s.ports()
	return svc
}

func (s FTPService) ports() []corev1.ServicePort {
	ports := []corev1.ServicePort{{Name: "ftp", Protocol: corev1.ProtocolTCP, Port: 21, NodePort: int32(s.ControlNodePort)}}
	for p := s.PassiveMin; p <= s.PassiveMax; p++ {
		ports = append(ports, corev1.ServicePort{
			Name: "pasv-" + strconv.Itoa(p), Protocol: corev1.ProtocolTCP, Port: int32(p), NodePort: int32(p + s.PassiveOffset),
		})
	}
	return ports
}

// CreateService creates the Service in the API server.
func (e *Env) CreateService(ctx context.Context, s FTPService) (*corev1.Service, error) {
	got, err := e.Client.CoreV1().Services(Namespace).Create(ctx, s.object(), metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating service %s/%s: %w", Namespace, s.Name, err)
	}
	return got, nil
}

// SetPassiveRange replaces the passive ports of Service name with min..max (NodePorts at the
// given offset), as a user changing the server's passive range in its chart would.
func (e *Env) SetPassiveRange(ctx context.Context, name string, min, max, offset int) error {
	svcs := e.Client.CoreV1().Services(Namespace)
	svc, err := svcs.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("service %s/%s: %w", Namespace, name, err)
	}
	var ctrl int
	for _, p := range svc.Spec.Ports {
		if p.Name == "ftp" {
			ctrl = int(p.NodePort)
		}
	}
	svc.Spec.Ports = FTPService{ControlNodePort: ctrl, PassiveMin: min, PassiveMax: max, PassiveOffset: offset}.ports()
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating service %s/%s: %w", Namespace, name, err)
	}
	return nil
}

// SetEndpoints makes the EndpointSlice of Service svc list one ready endpoint (the lab's pod)
// on each of the given nodes, as the EndpointSlice controller does when the pod lands there.
func (e *Env) SetEndpoints(ctx context.Context, svc string, nodes ...int) error {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svc + "-slice", Namespace: Namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("ftp"), Port: ptr(int32(21))}},
	}
	for _, k := range nodes {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{e.Lab.PodAddr().String()}, NodeName: ptr(NodeName(k)),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
		})
	}
	api := e.Client.DiscoveryV1().EndpointSlices(Namespace)
	cur, err := api.Get(ctx, sl.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = api.Create(ctx, sl, metav1.CreateOptions{})
	case err == nil:
		cur.Endpoints, cur.Ports = sl.Endpoints, sl.Ports
		_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("endpointslice of %s/%s: %w", Namespace, svc, err)
	}
	return nil
}

// listInput reads the objects the watcher's informers cache, once.
func (e *Env) listInput(ctx context.Context) (desired.Input, error) {
	nodes, err := e.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return desired.Input{}, fmt.Errorf("listing nodes: %w", err)
	}
	svcs, err := e.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{LabelSelector: source.ExposeSelector})
	if err != nil {
		return desired.Input{}, fmt.Errorf("listing services: %w", err)
	}
	slices, err := e.Client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{LabelSelector: source.ServiceNameLabel})
	if err != nil {
		return desired.Input{}, fmt.Errorf("listing endpointslices: %w", err)
	}
	return source.Filter(ptrs(nodes.Items), ptrs(svcs.Items), ptrs(slices.Items)), nil
}

func ptr[T any](v T) *T { return &v }

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}
