package apply

import (
	"os"
	"strings"
	"testing"
)

func TestCheckSSHFiles(t *testing.T) {
	dir := t.TempDir()
	good := newKey(t, dir, "id_good", "")
	locked := newKey(t, dir, "id_locked", "s3cret")
	open := newKey(t, dir, "id_open", "")
	if err := os.Chmod(open.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	// A key file whose middle is damaged: it still carries (most of) a real key body.
	damaged := newKey(t, dir, "id_damaged_src", "")
	damagedData, err := os.ReadFile(damaged.Path)
	if err != nil {
		t.Fatal(err)
	}
	half := len(damagedData) / 2
	damagedPath := writeFile(t, dir, "id_damaged", string(damagedData[:half])+"!!!"+string(damagedData[half+3:]), 0o600)
	notAKey := writeFile(t, dir, "id_text", "hello\n", 0o600)

	knownHosts := writeFile(t, dir, "known_hosts", knownHostsLine(2222, good.Public), 0o644)
	emptyKH := writeFile(t, dir, "known_hosts_empty", "# nothing pinned\n\n", 0o644)
	badKH := writeFile(t, dir, "known_hosts_bad", "[127.0.0.1]:2222 ssh-ed25519 not*base64\n", 0o644)
	missing := dir + "/does-not-exist"

	tests := []struct {
		name       string
		key, kh    string
		wantErr    []string // substrings; empty means no error
		secretBody string   // must not appear in the error
	}{
		{name: "good files", key: good.Path, kh: knownHosts},
		{name: "missing key", key: missing, kh: knownHosts, wantErr: []string{missing}},
		{name: "missing known_hosts", key: good.Path, kh: missing, wantErr: []string{missing}},
		{name: "passphrase key", key: locked.Path, kh: knownHosts, wantErr: []string{locked.Path, "passphrase"}, secretBody: locked.Body},
		{name: "key readable by others", key: open.Path, kh: knownHosts, wantErr: []string{open.Path, "0644", "too open"}, secretBody: open.Body},
		{name: "damaged key", key: damagedPath, kh: knownHosts, wantErr: []string{damagedPath, "not a valid private key"}, secretBody: damaged.Body},
		{name: "not a key", key: notAKey, kh: knownHosts, wantErr: []string{notAKey, "not a valid private key"}},
		{name: "a directory as key", key: dir, kh: knownHosts, wantErr: []string{dir, "not a regular file"}},
		{name: "malformed known_hosts", key: good.Path, kh: badKH, wantErr: []string{badKH, "malformed", ":1:"}},
		{name: "empty known_hosts", key: good.Path, kh: emptyKH, wantErr: []string{emptyKH, "no entries"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckSSHFiles(tt.key, tt.kh)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("CheckSSHFiles() = %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckSSHFiles() = nil, want an error containing %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if tt.secretBody != "" {
				assertNoKeyMaterial(t, err.Error(), tt.secretBody)
			}
		})
	}
}

// assertNoKeyMaterial fails when any 16-character piece of the key's base64 body is in s.
func assertNoKeyMaterial(t *testing.T, s, body string) {
	t.Helper()
	for i := 0; i+16 <= len(body); i += 8 {
		if strings.Contains(s, body[i:i+16]) {
			t.Fatalf("text contains key material %q: %s", body[i:i+16], s)
		}
	}
}
