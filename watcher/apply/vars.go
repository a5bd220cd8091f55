package apply

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode"

	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// VarName is the single Ansible variable that carries the desired state (the vars contract).
const VarName = "haproxy_ftp_state"

// unsafeKey is how Ansible's JSON decoder recognises a value it must never template.
const unsafeKey = "__ansible_unsafe"

// MarshalVars renders s as the JSON vars file given to ansible-playbook with -e @file:
// {"haproxy_ftp_state": {...}} where every string is wrapped as {"__ansible_unsafe": "..."}.
// Ansible evaluates Jinja in plain variable values, so without the wrapping a value from the
// cluster such as "{{ lookup('pipe', ...) }}" would run on the controller. Numbers, null and the
// structure stay as they are. Control characters are refused as a second line of defence behind
// the allow-lists of package desired: a newline in a value would become a new haproxy.cfg line.
func MarshalVars(s desired.State) ([]byte, error) {
	if s.Schema != desired.Schema {
		return nil, fmt.Errorf("marshalling vars: schema %d, want %d", s.Schema, desired.Schema)
	}
	plain, err := json.Marshal(withEmptyLists(s))
	if err != nil {
		return nil, fmt.Errorf("marshalling vars: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("marshalling vars: %w", err)
	}
	wrapped, err := markUnsafe(tree, VarName)
	if err != nil {
		return nil, fmt.Errorf("marshalling vars: %w", err)
	}
	out, err := json.MarshalIndent(map[string]any{VarName: wrapped}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshalling vars: %w", err)
	}
	return append(out, '\n'), nil
}

// withEmptyLists returns a copy of s whose nil slices are empty, so that lists in the contract
// are always JSON lists, never null (only passive_offset and node_names may be null).
func withEmptyLists(s desired.State) desired.State {
	services := make([]desired.Service, len(s.Services))
	copy(services, s.Services)
	for i := range services {
		if services[i].PassiveNodePorts == nil {
			services[i].PassiveNodePorts = []int{}
		}
	}
	s.Services = services
	if s.Nodes == nil {
		s.Nodes = []desired.Node{}
	}
	return s
}

// markUnsafe returns v with every string replaced by its unsafe wrapper; path names the value
// in errors.
func markUnsafe(v any, path string) (any, error) {
	switch t := v.(type) {
	case string:
		if i := strings.IndexFunc(t, unicode.IsControl); i >= 0 {
			return nil, fmt.Errorf("%s: control character %q at offset %d", path, t[i], i)
		}
		return map[string]any{unsafeKey: t}, nil
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make(map[string]any, len(t))
		for _, k := range keys {
			w, err := markUnsafe(t[k], path+"."+k)
			if err != nil {
				return nil, err
			}
			out[k] = w
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			w, err := markUnsafe(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = w
		}
		return out, nil
	default:
		// json.Number, bool and nil carry nothing Jinja could evaluate.
		return v, nil
	}
}
