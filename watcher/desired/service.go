package desired

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// isPassiveName matches the port names that mark passive ports: pasv-<n> or ftp-pasv-<n>.
func isPassiveName(name string) bool {
	n, ok := strings.CutPrefix(strings.TrimPrefix(name, "ftp-"), "pasv-")
	return ok && n != "" && strings.Trim(n, "0123456789") == ""
}

// controlPortNames are the port names that mark the FTP control port without an annotation.
var controlPortNames = map[string]bool{"ftp": true, "ftp-command": true, "ftp-control": true}

// candidate is a Service that passed every check of its own; conflicts with other Services
// and node selection come after.
type candidate struct {
	svc   *corev1.Service
	key   string // namespace/name
	addr  netip.Addr
	out   Service // everything but ID and Nodes
	local bool
}

// parseService checks one labelled Service against the contract with users. ok is false when
// the Service must not be served; warns says why (and carries non-fatal notes too).
func parseService(svc *corev1.Service, opts Options, reserved []int) (c candidate, warns []Warning, ok bool) {
	warn := func(reason, field, format string, args ...any) {
		warns = append(warns, Warning{Reason: reason, Field: field, Skipped: true, Message: fmt.Sprintf(format, args...)})
	}
	defer func() {
		for i := range warns {
			warns[i].Namespace, warns[i].Name = svc.Namespace, svc.Name
			if warns[i].Skipped {
				ok = false
			}
		}
	}()

	if !isDNSLabel(svc.Namespace) || !isDNSLabel(svc.Name) {
		warn(ReasonInvalidService, "metadata.name", "Service %s/%s: namespace and name must be DNS labels",
			quote(svc.Namespace), quote(svc.Name))
		return c, warns, false
	}
	c.svc, c.key = svc, svc.Namespace+"/"+svc.Name

	switch svc.Spec.Type {
	case corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
	default:
		warn(ReasonInvalidService, "spec.type", "type %s is not served: the edge forwards to NodePorts, use NodePort or LoadBalancer",
			quote(string(svc.Spec.Type)))
	}

	set, aw := parseAnnotations(svc.Annotations)
	warns = append(warns, aw...)

	edge := set.edgeAddress
	if edge == "" && !hasSkip(aw, AnnotationEdgeAddress) {
		if edge, _ = parseEdgeAddress(opts.DefaultEdgeAddress); edge == "" {
			warn(ReasonInvalidService, AnnotationEdgeAddress,
				"no edge address: set annotation %s or the watcher's --default-edge-address", AnnotationEdgeAddress)
		}
	}
	group := set.edgeGroup
	if group == "" {
		group = opts.DefaultEdgeGroup
		if group == "" {
			group = DefaultEdgeGroup
		}
		if !groupRE.MatchString(group) {
			warn(ReasonInvalidService, AnnotationEdgeGroup, "the watcher's --default-edge-group %s is not a group name", quote(group))
		}
	}

	policy := TrafficPolicyCluster
	switch svc.Spec.ExternalTrafficPolicy {
	case "", corev1.ServiceExternalTrafficPolicyCluster:
	case corev1.ServiceExternalTrafficPolicyLocal:
		policy, c.local = TrafficPolicyLocal, true
	default:
		warn(ReasonInvalidService, "spec.externalTrafficPolicy", "externalTrafficPolicy %s is neither Cluster nor Local",
			quote(string(svc.Spec.ExternalTrafficPolicy)))
	}
	hc := 0
	if c.local {
		// The edge decides a node's health the way cloud load balancers do, over HTTP on
		// this port; Kubernetes allocates it only for type LoadBalancer.
		hc = int(svc.Spec.HealthCheckNodePort)
		if !validPort(hc) {
			warn(ReasonInvalidService, "spec.healthCheckNodePort",
				"externalTrafficPolicy Local needs a healthCheckNodePort (%d here), which Kubernetes allocates only for type LoadBalancer: use LoadBalancer, or policy Cluster", hc)
		}
	}

	// Port names are never emitted, but a name the API server would refuse means the object
	// did not come from it: refuse the whole Service rather than guess.
	for _, p := range svc.Spec.Ports {
		if p.Name != "" && !isPortName(p.Name) {
			warn(ReasonInvalidService, "spec.ports", "port name %s is not a valid port name", quote(p.Name))
			return c, warns, false
		}
	}

	ctrl, ctrlErr := controlPort(svc.Spec.Ports, set.controlPort)
	if ctrlErr != nil {
		field := "spec.ports"
		if set.controlPort != "" {
			field = AnnotationControlPort
		}
		warn(ReasonInvalidService, field, "%v", ctrlErr)
	}
	pasv, pasvField, pasvErr := passivePorts(svc.Spec.Ports, set)
	if pasvErr != nil {
		reason := ReasonInvalidService
		if pasvField == AnnotationPassivePorts {
			reason = ReasonInvalidAnnotation
		}
		warn(reason, pasvField, "%v", pasvErr)
	}
	if ctrlErr == nil && pasvErr == nil {
		for _, p := range svc.Spec.Ports {
			if (p.Name == "ftp-data" || p.Port == 20) && !containsPort([]corev1.ServicePort{ctrl}, p) && !containsPort(pasv, p) {
				warns = append(warns, Warning{
					Reason: ReasonActiveModeNotProxied, Field: "spec.ports",
					Message: fmt.Sprintf("port %d (%s) is for active-mode FTP, which the edge does not proxy; clients must use passive mode",
						p.Port, quote(p.Name)),
				})
				break
			}
		}
		if err := checkEdgePorts(ctrl, pasv, reserved); err != nil {
			warn(ReasonReservedPort, "spec.ports", "%v", err)
		}
	}
	if hasSkipAny(warns) {
		return c, warns, false
	}

	c.addr = netip.MustParseAddr(edge) // parseEdgeAddress returned its canonical form
	c.out = Service{
		Source:              c.key,
		EdgeGroup:           group,
		BindAddress:         edge,
		ControlPort:         int(ctrl.Port),
		ControlNodePort:     int(ctrl.NodePort),
		PassiveMin:          int(pasv[0].Port),
		PassiveMax:          int(pasv[len(pasv)-1].Port),
		PassiveNodePorts:    []int{},
		TrafficPolicy:       policy,
		HealthCheckNodePort: hc,
		Timeouts:            set.timeouts,
		MaxConn:             set.maxConn,
		SendProxy:           set.sendProxy,
	}
	off := int(pasv[0].NodePort - pasv[0].Port)
	constant := true
	for _, p := range pasv {
		constant = constant && int(p.NodePort-p.Port) == off
	}
	if constant {
		c.out.PassiveOffset = &off
	} else {
		for _, p := range pasv {
			c.out.PassiveNodePorts = append(c.out.PassiveNodePorts, int(p.NodePort))
		}
	}
	return c, warns, true
}

// controlPort finds the FTP control port: the one the annotation names (by name or number),
// else the only port named ftp, ftp-command or ftp-control.
func controlPort(ports []corev1.ServicePort, ann string) (corev1.ServicePort, error) {
	var found []corev1.ServicePort
	if ann != "" {
		for _, p := range ports {
			if p.Name == ann || strconv.Itoa(int(p.Port)) == ann && isTCP(p) {
				found = append(found, p)
			}
		}
		if len(found) == 0 {
			return corev1.ServicePort{}, fmt.Errorf("annotation %s names %s, which is not a TCP port of the Service", AnnotationControlPort, quote(ann))
		}
	} else {
		for _, p := range ports {
			if controlPortNames[p.Name] {
				found = append(found, p)
			}
		}
		switch len(found) {
		case 0:
			return corev1.ServicePort{}, fmt.Errorf("no control port: name a port ftp, ftp-command or ftp-control, or set annotation %s", AnnotationControlPort)
		case 1:
		default:
			return corev1.ServicePort{}, fmt.Errorf("ports %s and %s both look like the control port: set annotation %s",
				quote(found[0].Name), quote(found[1].Name), AnnotationControlPort)
		}
	}
	if err := checkPort(found[0]); err != nil {
		return corev1.ServicePort{}, fmt.Errorf("control port: %w", err)
	}
	return found[0], nil
}

// passivePorts returns the passive ports sorted by port, contiguous. field names what is at
// fault when err is set.
func passivePorts(ports []corev1.ServicePort, set settings) (out []corev1.ServicePort, field string, err error) {
	if set.passiveMin != 0 {
		field = AnnotationPassivePorts
		byPort := make(map[int32]corev1.ServicePort, len(ports))
		for _, p := range ports {
			if isTCP(p) {
				byPort[p.Port] = p
			}
		}
		for n := set.passiveMin; n <= set.passiveMax; n++ {
			p, ok := byPort[int32(n)]
			if !ok {
				return nil, field, fmt.Errorf("annotation %s: port %d of the range is not a TCP port of the Service", field, n)
			}
			out = append(out, p)
		}
	} else {
		field = "spec.ports"
		for _, p := range ports {
			if isPassiveName(p.Name) {
				out = append(out, p)
			}
		}
		if len(out) == 0 {
			return nil, field, fmt.Errorf("no passive ports: name them pasv-<n> or ftp-pasv-<n>, or set annotation %s", AnnotationPassivePorts)
		}
		if len(out) > MaxPassivePorts {
			return nil, field, fmt.Errorf("%d passive ports, more than the limit of %d", len(out), MaxPassivePorts)
		}
		sort.SliceStable(out, func(i, j int) bool { return out[i].Port < out[j].Port })
		for i := 1; i < len(out); i++ {
			prev, cur := out[i-1].Port, out[i].Port
			switch {
			case cur == prev:
				return nil, field, fmt.Errorf("passive port %d appears twice", cur)
			case cur != prev+1:
				missing := fmt.Sprintf("%d", prev+1)
				if cur-prev > 2 {
					missing = fmt.Sprintf("%d-%d", prev+1, cur-1)
				}
				return nil, field, fmt.Errorf("passive ports must be contiguous: %s missing between %d and %d", missing, prev, cur)
			}
		}
	}
	for _, p := range out {
		if err := checkPort(p); err != nil {
			return nil, field, fmt.Errorf("passive port: %w", err)
		}
	}
	return out, field, nil
}

func checkPort(p corev1.ServicePort) error {
	switch {
	case !isTCP(p):
		return fmt.Errorf("port %d (%s) is %s, not TCP", p.Port, quote(p.Name), quote(string(p.Protocol)))
	case !validPort(int(p.Port)):
		return fmt.Errorf("port %d is not a port", p.Port)
	case p.NodePort == 0:
		return fmt.Errorf("port %d (%s) has no nodePort yet", p.Port, quote(p.Name))
	case !validPort(int(p.NodePort)):
		return fmt.Errorf("port %d (%s) has nodePort %d, not a port", p.Port, quote(p.Name), p.NodePort)
	}
	return nil
}

// checkEdgePorts refuses edge ports the edge host needs for itself and a control port inside
// the passive range.
func checkEdgePorts(ctrl corev1.ServicePort, pasv []corev1.ServicePort, reserved []int) error {
	lo, hi := int(pasv[0].Port), int(pasv[len(pasv)-1].Port)
	if c := int(ctrl.Port); c >= lo && c <= hi {
		return fmt.Errorf("control port %d lies inside the passive range %d-%d", c, lo, hi)
	}
	for _, r := range reserved {
		if r == int(ctrl.Port) {
			return fmt.Errorf("edge port %d is reserved on the edge hosts (SSH, peers, stats)", r)
		}
	}
	for _, r := range reserved {
		if r >= lo && r <= hi {
			return fmt.Errorf("passive range %d-%d contains edge port %d, reserved on the edge hosts (SSH, peers, stats)", lo, hi, r)
		}
	}
	return nil
}

func isTCP(p corev1.ServicePort) bool {
	return p.Protocol == "" || p.Protocol == corev1.ProtocolTCP
}

func containsPort(ps []corev1.ServicePort, p corev1.ServicePort) bool {
	for _, q := range ps {
		if q.Port == p.Port && q.Protocol == p.Protocol {
			return true
		}
	}
	return false
}

func hasSkip(ws []Warning, field string) bool {
	for _, w := range ws {
		if w.Skipped && w.Field == field {
			return true
		}
	}
	return false
}

func hasSkipAny(ws []Warning) bool {
	for _, w := range ws {
		if w.Skipped {
			return true
		}
	}
	return false
}
