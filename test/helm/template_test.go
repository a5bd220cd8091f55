package helm

import (
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// watcherFlags are the flags `kubeftp-edge watch` accepts; the chart must pass no other.
var watcherFlags = []string{
	"inventory", "ssh-key", "known-hosts", "default-edge-address", "default-edge-group",
	"node-selector", "node-address-type", "coalesce-window", "resync-period", "retry-max-backoff",
	"once", "dry-run", "metrics-address", "health-address", "leader-elect", "namespace",
	"leader-election-id", "state-configmap", "reserved-ports", "work-dir", "forks", "log-level",
	"log-format",
}

// fullValues are the flags that load testdata/full-values.yaml.
func fullValues() []string { return []string{"-f", filepath.Join("testdata", "full-values.yaml")} }

func TestLint(t *testing.T) {
	keys := newSSHFiles(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"defaults", keys.args()},
		{"full", append(fullValues(), keys.args()...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runHelm(t, append([]string{"lint", "--strict", chartDir(t), "--namespace", namespace}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Errorf("helm lint output:\n%s", out)
			}
		})
	}
}

// TestDefaults renders the chart with nothing but the required SSH files.
func TestDefaults(t *testing.T) {
	keys := newSSHFiles(t)
	objs := template(t, keys.args()...)

	wantObjects := []string{
		"ServiceAccount/edge-kubeftp-edge",
		"Secret/edge-kubeftp-edge-ssh",
		"ConfigMap/edge-kubeftp-edge-inventory",
		"ClusterRole/edge-kubeftp-edge",
		"ClusterRole/edge-kubeftp-edge-events",
		"ClusterRoleBinding/edge-kubeftp-edge",
		"ClusterRoleBinding/edge-kubeftp-edge-events",
		"Role/edge-kubeftp-edge",
		"RoleBinding/edge-kubeftp-edge",
		"Service/edge-kubeftp-edge-metrics",
		"Deployment/edge-kubeftp-edge",
		"PodDisruptionBudget/edge-kubeftp-edge",
	}
	got := objs.names()
	slices.Sort(got)
	slices.Sort(wantObjects)
	if diff := cmp.Diff(wantObjects, got); diff != "" {
		t.Errorf("rendered objects (-want +got):\n%s", diff)
	}
	checkLabels(t, objs)

	var d appsv1.Deployment
	objs.decode(t, "Deployment", "edge-kubeftp-edge", &d)
	if got := *d.Spec.Replicas; got != 2 {
		t.Errorf("replicas = %d, want 2", got)
	}
	if diff := cmp.Diff(d.Spec.Selector.MatchLabels, subset(d.Spec.Template.Labels, d.Spec.Selector.MatchLabels)); diff != "" {
		t.Errorf("pod labels do not match the selector (-want +got):\n%s", diff)
	}
	checkHardenedPod(t, d.Spec.Template.Spec)
	c := d.Spec.Template.Spec.Containers[0]
	wantArgs := []string{
		"watch",
		"--inventory=/etc/kubeftp-edge/inventory/inventory.yml",
		"--ssh-key=/etc/kubeftp-edge/ssh/id",
		"--known-hosts=/etc/kubeftp-edge/ssh/known_hosts",
		"--default-edge-group=all",
		"--node-address-type=InternalIP",
		"--coalesce-window=2s",
		"--resync-period=10m",
		"--retry-max-backoff=5m",
		"--metrics-address=:9090",
		"--health-address=:8081",
		"--leader-elect=true",
		"--leader-election-id=edge-kubeftp-edge",
		"--state-configmap=edge-kubeftp-edge-state",
		"--reserved-ports=22,10000",
		"--work-dir=/var/lib/kubeftp-edge",
		"--forks=10",
		"--log-level=info",
		"--log-format=json",
	}
	if diff := cmp.Diff(wantArgs, c.Args); diff != "" {
		t.Errorf("watcher args (-want +got):\n%s", diff)
	}
	if c.Image != "ghcr.io/kubeftp/kubeftp-edge:0.1.0" {
		t.Errorf("image = %q, want the appVersion tag", c.Image)
	}
	checkWatcherWiring(t, d)

	var sa corev1.ServiceAccount
	objs.decode(t, "ServiceAccount", "edge-kubeftp-edge", &sa)
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Error("ServiceAccount automounts its token; only the watcher pod should ask for it")
	}

	var pdb policyv1.PodDisruptionBudget
	objs.decode(t, "PodDisruptionBudget", "edge-kubeftp-edge", &pdb)
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PDB maxUnavailable = %v, want 1", pdb.Spec.MaxUnavailable)
	}
	if diff := cmp.Diff(d.Spec.Selector, pdb.Spec.Selector); diff != "" {
		t.Errorf("PDB selector differs from the Deployment's (-want +got):\n%s", diff)
	}

	var metrics corev1.Service
	objs.decode(t, "Service", "edge-kubeftp-edge-metrics", &metrics)
	if diff := cmp.Diff(d.Spec.Selector.MatchLabels, metrics.Spec.Selector); diff != "" {
		t.Errorf("metrics Service selector (-want +got):\n%s", diff)
	}
	if len(metrics.Spec.Ports) != 1 || metrics.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("metrics Service ports = %+v, want one to the port named metrics", metrics.Spec.Ports)
	}

	checkRBAC(t, objs, "edge-kubeftp-edge-state", "edge-kubeftp-edge")
	var crb rbacv1.ClusterRoleBinding
	objs.decode(t, "ClusterRoleBinding", "edge-kubeftp-edge-events", &crb)
	wantSubjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "edge-kubeftp-edge", Namespace: namespace}}
	if diff := cmp.Diff(wantSubjects, crb.Subjects); diff != "" {
		t.Errorf("events binding subjects (-want +got):\n%s", diff)
	}

	var inv corev1.ConfigMap
	objs.decode(t, "ConfigMap", "edge-kubeftp-edge-inventory", &inv)
	var gotInv any
	if err := yaml.Unmarshal([]byte(inv.Data["inventory.yml"]), &gotInv); err != nil {
		t.Fatalf("inventory is not YAML: %v", err)
	}
	wantInv := map[string]any{"all": map[string]any{"children": map[string]any{"edge": map[string]any{"hosts": map[string]any{}}}}}
	if diff := cmp.Diff(wantInv, gotInv); diff != "" {
		t.Errorf("empty inventory (-want +got):\n%s", diff)
	}
}

// TestFull renders every option of testdata/full-values.yaml.
func TestFull(t *testing.T) {
	keys := newSSHFiles(t)
	objs := template(t, append(fullValues(), keys.args()...)...)
	checkLabels(t, objs)

	var d appsv1.Deployment
	objs.decode(t, "Deployment", "kubeftp-edge", &d)
	checkHardenedPod(t, d.Spec.Template.Spec)
	checkWatcherWiring(t, d)
	c := d.Spec.Template.Spec.Containers[0]
	if want := "registry.example.com/kubeftp/kubeftp-edge@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; c.Image != want {
		t.Errorf("image = %q, want %q", c.Image, want)
	}
	wantArgs := []string{
		"watch",
		"--inventory=/etc/kubeftp-edge/inventory/inventory.yml",
		"--ssh-key=/etc/kubeftp-edge/ssh/id",
		"--known-hosts=/etc/kubeftp-edge/ssh/known_hosts",
		"--default-edge-address=10.213.1.1",
		"--default-edge-group=dmz",
		"--node-selector=node-role.kubernetes.io/ftp=",
		"--node-address-type=ExternalIP",
		"--coalesce-window=500ms",
		"--resync-period=30m",
		"--retry-max-backoff=2m",
		"--metrics-address=:9090",
		"--health-address=:8081",
		"--leader-elect=true",
		"--leader-election-id=edge-leader",
		"--state-configmap=edge-state",
		"--reserved-ports=22,8404,10000",
		"--work-dir=/var/lib/kubeftp-edge",
		"--forks=4",
		"--log-level=debug",
		"--log-format=text",
		"--dry-run",
		"--namespace=kubeftp-full",
	}
	if diff := cmp.Diff(wantArgs, c.Args); diff != "" {
		t.Errorf("watcher args (-want +got):\n%s", diff)
	}
	if got := d.Spec.Template.Annotations["example.com/team"]; got != "edge" {
		t.Errorf("podAnnotations not rendered: %q", got)
	}
	if diff := cmp.Diff([]corev1.LocalObjectReference{{Name: "regcred"}}, d.Spec.Template.Spec.ImagePullSecrets); diff != "" {
		t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
	}

	checkRBAC(t, objs, "edge-state", "edge-leader")
	// Events: only in the listed namespaces, no cluster-wide binding.
	if got := objs.find("ClusterRoleBinding"); len(got) != 1 {
		t.Errorf("ClusterRoleBindings = %v, want only the read-only one", got.names())
	}
	for _, ns := range []string{"ftp-a", "ftp-b"} {
		var rb rbacv1.RoleBinding
		for _, o := range objs.find("RoleBinding") {
			md := o["metadata"].(map[string]any)
			if md["name"] == "kubeftp-edge-events" && md["namespace"] == ns {
				rb.RoleRef.Name = "found"
			}
		}
		if rb.RoleRef.Name != "found" {
			t.Errorf("no events RoleBinding in namespace %s", ns)
		}
	}

	var inv corev1.ConfigMap
	objs.decode(t, "ConfigMap", "kubeftp-edge-inventory", &inv)
	var gotInv any
	if err := yaml.Unmarshal([]byte(inv.Data["inventory.yml"]), &gotInv); err != nil {
		t.Fatalf("inventory is not YAML: %v", err)
	}
	wantInv := map[string]any{"all": map[string]any{"children": map[string]any{"edge": map[string]any{
		"hosts": map[string]any{
			"edge1": map[string]any{"ansible_host": "192.0.2.10", "ansible_user": "deploy", "ansible_port": 2222},
			"edge2": map[string]any{"ansible_host": "edge2.example.net", "ansible_user": "admin", "ansible_port": 22, "haproxy_ftp_maxconn": 4000},
		},
		"vars": map[string]any{"haproxy_ftp_reload_method": "master_socket"},
		"children": map[string]any{
			"dmz":      map[string]any{"hosts": map[string]any{"edge1": map[string]any{}, "edge2": map[string]any{}}},
			"partners": map[string]any{"hosts": map[string]any{"edge2": map[string]any{}}},
		},
	}}}}
	if diff := cmp.Diff(wantInv, gotInv); diff != "" {
		t.Errorf("inventory (-want +got):\n%s", diff)
	}

	var sm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string            `json:"name"`
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			NamespaceSelector struct {
				MatchNames []string `json:"matchNames"`
			} `json:"namespaceSelector"`
			Selector  struct{ MatchLabels map[string]string } `json:"selector"`
			Endpoints []map[string]string                     `json:"endpoints"`
		} `json:"spec"`
	}
	objs.decode(t, "ServiceMonitor", "kubeftp-edge", &sm)
	if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("ServiceMonitor %s labels %v", sm.APIVersion, sm.Metadata.Labels)
	}
	wantEndpoints := []map[string]string{{"port": "metrics", "path": "/metrics", "interval": "15s"}}
	if diff := cmp.Diff(wantEndpoints, sm.Spec.Endpoints); diff != "" {
		t.Errorf("ServiceMonitor endpoints (-want +got):\n%s", diff)
	}
	var metrics corev1.Service
	objs.decode(t, "Service", "kubeftp-edge-metrics", &metrics)
	if diff := cmp.Diff(sm.Spec.Selector.MatchLabels, subset(metrics.Labels, sm.Spec.Selector.MatchLabels)); diff != "" {
		t.Errorf("ServiceMonitor does not select the metrics Service (-want +got):\n%s", diff)
	}

	checkFTPServer(t, objs)
}

func checkFTPServer(t *testing.T, objs objects) {
	t.Helper()
	var svc corev1.Service
	objs.decode(t, "Service", "kubeftp-edge-ftp", &svc)
	if svc.Labels["kubeftp.io/expose"] != "true" {
		t.Errorf("FTP Service labels %v lack kubeftp.io/expose=true", svc.Labels)
	}
	wantAnn := map[string]string{
		"kubeftp.io/edge-address":   "10.213.1.1",
		"kubeftp.io/edge-group":     "dmz",
		"kubeftp.io/timeout-client": "30m",
	}
	if diff := cmp.Diff(wantAnn, svc.Annotations); diff != "" {
		t.Errorf("FTP Service annotations (-want +got):\n%s", diff)
	}
	if svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("FTP Service type %s policy %s", svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
	}
	if len(svc.Spec.Ports) != 12 {
		t.Fatalf("FTP Service has %d ports, want control + 11 passive", len(svc.Spec.Ports))
	}
	ctrl := svc.Spec.Ports[0]
	if ctrl.Name != "ftp" || ctrl.Port != 21 || ctrl.NodePort != 30021 || ctrl.TargetPort.String() != "ftp" {
		t.Errorf("control port = %+v, want ftp 21 -> nodePort 30021", ctrl)
	}
	// Order-preserving: every passive nodePort is port + the same offset, in order.
	for i, p := range svc.Spec.Ports[1:] {
		port := int32(21100 + i)
		if p.Name != "pasv-"+itoa(port) || p.Port != port || p.TargetPort.IntValue() != int(port) || p.NodePort != port+11000 {
			t.Errorf("passive port %d = %+v, want pasv-%d %d -> nodePort %d", i, p, port, port, port+11000)
		}
	}

	var d appsv1.Deployment
	objs.decode(t, "Deployment", "kubeftp-edge-ftp", &d)
	if diff := cmp.Diff(svc.Spec.Selector, subset(d.Spec.Template.Labels, svc.Spec.Selector)); diff != "" {
		t.Errorf("FTP Service does not select the FTP pods (-want +got):\n%s", diff)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("FTP strategy = %s, want Recreate", d.Spec.Strategy.Type)
	}
	var watcher appsv1.Deployment
	objs.decode(t, "Deployment", "kubeftp-edge", &watcher)
	if cmp.Equal(watcher.Spec.Selector.MatchLabels, subset(d.Spec.Template.Labels, watcher.Spec.Selector.MatchLabels)) {
		t.Error("the watcher's selector matches the FTP server's pods")
	}
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("FTP container securityContext %+v: want no privilege escalation, drop ALL", sc)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("FTP pod automounts a ServiceAccount token it never uses")
	}
	var ports []int32
	for _, p := range c.Ports {
		ports = append(ports, p.ContainerPort)
	}
	if len(ports) != 12 || ports[0] != 21 || ports[1] != 21100 || ports[11] != 21110 {
		t.Errorf("FTP container ports = %v", ports)
	}
	wantClaim := map[string]string{}
	for _, v := range pod.Volumes {
		if v.PersistentVolumeClaim != nil {
			wantClaim[v.Name] = v.PersistentVolumeClaim.ClaimName
		}
	}
	if diff := cmp.Diff(map[string]string{"data": "kubeftp-edge-ftp-data"}, wantClaim); diff != "" {
		t.Errorf("FTP volumes from claims (-want +got):\n%s", diff)
	}
	var pvc corev1.PersistentVolumeClaim
	objs.decode(t, "PersistentVolumeClaim", "kubeftp-edge-ftp-data", &pvc)
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "fast" ||
		pvc.Spec.Resources.Requests.Storage().String() != "20Gi" {
		t.Errorf("PVC spec = %+v", pvc.Spec)
	}

	var cm corev1.ConfigMap
	objs.decode(t, "ConfigMap", "kubeftp-edge-ftp", &cm)
	conf := cm.Data["vsftpd.conf"]
	for _, line := range []string{"listen_port=21", "pasv_min_port=21100", "pasv_max_port=21110",
		"pasv_address=10.213.1.1", "port_enable=NO", "anonymous_enable=NO", "pam_service_name=vsftpd", "max_clients=50"} {
		if !slices.Contains(strings.Split(conf, "\n"), line) {
			t.Errorf("vsftpd.conf lacks %q:\n%s", line, conf)
		}
	}
	var secret corev1.Secret
	objs.decode(t, "Secret", "kubeftp-edge-ftp-credentials", &secret)
	if string(secret.Data["username"]) != "alice" || string(secret.Data["password"]) != "s3cret-pass" {
		t.Errorf("credentials Secret = %q", secret.Data)
	}
}

// TestFTPServerWithoutPersistence: a disabled volume is an emptyDir, and no claim is rendered.
func TestFTPServerWithoutPersistence(t *testing.T) {
	keys := newSSHFiles(t)
	objs := template(t, append(keys.args(), "--set", "ftpServer.enabled=true",
		"--set", "ftpServer.edgeAddress=192.0.2.1", "--set", "ftpServer.credentials.password=pw",
		"--set", "ftpServer.service.controlNodePort=30000", "--set", "ftpServer.passivePorts.min=30000",
		"--set", "ftpServer.passivePorts.max=30002", "--set", "ftpServer.service.passiveNodePortOffset=1",
		"--set", "ftpServer.controlPort=2121")...)
	if got := objs.find("PersistentVolumeClaim"); len(got) != 0 {
		t.Errorf("claims rendered with persistence disabled: %v", got.names())
	}
	var d appsv1.Deployment
	objs.decode(t, "Deployment", "edge-kubeftp-edge-ftp", &d)
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "data" && v.EmptyDir == nil {
			t.Errorf("data volume = %+v, want an emptyDir", v.VolumeSource)
		}
	}
	var svc corev1.Service
	objs.decode(t, "Service", "edge-kubeftp-edge-ftp", &svc)
	var got []string
	for _, p := range svc.Spec.Ports {
		got = append(got, p.Name+":"+itoa(p.Port)+"->"+itoa(p.NodePort))
	}
	want := []string{"ftp:2121->30000", "pasv-30000:30000->30001", "pasv-30001:30001->30002", "pasv-30002:30002->30003"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("FTP Service ports (-want +got):\n%s", diff)
	}
}

// TestChecksums: the pods roll when the inventory or the SSH Secret changes, and only then.
func TestChecksums(t *testing.T) {
	keys := newSSHFiles(t)
	otherKeys := newSSHFiles(t)
	host := []string{"--set", "edge.hosts[0].name=edge1", "--set", "edge.hosts[0].address=192.0.2.10"}
	annotations := func(args ...string) map[string]string {
		var d appsv1.Deployment
		template(t, args...).decode(t, "Deployment", "edge-kubeftp-edge", &d)
		a := d.Spec.Template.Annotations
		for _, k := range []string{"checksum/inventory", "checksum/ssh"} {
			if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(a[k]) {
				t.Fatalf("%s = %q, want a sha256", k, a[k])
			}
		}
		return a
	}
	base := annotations(append(keys.args(), host...)...)
	for _, tc := range []struct {
		name                   string
		args                   []string
		wantInventory, wantSSH bool // whether each checksum changes
	}{
		{"same values", append(keys.args(), host...), false, false},
		{"other host address", append(keys.args(), "--set", "edge.hosts[0].name=edge1", "--set", "edge.hosts[0].address=192.0.2.11"), true, false},
		{"edge var", append(append(keys.args(), host...), "--set", "edge.vars.haproxy_ftp_maxconn=10"), true, false},
		{"other key", append(otherKeys.args(), host...), false, true},
		{"unrelated value", append(append(keys.args(), host...), "--set", "watcher.forks=3"), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := annotations(tc.args...)
			if changed := got["checksum/inventory"] != base["checksum/inventory"]; changed != tc.wantInventory {
				t.Errorf("checksum/inventory changed = %v, want %v", changed, tc.wantInventory)
			}
			if changed := got["checksum/ssh"] != base["checksum/ssh"]; changed != tc.wantSSH {
				t.Errorf("checksum/ssh changed = %v, want %v", changed, tc.wantSSH)
			}
		})
	}
}

// TestExistingSecret: no Secret is rendered and the pod mounts the named one with its keys.
func TestExistingSecret(t *testing.T) {
	objs := template(t, "--set", "ssh.existingSecret=edge-ssh", "--set", "ssh.privateKeyKey=key",
		"--set", "ssh.knownHostsKey=hosts")
	if got := objs.find("Secret"); len(got) != 0 {
		t.Errorf("Secrets rendered with ssh.existingSecret: %v", got.names())
	}
	var d appsv1.Deployment
	objs.decode(t, "Deployment", "edge-kubeftp-edge", &d)
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name != "ssh" {
			continue
		}
		want := &corev1.SecretVolumeSource{SecretName: "edge-ssh", DefaultMode: ptr(int32(0o440)),
			Items: []corev1.KeyToPath{{Key: "key", Path: "id"}, {Key: "hosts", Path: "known_hosts"}}}
		if diff := cmp.Diff(want, v.Secret); diff != "" {
			t.Errorf("ssh volume (-want +got):\n%s", diff)
		}
	}
}

// checkHardenedPod checks the pod and every container against the chart's hardening rules.
func checkHardenedPod(t *testing.T, pod corev1.PodSpec) {
	t.Helper()
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
		psc.RunAsGroup == nil || *psc.RunAsGroup != 65532 || psc.FSGroup == nil || *psc.FSGroup != 65532 {
		t.Errorf("pod securityContext = %+v, want runAsNonRoot, UID/GID/fsGroup 65532", psc)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccompProfile is not RuntimeDefault")
	}
	if pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
		t.Error("the watcher pod needs its ServiceAccount token")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	want := &corev1.SecurityContext{
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		Privileged:               ptr(false),
		RunAsNonRoot:             ptr(true),
		ReadOnlyRootFilesystem:   ptr(true),
		AllowPrivilegeEscalation: ptr(false),
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if diff := cmp.Diff(want, sc); diff != "" {
		t.Errorf("container securityContext (-want +got):\n%s", diff)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "health" {
			t.Errorf("%s probe = %+v, want GET %s on port health", p.name, p.probe, p.path)
			continue
		}
		if p.probe.PeriodSeconds < 1 || p.probe.FailureThreshold < 1 {
			t.Errorf("%s probe timings %+v", p.name, p.probe)
		}
	}
	var health, metrics int32
	for _, p := range c.Ports {
		switch p.Name {
		case "health":
			health = p.ContainerPort
		case "metrics":
			metrics = p.ContainerPort
		}
	}
	if health != 8081 || metrics != 9090 {
		t.Errorf("container ports health=%d metrics=%d, want 8081 and 9090", health, metrics)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want a CPU request and a memory limit", c.Resources)
	}
	if pod.Affinity == nil || pod.Affinity.PodAntiAffinity == nil ||
		len(pod.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		len(pod.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Errorf("affinity = %+v, want one soft anti-affinity term", pod.Affinity)
	}
	if len(pod.TopologySpreadConstraints) != 1 || pod.TopologySpreadConstraints[0].WhenUnsatisfiable != corev1.ScheduleAnyway {
		t.Errorf("topologySpreadConstraints = %+v, want one soft constraint", pod.TopologySpreadConstraints)
	}
}

// checkWatcherWiring checks that flags, environment and volumes fit together: every flag is one
// the watcher knows, files named by flags come from the right volumes, and everything written
// at run time lands on an emptyDir.
func checkWatcherWiring(t *testing.T, d appsv1.Deployment) {
	t.Helper()
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	flags := map[string]string{}
	for _, a := range c.Args[1:] {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !slices.Contains(watcherFlags, name) {
			t.Errorf("argument %q is not a flag of kubeftp-edge watch", a)
		}
		flags[name] = value
	}
	if c.Args[0] != "watch" {
		t.Errorf("first argument %q, want the watch subcommand", c.Args[0])
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	// mountFor returns the mount holding path and its volume.
	mountFor := func(path string) (corev1.VolumeMount, corev1.Volume) {
		for _, m := range c.VolumeMounts {
			if path == m.MountPath || strings.HasPrefix(path, m.MountPath+"/") {
				return m, volumes[m.Name]
			}
		}
		t.Errorf("%s is on no volume: the root filesystem is read-only", path)
		return corev1.VolumeMount{}, corev1.Volume{}
	}
	for flag, item := range map[string]string{"ssh-key": "id", "known-hosts": "known_hosts"} {
		m, v := mountFor(flags[flag])
		if v.Secret == nil || !m.ReadOnly || strings.TrimPrefix(flags[flag], m.MountPath+"/") != item {
			t.Errorf("--%s=%s: mount %+v volume %+v, want the read-only Secret item %s", flag, flags[flag], m, v, item)
			continue
		}
		if *v.Secret.DefaultMode != 0o440 {
			t.Errorf("ssh Secret mode %#o, want 0440 (root-owned, fsGroup-readable)", *v.Secret.DefaultMode)
		}
	}
	if m, v := mountFor(flags["inventory"]); v.ConfigMap == nil || !m.ReadOnly {
		t.Errorf("--inventory: mount %+v volume %+v, want the read-only inventory ConfigMap", m, v)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["POD_NAMESPACE"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("POD_NAMESPACE = %+v, want the downward API metadata.namespace", e)
	}
	writable := []string{flags["work-dir"]}
	for _, name := range []string{"HOME", "TMPDIR", "ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP", "ANSIBLE_SSH_CONTROL_PATH_DIR"} {
		if env[name].Value == "" {
			t.Errorf("%s is not set", name)
		}
		writable = append(writable, env[name].Value)
	}
	for _, path := range writable {
		if m, v := mountFor(path); v.EmptyDir == nil || m.ReadOnly {
			t.Errorf("%s: mount %+v volume %+v, want a writable emptyDir", path, m, v)
		}
	}
	for _, k := range []string{"checksum/inventory", "checksum/ssh"} {
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(d.Spec.Template.Annotations[k]) {
			t.Errorf("pod annotation %s = %q, want a sha256", k, d.Spec.Template.Annotations[k])
		}
	}
}

// checkRBAC checks the exact rules: read-only cluster-wide, create/patch Events, and only the
// named ConfigMap and Lease in the release namespace. Nothing may touch Secrets.
func checkRBAC(t *testing.T, objs objects, configMap, lease string) {
	t.Helper()
	for _, o := range append(objs.find("ClusterRole"), objs.find("Role")...) {
		var r rbacv1.ClusterRole
		objs.decode(t, o.kind(), o.name(), &r)
		for _, rule := range r.Rules {
			for _, s := range append(append(rule.Resources, rule.Verbs...), rule.APIGroups...) {
				if s == "*" || s == "secrets" {
					t.Errorf("%s/%s grants %q: %+v", o.kind(), o.name(), s, rule)
				}
			}
		}
	}
	fullname := objs.find("Deployment")[0].name()
	var read rbacv1.ClusterRole
	objs.decode(t, "ClusterRole", fullname, &read)
	wantRead := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "services"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
	}
	if diff := cmp.Diff(wantRead, read.Rules); diff != "" {
		t.Errorf("read ClusterRole rules (-want +got):\n%s", diff)
	}
	var events rbacv1.ClusterRole
	objs.decode(t, "ClusterRole", fullname+"-events", &events)
	wantEvents := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}}}
	if diff := cmp.Diff(wantEvents, events.Rules); diff != "" {
		t.Errorf("events ClusterRole rules (-want +got):\n%s", diff)
	}
	var role rbacv1.Role
	objs.decode(t, "Role", fullname, &role)
	wantRole := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{configMap}, Verbs: []string{"get", "update", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{lease}, Verbs: []string{"get", "update", "patch"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
	}
	if diff := cmp.Diff(wantRole, role.Rules); diff != "" {
		t.Errorf("Role rules (-want +got):\n%s", diff)
	}
	if role.Namespace != namespace {
		t.Errorf("Role namespace = %q, want %q", role.Namespace, namespace)
	}
}

// checkLabels: every object carries the chart's common labels.
func checkLabels(t *testing.T, objs objects) {
	t.Helper()
	for _, o := range objs {
		md, _ := o["metadata"].(map[string]any)
		labels, _ := md["labels"].(map[string]any)
		want := map[string]any{
			"app.kubernetes.io/name":       "kubeftp-edge",
			"app.kubernetes.io/instance":   release,
			"app.kubernetes.io/managed-by": "Helm",
			"app.kubernetes.io/part-of":    "kubeftp-edge",
			"app.kubernetes.io/version":    "0.1.0",
			"helm.sh/chart":                "kubeftp-edge-0.1.0",
		}
		got := map[string]any{}
		for k := range want {
			if v, ok := labels[k]; ok {
				got[k] = v
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s/%s labels (-want +got):\n%s", o.kind(), o.name(), diff)
		}
	}
}

// subset returns the entries of m whose keys are in keys.
func subset(m, keys map[string]string) map[string]string {
	r := map[string]string{}
	for k := range keys {
		if v, ok := m[k]; ok {
			r[k] = v
		}
	}
	return r
}

func ptr[T any](v T) *T { return &v }

func itoa(i int32) string { return strconv.Itoa(int(i)) }
