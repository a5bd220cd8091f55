package apply

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/; run e.g.
// go test -fuzz FuzzMarshalVars -fuzztime 30s ./watcher/apply/

// FuzzMarshalVars feeds arbitrary strings into every string field of the vars contract: the
// vars file either refuses the value or carries it, byte for byte, only inside an
// {"__ansible_unsafe": ...} wrapper, so Ansible can never evaluate it as a template, and no
// raw line break ever reaches the file.
func FuzzMarshalVars(f *testing.F) {
	f.Fuzz(func(t *testing.T, id, source, group, addr, timeout, proxy, nodeName, nodeAddr string) {
		s := desired.State{Schema: desired.Schema, Generation: "0123abcd",
			Nodes: []desired.Node{{Name: nodeName, Address: nodeAddr, ID: 1}}, Services: []desired.Service{{
				ID: id, Source: source, EdgeGroup: group, BindAddress: addr, ControlPort: 21, ControlNodePort: 30021,
				PassiveMin: 21100, PassiveMax: 21110, TrafficPolicy: "Cluster",
				Timeouts: desired.Timeouts{Connect: timeout, Client: "1h", Server: "1h", Check: "2s"},
				MaxConn:  10, SendProxy: proxy,
			}}}
		inputs := []string{id, source, group, addr, timeout, proxy, nodeName, nodeAddr}
		out, err := MarshalVars(s)
		if err != nil {
			for _, in := range inputs {
				if strings.IndexFunc(in, unicode.IsControl) >= 0 {
					return
				}
			}
			t.Fatalf("refused values without a control character: %v", err)
		}
		for _, in := range inputs {
			if strings.IndexFunc(in, unicode.IsControl) >= 0 {
				t.Fatalf("value %q with a control character was accepted", in)
			}
		}
		var tree any
		if err := json.Unmarshal(out, &tree); err != nil {
			t.Fatalf("vars file is not JSON: %v\n%s", err, out)
		}
		var found []string
		checkWrapped(t, tree, "", &found)
		for _, in := range inputs {
			// encoding/json turns invalid UTF-8 into U+FFFD (still wrapped, checked above); the
			// API server only stores valid UTF-8 anyway
			if utf8.ValidString(in) && !contains(found, in) {
				t.Fatalf("value %q is not in the vars file as an unsafe string; found %q", in, found)
			}
		}
	})
}

// checkWrapped fails on any string that is not the single value of an __ansible_unsafe map,
// and collects the wrapped ones.
func checkWrapped(t *testing.T, v any, path string, found *[]string) {
	t.Helper()
	switch x := v.(type) {
	case string:
		t.Fatalf("%s: bare string %q (Ansible would template it)", path, x)
	case map[string]any:
		if u, ok := x[unsafeKey]; ok {
			s, isString := u.(string)
			if len(x) != 1 || !isString {
				t.Fatalf("%s: malformed unsafe wrapper %v", path, x)
			}
			*found = append(*found, s)
			return
		}
		for k, e := range x {
			checkWrapped(t, e, path+"."+k, found)
		}
	case []any:
		for _, e := range x {
			checkWrapped(t, e, path+"[]", found)
		}
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// FuzzLoadInventory parses arbitrary files as an inventory: an accepted one yields only hosts
// with a name, an address, a port in range and the group all; a refused one names the file.
// Neither panics nor loops on cycles or deep nesting.
func FuzzLoadInventory(f *testing.F) {
	for _, name := range []string{"lab.yml", "malformed.yml", "typo.yml", "badport.yml", "ini.yml"} {
		if data, err := os.ReadFile(filepath.Join("testdata", "inventory", name)); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "inv.yml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		inv, err := LoadInventory(path)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(inv.Hosts) == 0 {
			t.Fatal("accepted an inventory without hosts")
		}
		for _, h := range inv.Hosts {
			if h.Name == "" || h.Address == "" || h.Port < 1 || h.Port > 65535 || !contains(h.Groups, "all") {
				t.Fatalf("accepted a host outside the rules: %+v", h)
			}
		}
	})
}

// FuzzCheckSSHFiles hands arbitrary bytes to the start-up check as the private key: whatever
// they are, the error names the file and carries no run of the file's bytes, so a key that
// is almost right never ends up in a log.
func FuzzCheckSSHFiles(f *testing.F) {
	key, hostLine := fuzzKeys(f)
	f.Add(key)
	f.Add(bytes.Replace(key, []byte("\n"), []byte("\r\n"), -1))
	f.Add(key[:len(key)/2])
	f.Add([]byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ9 user@host\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		keyPath := filepath.Join(dir, "id_key")
		if err := os.WriteFile(keyPath, data, 0o600); err != nil {
			t.Fatal(err)
		}
		kh := filepath.Join(dir, "known_hosts")
		if err := os.WriteFile(kh, []byte("edge1 "+hostLine), 0o600); err != nil {
			t.Fatal(err)
		}
		err := CheckSSHFiles(keyPath, kh)
		if err == nil {
			return
		}
		msg := err.Error()
		if !strings.Contains(msg, keyPath) {
			t.Fatalf("error does not name the key file: %v", err)
		}
		msg = strings.ReplaceAll(msg, keyPath, "")
		for _, field := range strings.FieldsFunc(string(data), func(r rune) bool { return unicode.IsSpace(r) || r == '-' }) {
			if len(field) >= 16 && strings.Contains(msg, field) {
				t.Fatalf("error carries bytes of the key file (%q): %v", field, err)
			}
		}
	})
}

// fuzzKeys returns an OpenSSH private key file and a known_hosts key entry for another key.
func fuzzKeys(tb testing.TB) ([]byte, string) {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "fuzz key")
	if err != nil {
		tb.Fatal(err)
	}
	hostPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(hostPub)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(block), string(ssh.MarshalAuthorizedKey(pub))
}
