package reliability

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRefusesMalformedFiles starts the real watcher with a broken inventory, SSH key or
// known_hosts file: it exits non-zero before touching any edge, with a message that names
// the file and the problem, and its output carries no byte of the key.
func TestRefusesMalformedFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the watcher binary built by TestMain (not in -short)")
	}
	if world.binary == "" {
		t.Fatal("no watcher binary: TestMain did not build it")
	}
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keygen := func(name, passphrase string) (string, string) {
		p := filepath.Join(dir, name)
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", p).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return p, string(data)
	}
	goodKey, _ := keygen("good", "")
	pub, err := os.ReadFile(goodKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pubAsKey := write("pub-as-key", string(pub), 0o600)
	goodInv := write("inventory.yml", "all:\n  children:\n    edge:\n      hosts:\n        e1:\n          ansible_host: 10.252.1.1\n", 0o600)
	goodKH := write("known_hosts", "10.252.1.1 "+string(pub), 0o600)

	_, body := keygen("truncated", "")
	truncated := write("truncated-key", body[:len(body)/2], 0o600)
	_, openBody := keygen("open", "")
	open := write("open-key", openBody, 0o644)
	locked, lockedBody := keygen("locked", "secret passphrase")

	tests := []struct {
		name               string
		inventory, key, kh string
		want               []string
		secret             string // must not appear in the output, line by line
	}{
		{name: "INI inventory", inventory: write("inv.ini", "[edge]\ne1 ansible_host=10.252.1.1\n", 0o600),
			want: []string{"inv.ini", "not a YAML inventory"}},
		{name: "misspelt inventory key", inventory: write("typo.yml", "all:\n  host:\n    e1: {}\n", 0o600),
			want: []string{"typo.yml", "field host not found"}},
		{name: "inventory without hosts", inventory: write("empty.yml", "all:\n  children: {}\n", 0o600),
			want: []string{"empty.yml", "no hosts"}},
		{name: "inventory missing", inventory: filepath.Join(dir, "missing.yml"),
			want: []string{"missing.yml", "no such file"}},
		{name: "truncated key", key: truncated, want: []string{truncated, "not a valid private key"}, secret: body},
		{name: "key readable by others", key: open, want: []string{open, "too open"}, secret: openBody},
		{name: "key with a passphrase", key: locked, want: []string{locked, "passphrase"}, secret: lockedBody},
		{name: "public key as private key", key: pubAsKey, want: []string{pubAsKey, "not a valid private key"}},
		{name: "garbage known_hosts", kh: write("kh-garbage", "10.252.1.1 ssh-ed25519 !!notbase64!!\n", 0o600),
			want: []string{"kh-garbage", "malformed"}},
		{name: "empty known_hosts", kh: write("kh-empty", "# nothing\n", 0o600),
			want: []string{"kh-empty", "no entries"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, key, kh := goodInv, goodKey, goodKH
			if tt.inventory != "" {
				inv = tt.inventory
			}
			if tt.key != "" {
				key = tt.key
			}
			if tt.kh != "" {
				kh = tt.kh
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, world.binary, "watch", "--kubeconfig", filepath.Join(dir, "no-kubeconfig"),
				"--inventory", inv, "--ssh-key", key, "--known-hosts", kh, "--namespace", "default",
				"--metrics-address", "", "--health-address", "", "--work-dir", t.TempDir(), "--log-level", "debug")
			cmd.Env = cleanEnv()
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("watcher started (err %v):\n%s", err, out)
			}
			if !containsAll(string(out), tt.want) {
				t.Errorf("output lacks %q:\n%s", tt.want, out)
			}
			for _, line := range strings.Split(tt.secret, "\n") {
				if len(line) >= 16 && !strings.HasPrefix(line, "-----") && strings.Contains(string(out), line) {
					t.Errorf("output carries key material %q", line)
				}
			}
			t.Logf("exit %d: %s", exit.ExitCode(), trunc(strings.TrimSpace(string(out)), 200))
		})
	}
}
