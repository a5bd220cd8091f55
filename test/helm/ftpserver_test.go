package helm

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// ftpScript runs inside new mount, network and PID namespaces: the start script adds its user
// to a private copy of /etc, and nothing outlives the namespace's first process. The client
// connects to 127.0.0.1 while the edge address lives on lo too, so the PASV reply shows which
// address vsftpd announces.
const ftpScript = `set -eu
mount --make-rprivate /
cp -a /etc "$W/etc"
mount --bind "$W/etc" /etc
mount -t tmpfs tmpfs /var/log
ip link set lo up
ip addr add "$EDGE/32" dev lo
sh "$W/start.sh" > "$W/server.log" 2>&1 &
up=no
for i in $(seq 100); do
  if curl -s -o /dev/null --user "$FTP_USER:$FTP_PASSWORD" ftp://127.0.0.1/; then up=yes; break; fi
  sleep 0.1
done
echo "up=$up"
curl -sS --user "$FTP_USER:$FTP_PASSWORD" -T "$W/payload" ftp://127.0.0.1/payload
curl -sS --user "$FTP_USER:$FTP_PASSWORD" -o "$W/epsv" ftp://127.0.0.1/payload
curl -sS -v --disable-epsv --user "$FTP_USER:$FTP_PASSWORD" -o "$W/pasv" ftp://127.0.0.1/payload 2> "$W/pasv.trace"
rc=0; curl -sS --user "$FTP_USER:wrong" ftp://127.0.0.1/ >/dev/null 2>&1 || rc=$?
echo "wrong-password=$rc"
rc=0; curl -sS --user "$FTP_USER:$FTP_PASSWORD" -P - -o /dev/null ftp://127.0.0.1/payload >/dev/null 2>&1 || rc=$?
echo "active-mode=$rc"
`

// TestFTPServerRuns runs the chart's vsftpd.conf and start.sh with the real vsftpd: a user from
// the credentials, uploads and downloads over EPSV and PASV, the edge address in PASV replies,
// wrong passwords and active mode refused.
func TestFTPServerRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vsftpd in new namespaces (root)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root: vsftpd runs in its own mount and network namespaces")
	}
	for _, tool := range []string{"unshare", "curl", "ip", "/usr/sbin/vsftpd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (make test installs it): %v", tool, err)
		}
	}
	const edge, user, password = "10.213.9.1", "kftptest", "pa:ss word"
	keys := newSSHFiles(t)
	objs := template(t, append(keys.args(), "--set", "ftpServer.enabled=true",
		"--set", "ftpServer.edgeAddress="+edge, "--set", "ftpServer.credentials.password=unused",
		"--set", "ftpServer.passivePorts.min=21100",
		"--set", "ftpServer.passivePorts.max=21102", "--set", "ftpServer.extraConfig.pam_service_name=vsftpd",
		"--show-only", "templates/ftp-configmap.yaml")...)
	var cm corev1.ConfigMap
	objs.decode(t, "ConfigMap", "edge-kubeftp-edge-ftp", &cm)

	dir := t.TempDir()
	// The FTP user must be able to reach its home below this directory (and its parent, the
	// test's own temporary root).
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	payload := make([]byte, 1<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"vsftpd.conf": []byte(cm.Data["vsftpd.conf"]),
		"start.sh":    []byte(cm.Data["start.sh"]),
		"payload":     payload,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--net", "--pid", "--fork", "--kill-child",
		"--mount-proc", "sh", "-c", ftpScript)
	cmd.Env = append(os.Environ(), "W="+dir, "EDGE="+edge, "FTP_USER="+user, "FTP_PASSWORD="+password,
		"FTP_HOME="+filepath.Join(dir, "home"), "FTP_CONFIG="+filepath.Join(dir, "vsftpd.conf"),
		"VSFTPD=/usr/sbin/vsftpd")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	serverLog, _ := os.ReadFile(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatalf("%v\n%s\nserver output:\n%s", err, out, serverLog)
	}
	t.Logf("client results:\n%s", out)
	results := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			results[k] = v
		}
	}
	if results["up"] != "yes" {
		t.Fatalf("vsftpd did not accept the login:\n%s\nserver output:\n%s", out, serverLog)
	}
	for _, name := range []string{"home/payload", "epsv", "pasv"} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, payload) {
			t.Errorf("%s differs from the uploaded payload (%d of %d bytes, %v)", name, len(got), len(payload), err)
		}
	}
	trace, err := os.ReadFile(filepath.Join(dir, "pasv.trace"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`227 Entering Passive Mode \((\d+,\d+,\d+,\d+),(\d+),(\d+)\)`).FindSubmatch(trace)
	if m == nil {
		t.Fatalf("no PASV reply in the trace:\n%s", trace)
	}
	hi, _ := strconv.Atoi(string(m[2]))
	lo, _ := strconv.Atoi(string(m[3]))
	if addr := strings.ReplaceAll(string(m[1]), ",", "."); addr != edge {
		t.Errorf("PASV announces %s, want the edge address %s", addr, edge)
	}
	if port := hi*256 + lo; port < 21100 || port > 21102 {
		t.Errorf("PASV port %d outside 21100-21102", port)
	}
	// curl: 67 = login denied; 9/30 = the server refused PORT/EPRT.
	if results["wrong-password"] != "67" {
		t.Errorf("wrong password: curl exit %q, want 67 (login denied)", results["wrong-password"])
	}
	if rc := results["active-mode"]; rc == "0" || rc == "" {
		t.Errorf("active mode: curl exit %q, want a refusal (port_enable=NO)", rc)
	}
	// The start script logs every session on stdout.
	for _, want := range []string{"OK LOGIN", "OK UPLOAD", "FAIL LOGIN"} {
		if !bytes.Contains(serverLog, []byte(want)) {
			t.Errorf("server output lacks %q:\n%s", want, serverLog)
		}
	}
	// The user went to the private copy of /etc only.
	if passwd, err := os.ReadFile("/etc/passwd"); err != nil || bytes.Contains(passwd, []byte(user+":")) {
		t.Errorf("the host's /etc/passwd was changed (err %v)", err)
	}
}
