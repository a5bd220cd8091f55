package golden

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
)

// localEdge is a real master-worker HAProxy on a loopback address of its own, managed by the
// role through site.yml with a local connection: the reload, verify and rollback paths
// without SSH (test/edge runs them over SSH in the network-namespace lab). Everything it
// binds and checks is on 127.0.0.0/8.
type localEdge struct {
	dir, addr, master, stats, inventory string
	cfg                                 string // the file the role manages
	pid                                 int
}

// startLocalEdge starts HAProxy on its own config (full mode) or, with fragment, on a main
// config plus a conf.d directory the role writes its fragment into.
func startLocalEdge(t *testing.T, fragment bool) *localEdge {
	t.Helper()
	need(t, "haproxy", "socat", "ss", "ansible-playbook")
	dir := t.TempDir()
	e := &localEdge{
		dir:    dir,
		addr:   fmt.Sprintf("127.213.%d.%d", rand.IntN(250)+1, rand.IntN(250)+1),
		master: filepath.Join(dir, "master.sock"),
		stats:  filepath.Join(dir, "stats.sock"),
	}
	main := filepath.Join(dir, "haproxy.cfg")
	fragDir := filepath.Join(dir, "conf.d")
	// What an edge runs before the first playbook: HAProxy accepts it, it serves nothing.
	initial := fmt.Sprintf("global\n    stats socket %s mode 600 level admin\n    localpeer e1\n\n"+
		"defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n", e.stats)
	if err := os.WriteFile(main, []byte(initial), 0o644); err != nil {
		t.Fatalf("writing initial config: %v", err)
	}
	files := []string{"-f", main}
	e.cfg = main
	if fragment {
		if err := os.Mkdir(fragDir, 0o755); err != nil {
			t.Fatalf("creating conf.d: %v", err)
		}
		files = append(files, "-f", fragDir)
		e.cfg = filepath.Join(fragDir, "50-kubeftp-edge.cfg")
	}
	pidFile := filepath.Join(dir, "haproxy.pid")
	args := append([]string{"-W", "-D", "-p", pidFile, "-S", e.master + ",mode,600"}, files...)
	out, err := exec.Command("haproxy", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("starting haproxy: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("reading haproxy pid file: %v", err)
	}
	e.pid, err = strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatalf("haproxy pid file: %v", err)
	}
	t.Cleanup(func() {
		// SIGTERM to the master stops every worker, old ones included.
		if err := syscall.Kill(e.pid, syscall.SIGTERM); err != nil {
			t.Logf("stopping haproxy master %d: %v", e.pid, err)
		}
		for i := 0; i < 50 && processAlive(e.pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	})
	// -D returns before the master CLI listens.
	for i := 0; ; i++ {
		if w, err := e.showWorkers(); err == nil && len(w) > 0 {
			break
		}
		if i == 50 {
			t.Fatalf("haproxy master %d: no worker on %s after 5s", e.pid, e.master)
		}
		time.Sleep(100 * time.Millisecond)
	}

	u, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatalf("current group: %v", err)
	}
	host := map[string]any{
		"ansible_connection":           "local",
		"ansible_python_interpreter":   "/usr/bin/python3",
		"haproxy_ftp_reload_method":    "master-socket",
		"haproxy_ftp_config_path":      main,
		"haproxy_ftp_master_socket":    e.master,
		"haproxy_ftp_stats_socket":     e.stats,
		"haproxy_ftp_config_owner":     u.Username,
		"haproxy_ftp_config_group":     g.Name,
		"haproxy_ftp_peers_address":    e.addr,
		"haproxy_ftp_peers_port":       10000,
		"haproxy_ftp_verify_timeout":   5,
		"haproxy_ftp_backups_kept":     2,
		"haproxy_ftp_peers_local_name": "e1",
	}
	if fragment {
		host["haproxy_ftp_config_mode"] = "fragment"
		host["haproxy_ftp_fragment_dir"] = fragDir
		host["haproxy_ftp_main_config_path"] = main
	}
	inv := map[string]any{"edge": map[string]any{"hosts": map[string]any{"e1": host}}}
	rawInv, err := json.Marshal(inv) // JSON is YAML: a YAML inventory
	if err != nil {
		t.Fatalf("encoding inventory: %v", err)
	}
	e.inventory = filepath.Join(dir, "inventory.yml")
	if err := os.WriteFile(e.inventory, rawInv, 0o600); err != nil {
		t.Fatalf("writing inventory: %v", err)
	}
	return e
}

func processAlive(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The field after "(comm)" is the state; a zombie is dead (no init reaps it here).
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// workers returns the pids of the current (not old) workers from the master CLI.
func (e *localEdge) workers(t *testing.T) []string {
	t.Helper()
	w, err := e.showWorkers()
	if err != nil {
		t.Fatalf("show proc on %s: %v", e.master, err)
	}
	return w
}

func (e *localEdge) showWorkers() ([]string, error) {
	cmd := exec.Command("socat", "-t", "2", "stdio", "unix-connect:"+e.master)
	cmd.Stdin = strings.NewReader("show proc\n")
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	var pids []string
	section := ""
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "#":
			section = f[1]
		case section == "workers" && len(f) >= 2 && f[1] == "worker":
			pids = append(pids, f[0])
		}
	}
	return pids, nil
}

// apply runs site.yml against the local edge and returns the host's result.
func (e *localEdge) apply(t *testing.T, vars map[string]any, extra ...string) (apply.CallbackHost, string) {
	t.Helper()
	repo := root(t)
	dir := t.TempDir()
	resultFile := filepath.Join(dir, "result.json")
	args := []string{"-i", e.inventory, filepath.Join(repo, "ansible", "site.yml"), "-e", "@" + writeVars(t, vars, true)}
	args = append(args, extra...)
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
	start := time.Now()
	out, _ := cmd.CombinedOutput()
	t.Logf("site.yml run took %v", time.Since(start).Round(10*time.Millisecond))
	hosts, err := apply.ReadCallbackResults(resultFile)
	if err != nil {
		t.Fatalf("the kubeftp_result callback's results: %v\n%s", err, out)
	}
	r, ok := hosts["e1"]
	if !ok {
		t.Fatalf("no result for e1 in %v\n%s", hosts, out)
	}
	return r, string(out)
}

func (e *localEdge) listening(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(e.addr, strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// edgeVars is the offset case moved onto the edge's loopback address, with nodes on
// loopback too (their checks fail fast: nothing listens there).
func (e *localEdge) edgeVars(t *testing.T) map[string]any {
	v := loadVars(t, "offset.vars.yml")
	s := service(v, 0)
	s["bind_address"] = e.addr
	s["control_port"] = 2121
	s["passive_min"], s["passive_max"] = 28100, 28102
	s["passive_offset"] = 1000
	for i := range state(v)["nodes"].([]any) {
		node(v, i)["address"] = fmt.Sprintf("127.213.254.%d", i+11)
	}
	return v
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("reading %s: %v", p, err)
	}
	return b
}

func TestApplyReloadVerifyRollback(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real HAProxy and runs site.yml")
	}
	t.Parallel() // each edge has a loopback address of its own
	e := startLocalEdge(t, false)
	good := e.edgeVars(t)

	// First run: the file changes, HAProxy reloads into a new worker, every port listens.
	before := e.workers(t)
	r, out := e.apply(t, good)
	if r.Failures != 0 || !r.ConfigChanged || !r.Reloaded || r.RolledBack || r.Msg != "" {
		t.Fatalf("first run: %+v\n%s", r, out)
	}
	after := e.workers(t)
	if len(after) != 1 || (len(before) == 1 && after[0] == before[0]) {
		t.Fatalf("first run: workers before %v, after %v: want one new worker", before, after)
	}
	for _, p := range []int{2121, 28100, 28101, 28102} {
		if !e.listening(p) {
			t.Errorf("first run: nothing listens on %s:%d", e.addr, p)
		}
	}
	applied := readFile(t, e.cfg)
	st, err := os.Stat(e.cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Same vars again: no change, no reload, same worker, file untouched.
	r, out = e.apply(t, good)
	if r.Failures != 0 || r.ConfigChanged || r.Reloaded || r.Changed != 0 {
		t.Fatalf("second run should change nothing: %+v\n%s", r, out)
	}
	if w := e.workers(t); len(w) != 1 || w[0] != after[0] {
		t.Errorf("second run: workers %v, want still %v", w, after)
	}
	if st2, err := os.Stat(e.cfg); err != nil || !st2.ModTime().Equal(st.ModTime()) {
		t.Errorf("second run touched %s (%v)", e.cfg, err)
	}

	// haproxy -c refuses the file (a timer overflow the contract's pattern lets through):
	// nothing is replaced, nothing reloaded.
	bad := e.edgeVars(t)
	service(bad, 0)["timeouts"].(map[string]any)["check"] = "99999d"
	r, out = e.apply(t, bad)
	if r.Failures != 1 || r.ConfigChanged || r.Reloaded || r.RolledBack {
		t.Errorf("rejected config: %+v\n%s", r, out)
	}
	for _, want := range []string{"timer overflow", "was not replaced"} {
		if !strings.Contains(r.Msg, want) {
			t.Errorf("rejected config: message %q lacks %q", r.Msg, want)
		}
	}
	if !bytes.Equal(readFile(t, e.cfg), applied) {
		t.Errorf("rejected config: %s changed", e.cfg)
	}
	if w := e.workers(t); len(w) != 1 || w[0] != after[0] {
		t.Errorf("rejected config: workers %v, want still %v", w, after)
	}

	// A reload that fails after haproxy -c passed, rolled back: a port of the new config is
	// taken by another process, then a maxconn beyond any file descriptor limit.
	taken, err := net.Listen("tcp", net.JoinHostPort(e.addr, "28103"))
	if err != nil {
		t.Fatalf("taking a port: %v", err)
	}
	defer taken.Close()
	wider := e.edgeVars(t)
	service(wider, 0)["passive_max"] = 28103
	for _, tc := range []struct {
		name  string
		vars  map[string]any
		extra []string
	}{
		{"port taken", wider, nil},
		{"maxconn above the FD limit", good, []string{"-e", `{"haproxy_ftp_global_maxconn": 5000000}`}},
	} {
		r, out = e.apply(t, tc.vars, tc.extra...)
		if r.Failures != 1 || !r.ConfigChanged || !r.RolledBack || r.Reloaded {
			t.Errorf("%s: %+v\n%s", tc.name, r, out)
		}
		for _, want := range []string{"refused the new configuration", "previous configuration was restored"} {
			if !strings.Contains(r.Msg, want) {
				t.Errorf("%s: message %q lacks %q", tc.name, r.Msg, want)
			}
		}
		if !bytes.Equal(readFile(t, e.cfg), applied) {
			t.Errorf("%s: %s is not the previous config after the rollback", tc.name, e.cfg)
		}
		if !e.listening(2121) || !e.listening(28102) {
			t.Errorf("%s: the previous config does not serve after the rollback", tc.name)
		}
	}

	// Check mode (the watcher's drift check, a person's --check --diff): reports the change,
	// writes and reloads nothing.
	changed := e.edgeVars(t)
	service(changed, 0)["maxconn"] = 1500
	prev := e.workers(t)
	r, out = e.apply(t, changed, "--check", "--diff")
	if r.Failures != 0 || !r.ConfigChanged || r.Reloaded || r.RolledBack {
		t.Errorf("check mode: %+v\n%s", r, out)
	}
	if !strings.Contains(out, "-    maxconn 2000") || !strings.Contains(out, "+    maxconn 1500") {
		t.Errorf("check mode: no diff of maxconn in the output:\n%s", out)
	}
	if !bytes.Equal(readFile(t, e.cfg), applied) {
		t.Errorf("check mode wrote %s", e.cfg)
	}
	if w := e.workers(t); len(w) != 1 || w[0] != prev[0] {
		t.Errorf("check mode: workers %v, want still %v", w, prev)
	}

	// The command method, verified through the stats socket's Pid.
	r, out = e.apply(t, changed,
		"-e", "haproxy_ftp_reload_method=command",
		"-e", fmt.Sprintf(`{"haproxy_ftp_reload_command": ["/bin/sh", "-c", "echo reload | socat -t 2 stdio unix-connect:%s"]}`, e.master))
	if r.Failures != 0 || !r.ConfigChanged || !r.Reloaded || r.RolledBack {
		t.Fatalf("command reload: %+v\n%s", r, out)
	}
	if w := e.workers(t); len(w) != 1 || (len(prev) == 1 && w[0] == prev[0]) {
		t.Errorf("command reload: workers %v, before %v: want a new one", w, prev)
	}

	// Backups beyond haproxy_ftp_backups_kept are gone after a successful run.
	backups, err := filepath.Glob(e.cfg + ".*~")
	if err != nil {
		t.Fatal(err)
	}
	if len(backups) != 2 {
		t.Errorf("backups kept: %v, want 2", backups)
	}
}

// Fragment mode: the role owns one file of a conf.d directory loaded after a main config it
// does not touch. The first install fails at reload here (a port is taken), so there is no
// previous fragment: it is removed and HAProxy reloaded without it; then it installs.
func TestApplyFragment(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real HAProxy and runs site.yml")
	}
	t.Parallel() // each edge has a loopback address of its own
	e := startLocalEdge(t, true)
	main := readFile(t, filepath.Join(e.dir, "haproxy.cfg"))
	vars := e.edgeVars(t)

	taken, err := net.Listen("tcp", net.JoinHostPort(e.addr, "28101"))
	if err != nil {
		t.Fatalf("taking a port: %v", err)
	}
	r, out := e.apply(t, vars)
	if r.Failures != 1 || !r.RolledBack || !strings.Contains(r.Msg, "The new file was removed (there was none before) and HAProxy reloaded without it") {
		t.Errorf("first install with a port taken: %+v\n%s", r, out)
	}
	if _, err := os.Stat(e.cfg); err == nil {
		t.Errorf("the fragment %s is still there after the rollback", e.cfg)
	}
	taken.Close()

	prev := e.workers(t)
	r, out = e.apply(t, vars)
	if r.Failures != 0 || !r.ConfigChanged || !r.Reloaded || r.RolledBack {
		t.Fatalf("fragment install: %+v\n%s", r, out)
	}
	if w := e.workers(t); len(w) != 1 || (len(prev) == 1 && w[0] == prev[0]) {
		t.Errorf("fragment install: workers %v, before %v: want a new one", w, prev)
	}
	for _, p := range []int{2121, 28100, 28101, 28102} {
		if !e.listening(p) {
			t.Errorf("fragment install: nothing listens on %s:%d", e.addr, p)
		}
	}
	if !bytes.Equal(readFile(t, filepath.Join(e.dir, "haproxy.cfg")), main) {
		t.Errorf("fragment mode changed the main config")
	}
	if !bytes.Contains(readFile(t, e.cfg), []byte("peers kubeftp_peers")) ||
		bytes.Contains(readFile(t, e.cfg), []byte("\nglobal")) {
		t.Errorf("the fragment should hold a peers section and no global section:\n%s", readFile(t, e.cfg))
	}

	// Another file of conf.d, loaded with ours, that HAProxy refuses alongside the new
	// fragment (a proxy of the same name): haproxy -c sees it, nothing is replaced.
	installed := readFile(t, e.cfg)
	for _, other := range []string{"10-other.cfg", "90-other.cfg"} { // before and after ours
		p := filepath.Join(e.dir, "conf.d", other)
		if err := os.WriteFile(p, []byte("frontend demo-ftp_ctrl\n    bind 127.0.0.1:1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		changed := e.edgeVars(t)
		service(changed, 0)["maxconn"] = 1500
		r, out = e.apply(t, changed)
		if r.Failures != 1 || r.RolledBack || r.Reloaded {
			t.Errorf("%s conflicting with the new fragment: %+v\n%s", other, r, out)
		}
		for _, want := range []string{"demo-ftp_ctrl", "was not replaced"} {
			if !strings.Contains(r.Msg, want) {
				t.Errorf("%s conflicting: message %q lacks %q", other, r.Msg, want)
			}
		}
		if !bytes.Equal(readFile(t, e.cfg), installed) {
			t.Errorf("%s conflicting: the fragment was replaced", other)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	// and without it the same change goes through
	changed := e.edgeVars(t)
	service(changed, 0)["maxconn"] = 1500
	if r, out = e.apply(t, changed); r.Failures != 0 || !r.Reloaded {
		t.Errorf("the change once conf.d is clean again: %+v\n%s", r, out)
	}
}

// A node going NotReady and Ready again changes server weights only: the role sets them on the
// serving worker through the runtime API, and reloads only when the shape of the config
// changes or the file in service is not the one the change starts from.
func TestApplyDrainThroughRuntimeAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real HAProxy and runs site.yml")
	}
	t.Parallel() // each edge has a loopback address of its own
	e := startLocalEdge(t, false)
	withDrain := func(edit func(v map[string]any), drained ...int) map[string]any {
		v := e.edgeVars(t)
		for _, i := range drained {
			node(v, i)["drain"] = true
		}
		if edit != nil {
			edit(v)
		}
		return v
	}
	// want: node name -> weight, the same in the control and the passive backend.
	checkWeights := func(step string, want map[string]string) {
		t.Helper()
		for _, be := range []string{"demo-ftp_ctrl", "demo-ftp_pasv"} {
			for n, w := range want {
				got, err := e.statsCmd("get weight " + be + "/" + n)
				if f := strings.Fields(got); err != nil || len(f) == 0 || f[0] != w {
					t.Errorf("%s: weight of %s/%s = %q (%v), want %s", step, be, n, got, err, w)
				}
			}
		}
	}
	inService := func(step string) {
		t.Helper()
		mark := readFile(t, filepath.Join(e.dir, ".haproxy.cfg.in-service"))
		if sum := fmt.Sprintf("%x", sha1.Sum(readFile(t, e.cfg))); strings.TrimSpace(string(mark)) != sum {
			t.Errorf("%s: in-service mark %q, want the file's sha1 %s", step, mark, sum)
		}
	}

	r, out := e.apply(t, withDrain(nil))
	if r.Failures != 0 || !r.Reloaded || r.RuntimeUpdated {
		t.Fatalf("first run: %+v\n%s", r, out)
	}
	serving := e.workers(t)
	checkWeights("first run", map[string]string{"n1": "1", "n2": "1", "n3": "1"})

	steps := []struct {
		name    string
		vars    map[string]any
		weights map[string]string
	}{
		{"n2 drained", withDrain(nil, 1), map[string]string{"n1": "1", "n2": "0", "n3": "1"}},
		{"n2 back, n1 and n3 drained", withDrain(nil, 0, 2), map[string]string{"n1": "0", "n2": "1", "n3": "0"}},
		{"none drained", withDrain(nil), map[string]string{"n1": "1", "n2": "1", "n3": "1"}},
	}
	for _, s := range steps {
		r, out = e.apply(t, s.vars)
		if r.Failures != 0 || !r.ConfigChanged || !r.RuntimeUpdated || r.Reloaded || r.RolledBack {
			t.Fatalf("%s: want a runtime update without a reload: %+v\n%s", s.name, r, out)
		}
		if w := e.workers(t); len(w) != 1 || w[0] != serving[0] {
			t.Errorf("%s: workers %v, want still %v", s.name, w, serving)
		}
		checkWeights(s.name, s.weights)
		inService(s.name)
	}

	// The shape changes too (maxconn): a reload, and the new worker takes weight 0 from the
	// file. The serving worker got it first (n2 in the control and the passive backend), so
	// both hash alike while they overlap.
	r, out = e.apply(t, withDrain(func(v map[string]any) { service(v, 0)["maxconn"] = 1500 }, 1), "-v")
	if r.Failures != 0 || !r.Reloaded || r.RuntimeUpdated {
		t.Fatalf("drain with a shape change: want a reload: %+v\n%s", r, out)
	}
	if !strings.Contains(out, "runtime=no reason=shape-changed weights_set_before_reload=2") {
		t.Errorf("drain with a shape change: the weights were not set before the reload:\n%s", out)
	}
	if w := e.workers(t); len(w) != 1 || w[0] == serving[0] {
		t.Errorf("drain with a shape change: workers %v, want a new one (was %v)", w, serving)
	}
	checkWeights("drain with a shape change", map[string]string{"n1": "1", "n2": "0", "n3": "1"})
	if !bytes.Contains(readFile(t, e.cfg), []byte(" id 2 weight 0 ")) {
		t.Errorf("the file does not give n2 weight 0:\n%s", readFile(t, e.cfg))
	}
	inService("drain with a shape change")

	// The file in service is not the one the change starts from (the mark says otherwise):
	// the runtime state cannot be trusted to match it, so the role reloads.
	serving = e.workers(t)
	if err := os.WriteFile(filepath.Join(e.dir, ".haproxy.cfg.in-service"), []byte("0000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, out = e.apply(t, withDrain(func(v map[string]any) { service(v, 0)["maxconn"] = 1500 }))
	if r.Failures != 0 || !r.Reloaded || r.RuntimeUpdated {
		t.Fatalf("unknown config in service: want a reload: %+v\n%s", r, out)
	}
	if w := e.workers(t); len(w) != 1 || w[0] == serving[0] {
		t.Errorf("unknown config in service: workers %v, want a new one (was %v)", w, serving)
	}
	checkWeights("unknown config in service", map[string]string{"n1": "1", "n2": "1", "n3": "1"})
	inService("unknown config in service")
}

// statsCmd sends one command to the serving worker's stats socket.
func (e *localEdge) statsCmd(cmd string) (string, error) {
	c := exec.Command("socat", "-t", "2", "stdio", "unix-connect:"+e.stats)
	c.Stdin = strings.NewReader(cmd + "\n")
	out, err := c.Output()
	return strings.TrimSpace(string(out)), err
}
