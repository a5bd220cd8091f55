package config

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func TestParseDefaultsFlagsAndEnv(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(*Config)
	}{
		{
			name: "defaults",
			want: func(c *Config) {},
		},
		{
			name: "env fills flags not given",
			env: map[string]string{
				"KUBEFTP_SSH_KEY": "/k", "KUBEFTP_COALESCE_WINDOW": "5s", "KUBEFTP_LEADER_ELECT": "false",
				"KUBECONFIG": "/kc", "POD_NAMESPACE": "ns1", "KUBEFTP_RESERVED_PORTS": "22, 10001",
			},
			want: func(c *Config) {
				c.SSHKey, c.CoalesceWindow, c.LeaderElect = "/k", 5*time.Second, false
				c.Kubeconfig, c.Namespace, c.ReservedPorts = "/kc", "ns1", []int{22, 10001}
			},
		},
		{
			name: "flags win over env, KUBEFTP_ over the generic names",
			args: []string{"--ssh-key", "/flag", "--forks", "3"},
			env: map[string]string{
				"KUBEFTP_SSH_KEY": "/env", "KUBEFTP_NAMESPACE": "mine", "POD_NAMESPACE": "pod",
			},
			want: func(c *Config) { c.SSHKey, c.Forks, c.Namespace = "/flag", 3, "mine" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(CommandWatch, tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			want := &Config{
				Command: CommandWatch, DefaultEdgeGroup: "all", NodeAddressType: "InternalIP",
				ReservedPorts: []int{22, 10000}, CoalesceWindow: 2 * time.Second, ResyncPeriod: 10 * time.Minute,
				RetryMaxBackoff: 5 * time.Minute, MetricsAddress: ":9090", HealthAddress: ":8081",
				LeaderElect: true, LeaderElectionID: "kubeftp-edge", StateConfigMap: "kubeftp-edge-state",
				WorkDir: got.WorkDir, Forks: 10, LogLevel: "info", LogFormat: "text",
			}
			tt.want(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	ok := []string{"--inventory", "/i", "--ssh-key", "/k", "--known-hosts", "/kh", "--namespace", "ns"}
	tests := []struct {
		name string
		cmd  Command
		args []string
		want []string // substrings of the error; none = valid
	}{
		{"complete watch", CommandWatch, ok, nil},
		{"missing ssh settings", CommandWatch, []string{"--namespace", "ns"},
			[]string{"--inventory is required", "--ssh-key is required", "--known-hosts is required"}},
		{"namespace needed for the lease", CommandWatch, ok[:6], []string{"--namespace is required"}},
		{"dry run without election needs no namespace", CommandWatch, append(ok[:6:6], "--dry-run", "--leader-elect=false"), nil},
		{"address type", CommandWatch, append(ok, "--node-address-type", "Hostname"), []string{"--node-address-type"}},
		{"selector", CommandWatch, append(ok, "--node-selector", "a in (b"), []string{"--node-selector"}},
		{"default edge address", CommandWatch, append(ok, "--default-edge-address", "10.0.0.1\nbind"), []string{"--default-edge-address"}},
		{"edge group", CommandWatch, append(ok, "--default-edge-group", "{{ x }}"), []string{"--default-edge-group"}},
		{"backoff", CommandWatch, append(ok, "--retry-max-backoff", "10ms"), []string{"--retry-max-backoff"}},
		{"forks", CommandWatch, append(ok, "--forks", "0"), []string{"--forks"}},
		{"log format", CommandWatch, append(ok, "--log-format", "xml"), []string{"--log-format"}},
		{"metrics address", CommandWatch, append(ok, "--metrics-address", "9090"), []string{"--metrics-address"}},
		{"render needs nothing", CommandRender, nil, nil},
		{"render format", CommandRender, []string{"--format", "yaml"}, []string{"--format must be vars or haproxy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(tt.cmd, tt.args, env(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad reserved port", []string{"--reserved-ports", "22,70000"}, nil, "--reserved-ports"},
		{"bad env value names flag and variable", nil, map[string]string{"KUBEFTP_FORMAT": "x", "KUBEFTP_WORK_DIR": "/w", "KUBEFTP_RESERVED_PORTS": "ssh"}, "--reserved-ports"},
		{"stray argument", []string{"extra"}, nil, `unexpected argument "extra"`},
		{"watch flag on render", []string{"--ssh-key", "/k"}, nil, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(CommandRender, tt.args, env(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("retry-max-backoff"); got != "KUBEFTP_RETRY_MAX_BACKOFF" {
		t.Errorf("EnvName = %q", got)
	}
}
