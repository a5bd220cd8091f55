package apply

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// keyPair is an ed25519 key written as an OpenSSH private key file.
type keyPair struct {
	Path   string
	Public ssh.PublicKey
	// Body is the base64 body of the private key file: it must never appear in an error.
	Body string
}

// newKey writes a new private key to dir/name (0600), with a passphrase when one is given.
func newKey(t *testing.T, dir, name, passphrase string) keyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "test key")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "test key", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	data := pem.EncodeToMemory(block)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	body := strings.Join(lines[1:len(lines)-1], "")
	return keyPair{Path: path, Public: sshPub, Body: body}
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// knownHostsLine is a known_hosts entry for 127.0.0.1:port in the syntax ssh looks up.
func knownHostsLine(port int, key ssh.PublicKey) string {
	host := "[127.0.0.1]:" + strconv.Itoa(port)
	if port == 22 {
		host = "127.0.0.1"
	}
	return host + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key))) + "\n"
}

// freePort returns a TCP port on 127.0.0.1 that nothing listened on a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// requireRoot fails the test when it cannot run as root; under -short it skips instead.
func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root and real daemons; skipped with -short")
	}
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (run make test as root)")
	}
}

// requireBinary fails the test when name is not installed (make test installs it).
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s; skipped with -short", name)
	}
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (make deps installs it): %v", name, err)
	}
	return path
}

// sshServer is a real OpenSSH sshd on 127.0.0.1 with its own host key.
type sshServer struct {
	Port    int
	HostKey ssh.PublicKey
}

// startSSHD runs sshd -D on a free loopback port, accepting the given client keys for any user,
// until the test ends.
func startSSHD(t *testing.T, authorized ...ssh.PublicKey) sshServer {
	t.Helper()
	requireRoot(t)
	sshd := requireBinary(t, "sshd")
	dir := t.TempDir()
	host := newKey(t, dir, "host_ed25519", "")
	var auth strings.Builder
	for _, k := range authorized {
		auth.Write(ssh.MarshalAuthorizedKey(k))
	}
	writeFile(t, dir, "authorized_keys", auth.String(), 0o600)
	// sshd refuses to start without its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfg := writeFile(t, dir, "sshd_config", fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile none
AuthorizedKeysFile %s
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
LogLevel VERBOSE
# The concurrency test stands in for many hosts with one sshd.
MaxStartups 100
`, port, host.Path, filepath.Join(dir, "authorized_keys")), 0o600)
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfg)
	log := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sshd: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("sshd log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			t.Fatalf("sshd exited: %s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen on %d: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return sshServer{Port: port, HostKey: host.Public}
}
