package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apenella/go-ansible/v2/pkg/execute"
	"github.com/apenella/go-ansible/v2/pkg/playbook"

	kubeftpedge "github.com/kubeftp/kubeftp-edge"
)

// RunnerConfig configures a Runner. Paths may be relative; the Runner makes them absolute.
type RunnerConfig struct {
	InventoryPath  string // YAML inventory of the edge hosts
	SSHKeyPath     string // private key, passed to ssh as a path and never read into a log
	KnownHostsPath string // the only host keys ssh trusts
	Forks          int    // parallel hosts; 0 means 10
	// Playbook is relative to the extracted ansible/ directory ("site.yml" when empty) or
	// absolute.
	Playbook string
	// WorkDir is a writable directory for the extracted playbook, ANSIBLE_HOME, Ansible's local
	// temp files, the ssh control sockets and the per-run vars; a private temporary directory
	// when empty. Point it at a writable volume when the root file system is read-only.
	WorkDir string
	// Assets is the playbook tree; kubeftpedge.Assets when nil.
	Assets fs.FS
	// AnsiblePlaybook is the ansible-playbook binary; found in PATH when empty.
	AnsiblePlaybook string
	// Logger receives one line per run at info and ansible's output at debug; slog.Default()
	// when nil.
	Logger *slog.Logger
}

// Runner implements Applier by running the embedded playbook with go-ansible. Runs are
// serialised: two runs against the same hosts would race on their configuration.
type Runner struct {
	cfg       RunnerConfig
	log       *slog.Logger
	binary    string
	workDir   string
	ownsWork  bool
	assets    *Assets
	playbook  string
	sshArgs   string
	mu        sync.Mutex
	outputMax int
}

// maxControlPathDir keeps ssh's control socket path under the 108-byte limit of a unix socket
// path: ansible names sockets "<dir>/<10-char hash>" and ssh binds them first with a 17-byte
// random suffix. Past it ssh fails with an obscure error on every host.
const maxControlPathDir = 76

// outputTail bounds how much of ansible's stdout and stderr a run keeps for the debug log.
const outputTail = 64 << 10

// NewRunner checks the configuration, extracts the playbook and prepares the work directory.
// Close removes what it created.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	if cfg.InventoryPath == "" {
		return nil, errors.New("runner: inventory path is required")
	}
	if cfg.SSHKeyPath == "" {
		return nil, errors.New("runner: ssh key path is required")
	}
	if cfg.KnownHostsPath == "" {
		return nil, errors.New("runner: known_hosts path is required")
	}
	if cfg.Forks < 0 {
		return nil, fmt.Errorf("runner: forks must not be negative, got %d", cfg.Forks)
	}
	if cfg.Forks == 0 {
		cfg.Forks = 10
	}
	// Relative paths break silently in ansible (a relative inventory once ran nothing with rc 0).
	for _, p := range []*string{&cfg.InventoryPath, &cfg.SSHKeyPath, &cfg.KnownHostsPath} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("runner: %w", err)
		}
		*p = abs
	}
	if _, err := os.Stat(cfg.InventoryPath); err != nil {
		return nil, fmt.Errorf("runner: inventory: %w", err)
	}
	if err := CheckSSHFiles(cfg.SSHKeyPath, cfg.KnownHostsPath); err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	binary := cfg.AnsiblePlaybook
	if binary == "" {
		binary = "ansible-playbook"
	}
	binary, err := exec.LookPath(binary)
	if err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	if cfg.Assets == nil {
		cfg.Assets = kubeftpedge.Assets
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}

	r := &Runner{cfg: cfg, log: log, binary: binary, outputMax: outputTail}
	if cfg.WorkDir == "" {
		dir, err := os.MkdirTemp("", "kubeftp-edge-")
		if err != nil {
			return nil, fmt.Errorf("runner: work dir: %w", err)
		}
		r.workDir, r.ownsWork = dir, true
	} else {
		dir, err := filepath.Abs(cfg.WorkDir)
		if err != nil {
			return nil, fmt.Errorf("runner: work dir: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("runner: work dir: %w", err)
		}
		r.workDir = dir
	}
	if err := r.prepare(); err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Runner) prepare() error {
	for _, sub := range []string{"home", "tmp", "cp"} {
		if err := os.MkdirAll(filepath.Join(r.workDir, sub), 0o700); err != nil {
			return fmt.Errorf("runner: work dir: %w", err)
		}
	}
	if cp := filepath.Join(r.workDir, "cp"); len(cp) > maxControlPathDir {
		return fmt.Errorf("runner: work dir %s is too long for ssh control sockets (%d bytes, at most %d for %s)", r.workDir, len(cp), maxControlPathDir, cp)
	}
	assets, err := ExtractAssets(r.cfg.Assets, r.workDir)
	if err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	r.assets = assets
	r.playbook = r.cfg.Playbook
	if r.playbook == "" {
		r.playbook = "site.yml"
	}
	if !filepath.IsAbs(r.playbook) {
		r.playbook = filepath.Join(assets.PlaybookDir, r.playbook)
	}
	if _, err := os.Stat(r.playbook); err != nil {
		return fmt.Errorf("runner: playbook: %w", err)
	}
	// These replace ansible.cfg's ssh_args rather than add to them: ssh keeps the first value it
	// sees for an option, so only arguments that come first are sure to take effect.
	r.sshArgs = strings.Join([]string{
		"-o ControlMaster=auto", "-o ControlPersist=60s",
		"-o StrictHostKeyChecking=yes",
		"-o UserKnownHostsFile=" + shellQuote(r.cfg.KnownHostsPath),
		"-o GlobalKnownHostsFile=/dev/null",
		"-o BatchMode=yes", "-o IdentitiesOnly=yes",
	}, " ")
	return nil
}

// Close removes the extracted playbook, and the work directory when the Runner made it.
func (r *Runner) Close() error {
	var errs []error
	if r.assets != nil {
		errs = append(errs, r.assets.Close())
	}
	if r.ownsWork {
		if err := os.RemoveAll(r.workDir); err != nil {
			errs = append(errs, fmt.Errorf("removing work dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Assets returns the extracted playbook tree.
func (r *Runner) Assets() *Assets { return r.assets }

// limitName is what a host name may look like in --limit: anything else would be read by
// ansible as a pattern ("web*", "!db", "a:b", "~regex").
var limitName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// Apply runs the playbook once. It returns an error only when the run could not happen at all
// (bad request, ansible-playbook did not start, was cancelled, or reported no host); a non-zero
// exit with per-host results is not an error: failed hosts are in Result.Hosts.
func (r *Runner) Apply(ctx context.Context, req Request) (Result, error) {
	for _, h := range req.Limit {
		if !limitName.MatchString(h) {
			return Result{}, fmt.Errorf("apply: limit: %q is not a plain host name", h)
		}
	}
	vars, err := MarshalVars(req.State)
	if err != nil {
		return Result{}, fmt.Errorf("apply: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()

	start := time.Now()
	runDir, err := os.MkdirTemp(r.workDir, "run-")
	if err != nil {
		return Result{}, fmt.Errorf("apply: %w", err)
	}
	defer os.RemoveAll(runDir)
	varsPath := filepath.Join(runDir, "vars.json")
	resultPath := filepath.Join(runDir, "result.json")
	if err := writePrivate(varsPath, vars); err != nil {
		return Result{}, fmt.Errorf("apply: %w", err)
	}

	opts := &playbook.AnsiblePlaybookOptions{
		Inventory:     r.cfg.InventoryPath,
		Limit:         strings.Join(req.Limit, ","),
		Check:         req.Check,
		Diff:          req.Check,
		ExtraVarsFile: []string{"@" + varsPath},
		Forks:         strconv.Itoa(r.cfg.Forks),
		PrivateKey:    r.cfg.SSHKeyPath,
	}
	cmd := playbook.NewAnsiblePlaybookCmd(
		playbook.WithBinary(r.binary),
		playbook.WithPlaybooks(r.playbook),
		playbook.WithPlaybookOptions(opts),
	)
	// Only paths and switches: nothing secret can reach the environment, and so the debug log.
	env := map[string]string{
		"ANSIBLE_CONFIG":               r.assets.Config,
		"ANSIBLE_HOME":                 filepath.Join(r.workDir, "home"),
		"ANSIBLE_LOCAL_TEMP":           filepath.Join(r.workDir, "tmp"),
		"ANSIBLE_SSH_CONTROL_PATH_DIR": filepath.Join(r.workDir, "cp"),
		"ANSIBLE_SSH_ARGS":             r.sshArgs,
		"ANSIBLE_HOST_KEY_CHECKING":    "True",
		"ANSIBLE_CALLBACK_PLUGINS":     filepath.Join(r.assets.PlaybookDir, "plugins", "callback"),
		"ANSIBLE_CALLBACKS_ENABLED":    "kubeftp_result",
		"ANSIBLE_RETRY_FILES_ENABLED":  "False",
		"ANSIBLE_NOCOLOR":              "1",
		"KUBEFTP_RESULT_FILE":          resultPath,
	}
	stdout := &tailBuffer{max: r.outputMax}
	stderr := &tailBuffer{max: r.outputMax}
	gx := &groupExec{}
	ex := execute.NewDefaultExecute(
		execute.WithCmd(cmd),
		execute.WithExecutable(gx),
		execute.WithCmdRunDir(runDir),
		execute.WithEnvVars(env),
		execute.WithWrite(stdout),
		execute.WithWriteError(stderr),
	)
	// go-ansible's error embeds the whole command line and environment: it is never passed on.
	// What happened is read from the process state and the results file instead.
	_ = ex.Execute(ctx)
	rc := -1
	if gx.cmd != nil && gx.cmd.Process != nil {
		if left := reapGroup(gx.cmd.Process.Pid, 3*time.Second); left > 0 {
			r.log.Warn("processes of ansible-playbook left after the run", "count", left, "pgid", gx.cmd.Process.Pid)
		}
		if gx.cmd.ProcessState != nil {
			rc = gx.cmd.ProcessState.ExitCode()
		}
	}
	dur := time.Since(start)
	r.log.Debug("ansible-playbook output", "rc", rc, "stdout", stdout.String(), "stderr", stderr.String())

	if ctx.Err() != nil {
		return Result{Duration: dur}, fmt.Errorf("apply: ansible-playbook stopped: %w", ctx.Err())
	}
	if gx.cmd == nil || gx.cmd.Process == nil {
		return Result{Duration: dur}, fmt.Errorf("apply: %s did not start", r.binary)
	}
	res, err := readResults(resultPath, req.Limit)
	if err != nil {
		return Result{Duration: dur}, fmt.Errorf("apply: ansible-playbook exited %d (%s)%s: %w", rc, exitMeaning(rc), firstError(stdout.String(), stderr.String()), err)
	}
	res.Duration = dur
	r.log.Info("playbook run finished", "rc", rc, "hosts", len(res.Hosts), "failed", len(res.Failed()), "check", req.Check, "duration", dur.Round(time.Millisecond))
	return res, nil
}

// CallbackHost is one host's entry in the JSON file the callback plugin
// ansible/plugins/callback/kubeftp_result.py writes to $KUBEFTP_RESULT_FILE.
type CallbackHost struct {
	OK            int  `json:"ok"`
	Changed       int  `json:"changed"`
	Failures      int  `json:"failures"`
	Unreachable   int  `json:"unreachable"`
	Skipped       int  `json:"skipped"`
	Rescued       int  `json:"rescued"`
	ConfigChanged bool `json:"config_changed"`
	Reloaded      bool `json:"reloaded"`
	// RuntimeUpdated: the change was server weights alone, set through the runtime API.
	RuntimeUpdated bool   `json:"runtime_updated"`
	RolledBack     bool   `json:"rolled_back"`
	Msg            string `json:"msg"`
}

// Failed reports whether the play failed on the host: a failed task, an unreachable host, or
// a rollback (which the role follows with a failure of its own).
func (h CallbackHost) Failed() bool { return h.Failures > 0 || h.Unreachable > 0 || h.RolledBack }

// ReadCallbackResults reads the callback plugin's file: host name -> result.
func ReadCallbackResults(path string) (map[string]CallbackHost, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rf struct {
		Hosts map[string]CallbackHost `json:"hosts"`
	}
	if err := json.Unmarshal(data, &rf); err != nil {
		return nil, fmt.Errorf("results file is not valid JSON: %w", err)
	}
	return rf.Hosts, nil
}

// readResults turns the callback plugin's file into a Result. No file or no host in it means
// nothing ran. A host asked for in limit but absent from the file did not run the play: it is
// reported as failed rather than silently counted as done.
func readResults(path string, limit []string) (Result, error) {
	hosts, err := ReadCallbackResults(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Result{}, errors.New("no results written: nothing ran")
	}
	if err != nil {
		return Result{}, fmt.Errorf("reading results: %w", err)
	}
	if len(hosts) == 0 {
		return Result{}, errors.New("no host in the results: nothing ran (inventory empty, or the limit matched no host?)")
	}
	res := Result{Hosts: make(map[string]HostResult, len(hosts))}
	for name, h := range hosts {
		res.Hosts[name] = HostResult{
			Host:        name,
			OK:          !h.Failed(),
			Changed:     h.ConfigChanged,
			Reloaded:    h.Reloaded,
			Runtime:     h.RuntimeUpdated,
			RolledBack:  h.RolledBack,
			Unreachable: h.Unreachable > 0,
			Message:     h.Msg,
		}
	}
	for _, name := range limit {
		if _, ok := res.Hosts[name]; !ok {
			res.Hosts[name] = HostResult{Host: name, Message: "no result: the play did not run on this host"}
		}
	}
	return res, nil
}

// exitMeaning explains ansible-playbook's exit codes.
func exitMeaning(rc int) string {
	switch rc {
	case 0:
		return "success"
	case execute.AnsiblePlaybookErrorCodeGeneralError:
		return "general error"
	case execute.AnsiblePlaybookErrorCodeOneOrMoreHostFailed:
		return "one or more hosts failed"
	case execute.AnsiblePlaybookErrorCodeOneOrMoreHostUnreachable:
		return "one or more hosts unreachable"
	case execute.AnsiblePlaybookErrorCodeParserError:
		return "parser error"
	case execute.AnsiblePlaybookErrorCodeBadOrIncompleteOptions:
		return "bad or incomplete options"
	case execute.AnsiblePlaybookErrorCodeUserInterruptedExecution:
		return "interrupted"
	case -1:
		return "killed"
	default:
		return "unexpected error"
	}
}

// firstError returns ansible's first "ERROR!" line, shortened, to say why nothing ran. Such
// lines name files and options; the vars are never echoed there because ansible-playbook only
// gets their path.
func firstError(outputs ...string) string {
	for _, out := range outputs {
		for _, line := range strings.Split(out, "\n") {
			if i := strings.Index(line, "ERROR!"); i >= 0 {
				msg := strings.TrimSpace(line[i:])
				if len(msg) > 300 {
					msg = msg[:300] + "..."
				}
				return ": " + msg
			}
		}
	}
	return ""
}

// writePrivate creates path (which must not exist) readable by its owner only.
func writePrivate(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// shellQuote quotes s for the shlex splitting ansible applies to ssh arguments.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.dropped += over
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return fmt.Sprintf("[%d bytes dropped]\n%s", b.dropped, bytes.TrimLeft(b.buf, "\n"))
	}
	return string(b.buf)
}
