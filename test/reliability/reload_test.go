package reliability

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubeftp/kubeftp-edge/watcher/controller"
)

// TestFailingReload makes the reload fail on edge 1 only: another process holds the port a
// new Service asks for, so `haproxy -c` passes but the new worker cannot bind. The role rolls
// edge 1 back to the previous config, FTP keeps working through it, edges 2 and 3 take the
// new Service, and edge 1 converges once the port is free.
func TestFailingReload(t *testing.T) {
	e := newEnv(t, 5*time.Minute)
	e.served(watcherConfig{})
	old := e.edgeGeneration(1)
	stop, err := e.lab.Start(e.ctx, "e1", "socat", "TCP-LISTEN:2121,bind="+e.lab.EdgeAddr(1).String()+",fork", "SYSTEM:true")
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	svc := ftpService("ftp2", 30121, 22100, 2, 31100, nil)
	svc.Spec.Ports[0].Port = 2121
	e.createService(svc)

	eventually(t, 60*time.Second, "edge 1 rolled back, edges 2 and 3 updated", func() (bool, string) {
		hosts, gen, err := e.stateHosts(e.ctx)
		if err != nil {
			return false, err.Error()
		}
		h1 := hosts["e1"]
		ok := h1.Result == controller.ResultFailed && strings.Contains(h1.Message, "rolled back") &&
			hosts["e2"].Hash == gen && hosts["e3"].Hash == gen && gen != ""
		return ok, h1.Result + ": " + h1.Message
	})
	hosts, _, _ := e.stateHosts(e.ctx)
	t.Logf("edge 1 in the state ConfigMap: %s", hosts["e1"].Message)
	e.waitEvent("ftp2", corev1.EventTypeWarning, controller.ReasonEdgeHostFailed, 30*time.Second, "e1", "previous config restored")
	if got := e.edgeGeneration(1); got != old {
		t.Errorf("edge 1 runs generation %s after the failed reload, want the previous %s", got, old)
	}
	if err := e.haproxyCheck(1); err != nil {
		t.Error(err)
	}
	for _, i := range []int{2, 3} {
		if cfg, _, _ := e.lab.EdgeConfig(i); !strings.Contains(string(cfg), ":2121") {
			t.Errorf("edge %d does not serve the new Service", i)
		}
	}
	if err := e.roundTrip(e.ctx, "after-failed-reload", 2<<20); err != nil {
		t.Errorf("FTP through edge 1 on the old config: %v", err)
	}

	stop()
	stopped = true
	freed := time.Now()
	e.waitConverged(60*time.Second, "edge 1 once the port is free")
	t.Logf("port freed → edge 1 converged: %s", time.Since(freed).Round(time.Millisecond))
	if err := e.roundTrip(e.ctx, "after-recovery", 1<<20); err != nil {
		t.Errorf("FTP through edge 1 after it converged: %v", err)
	}
}
