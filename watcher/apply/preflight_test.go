package apply

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPreflight(t *testing.T) {
	dir := t.TempDir()
	client := newKey(t, dir, "id_client", "")
	stranger := newKey(t, dir, "id_stranger", "")
	srv := startSSHD(t, client.Public)
	other := newKey(t, dir, "other_host_key", "")

	pinned := writeFile(t, dir, "known_hosts", knownHostsLine(srv.Port, srv.HostKey), 0o644)
	// Another key pinned for the same [127.0.0.1]:port: what a replaced or spoofed host looks like.
	wrong := writeFile(t, dir, "known_hosts_wrong", knownHostsLine(srv.Port, other.Public), 0o644)
	noPort := writeFile(t, dir, "known_hosts_noport", knownHostsLine(22, srv.HostKey), 0o644)
	wrongNoPort := writeFile(t, dir, "known_hosts_wrong_noport", knownHostsLine(22, other.Public), 0o644)
	empty := writeFile(t, dir, "known_hosts_empty", "", 0o644)
	closed := freePort(t)

	host := Host{Name: "edge1", Address: "127.0.0.1", Port: srv.Port, User: "root"}
	tests := []struct {
		name       string
		key, kh    string
		host       Host
		want       HostStatus
		wantInMsg  string
		opensshOK  bool // what the real ssh client says about the same files
		opensshErr string
	}{
		{name: "ok", key: client.Path, kh: pinned, host: host, want: StatusOK, opensshOK: true},
		{name: "unknown host", key: client.Path, kh: empty, host: host, want: StatusUnknownHost, wantInMsg: "[127.0.0.1]:" + strconv.Itoa(srv.Port), opensshErr: "Host key verification failed"},
		// OpenSSH falls back to a matching entry without a port, and only to a matching one.
		{name: "key pinned without port", key: client.Path, kh: noPort, host: host, want: StatusOK, opensshOK: true},
		{name: "other key pinned without port", key: client.Path, kh: wrongNoPort, host: host, want: StatusUnknownHost, opensshErr: "Host key verification failed"},
		{name: "key mismatch", key: client.Path, kh: wrong, host: host, want: StatusKeyMismatch, wantInMsg: wrong + " line 1", opensshErr: "Host key verification failed"},
		{name: "unreachable", key: client.Path, kh: pinned, host: Host{Name: "edge1", Address: "127.0.0.1", Port: closed, User: "root"}, want: StatusUnreachable, wantInMsg: "connection refused", opensshErr: "Connection refused"},
		{name: "auth failed", key: stranger.Path, kh: pinned, host: host, want: StatusAuthFailed, wantInMsg: `user "root"`, opensshErr: "Permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPreflight(tt.key, tt.kh, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			got := p.Check(context.Background(), []Host{tt.host})
			t.Logf("pre-flight check took %s", time.Since(start))
			if len(got) != 1 {
				t.Fatalf("Check() returned %d results, want 1", len(got))
			}
			if diff := cmp.Diff(tt.want, got[0].Status); diff != "" {
				t.Errorf("status (-want +got):\n%s\nmessage: %s", diff, got[0].Message)
			}
			if got[0].Host != tt.host.Name {
				t.Errorf("Host = %q, want %q", got[0].Host, tt.host.Name)
			}
			if !strings.Contains(got[0].Message, tt.wantInMsg) {
				t.Errorf("message %q does not contain %q", got[0].Message, tt.wantInMsg)
			}
			// The pre-flight must agree with OpenSSH's own verdict on the same files.
			out, err := exec.Command("ssh", "-F", "/dev/null", "-i", tt.key, "-p", strconv.Itoa(tt.host.Port),
				"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
				"-o", "UserKnownHostsFile="+tt.kh, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=3",
				"root@127.0.0.1", "true").CombinedOutput()
			if tt.opensshOK != (err == nil) {
				t.Errorf("ssh agrees = %v, want %v: %v\n%s", err == nil, tt.opensshOK, err, out)
			}
			if !strings.Contains(string(out), tt.opensshErr) {
				t.Errorf("ssh output %q does not contain %q", out, tt.opensshErr)
			}
		})
	}
}

// TestPreflightConcurrent checks many hosts at once, good and bad mixed, and that the results
// keep the order of the hosts.
func TestPreflightConcurrent(t *testing.T) {
	dir := t.TempDir()
	client := newKey(t, dir, "id_client", "")
	srv := startSSHD(t, client.Public)
	kh := writeFile(t, dir, "known_hosts", knownHostsLine(srv.Port, srv.HostKey), 0o644)
	closed := freePort(t)
	p, err := NewPreflight(client.Path, kh, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var hosts []Host
	var want []HostCheck
	for i := range 20 {
		h := Host{Name: "edge" + strconv.Itoa(i), Address: "127.0.0.1", Port: srv.Port, User: "root"}
		status := StatusOK
		if i%5 == 4 {
			h.Port, status = closed, StatusUnreachable
		}
		hosts = append(hosts, h)
		want = append(want, HostCheck{Host: h.Name, Status: status})
	}
	start := time.Now()
	got := p.Check(context.Background(), hosts)
	elapsed := time.Since(start)
	t.Logf("pre-flight of %d hosts took %s", len(hosts), elapsed)
	for i := range got {
		got[i].Message = ""
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Check() (-want +got):\n%s", diff)
	}
}

func TestNewPreflightRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	locked := newKey(t, dir, "id_locked", "pw")
	kh := writeFile(t, dir, "known_hosts", "", 0o644)
	_, err := NewPreflight(locked.Path, kh, time.Second)
	if err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Fatalf("NewPreflight() error = %v, want a passphrase error", err)
	}
	assertNoKeyMaterial(t, err.Error(), locked.Body)
	if _, err := NewPreflight(newKey(t, dir, "id", "").Path, kh, 0); err == nil {
		t.Fatal("NewPreflight() with zero timeout: want an error")
	}
}
