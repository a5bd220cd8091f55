// Package source watches the objects the desired state is computed from — Nodes, the Services
// labelled kubeftp.io/expose=true and their EndpointSlices — and hands out consistent
// snapshots of them. Event handlers only call a callback; they never compute anything.
package source

import (
	"context"
	"errors"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersdiscoveryv1 "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

const (
	// ExposeLabel opts a Service in; the API server filters on it, so unrelated Services are
	// never cached.
	ExposeLabel = "kubeftp.io/expose"
	// ExposeSelector is the server-side label selector of served Services.
	ExposeSelector = ExposeLabel + "=true"
	// ServiceNameLabel links an EndpointSlice to its Service.
	ServiceNameLabel = discoveryv1.LabelServiceName
)

// Source owns the informers. Create it with New, then Start and WaitForCacheSync.
type Source struct {
	factories []informers.SharedInformerFactory
	synced    []cache.InformerSynced
	nodes     listerscorev1.NodeLister
	services  listerscorev1.ServiceLister
	slices    listersdiscoveryv1.EndpointSliceLister
	onChange  func()
}

// New builds the informers. onChange is called (from informer goroutines) whenever something
// that may change the desired state happened; it must only schedule work. Informer resync is
// off: the controller runs its own periodic resync from its clock.
func New(client kubernetes.Interface, onChange func()) (*Source, error) {
	if onChange == nil {
		return nil, errors.New("source: onChange callback is required")
	}
	s := &Source{onChange: onChange}

	all := informers.NewSharedInformerFactory(client, 0)
	exposed := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = ExposeSelector }))
	// Only slices that belong to a Service at all; the rest is filtered against the lister below.
	owned := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = ServiceNameLabel }))
	s.factories = []informers.SharedInformerFactory{all, exposed, owned}

	nodeInf := all.Core().V1().Nodes()
	svcInf := exposed.Core().V1().Services()
	sliceInf := owned.Discovery().V1().EndpointSlices()
	s.nodes, s.services, s.slices = nodeInf.Lister(), svcInf.Lister(), sliceInf.Lister()

	if _, err := nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.onChange() },
		DeleteFunc: func(any) { s.onChange() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Node)
			n, ok2 := newObj.(*corev1.Node)
			if ok1 && ok2 && !NodeChanged(o, n) {
				return
			}
			s.onChange()
		},
	}); err != nil {
		return nil, fmt.Errorf("node event handler: %w", err)
	}
	if _, err := svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.onChange() },
		DeleteFunc: func(any) { s.onChange() },
		UpdateFunc: func(oldObj, newObj any) {
			if sameVersion(oldObj, newObj) {
				return
			}
			s.onChange()
		},
	}); err != nil {
		return nil, fmt.Errorf("service event handler: %w", err)
	}
	if _, err := sliceInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.sliceEvent(obj) },
		DeleteFunc: func(obj any) { s.sliceEvent(obj) },
		UpdateFunc: func(oldObj, newObj any) {
			if sameVersion(oldObj, newObj) {
				return
			}
			s.sliceEvent(newObj)
		},
	}); err != nil {
		return nil, fmt.Errorf("endpointslice event handler: %w", err)
	}
	for _, inf := range []cache.SharedIndexInformer{nodeInf.Informer(), svcInf.Informer(), sliceInf.Informer()} {
		s.synced = append(s.synced, inf.HasSynced)
	}
	return s, nil
}

// Start runs the informers until ctx ends.
func (s *Source) Start(ctx context.Context) {
	for _, f := range s.factories {
		f.Start(ctx.Done())
	}
}

// Shutdown waits for the informer goroutines after ctx has ended.
func (s *Source) Shutdown() {
	for _, f := range s.factories {
		f.Shutdown()
	}
}

// WaitForCacheSync blocks until every cache holds a full list, or ctx ends.
func (s *Source) WaitForCacheSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), s.synced...)
}

// HasSynced reports whether every cache holds a full list.
func (s *Source) HasSynced() bool {
	for _, f := range s.synced {
		if !f() {
			return false
		}
	}
	return true
}

// sliceEvent schedules a sync only for slices of a served Service: EndpointSlices churn with
// every pod in the cluster, and only the served Services' ones matter. A slice seen before its
// Service is covered by the Service's own add event.
func (s *Source) sliceEvent(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	slice, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		s.onChange()
		return
	}
	if _, err := s.services.Services(slice.Namespace).Get(slice.Labels[ServiceNameLabel]); err != nil {
		return
	}
	s.onChange()
}

// Snapshot returns every cached object the computation needs, sorted, as the lister holds
// them. The objects are shared with the cache: read-only.
func (s *Source) Snapshot() (desired.Input, error) {
	nodes, err := s.nodes.List(labels.Everything())
	if err != nil {
		return desired.Input{}, fmt.Errorf("listing nodes: %w", err)
	}
	svcs, err := s.services.List(labels.Everything())
	if err != nil {
		return desired.Input{}, fmt.Errorf("listing services: %w", err)
	}
	all, err := s.slices.List(labels.Everything())
	if err != nil {
		return desired.Input{}, fmt.Errorf("listing endpointslices: %w", err)
	}
	return Filter(nodes, svcs, all), nil
}

// Filter keeps the served Services and only their EndpointSlices, in a stable order.
func Filter(nodes []*corev1.Node, svcs []*corev1.Service, slices []*discoveryv1.EndpointSlice) desired.Input {
	in := desired.Input{Nodes: nodes}
	served := map[string]bool{}
	for _, svc := range svcs {
		if svc.Labels[ExposeLabel] != "true" {
			continue
		}
		in.Services = append(in.Services, svc)
		served[svc.Namespace+"/"+svc.Name] = true
	}
	for _, sl := range slices {
		if served[sl.Namespace+"/"+sl.Labels[ServiceNameLabel]] {
			in.Slices = append(in.Slices, sl)
		}
	}
	sort.Slice(in.Nodes, func(i, j int) bool { return in.Nodes[i].Name < in.Nodes[j].Name })
	sort.Slice(in.Services, func(i, j int) bool { return key(in.Services[i].ObjectMeta) < key(in.Services[j].ObjectMeta) })
	sort.Slice(in.Slices, func(i, j int) bool { return key(in.Slices[i].ObjectMeta) < key(in.Slices[j].ObjectMeta) })
	return in
}

func key(m metav1.ObjectMeta) string { return m.Namespace + "/" + m.Name }

func sameVersion(oldObj, newObj any) bool {
	o, ok1 := oldObj.(metav1.Object)
	n, ok2 := newObj.(metav1.Object)
	return ok1 && ok2 && o.GetResourceVersion() == n.GetResourceVersion()
}

// NodeChanged reports whether an update can matter to the edge. Kubelets rewrite their Node
// every few seconds only to bump heartbeat times; those updates are ignored. Anything else
// counts, even fields the computation does not read today: a spurious sync is cheap (the
// state hash stops it before any push), a missed one is a wrong edge.
func NodeChanged(oldNode, newNode *corev1.Node) bool {
	if oldNode.ResourceVersion == newNode.ResourceVersion {
		return false
	}
	return !equality.Semantic.DeepEqual(withoutChurn(oldNode), withoutChurn(newNode))
}

func withoutChurn(n *corev1.Node) *corev1.Node {
	c := n.DeepCopy()
	c.ResourceVersion = ""
	c.ManagedFields = nil
	c.Generation = 0
	for i := range c.Status.Conditions {
		c.Status.Conditions[i].LastHeartbeatTime = metav1.Time{}
	}
	return c
}
