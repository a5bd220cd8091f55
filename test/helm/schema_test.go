package helm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRejects: every rule of values.schema.json (and the cross-field checks in the templates)
// turns bad values into a clear error. Each case starts from values that render, so the error
// comes from the one value the case changes.
func TestRejects(t *testing.T) {
	keys := newSSHFiles(t)
	ftp := []string{"--set", "ftpServer.enabled=true", "--set", "ftpServer.edgeAddress=192.0.2.1",
		"--set", "ftpServer.credentials.password=pw"}
	host := []string{"--set", "edge.hosts[0].name=edge1", "--set", "edge.hosts[0].address=192.0.2.10"}
	// helm applies --set-file after --set: the SSH cases replace the files instead.
	setFile := func(key, content string) []string {
		file := filepath.Join(t.TempDir(), "value")
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"--set-file", key + "=" + file}
	}
	base := append(append(append([]string{}, keys.args()...), ftp...), host...)
	if _, err := runHelm(t, append([]string{"template", release, chartDir(t)}, base...)...); err != nil {
		t.Fatalf("the base values of the cases do not render: %v", err)
	}

	for _, tc := range []struct {
		name string
		args []string
		// wantErr: fragments of helm's error, naming the value and the rule.
		wantErr []string
	}{
		{"missing known_hosts", setFile("ssh.knownHosts", ""), []string{"ssh.knownHosts", "greater than or equal to 1"}},
		{"missing private key", setFile("ssh.privateKey", ""), []string{"ssh.privateKey", "greater than or equal to 1"}},
		{"known_hosts without a host key", setFile("ssh.knownHosts", "edge1 not-a-key\n"), []string{"ssh.knownHosts"}},
		{"public key as private key", setFile("ssh.privateKey", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc edge@example\n"), []string{"ssh.privateKey"}},
		{"replicas as a string", []string{"--set-string", "replicaCount=2"}, []string{"replicaCount", "Invalid type. Expected: integer, given: string"}},
		{"zero replicas", []string{"--set", "replicaCount=0"}, []string{"replicaCount", "greater than or equal to 1"}},
		{"unknown key", []string{"--set", "replicas=2"}, []string{"replicas", "Additional property replicas is not allowed"}},
		{"edge port out of range", []string{"--set", "edge.port=70000"}, []string{"edge.port", "less than or equal to 65535"}},
		{"edge host port zero", []string{"--set", "edge.hosts[0].port=0"}, []string{"edge.hosts.0.port", "greater than or equal to 1"}},
		{"edge host without address", []string{"--set", "edge.hosts[1].name=edge2"}, []string{"edge.hosts.1", "address is required"}},
		{"edge host bad address", []string{"--set", "edge.hosts[0].address=edge 1;rm"}, []string{"edge.hosts.0.address"}},
		{"edge host bad name", []string{"--set", "edge.hosts[0].name=-edge"}, []string{"edge.hosts.0.name"}},
		{"reserved group name", []string{"--set", "edge.hosts[0].groups[0]=all"}, []string{"edge.hosts.0.groups.0"}},
		{"group name with a dash", []string{"--set", "edge.hosts[0].groups[0]=dmz-1"}, []string{"edge.hosts.0.groups.0"}},
		{"bad Ansible var name", []string{"--set", "edge.vars.bad-name=1"}, []string{"edge.vars"}},
		{"duplicate edge host", []string{"--set", "edge.hosts[1].name=edge1", "--set", "edge.hosts[1].address=192.0.2.11"}, []string{`host "edge1" is listed twice`}},
		{"node address type", []string{"--set", "watcher.nodeAddressType=Hostname"}, []string{"watcher.nodeAddressType", "must be one of"}},
		{"duration", []string{"--set", "watcher.coalesceWindow=soon"}, []string{"watcher.coalesceWindow", "Does not match pattern"}},
		{"log format", []string{"--set", "watcher.logFormat=xml"}, []string{"watcher.logFormat", "must be one of"}},
		{"default edge address", []string{"--set", "watcher.defaultEdgeAddress=edge.example.com"}, []string{"watcher.defaultEdgeAddress"}},
		{"reserved port", []string{"--set", "watcher.reservedPorts[0]=0"}, []string{"watcher.reservedPorts.0", "greater than or equal to 1"}},
		{"extra arg not a flag", []string{"--set", "watcher.extraArgs[0]=rm -rf"}, []string{"watcher.extraArgs.0"}},
		{"root UID", []string{"--set", "runAsUser=0"}, []string{"runAsUser", "greater than or equal to 1"}},
		{"replicas without leader election", []string{"--set", "watcher.leaderElection.enabled=false"}, []string{"needs watcher.leaderElection.enabled"}},
		{"digest", []string{"--set", "image.digest=latest"}, []string{"image.digest"}},
		{"pull policy", []string{"--set", "image.pullPolicy=Sometimes"}, []string{"image.pullPolicy", "must be one of"}},
		{"ServiceMonitor without Service", []string{"--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"}, []string{"metrics.serviceMonitor.enabled needs metrics.service.enabled"}},
		{"FTP without edge address", []string{"--set", "ftpServer.edgeAddress="}, []string{"ftpServer.edgeAddress", "greater than or equal to 1"}},
		{"FTP IPv6 edge address", []string{"--set", "ftpServer.edgeAddress=2001:db8::1"}, []string{"ftpServer.edgeAddress"}},
		{"FTP without password", []string{"--set", "ftpServer.credentials.password="}, []string{"ftpServer.credentials.password", "greater than or equal to 1"}},
		{"FTP user name", []string{"--set", "ftpServer.credentials.username=Root:0"}, []string{"ftpServer.credentials.username"}},
		{"passive port below 1024", []string{"--set", "ftpServer.passivePorts.min=21"}, []string{"ftpServer.passivePorts.min", "greater than or equal to 1024"}},
		{"passive min above max", []string{"--set", "ftpServer.passivePorts.min=21200"}, []string{"min 21200 is above max 21110"}},
		{"passive range too large", []string{"--set", "ftpServer.passivePorts.max=22000"}, []string{"more than 500 ports"}},
		{"passive NodePort beyond 65535", []string{"--set", "ftpServer.service.passiveNodePortOffset=50000"}, []string{"is above 65535"}},
		{"control NodePort among passive NodePorts", []string{"--set", "ftpServer.service.controlNodePort=32105"}, []string{"controlNodePort 32105 is one of the passive NodePorts"}},
		{"control port in passive range", []string{"--set", "ftpServer.controlPort=21105"}, []string{"controlPort 21105 is inside the passive range"}},
		{"service type", []string{"--set", "ftpServer.service.type=ClusterIP"}, []string{"ftpServer.service.type", "must be one of"}},
		{"traffic policy", []string{"--set", "ftpServer.service.externalTrafficPolicy=Nearest"}, []string{"ftpServer.service.externalTrafficPolicy"}},
		{"extraConfig overrides the chart", []string{"--set", "ftpServer.extraConfig.pasv_address=192.0.2.99"}, []string{"pasv_address is set by the chart"}},
		{"extraConfig boolean", []string{"--set", "ftpServer.extraConfig.ssl_enable=true"}, []string{"ftpServer.extraConfig.ssl_enable", "Invalid type"}},
		{"extraConfig newline", []string{"--set-json", `ftpServer.extraConfig={"banner":"hi\nlisten_port=99"}`}, []string{"ftpServer.extraConfig.banner", "Does not match pattern"}},
		{"persistence size", []string{"--set", "ftpServer.persistence.data.size=lots"}, []string{"ftpServer.persistence.data.size"}},
		{"persistence mount path", []string{"--set", "ftpServer.persistence.data.mountPath=srv"}, []string{"ftpServer.persistence.data.mountPath"}},
		{"two FTP replicas on ReadWriteOnce", []string{"--set", "ftpServer.replicaCount=2", "--set", "ftpServer.persistence.data.enabled=true"}, []string{"needs ReadWriteMany for ftpServer.persistence.data"}},
		{"event namespace", []string{"--set", "rbac.eventNamespaces[0]=Not_A_Namespace"}, []string{"rbac.eventNamespaces.0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", release, chartDir(t)}, base...)
			out, err := runHelm(t, append(args, tc.args...)...)
			if err == nil {
				t.Fatalf("helm template accepted the values; rendered %d bytes", len(out))
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
		})
	}
}
