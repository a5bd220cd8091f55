package apply

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"

	kubeftpedge "github.com/kubeftp/kubeftp-edge"
)

func TestExtractAssets(t *testing.T) {
	fsys := fstest.MapFS{
		"ansible/ansible.cfg":                {Data: []byte("[defaults]\n")},
		"ansible/site.yml":                   {Data: []byte("- hosts: edge\n")},
		"roles/r/tasks/main.yml":             {Data: []byte("[]\n")},
		"roles/r/files/reload.sh":            {Data: []byte("#!/bin/sh\n")},
		"ansible/plugins/callback/result.py": {Data: []byte("# plugin\n")},
	}
	parent := t.TempDir()
	a, err := ExtractAssets(fsys, parent)
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(a.Root) || filepath.Dir(a.Root) != parent {
		t.Errorf("Root = %s, want an absolute dir in %s", a.Root, parent)
	}
	if diff := cmp.Diff([]string{filepath.Join(a.Root, "ansible"), filepath.Join(a.Root, "ansible", "ansible.cfg")}, []string{a.PlaybookDir, a.Config}); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	got := map[string]string{}
	err = filepath.WalkDir(a.Root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a.Root, path)
		got[rel] = fi.Mode().String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		".": "drwx------", "ansible": "drwx------", "ansible/ansible.cfg": "-rw-------",
		"ansible/site.yml": "-rw-------", "ansible/plugins": "drwx------",
		"ansible/plugins/callback": "drwx------", "ansible/plugins/callback/result.py": "-rw-------",
		"roles": "drwx------", "roles/r": "drwx------", "roles/r/tasks": "drwx------",
		"roles/r/tasks/main.yml": "-rw-------", "roles/r/files": "drwx------",
		"roles/r/files/reload.sh": "-rwx------",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("extracted tree (-want +got):\n%s", diff)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.Root); !os.IsNotExist(err) {
		t.Errorf("Root still there after Close: %v", err)
	}

	// Without ansible.cfg ansible-playbook would run with another configuration: refuse.
	delete(fsys, "ansible/ansible.cfg")
	if _, err := ExtractAssets(fsys, parent); err == nil {
		t.Error("ExtractAssets without ansible.cfg: want an error")
	}
	if m, _ := filepath.Glob(filepath.Join(parent, "assets-*")); len(m) > 0 {
		t.Errorf("a refused extraction left %v", m)
	}
}

// TestEmbeddedAssets checks that the binary carries the playbook tree the runner needs.
func TestEmbeddedAssets(t *testing.T) {
	for _, name := range []string{"ansible/ansible.cfg", "ansible/site.yml", "ansible/plugins/callback/kubeftp_result.py", "roles/haproxy-ftp/tasks/main.yml"} {
		if _, err := fs.Stat(kubeftpedge.Assets, name); err != nil {
			t.Errorf("embedded assets lack %s: %v", name, err)
		}
	}
}
