package golden

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the role's output")

// root is the repository checkout, found from this package's directory.
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatalf("finding the repository root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ansible", "render.yml")); err != nil {
		t.Fatalf("repository root %s has no ansible/render.yml: %v", dir, err)
	}
	return dir
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("path of testdata/%s: %v", name, err)
	}
	return p
}

// need fails the test when a tool the test drives is missing: these tests run real parts.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (make deps installs it): %v", tool, err)
		}
	}
}

type rendered struct {
	cfg    []byte // nil when the role wrote nothing
	output string // ansible-playbook's stdout and stderr, for failure reports
	result apply.CallbackHost
	err    error // non-nil when ansible-playbook failed
}

// render runs the real role through ansible/render.yml on the local host with the given vars
// files (later files win) and returns what it wrote.
func render(t *testing.T, varsFiles ...string) rendered {
	t.Helper()
	need(t, "ansible-playbook")
	repo := root(t)
	dir := t.TempDir()
	dest := filepath.Join(dir, "haproxy.cfg")
	resultFile := filepath.Join(dir, "result.json")
	args := []string{"-i", "localhost,", filepath.Join(repo, "ansible", "render.yml")}
	for _, f := range varsFiles {
		args = append(args, "-e", "@"+f)
	}
	args = append(args, "-e", "haproxy_ftp_render_dest="+dest)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ansible-playbook", args...)
	cmd.Env = append(os.Environ(),
		"ANSIBLE_CONFIG="+filepath.Join(repo, "ansible", "ansible.cfg"),
		"ANSIBLE_HOME="+filepath.Join(dir, "ansible-home"),
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "ansible-tmp"),
		"ANSIBLE_NOCOLOR=1",
		"KUBEFTP_RESULT_FILE="+resultFile,
	)
	out, err := cmd.CombinedOutput()
	r := rendered{output: string(out), err: err}

	hosts, rerr := apply.ReadCallbackResults(resultFile)
	if rerr != nil {
		t.Fatalf("the kubeftp_result callback's results: %v\n%s", rerr, out)
	}
	h, ok := hosts["localhost"]
	if !ok || len(hosts) != 1 {
		t.Fatalf("results should hold exactly host localhost, got %v", hosts)
	}
	r.result = h

	cfg, cerr := os.ReadFile(dest)
	switch {
	case cerr == nil:
		r.cfg = cfg
	case !errors.Is(cerr, os.ErrNotExist):
		t.Fatalf("reading rendered config: %v", cerr)
	}
	return r
}

// mustRender renders and fails the test unless the role succeeded and wrote a file.
func mustRender(t *testing.T, varsFiles ...string) []byte {
	t.Helper()
	r := render(t, varsFiles...)
	if r.err != nil || r.cfg == nil {
		t.Fatalf("render failed (err %v, result %+v):\n%s", r.err, r.result, r.output)
	}
	if r.result.Failures != 0 || r.result.Msg != "" {
		t.Fatalf("result file reports a failure for a good run: %+v", r.result)
	}
	return r.cfg
}

// haproxyCheck runs the real haproxy -c on cfg (after the given main configs, for fragments)
// and fails on an error or any warning: a clean config is part of the contract.
func haproxyCheck(t *testing.T, cfg []byte, mains ...string) {
	t.Helper()
	need(t, "haproxy")
	p := filepath.Join(t.TempDir(), "candidate.cfg")
	if err := os.WriteFile(p, cfg, 0o600); err != nil {
		t.Fatalf("writing candidate config: %v", err)
	}
	var args []string
	for _, m := range mains {
		args = append(args, "-f", m)
	}
	args = append(args, "-c", "-f", p)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "haproxy", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if bytes.Contains(out, []byte("[WARNING]")) || bytes.Contains(out, []byte("[ALERT]")) {
		t.Errorf("haproxy -c accepted the config with warnings:\n%s", out)
	}
	if !bytes.Contains(out, []byte("Configuration file is valid")) {
		t.Errorf("haproxy -c did not report a valid configuration:\n%s", out)
	}
}

func TestRender(t *testing.T) {
	cases := []struct {
		name  string
		mains []string // main configs the output is loaded after (fragment mode)
	}{
		{name: "offset"},
		{name: "per-port"},
		{name: "two-services"},
		{name: "ipv6"},
		{name: "local"},
		{name: "fragment", mains: []string{"fragment-main.cfg"}},
		{name: "empty"},
		{name: "no-nodes"},
		{name: "edge-group"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := mustRender(t, testdata(t, tc.name+".vars.yml"))
			goldenPath := testdata(t, tc.name+".golden")
			if *update {
				if err := os.WriteFile(goldenPath, got, 0o644); err != nil {
					t.Fatalf("updating golden file: %v", err)
				}
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create it): %v", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("rendered config differs from %s (-want +got):\n%s", goldenPath, diff)
			}
			var mains []string
			for _, m := range tc.mains {
				mains = append(mains, testdata(t, m))
			}
			haproxyCheck(t, got, mains...)
		})
	}
}

// loadVars reads a YAML vars file of testdata into plain Go values.
func loadVars(t *testing.T, name string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(testdata(t, name))
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatalf("parsing %s: %v", name, err)
	}
	return v
}

// markUnsafe wraps every string as {"__ansible_unsafe": s}, as the watcher writes the vars
// contract: Ansible then never evaluates the value as a template.
func markUnsafe(v any) any {
	switch x := v.(type) {
	case string:
		return map[string]any{"__ansible_unsafe": x}
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = markUnsafe(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = markUnsafe(e)
		}
		return l
	default:
		return v
	}
}

// writeVars writes vars as a JSON vars file, the contract document marked unsafe when asked.
func writeVars(t *testing.T, vars map[string]any, unsafe bool) string {
	t.Helper()
	out := make(map[string]any, len(vars))
	for k, v := range vars {
		out[k] = v
		if unsafe && k == "haproxy_ftp_state" {
			out[k] = markUnsafe(v)
		}
	}
	raw, err := json.Marshal(out)
	if err != nil {
		t.Fatalf("encoding vars: %v", err)
	}
	p := filepath.Join(t.TempDir(), "vars.json")
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatalf("writing vars: %v", err)
	}
	return p
}

func state(v map[string]any) map[string]any { return v["haproxy_ftp_state"].(map[string]any) }

func service(v map[string]any, i int) map[string]any {
	return state(v)["services"].([]any)[i].(map[string]any)
}

// node is the n-th node of the document (nodes are listed once, for every service).
func node(v map[string]any, n int) map[string]any {
	return state(v)["nodes"].([]any)[n].(map[string]any)
}

// secondService adds a copy of the first service with another id, for rules across services.
func secondService(v map[string]any, edit func(map[string]any)) {
	first := service(v, 0)
	dup := make(map[string]any, len(first))
	for k, e := range first {
		dup[k] = e
	}
	dup["id"] = "other-ftp"
	dup["source"] = "demo/other"
	edit(dup)
	state(v)["services"] = append(state(v)["services"].([]any), dup)
}

func TestPreflightRejects(t *testing.T) {
	cases := []struct {
		name string
		edit func(v map[string]any)
		want string // part of the failure message: names the service and the field
	}{
		{"schema 2", func(v map[string]any) { state(v)["schema"] = 2 }, "schema must be 1"},
		{"generation not hex", func(v map[string]any) { state(v)["generation"] = "xyz" }, "generation must match"},
		{"id with newline", func(v map[string]any) { service(v, 0)["id"] = "demo\nftp" }, "service #0: id must match"},
		{"id with trailing newline", func(v map[string]any) { service(v, 0)["id"] = "demo-ftp\n" }, "service #0: id must match"},
		{"id with jinja braces", func(v map[string]any) { service(v, 0)["id"] = "{{ 7 * 7 }}" }, "service #0: id must match"},
		{"source not namespace/name", func(v map[string]any) { service(v, 0)["source"] = "demo" }, "service demo-ftp: source must be namespace/name"},
		{"edge group with space", func(v map[string]any) { service(v, 0)["edge_group"] = "edge eu" }, "service demo-ftp: edge_group must match"},
		{"bad IPv4", func(v map[string]any) { service(v, 0)["bind_address"] = "10.213.1.256" }, "service demo-ftp: bind_address must be an IPv4 or IPv6 literal"},
		{"IPv6 with zone", func(v map[string]any) { service(v, 0)["bind_address"] = "fe80::1%eth0" }, "service demo-ftp: bind_address must be"},
		{"hostname as address", func(v map[string]any) { node(v, 1)["address"] = "node2.example" }, "haproxy_ftp_state: nodes[].address must be"},
		{"port 0", func(v map[string]any) { service(v, 0)["control_port"] = 0 }, "service demo-ftp: control_port must be an integer 1-65535"},
		{"port too big", func(v map[string]any) { service(v, 0)["control_node_port"] = 70000 }, "service demo-ftp: control_node_port must be an integer 1-65535"},
		{"min above max", func(v map[string]any) { service(v, 0)["passive_min"] = 21111 }, "service demo-ftp: passive_min must not be greater than passive_max"},
		{"control port in passive range", func(v map[string]any) { service(v, 0)["control_port"] = 21105 }, "service demo-ftp: control_port must not lie in the passive range"},
		{"offset and node ports", func(v map[string]any) { service(v, 0)["passive_node_ports"] = []any{32100} }, "service demo-ftp: passive_node_ports must be an empty list when passive_offset is set"},
		{"offset leaves port range", func(v map[string]any) { service(v, 0)["passive_offset"] = 50000 }, "service demo-ftp: passive_offset moves the passive range outside 1-65535"},
		{"node ports of wrong length", func(v map[string]any) {
			service(v, 0)["passive_offset"] = nil
			service(v, 0)["passive_node_ports"] = []any{32100, 32101}
		}, "service demo-ftp: passive_node_ports must hold one port per passive port"},
		{"Local without health check port", func(v map[string]any) { service(v, 0)["traffic_policy"] = "Local" }, "service demo-ftp: health_check_node_port must be an integer 1-65535 when traffic_policy is Local"},
		{"bad timeout", func(v map[string]any) {
			service(v, 0)["timeouts"].(map[string]any)["client"] = "1h\n    option httpclose"
		}, "service demo-ftp: timeouts.* must be HAProxy times"},
		{"maxconn 0", func(v map[string]any) { service(v, 0)["maxconn"] = 0 }, "service demo-ftp: maxconn must be an integer >= 1"},
		{"send_proxy v3", func(v map[string]any) { service(v, 0)["send_proxy"] = "v3" }, "send_proxy"},
		{"traffic policy", func(v map[string]any) { service(v, 0)["traffic_policy"] = "Both" }, "traffic_policy"},
		{"duplicate node ids", func(v map[string]any) { node(v, 2)["id"] = 1 }, "haproxy_ftp_state: nodes[].id must be unique"},
		{"cluster service naming nodes", func(v map[string]any) { service(v, 0)["node_names"] = []any{"n1"} }, "service demo-ftp: node_names must be null"},
		{"local service without node names", func(v map[string]any) {
			service(v, 0)["traffic_policy"], service(v, 0)["health_check_node_port"] = "Local", 32000
		}, "service demo-ftp: node_names must be a list"},
		{"local service naming an unknown node", func(v map[string]any) {
			service(v, 0)["traffic_policy"], service(v, 0)["health_check_node_port"] = "Local", 32000
			service(v, 0)["node_names"] = []any{"n1", "n9"}
		}, "service demo-ftp: node_names must name nodes"},
		{"duplicate node names", func(v map[string]any) { node(v, 2)["name"] = "n1" }, "haproxy_ftp_state: nodes[].name must be unique"},
		{"node id 0", func(v map[string]any) { node(v, 0)["id"] = 0 }, "haproxy_ftp_state: nodes[].id must be an integer >= 1"},
		{"node name with space", func(v map[string]any) { node(v, 0)["name"] = "n1 backup" }, "haproxy_ftp_state: nodes[].name must be a DNS subdomain"},
		// a string would be true in the template whatever it says
		{"drain as a string", func(v map[string]any) { node(v, 0)["drain"] = "false" }, "haproxy_ftp_state: nodes[].drain must be a boolean"},
		{"unknown node field", func(v map[string]any) { node(v, 0)["weight"] = 0 }, "weight"},
		{"missing field", func(v map[string]any) { delete(service(v, 0), "maxconn") }, "maxconn"},
		{"unknown field", func(v map[string]any) { service(v, 0)["weight"] = 3 }, "weight"},
		{"overlapping passive ranges", func(v map[string]any) {
			secondService(v, func(s map[string]any) {
				s["control_port"] = 2121
				s["passive_min"], s["passive_max"] = 21110, 21120
			})
		}, "service demo-ftp passive ports 21100-21110 on 10.213.1.1 overlaps service other-ftp passive ports 21110-21120 on 10.213.1.1"},
		{"same control port", func(v map[string]any) {
			secondService(v, func(s map[string]any) { s["passive_min"], s["passive_max"] = 22000, 22010 })
		}, "overlaps service other-ftp"},
		{"wildcard address overlaps", func(v map[string]any) {
			secondService(v, func(s map[string]any) {
				s["bind_address"] = "0.0.0.0"
				s["passive_min"], s["passive_max"] = 22000, 22010
			})
		}, "overlaps service other-ftp"},
		{"duplicate service ids", func(v map[string]any) {
			secondService(v, func(s map[string]any) {
				s["id"] = "demo-ftp"
				s["bind_address"] = "10.213.1.9"
			})
		}, "id must be unique"},
		{"peers port", func(v map[string]any) {
			service(v, 0)["bind_address"] = "127.0.0.1"
			service(v, 0)["control_port"] = 10000
		}, "service demo-ftp control port 10000 on 127.0.0.1 overlaps the peers section (haproxy_ftp_peers_port 10000 on 127.0.0.1)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := loadVars(t, "offset.vars.yml")
			tc.edit(v)
			r := render(t, writeVars(t, v, true))
			if r.err == nil {
				t.Fatalf("render succeeded, want a preflight failure:\n%s", r.cfg)
			}
			if r.cfg != nil {
				t.Errorf("a refused state must not write a config, got:\n%s", r.cfg)
			}
			if r.result.Failures != 1 {
				t.Errorf("result file: failures = %d, want 1 (%+v)", r.result.Failures, r.result)
			}
			if !strings.Contains(r.result.Msg, tc.want) {
				t.Errorf("failure message %q does not contain %q\noutput:\n%s", r.result.Msg, tc.want, r.output)
			}
		})
	}
}

// The watcher marks every string of the document unsafe; the role must render exactly what
// it renders from the same document written by hand in YAML.
func TestUnsafeVarsRenderTheSame(t *testing.T) {
	for _, name := range []string{"two-services", "per-port", "ipv6"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want, err := os.ReadFile(testdata(t, name+".golden"))
			if err != nil {
				t.Fatalf("reading golden file: %v", err)
			}
			got := mustRender(t, writeVars(t, loadVars(t, name+".vars.yml"), true))
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("unsafe-marked JSON renders differently from the YAML vars (-want +got):\n%s", diff)
			}
		})
	}
}

// A template in a value from the cluster must never run on the controller, whichever field
// carries it, and preflight must refuse it by name.
func TestUnsafeTemplateNeverEvaluated(t *testing.T) {
	cases := []struct {
		name string
		set  func(v map[string]any, payload string)
		want string
	}{
		{"generation", func(v map[string]any, p string) { state(v)["generation"] = p }, "generation must match"},
		{"id", func(v map[string]any, p string) { service(v, 0)["id"] = p }, "service #0: id must match"},
		{"source", func(v map[string]any, p string) { service(v, 0)["source"] = p }, "service demo-ftp: source"},
		{"edge_group", func(v map[string]any, p string) { service(v, 0)["edge_group"] = p }, "service demo-ftp: edge_group"},
		{"bind_address", func(v map[string]any, p string) { service(v, 0)["bind_address"] = p }, "service demo-ftp: bind_address"},
		{"timeout", func(v map[string]any, p string) { service(v, 0)["timeouts"].(map[string]any)["check"] = p }, "service demo-ftp: timeouts"},
		{"node name", func(v map[string]any, p string) { node(v, 0)["name"] = p }, "haproxy_ftp_state: nodes[].name"},
		{"node address", func(v map[string]any, p string) { node(v, 0)["address"] = p }, "haproxy_ftp_state: nodes[].address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			marker := filepath.Join(t.TempDir(), "evaluated")
			v := loadVars(t, "offset.vars.yml")
			tc.set(v, fmt.Sprintf("{{ lookup('pipe', 'touch %s') }}", marker))
			r := render(t, writeVars(t, v, true))
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("the template in %s was evaluated: %s exists", tc.name, marker)
			}
			if r.err == nil || r.cfg != nil {
				t.Fatalf("render should fail and write nothing (err %v):\n%s", r.err, r.cfg)
			}
			if !strings.Contains(r.result.Msg, tc.want) {
				t.Errorf("failure message %q does not contain %q", r.result.Msg, tc.want)
			}
		})
	}
}

// The probe above can fail: without the unsafe marking Ansible does evaluate the value. If
// this test ever fails, TestUnsafeTemplateNeverEvaluated proves nothing any more.
func TestTemplateProbeWorksWithoutUnsafe(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "evaluated")
	v := loadVars(t, "offset.vars.yml")
	service(v, 0)["source"] = fmt.Sprintf("{{ lookup('pipe', 'touch %s') }}", marker)
	_ = render(t, writeVars(t, v, false))
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("without unsafe marking the probe did not run (%v): the unsafe test cannot fail", err)
	}
}
