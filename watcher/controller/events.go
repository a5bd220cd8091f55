package controller

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// Event reasons the controller itself emits (warnings of the computation use desired's).
const (
	ReasonApplied        = "Applied"
	ReasonEdgeHostFailed = "EdgeHostFailed"
	ReasonNotServed      = "NotServed"
)

// Component is the source of the Events.
const Component = "kubeftp-edge"

// NewEventRecorder returns a recorder that writes Events through client, and a stop func.
func NewEventRecorder(client kubernetes.Interface) (record.EventRecorder, func()) {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component}), b.Shutdown
}

// eventKey identifies an emitted event for de-duplication.
type eventKey struct {
	object string // kind/namespace/name
	reason string
	field  string
}

// events emits an Event only when it is new or its message changed since the last sync, so
// that a Service stuck with a bad annotation gets one Warning, not one per resync.
type events struct {
	rec  record.EventRecorder
	last map[eventKey]string
}

func newEvents(rec record.EventRecorder) *events {
	return &events{rec: rec, last: map[eventKey]string{}}
}

type pendingEvent struct {
	obj     *corev1.ObjectReference
	key     eventKey
	typ     string
	message string
	dedupe  string // what must change for the event to be emitted again; message when empty
}

// warnings turns this sync's desired.Warnings into Events and forgets the ones that went
// away, so that a warning that comes back is reported again.
func (e *events) warnings(ws []desired.Warning, svcs map[string]*corev1.Service) {
	seen := map[eventKey]bool{}
	for _, w := range ws {
		ref, kind := e.reference(w, svcs)
		if ref == nil {
			continue
		}
		p := pendingEvent{
			obj:     ref,
			key:     eventKey{object: kind + "/" + w.Namespace + "/" + w.Name, reason: w.Reason, field: w.Field},
			typ:     corev1.EventTypeWarning,
			message: warningMessage(w),
		}
		seen[p.key] = true
		e.emit(p)
	}
	for k := range e.last {
		if isWarningReason(k.reason) && !seen[k] {
			delete(e.last, k)
		}
	}
}

func (e *events) reference(w desired.Warning, svcs map[string]*corev1.Service) (*corev1.ObjectReference, string) {
	if w.Namespace == "" {
		if w.Name == "" {
			return nil, ""
		}
		return &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: w.Name}, "Node"
	}
	svc, ok := svcs[w.Namespace+"/"+w.Name]
	if !ok {
		return nil, ""
	}
	return serviceRef(svc), "Service"
}

func serviceRef(svc *corev1.Service) *corev1.ObjectReference {
	return &corev1.ObjectReference{
		Kind: "Service", APIVersion: "v1", Namespace: svc.Namespace, Name: svc.Name,
		UID: svc.UID, ResourceVersion: svc.ResourceVersion,
	}
}

// serviceEvent emits a controller event (Applied, EdgeHostFailed, NotServed) on a Service.
// An empty message withdraws the reason, so that it is emitted again when it returns.
func (e *events) serviceEvent(svc *corev1.Service, typ, reason, message string) {
	key := eventKey{object: "Service/" + svc.Namespace + "/" + svc.Name, reason: reason}
	if message == "" {
		delete(e.last, key)
		return
	}
	e.emit(pendingEvent{obj: serviceRef(svc), key: key, typ: typ, message: message})
}

// emitDedupe emits a controller event on a Service again only when dedupe changed (e.g. the
// Service's rendered config), not merely when another Service changed.
func (e *events) emitDedupe(svc *corev1.Service, typ, reason, message, dedupe string) {
	key := eventKey{object: "Service/" + svc.Namespace + "/" + svc.Name, reason: reason}
	e.emit(pendingEvent{obj: serviceRef(svc), key: key, typ: typ, message: message, dedupe: message + "\x00" + dedupe})
}

func (e *events) emit(p pendingEvent) {
	d := p.dedupe
	if d == "" {
		d = p.message
	}
	if prev, ok := e.last[p.key]; ok && prev == d {
		return
	}
	e.last[p.key] = d
	if e.rec != nil {
		e.rec.Event(p.obj, p.typ, p.key.reason, p.message)
	}
}

func isWarningReason(r string) bool {
	switch r {
	case ReasonApplied, ReasonEdgeHostFailed, ReasonNotServed:
		return false
	}
	return true
}

// warningMessage makes sure the Event names the field at fault even when the computation's
// sentence does not.
func warningMessage(w desired.Warning) string {
	msg := w.Message
	if w.Field != "" && !strings.Contains(msg, w.Field) {
		msg = fmt.Sprintf("%s: %s", w.Field, msg)
	}
	if w.Skipped && !strings.Contains(strings.ToLower(msg), "not served") {
		msg += " (not served)"
	}
	return msg
}
