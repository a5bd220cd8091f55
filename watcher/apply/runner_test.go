package apply

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type runnerFixture struct {
	dir, outDir, inventory string
	key                    keyPair
	knownHosts             string
	log                    *bytes.Buffer
}

// newRunnerFixture writes an inventory of local-connection hosts (extra host vars per host),
// a key and a known_hosts file.
func newRunnerFixture(t *testing.T, hosts map[string]string) runnerFixture {
	t.Helper()
	requireBinary(t, "ansible-playbook")
	f := runnerFixture{dir: t.TempDir(), log: &bytes.Buffer{}}
	f.outDir = filepath.Join(f.dir, "out")
	if err := os.Mkdir(f.outDir, 0o700); err != nil {
		t.Fatal(err)
	}
	f.key = newKey(t, f.dir, "id_ed25519", "")
	f.knownHosts = writeFile(t, f.dir, "known_hosts", knownHostsLine(2222, f.key.Public), 0o644)
	var inv strings.Builder
	fmt.Fprintf(&inv, "all:\n  vars:\n    ansible_connection: local\n    ansible_python_interpreter: /usr/bin/python3\n    out_dir: %s\n  children:\n    edge:\n      hosts:\n", f.outDir)
	for name, vars := range hosts {
		fmt.Fprintf(&inv, "        %s: %s\n", name, vars)
	}
	f.inventory = writeFile(t, f.dir, "inventory.yml", inv.String(), 0o600)
	return f
}

func (f runnerFixture) runner(t *testing.T, playbook string) *Runner {
	t.Helper()
	pb, err := filepath.Abs(filepath.Join("testdata", playbook))
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRunner(RunnerConfig{
		InventoryPath: f.inventory, SSHKeyPath: f.key.Path, KnownHostsPath: f.knownHosts,
		Playbook: pb, WorkDir: filepath.Join(f.dir, "work"),
		Logger: slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("runner log:\n%s", f.log.String())
		}
	})
	return r
}

func TestRunnerPerHostResults(t *testing.T) {
	f := newRunnerFixture(t, map[string]string{"good1": "{}", "good2": "{}", "bad1": "{}"})
	r := f.runner(t, "runner.yml")
	state := exampleState()

	res, err := r.Apply(context.Background(), Request{State: state})
	if err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	t.Logf("run of 3 local hosts took %s", res.Duration)
	if res.Duration <= 0 {
		t.Errorf("Duration = %s, want > 0", res.Duration)
	}
	bad := res.Hosts["bad1"]
	if !strings.Contains(bad.Message, "bad1 fails on purpose") {
		t.Errorf("bad1 message = %q, want the task's failure message", bad.Message)
	}
	bad.Message = ""
	want := map[string]HostResult{
		"good1": {Host: "good1", OK: true},
		"good2": {Host: "good2", OK: true},
		"bad1":  {Host: "bad1"},
	}
	got := map[string]HostResult{"good1": res.Hosts["good1"], "good2": res.Hosts["good2"], "bad1": bad}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Result.Hosts (-want +got):\n%s", diff)
	}
	if len(res.Hosts) != 3 {
		t.Errorf("Result.Hosts has %d hosts, want 3: %v", len(res.Hosts), res.Hosts)
	}
	if diff := cmp.Diff([]string{"bad1"}, res.Failed()); diff != "" {
		t.Errorf("Failed() (-want +got):\n%s", diff)
	}
	// The vars reached the play, and the failed host stopped before writing.
	for host, want := range map[string]string{"good1": state.Generation, "good2": state.Generation} {
		b, err := os.ReadFile(filepath.Join(f.outDir, host+".generation"))
		if err != nil || string(b) != want {
			t.Errorf("%s wrote %q, %v; want %q", host, b, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(f.outDir, "bad1.generation")); err == nil {
		t.Error("bad1 ran past its failing task")
	}
	// Ansible's output is in the debug log, and nothing of the key is.
	logged := f.log.String()
	if !strings.Contains(logged, "fails on purpose") {
		t.Errorf("debug log lacks ansible's output:\n%s", logged)
	}
	assertNoKeyMaterial(t, logged, f.key.Body)
	assertNoRunLeftovers(t, r)
}

func TestRunnerLimitAndCheck(t *testing.T) {
	f := newRunnerFixture(t, map[string]string{"good1": "{}", "bad1": "{}"})
	r := f.runner(t, "runner.yml")

	res, err := r.Apply(context.Background(), Request{State: exampleState(), Limit: []string{"good1"}, Check: true})
	if err != nil {
		t.Fatalf("Apply() = %v", err)
	}
	if diff := cmp.Diff(map[string]HostResult{"good1": {Host: "good1", OK: true}}, res.Hosts); diff != "" {
		t.Errorf("Result.Hosts (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(f.outDir, "good1.generation")); err == nil {
		t.Error("check mode wrote a file")
	}
}

func TestRunnerNothingRan(t *testing.T) {
	f := newRunnerFixture(t, map[string]string{"good1": "{}"})
	tests := []struct {
		name     string
		playbook string
		limit    []string
		want     string
	}{
		{name: "play matches no host", playbook: "nohosts.yml", want: "nothing ran"},
		{name: "limit matches no host", playbook: "runner.yml", limit: []string{"ghost"}, want: "no hosts to target"},
		{name: "limit is a pattern", playbook: "runner.yml", limit: []string{"good*"}, want: "not a plain host name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.runner(t, tt.playbook)
			state := exampleState()
			_, err := r.Apply(context.Background(), Request{State: state, Limit: tt.limit})
			if err == nil {
				t.Fatalf("Apply() = nil error, want %q", tt.want)
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			// go-ansible's own error lists the environment and command line: never passed on.
			for _, leak := range []string{"ANSIBLE_", "KUBEFTP_RESULT_FILE", "--extra-vars", state.Generation} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q leaks %q", err, leak)
				}
			}
			assertNoRunLeftovers(t, r)
		})
	}
}

// TestRunnerInventoryPaths: a relative inventory path once made ansible-playbook run nothing
// and exit 0. The runner resolves it, and an inventory without hosts is an error, not success.
func TestRunnerInventoryPaths(t *testing.T) {
	f := newRunnerFixture(t, map[string]string{"good1": "{}"})
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, f.inventory)
	if err != nil {
		t.Fatal(err)
	}
	empty := writeFile(t, f.dir, "empty.yml", "all: {}\n", 0o600)
	pb, err := filepath.Abs(filepath.Join("testdata", "runner.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, inventory, wantErr string
	}{
		{name: "relative", inventory: rel},
		{name: "no hosts", inventory: empty, wantErr: "nothing ran"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRunner(RunnerConfig{InventoryPath: tt.inventory, SSHKeyPath: f.key.Path,
				KnownHostsPath: f.knownHosts, Playbook: pb, WorkDir: filepath.Join(f.dir, tt.name)})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			res, err := r.Apply(context.Background(), Request{State: exampleState()})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Apply() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(map[string]HostResult{"good1": {Host: "good1", OK: true}}, res.Hosts); diff != "" {
				t.Errorf("Result.Hosts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewRunnerRefuses(t *testing.T) {
	f := newRunnerFixture(t, map[string]string{"good1": "{}"})
	long := filepath.Join(f.dir, strings.Repeat("w", 90))
	tests := []struct {
		name string
		cfg  RunnerConfig
		want string
	}{
		{name: "no inventory", cfg: RunnerConfig{SSHKeyPath: f.key.Path, KnownHostsPath: f.knownHosts}, want: "inventory path is required"},
		{name: "missing inventory", cfg: RunnerConfig{InventoryPath: f.dir + "/nope.yml", SSHKeyPath: f.key.Path, KnownHostsPath: f.knownHosts}, want: "nope.yml"},
		{name: "missing playbook", cfg: RunnerConfig{InventoryPath: f.inventory, SSHKeyPath: f.key.Path, KnownHostsPath: f.knownHosts, Playbook: "nope.yml", WorkDir: filepath.Join(f.dir, "w1")}, want: "nope.yml"},
		{name: "work dir too long for ssh sockets", cfg: RunnerConfig{InventoryPath: f.inventory, SSHKeyPath: f.key.Path, KnownHostsPath: f.knownHosts, WorkDir: long}, want: "too long"},
		{name: "bad key", cfg: RunnerConfig{InventoryPath: f.inventory, SSHKeyPath: f.inventory, KnownHostsPath: f.knownHosts}, want: "not a valid private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRunner(tt.cfg)
			if err == nil {
				r.Close()
				t.Fatalf("NewRunner() = nil error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	// A refused configuration leaves no extracted playbook behind.
	for _, w := range []string{filepath.Join(f.dir, "w1"), long} {
		if m, _ := filepath.Glob(filepath.Join(w, "assets-*")); len(m) > 0 {
			t.Errorf("left behind: %v", m)
		}
	}
}

// TestRunnerCancel cancels a run during a long task: Apply must return at once, leave no process
// of ansible-playbook's group (nor the task's command) behind, and remove the vars file, which
// was private while the run lasted.
func TestRunnerCancel(t *testing.T) {
	t.Run("init", testRunnerCancel) // orphans go to init
	// As PID 1 of a container the watcher itself inherits the killed workers; a child
	// subreaper is in the same position.
	t.Run("self", func(t *testing.T) {
		setChildSubreaper(t, true)
		t.Cleanup(func() { setChildSubreaper(t, false) })
		testRunnerCancel(t)
	})
}

// setChildSubreaper makes this process adopt its orphaned descendants (prctl
// PR_SET_CHILD_SUBREAPER), or stops it.
func setChildSubreaper(t *testing.T, on bool) {
	t.Helper()
	const prSetChildSubreaper = 36
	arg := uintptr(0)
	if on {
		arg = 1
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, arg, 0); errno != 0 {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER, %d): %v", arg, errno)
	}
}

func testRunnerCancel(t *testing.T) {
	// A duration nobody else uses, to recognise the task's own sleep process. Quoted in the
	// inventory: as a YAML float 60.123400 would reach the command as "60.1234".
	secs := fmt.Sprintf("60.%06d", rand.IntN(1000000))
	f := newRunnerFixture(t, map[string]string{"slow1": "{sleep_seconds: '" + secs + "'}"})
	r := f.runner(t, "runner.yml")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type outcome struct {
		err error
		at  time.Time
	}
	done := make(chan outcome, 1)
	go func() {
		_, err := r.Apply(ctx, Request{State: exampleState()})
		done <- outcome{err, time.Now()}
	}()

	// Wait until the task's sleep runs, then look at the run while it lasts.
	var sleepPID int
	deadline := time.Now().Add(60 * time.Second)
	for sleepPID == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sleep task did not start within 60s")
		}
		select {
		case o := <-done:
			t.Fatalf("Apply returned before the sleep task ran: %v\n%s", o.err, f.log.String())
		case <-time.After(100 * time.Millisecond):
		}
		sleepPID = findProcess(t, "sleep\x00"+secs)
	}
	varsFiles, _ := filepath.Glob(filepath.Join(r.workDir, "run-*", "vars.json"))
	if len(varsFiles) != 1 {
		t.Fatalf("vars files during the run: %v, want one", varsFiles)
	}
	assertMode(t, varsFiles[0], 0o600)
	assertMode(t, filepath.Dir(varsFiles[0]), 0o700|os.ModeDir)
	leader := findProcess(t, "@"+varsFiles[0])
	if leader == 0 {
		t.Fatal("ansible-playbook not found by its vars file argument")
	}
	pgid := readStat(t, leader).pgid
	if pgid != leader {
		t.Errorf("ansible-playbook pgid = %d, want its own group %d", pgid, leader)
	}
	if g := readStat(t, sleepPID).pgid; g != pgid {
		t.Errorf("the task's sleep runs in group %d, want ansible-playbook's group %d", g, pgid)
	}
	t.Logf("group %d before cancel: %d processes", pgid, len(groupMembers(pgid)))

	cancelled := time.Now()
	cancel()
	var o outcome
	select {
	case o = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Apply did not return within 15s of the cancel")
	}
	t.Logf("Apply returned %s after the cancel", o.at.Sub(cancelled))
	if o.at.Sub(cancelled) > 5*time.Second {
		t.Errorf("Apply took %s to return after the cancel, want < 5s", o.at.Sub(cancelled))
	}
	if o.err == nil || !strings.Contains(o.err.Error(), "context canceled") {
		t.Errorf("Apply() error = %v, want a cancellation error", o.err)
	}
	// When Apply returns nothing of the group runs any more: what is left are zombies whose
	// parent died, which init collects. Then the group must vanish altogether.
	for _, m := range groupMembers(pgid) {
		if m.state != 'Z' {
			t.Errorf("process of group %d still alive after Apply returned: %+v", pgid, m)
		}
		if m.ppid == os.Getpid() {
			t.Errorf("zombie of this process left unreaped: %+v", m)
		}
	}
	gone := time.Now().Add(10 * time.Second)
	for len(groupMembers(pgid)) > 0 && time.Now().Before(gone) {
		time.Sleep(50 * time.Millisecond)
	}
	if m := groupMembers(pgid); len(m) > 0 {
		t.Errorf("processes of group %d left 10s after Apply returned: %+v", pgid, m)
	}
	t.Logf("group %d gone %s after the cancel", pgid, time.Since(cancelled))
	if pid := findProcess(t, "sleep\x00"+secs); pid != 0 {
		t.Errorf("the task's sleep (pid %d) is still running", pid)
	}
	if _, err := os.Stat(varsFiles[0]); !os.IsNotExist(err) {
		t.Errorf("vars file still there after the run: %v", err)
	}
	assertNoRunLeftovers(t, r)
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != want {
		t.Errorf("%s: mode %s, want %s", path, fi.Mode(), want)
	}
}

// assertNoRunLeftovers checks that no per-run directory (vars, results) outlived its run.
func assertNoRunLeftovers(t *testing.T, r *Runner) {
	t.Helper()
	if m, _ := filepath.Glob(filepath.Join(r.workDir, "run-*")); len(m) > 0 {
		t.Errorf("run directories left: %v", m)
	}
}

// findProcess returns the pid of a process whose NUL-separated command line contains s, or 0.
func findProcess(t *testing.T, s string) int {
	t.Helper()
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(s)) {
			continue
		}
		info, ok := readProcStat(filepath.Join(filepath.Dir(p), "stat"))
		if ok && info.pid != os.Getpid() {
			return info.pid
		}
	}
	return 0
}

func readStat(t *testing.T, pid int) procInfo {
	t.Helper()
	info, ok := readProcStat(fmt.Sprintf("/proc/%d/stat", pid))
	if !ok {
		t.Fatalf("cannot read /proc/%d/stat", pid)
	}
	return info
}

// TestRunnerOverSSH runs the playbook over real SSH to two sshd on loopback: one whose host key
// is pinned, one whose key is not. The runner's ssh settings must let the first through and
// refuse the second, per host, without holding the first back.
func TestRunnerOverSSH(t *testing.T) {
	requireBinary(t, "ansible-playbook")
	dir := t.TempDir()
	client := newKey(t, dir, "id_client", "")
	pinned := startSSHD(t, client.Public)
	unpinned := startSSHD(t, client.Public)
	knownHosts := writeFile(t, dir, "known_hosts", knownHostsLine(pinned.Port, pinned.HostKey), 0o644)
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o700); err != nil {
		t.Fatal(err)
	}
	inventory := writeFile(t, dir, "inventory.yml", fmt.Sprintf(`all:
  vars:
    ansible_host: 127.0.0.1
    ansible_user: root
    ansible_python_interpreter: /usr/bin/python3
    ansible_remote_tmp: %[1]s/remote-tmp
    out_dir: %[1]s/out
  children:
    edge:
      hosts:
        edge-pinned:
          ansible_port: %[2]d
        edge-unpinned:
          ansible_port: %[3]d
`, dir, pinned.Port, unpinned.Port), 0o600)
	pb, err := filepath.Abs(filepath.Join("testdata", "runner.yml"))
	if err != nil {
		t.Fatal(err)
	}
	logBuf := &bytes.Buffer{}
	r, err := NewRunner(RunnerConfig{
		InventoryPath: inventory, SSHKeyPath: client.Path, KnownHostsPath: knownHosts,
		Playbook: pb, WorkDir: filepath.Join(dir, "work"),
		Logger: slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })

	state := exampleState()
	res, err := r.Apply(context.Background(), Request{State: state})
	if err != nil {
		t.Fatalf("Apply() = %v\n%s", err, logBuf.String())
	}
	t.Logf("run over SSH took %s", res.Duration)
	un := res.Hosts["edge-unpinned"]
	if !strings.Contains(un.Message, "Host key verification failed") {
		t.Errorf("edge-unpinned message = %q, want ssh's host key verification failure", un.Message)
	}
	un.Message = ""
	want := map[string]HostResult{
		"edge-pinned":   {Host: "edge-pinned", OK: true},
		"edge-unpinned": {Host: "edge-unpinned", Unreachable: true},
	}
	if diff := cmp.Diff(want, map[string]HostResult{"edge-pinned": res.Hosts["edge-pinned"], "edge-unpinned": un}); diff != "" {
		t.Errorf("Result.Hosts (-want +got):\n%s", diff)
	}
	if b, err := os.ReadFile(filepath.Join(outDir, "edge-pinned.generation")); err != nil || string(b) != state.Generation {
		t.Errorf("edge-pinned wrote %q, %v; want %q", b, err, state.Generation)
	}
	// The known_hosts file is used as given, never written to.
	kh, err := os.ReadFile(knownHosts)
	if err != nil || string(kh) != knownHostsLine(pinned.Port, pinned.HostKey) {
		t.Errorf("known_hosts changed: %q, %v", kh, err)
	}
	assertNoKeyMaterial(t, logBuf.String(), client.Body)
	// ssh's control masters outlive the run on purpose (ControlPersist); stop them now.
	stopControlMasters(t, filepath.Join(dir, "work", "cp"))
}

// stopControlMasters asks every ssh control master with a socket in dir to exit.
func stopControlMasters(t *testing.T, dir string) {
	t.Helper()
	socks, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, s := range socks {
		_ = exec.Command("ssh", "-o", "ControlPath="+s, "-O", "exit", "dummy").Run()
	}
}
