package helm

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubeftp/kubeftp-edge/lab/kube"
)

// TestAPIServer creates the rendered chart (defaults, and full values) in a real kube-apiserver
// with RBAC authorization, then checks what the watcher's ServiceAccount may and may not do.
func TestAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	keys := newSSHFiles(t)
	cluster, err := kube.Start(t.Context(), kube.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Stop)
	kubectl, must := kubectlFor(t, cluster.Kubeconfig)

	const fullNS, runNS = "kubeftp-full", "kubeftp-run"
	for _, ns := range []string{namespace, fullNS, runNS, "ftp-a", "ftp-b", "other"} {
		must("create", "namespace", ns)
	}
	must("apply", "-f", filepath.Join("testdata", "servicemonitor-crd.yaml"))
	must("wait", "--for=condition=established", "--timeout=30s", "crd/servicemonitors.monitoring.coreos.com")

	installChart(t, namespace, must, keys.args()...)
	installChart(t, fullNS, must, append(fullValues(), keys.args()...)...)

	// The FTP Service as the API server stored it: explicit NodePorts are kept exactly.
	ports := must("-n", fullNS, "get", "service", "kubeftp-edge-ftp", "-o",
		`jsonpath={range .spec.ports[*]}{.name}:{.port}:{.nodePort} {end}`)
	wantPorts := "ftp:21:30021"
	for p := 21100; p <= 21110; p++ {
		wantPorts += fmt.Sprintf(" pasv-%d:%d:%d", p, p, p+11000)
	}
	if strings.TrimSpace(ports) != wantPorts {
		t.Errorf("FTP Service ports = %q, want %q", ports, wantPorts)
	}

	type check struct {
		verb, resource, ns string // ns "" = cluster-wide (or every namespace)
		want               bool
	}
	canI := func(t *testing.T, ns, sa string, checks []check) {
		t.Helper()
		user := "system:serviceaccount:" + ns + ":" + sa
		for _, c := range checks {
			args := []string{"auth", "can-i", c.verb, c.resource, "--as", user,
				// The groups the API server gives every ServiceAccount token, so that default
				// bindings (system:basic-user, system:discovery, ...) count too.
				"--as-group", "system:serviceaccounts", "--as-group", "system:serviceaccounts:" + ns,
				"--as-group", "system:authenticated"}
			if c.ns == "" {
				args = append(args, "--all-namespaces")
			} else {
				args = append(args, "--namespace", c.ns)
			}
			out, err := kubectl(args...)
			got := strings.TrimSpace(out)
			if got != "yes" && got != "no" {
				t.Errorf("can-i %s %s: %v", c.verb, c.resource, err)
				continue
			}
			if (got == "yes") != c.want {
				t.Errorf("%s: can-i %s %s in %q = %s, want %v", user, c.verb, c.resource, c.ns, got, c.want)
			}
		}
	}

	t.Run("defaults", func(t *testing.T) {
		const sa, cm, lease = "edge-kubeftp-edge", "edge-kubeftp-edge-state", "edge-kubeftp-edge"
		canI(t, namespace, sa, []check{
			// What the informers need.
			{"list", "nodes", "", true},
			{"watch", "nodes", "", true},
			{"list", "services", "", true},
			{"watch", "services", "", true},
			{"list", "endpointslices.discovery.k8s.io", "", true},
			{"watch", "endpointslices.discovery.k8s.io", "", true},
			// Events on Services in any namespace.
			{"create", "events", "ftp-a", true},
			{"patch", "events", "other", true},
			{"create", "events", namespace, true},
			// Its state ConfigMap and Lease, by name.
			{"get", "configmaps/" + cm, namespace, true},
			{"update", "configmaps/" + cm, namespace, true},
			{"patch", "configmaps/" + cm, namespace, true},
			{"create", "configmaps", namespace, true},
			{"get", "leases.coordination.k8s.io/" + lease, namespace, true},
			{"update", "leases.coordination.k8s.io/" + lease, namespace, true},
			{"create", "leases.coordination.k8s.io", namespace, true},
			// No Secrets at all.
			{"get", "secrets/edge-kubeftp-edge-ssh", namespace, false},
			{"list", "secrets", namespace, false},
			{"watch", "secrets", namespace, false},
			{"list", "secrets", "", false},
			// Nothing deleted, nothing written that it only reads.
			{"delete", "configmaps/" + cm, namespace, false},
			{"delete", "leases.coordination.k8s.io/" + lease, namespace, false},
			{"delete", "services", "ftp-a", false},
			{"delete", "nodes", "", false},
			{"delete", "events", "ftp-a", false},
			{"deletecollection", "configmaps", namespace, false},
			{"update", "services", "ftp-a", false},
			{"patch", "nodes", "", false},
			{"update", "endpointslices.discovery.k8s.io", "ftp-a", false},
			{"create", "pods", namespace, false},
			{"get", "events", "ftp-a", false},
			// No other ConfigMap or Lease, in its namespace or another.
			{"get", "configmaps/edge-kubeftp-edge-inventory", namespace, false},
			{"update", "configmaps/edge-kubeftp-edge-inventory", namespace, false},
			{"list", "configmaps", namespace, false},
			{"get", "configmaps/" + cm, "other", false},
			{"update", "configmaps/" + cm, "other", false},
			{"create", "configmaps", "other", false},
			{"update", "leases.coordination.k8s.io/other", namespace, false},
			{"get", "leases.coordination.k8s.io/" + lease, "kube-system", false},
			// No way around RBAC.
			{"impersonate", "serviceaccounts", "", false},
			{"escalate", "roles.rbac.authorization.k8s.io", namespace, false},
			{"bind", "clusterroles.rbac.authorization.k8s.io", "", false},
		})
	})

	t.Run("full values", func(t *testing.T) {
		const sa = "kubeftp-edge"
		canI(t, fullNS, sa, []check{
			{"create", "events", "ftp-a", true},
			{"patch", "events", "ftp-b", true},
			{"create", "events", "other", false},
			{"create", "events", fullNS, false},
			{"get", "configmaps/edge-state", fullNS, true},
			{"update", "leases.coordination.k8s.io/edge-leader", fullNS, true},
			{"get", "configmaps/kubeftp-edge-state", fullNS, false},
			{"update", "leases.coordination.k8s.io/kubeftp-edge", fullNS, false},
			{"get", "configmaps/edge-kubeftp-edge-state", namespace, false},
			{"get", "secrets/kubeftp-edge-ftp-credentials", fullNS, false},
		})
	})

	// The same rules through real requests, as the watcher makes them.
	t.Run("requests", func(t *testing.T) {
		as := []string{"--as", "system:serviceaccount:" + namespace + ":edge-kubeftp-edge",
			"--as-group", "system:serviceaccounts", "--as-group", "system:authenticated", "-n", namespace}
		run := func(args ...string) error { _, err := kubectl(append(args, as...)...); return err }
		for _, step := range [][]string{
			{"create", "configmap", "edge-kubeftp-edge-state", "--from-literal=state={}"},
			{"get", "configmap", "edge-kubeftp-edge-state"},
			{"annotate", "configmap", "edge-kubeftp-edge-state", "kubeftp.io/applied=1"},
			{"get", "nodes"},
			{"get", "services", "--all-namespaces"},
		} {
			if err := run(step...); err != nil {
				t.Errorf("as the watcher: %v", err)
			}
		}
		for _, step := range [][]string{
			{"get", "secret", "edge-kubeftp-edge-ssh"},
			{"get", "configmap", "edge-kubeftp-edge-inventory"},
			{"delete", "configmap", "edge-kubeftp-edge-state"},
		} {
			err := run(step...)
			if err == nil || !strings.Contains(err.Error(), "Forbidden") {
				t.Errorf("as the watcher, kubectl %s: want Forbidden, got %v", strings.Join(step, " "), err)
			}
		}
	})

	// The real watcher, with the flags the chart gives it, as the chart's ServiceAccount: it
	// takes its Lease and writes a Warning Event on a bad Service, and is never refused.
	t.Run("watcher as the ServiceAccount", func(t *testing.T) {
		runWatcherAsServiceAccount(t, cluster.Kubeconfig, runNS, keys, kubectl, must)
	})
}
