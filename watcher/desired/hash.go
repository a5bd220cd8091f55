package desired

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"hash"
	"strconv"
)

// Hash is the hex sha256 of the State's canonical JSON (encoding/json of State, Services
// sorted by id, Nodes by name) with Generation left empty: equal States hash equal no matter
// which Generation they carry.
//
// It streams the same bytes json.Marshal would produce straight into the hash, encoding each
// shared Nodes slice once: with thousands of nodes behind every Service the node lists are
// almost all of the document, and reflection over them would dominate Compute.
func (s State) Hash() string {
	h := sha256.New()
	e := hashEncoder{h: h, nodes: make(map[*Node]encodedNodes)}
	s.Generation = ""
	e.state(s)
	return hex.EncodeToString(h.Sum(nil))
}

type hashEncoder struct {
	h     hash.Hash
	buf   []byte
	nodes map[*Node]encodedNodes // by first element; see nodeList
}

type encodedNodes struct {
	n   int
	enc []byte
}

func (e *hashEncoder) flush() {
	e.h.Write(e.buf)
	e.buf = e.buf[:0]
}

func (e *hashEncoder) raw(s string) { e.buf = append(e.buf, s...) }
func (e *hashEncoder) int(n int)    { e.buf = strconv.AppendInt(e.buf, int64(n), 10) }
func (e *hashEncoder) str(s string) { e.buf = appendJSONString(e.buf, s) }
func (e *hashEncoder) key(k string) { e.buf = append(append(append(e.buf, '"'), k...), `":`...) }
func (e *hashEncoder) comma(i int) {
	if i > 0 {
		e.buf = append(e.buf, ',')
	}
}

func (e *hashEncoder) state(s State) {
	e.raw("{")
	e.key("schema")
	e.int(s.Schema)
	e.raw(",")
	e.key("generation")
	e.str(s.Generation)
	e.raw(",")
	e.key("services")
	if s.Services == nil {
		e.raw("null")
	} else {
		e.raw("[")
		for i, svc := range s.Services {
			e.comma(i)
			e.service(svc)
		}
		e.raw("]")
	}
	e.raw("}")
	e.flush()
}

func (e *hashEncoder) service(s Service) {
	e.raw("{")
	for i, f := range []struct {
		k string
		v string
	}{{"id", s.ID}, {"source", s.Source}, {"edge_group", s.EdgeGroup}, {"bind_address", s.BindAddress}} {
		e.comma(i)
		e.key(f.k)
		e.str(f.v)
	}
	for _, f := range []struct {
		k string
		v int
	}{{"control_port", s.ControlPort}, {"control_node_port", s.ControlNodePort}, {"passive_min", s.PassiveMin}, {"passive_max", s.PassiveMax}} {
		e.raw(",")
		e.key(f.k)
		e.int(f.v)
	}
	e.raw(",")
	e.key("passive_offset")
	if s.PassiveOffset == nil {
		e.raw("null")
	} else {
		e.int(*s.PassiveOffset)
	}
	e.raw(",")
	e.key("passive_node_ports")
	e.ints(s.PassiveNodePorts)
	e.raw(",")
	e.key("traffic_policy")
	e.str(s.TrafficPolicy)
	e.raw(",")
	e.key("health_check_node_port")
	e.int(s.HealthCheckNodePort)
	e.raw(",")
	e.key("timeouts")
	e.raw("{")
	e.key("connect")
	e.str(s.Timeouts.Connect)
	e.raw(",")
	e.key("client")
	e.str(s.Timeouts.Client)
	e.raw(",")
	e.key("server")
	e.str(s.Timeouts.Server)
	e.raw(",")
	e.key("check")
	e.str(s.Timeouts.Check)
	e.raw("},")
	e.key("maxconn")
	e.int(s.MaxConn)
	e.raw(",")
	e.key("send_proxy")
	e.str(s.SendProxy)
	e.raw(",")
	e.key("nodes")
	e.nodeList(s.Nodes)
	e.raw("}")
}

func (e *hashEncoder) ints(v []int) {
	if v == nil {
		e.raw("null")
		return
	}
	e.raw("[")
	for i, n := range v {
		e.comma(i)
		e.int(n)
	}
	e.raw("]")
}

func (e *hashEncoder) nodeList(ns []Node) {
	switch {
	case ns == nil:
		e.raw("null")
		return
	case len(ns) == 0:
		e.raw("[]")
		return
	}
	// Slices sharing a first element and length are the same memory (Compute shares one
	// slice between all Cluster-policy Services).
	e.flush()
	if c, ok := e.nodes[&ns[0]]; ok && c.n == len(ns) {
		e.h.Write(c.enc)
		return
	}
	e.raw("[")
	for i, n := range ns {
		e.comma(i)
		e.raw("{")
		e.key("name")
		e.str(n.Name)
		e.raw(",")
		e.key("address")
		e.str(n.Address)
		e.raw(",")
		e.key("id")
		e.int(n.ID)
		e.raw("}")
	}
	e.raw("]")
	e.nodes[&ns[0]] = encodedNodes{n: len(ns), enc: append([]byte(nil), e.buf...)}
	e.flush()
}

// appendJSONString appends s exactly as encoding/json would. Contract strings only hold
// characters that need no escaping; anything else goes through encoding/json itself.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':' || c == '/') {
			b, _ := json.Marshal(s) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
