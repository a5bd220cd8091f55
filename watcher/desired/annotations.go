package desired

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Annotation keys a Service may carry. Anything else under AnnotationPrefix is reported as
// unknown (most likely a typo) without skipping the Service.
const (
	AnnotationPrefix         = "kubeftp.io/"
	LabelExpose              = "kubeftp.io/expose"
	AnnotationEdgeAddress    = "kubeftp.io/edge-address"
	AnnotationEdgeGroup      = "kubeftp.io/edge-group"
	AnnotationControlPort    = "kubeftp.io/control-port"
	AnnotationPassivePorts   = "kubeftp.io/passive-ports"
	AnnotationTimeoutConnect = "kubeftp.io/timeout-connect"
	AnnotationTimeoutClient  = "kubeftp.io/timeout-client"
	AnnotationTimeoutServer  = "kubeftp.io/timeout-server"
	AnnotationTimeoutCheck   = "kubeftp.io/timeout-check"
	AnnotationMaxConn        = "kubeftp.io/maxconn"
	AnnotationProxyProtocol  = "kubeftp.io/proxy-protocol"
)

// Defaults for what a Service does not say.
const (
	DefaultTimeoutConnect = "5s"
	DefaultTimeoutClient  = "1h"
	DefaultTimeoutServer  = "1h"
	DefaultTimeoutCheck   = "2s"
	DefaultMaxConn        = 2000
	DefaultEdgeGroup      = "all"

	// MaxPassivePorts bounds a passive range. vsftpd and HAProxy cope with more, but each
	// passive port is a Service port (and an object the API server stores) and, without a
	// constant offset, an HAProxy listener; 2000 concurrent transfers per address is plenty.
	MaxPassivePorts = 2000
	// MaxMaxConn keeps maxconn within what an edge host's FD limit can plausibly back: a value
	// above the hard limit passes `haproxy -c` but makes the reload fail.
	MaxMaxConn = 1_000_000
)

var (
	maxConnRE      = regexp.MustCompile(`^[0-9]{1,7}$`)
	passiveRangeRE = regexp.MustCompile(`^([0-9]{1,5})(?:-([0-9]{1,5}))?$`)
	portNumberRE   = regexp.MustCompile(`^[0-9]{1,5}$`)
)

// settings is what a Service's annotations ask for, validated.
type settings struct {
	edgeAddress string // canonical IP literal, "" when absent
	edgeGroup   string // "" when absent
	controlPort string // a port name or number of the Service, "" when absent
	passiveMin  int    // 0 when absent
	passiveMax  int
	timeouts    Timeouts
	maxConn     int
	sendProxy   string
}

// parseAnnotations validates every kubeftp.io/* annotation. It returns warnings in key order;
// any warning with Skipped set means the Service must not be served.
func parseAnnotations(ann map[string]string) (settings, []Warning) {
	s := settings{
		timeouts: Timeouts{
			Connect: DefaultTimeoutConnect, Client: DefaultTimeoutClient,
			Server: DefaultTimeoutServer, Check: DefaultTimeoutCheck,
		},
		maxConn: DefaultMaxConn,
	}
	keys := make([]string, 0, len(ann))
	for k := range ann {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)

	var warns []Warning
	for _, k := range keys {
		v := ann[k]
		var err error
		switch k {
		case AnnotationEdgeAddress:
			s.edgeAddress, err = parseEdgeAddress(v)
		case AnnotationEdgeGroup:
			if !groupRE.MatchString(v) {
				err = fmt.Errorf("want an inventory group name (letters, digits and _, not starting with a digit, at most 64)")
			} else {
				s.edgeGroup = v
			}
		case AnnotationControlPort:
			s.controlPort, err = parseControlPort(v)
		case AnnotationPassivePorts:
			s.passiveMin, s.passiveMax, err = parsePassivePorts(v)
		case AnnotationTimeoutConnect:
			s.timeouts.Connect, err = parseHAProxyTime(v)
		case AnnotationTimeoutClient:
			s.timeouts.Client, err = parseHAProxyTime(v)
		case AnnotationTimeoutServer:
			s.timeouts.Server, err = parseHAProxyTime(v)
		case AnnotationTimeoutCheck:
			s.timeouts.Check, err = parseHAProxyTime(v)
		case AnnotationMaxConn:
			s.maxConn, err = parseMaxConn(v)
		case AnnotationProxyProtocol:
			if v != "" && v != "v1" && v != "v2" {
				err = fmt.Errorf(`want "v1", "v2" or ""`)
			} else {
				s.sendProxy = v
			}
		default:
			warns = append(warns, Warning{
				Reason: ReasonUnknownAnnotation, Field: safeField(k),
				Message: fmt.Sprintf("annotation %s is not one kubeftp-edge knows; it is ignored (a typo?)", quote(k)),
			})
			continue
		}
		if err != nil {
			warns = append(warns, Warning{
				Reason: ReasonInvalidAnnotation, Field: k, Skipped: true,
				Message: fmt.Sprintf("annotation %s has invalid value %s: %v", k, quote(v), err),
			})
		}
	}
	return s, warns
}

func parseEdgeAddress(v string) (string, error) {
	a, err := parseAddr(v)
	if err != nil {
		return "", err
	}
	if a.IsUnspecified() || a.IsMulticast() {
		// A wildcard bind would collide with every specific address on the same port.
		return "", fmt.Errorf("want a specific unicast address")
	}
	return a.String(), nil
}

// parseControlPort accepts a Service port name or number; which port it is gets resolved
// against the Service's ports later.
func parseControlPort(v string) (string, error) {
	if portNumberRE.MatchString(v) {
		n, _ := strconv.Atoi(v)
		if !validPort(n) {
			return "", fmt.Errorf("port number outside 1-65535")
		}
		return strconv.Itoa(n), nil
	}
	if !isPortName(v) {
		return "", fmt.Errorf("want a port name or number of the Service")
	}
	return v, nil
}

// parsePassivePorts parses "21100-21110" (or a single port "21100") into an inclusive range.
func parsePassivePorts(v string) (lo, hi int, err error) {
	m := passiveRangeRE.FindStringSubmatch(v)
	if m == nil {
		return 0, 0, fmt.Errorf(`want a port range such as "21100-21110"`)
	}
	lo, _ = strconv.Atoi(m[1]) // at most 5 digits: cannot fail
	hi = lo
	if m[2] != "" {
		hi, _ = strconv.Atoi(m[2])
	}
	switch {
	case !validPort(lo) || !validPort(hi):
		return 0, 0, fmt.Errorf("ports must be within 1-65535")
	case lo > hi:
		return 0, 0, fmt.Errorf("first port is above the last")
	case hi-lo+1 > MaxPassivePorts:
		return 0, 0, fmt.Errorf("%d ports, more than the limit of %d", hi-lo+1, MaxPassivePorts)
	}
	return lo, hi, nil
}

func parseMaxConn(v string) (int, error) {
	if !maxConnRE.MatchString(v) {
		return 0, fmt.Errorf("want an integer from 1 to %d", MaxMaxConn)
	}
	n, _ := strconv.Atoi(v)
	if n < 1 || n > MaxMaxConn {
		return 0, fmt.Errorf("want an integer from 1 to %d", MaxMaxConn)
	}
	return n, nil
}

// Annotations lists every annotation key a Service may carry; the README documents each one.
func Annotations() []string {
	return []string{
		AnnotationEdgeAddress, AnnotationEdgeGroup, AnnotationControlPort, AnnotationPassivePorts,
		AnnotationTimeoutConnect, AnnotationTimeoutClient, AnnotationTimeoutServer, AnnotationTimeoutCheck,
		AnnotationMaxConn, AnnotationProxyProtocol,
	}
}
