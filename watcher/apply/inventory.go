package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Host is one edge host of the inventory, as the pre-flight check and the controller see it.
type Host struct {
	Name    string
	Address string // ansible_host, or the inventory name when unset
	Port    int    // ansible_port, or 22
	User    string // ansible_user; empty means the local user, as for ssh
	Groups  []string
}

// Inventory is a parsed YAML Ansible inventory.
type Inventory struct {
	Path  string
	Hosts []Host // sorted by Name
}

// Host returns the host called name.
func (inv *Inventory) Host(name string) (Host, bool) {
	for _, h := range inv.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return Host{}, false
}

// yamlGroup is one group of a YAML inventory: hosts (name → vars), child groups, group vars.
type yamlGroup struct {
	Hosts    map[string]map[string]any `yaml:"hosts"`
	Children map[string]*yamlGroup     `yaml:"children"`
	Vars     map[string]any            `yaml:"vars"`
}

// maxGroupDepth bounds the walk over children: a cycle in a hand-written inventory must give an
// error, not a stack overflow.
const maxGroupDepth = 32

// LoadInventory reads a YAML Ansible inventory (top-level groups, usually "all", with hosts,
// children and vars). Host variables ansible_host, ansible_port and ansible_user are resolved
// the way Ansible does for plain values: host vars over child-group vars over parent-group vars.
// Only YAML is accepted: INI inventories evaluate Jinja in values.
func LoadInventory(path string) (*Inventory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading inventory: %w", err)
	}
	var top map[string]*yamlGroup
	dec := yaml.NewDecoder(bytes.NewReader(data))
	// A misspelt key ("host:") would silently drop hosts; refuse it instead.
	dec.KnownFields(true)
	if err := dec.Decode(&top); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("inventory %s: not a YAML inventory: %w", path, err)
	}
	type hostAcc struct {
		vars   map[string]any
		depth  map[string]int // depth at which each var was set; deeper (more specific) wins
		groups map[string]bool
	}
	hosts := map[string]*hostAcc{}

	var walk func(name string, g *yamlGroup, inherited []map[string]any, parents []string, depth int) error
	walk = func(name string, g *yamlGroup, inherited []map[string]any, parents []string, depth int) error {
		if depth > maxGroupDepth {
			return fmt.Errorf("inventory %s: groups nested deeper than %d (a cycle in children?) at %q", path, maxGroupDepth, name)
		}
		if g == nil {
			g = &yamlGroup{}
		}
		chain := append(append([]map[string]any{}, inherited...), g.Vars)
		groups := append(append([]string{}, parents...), name)
		for hn, hv := range g.Hosts {
			if hn == "" {
				return fmt.Errorf("inventory %s: group %q has a host with an empty name", path, name)
			}
			acc := hosts[hn]
			if acc == nil {
				acc = &hostAcc{vars: map[string]any{}, depth: map[string]int{}, groups: map[string]bool{}}
				hosts[hn] = acc
			}
			for _, gn := range groups {
				acc.groups[gn] = true
			}
			// Group vars along the chain, then host vars (the most specific) last.
			layers := append(append([]map[string]any{}, chain...), hv)
			for i, layer := range layers {
				d := i
				if i == len(layers)-1 {
					d = maxGroupDepth + 1
				}
				for k, v := range layer {
					if old, ok := acc.depth[k]; !ok || d >= old {
						acc.vars[k] = v
						acc.depth[k] = d
					}
				}
			}
		}
		for cn, cg := range g.Children {
			if err := walk(cn, cg, chain, groups, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	names := make([]string, 0, len(top))
	for name := range top {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := walk(name, top[name], nil, nil, 0); err != nil {
			return nil, err
		}
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("inventory %s: no hosts", path)
	}

	inv := &Inventory{Path: path}
	for name, acc := range hosts {
		h := Host{Name: name, Address: name, Port: 22}
		if v, ok := acc.vars["ansible_host"]; ok {
			s, err := scalarString(v)
			if err != nil || s == "" {
				return nil, fmt.Errorf("inventory %s: host %q: ansible_host must be a non-empty string", path, name)
			}
			h.Address = s
		}
		if v, ok := acc.vars["ansible_port"]; ok {
			s, err := scalarString(v)
			p, perr := strconv.Atoi(s)
			if err != nil || perr != nil || p < 1 || p > 65535 {
				return nil, fmt.Errorf("inventory %s: host %q: ansible_port must be a port number 1-65535", path, name)
			}
			h.Port = p
		}
		if v, ok := acc.vars["ansible_user"]; ok {
			s, err := scalarString(v)
			if err != nil {
				return nil, fmt.Errorf("inventory %s: host %q: ansible_user must be a string", path, name)
			}
			h.User = s
		}
		acc.groups["all"] = true
		for g := range acc.groups {
			h.Groups = append(h.Groups, g)
		}
		sort.Strings(h.Groups)
		inv.Hosts = append(inv.Hosts, h)
	}
	sort.Slice(inv.Hosts, func(i, j int) bool { return inv.Hosts[i].Name < inv.Hosts[j].Name })
	return inv, nil
}

var errNotScalar = errors.New("not a scalar")

// scalarString renders a YAML scalar (string or number) as a string.
func scalarString(v any) (string, error) {
	switch t := v.(type) {
	case string:
		return t, nil
	case int:
		return strconv.Itoa(t), nil
	default:
		return "", errNotScalar
	}
}
