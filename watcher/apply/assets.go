package apply

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Assets is the playbook tree (ansible/ and roles/) written out to a private directory, because
// ansible-playbook reads files, not an embedded file system.
type Assets struct {
	// Root holds ansible/ and roles/ side by side, as in the repository.
	Root string
	// PlaybookDir is Root/ansible: site.yml and the other playbooks.
	PlaybookDir string
	// Config is Root/ansible/ansible.cfg, given to ansible-playbook via ANSIBLE_CONFIG.
	Config string
}

// ExtractAssets writes fsys (kubeftpedge.Assets) into a new private directory under parent
// (os.TempDir when empty): directories 0700, files 0600, shell scripts 0700. Everything is
// absolute so that no path depends on the working directory. Close removes it.
func ExtractAssets(fsys fs.FS, parent string) (*Assets, error) {
	if parent == "" {
		parent = os.TempDir()
	}
	parent, err := filepath.Abs(parent)
	if err != nil {
		return nil, fmt.Errorf("extracting playbook assets: %w", err)
	}
	root, err := os.MkdirTemp(parent, "assets-")
	if err != nil {
		return nil, fmt.Errorf("extracting playbook assets: %w", err)
	}
	a := &Assets{
		Root:        root,
		PlaybookDir: filepath.Join(root, "ansible"),
		Config:      filepath.Join(root, "ansible", "ansible.cfg"),
	}
	err = fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(root, filepath.FromSlash(path))
		if d.IsDir() {
			if path == "." {
				return nil
			}
			return os.Mkdir(dst, 0o700)
		}
		data, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o600)
		if strings.HasSuffix(path, ".sh") {
			mode = 0o700
		}
		return os.WriteFile(dst, data, mode)
	})
	if err != nil {
		_ = os.RemoveAll(root)
		return nil, fmt.Errorf("extracting playbook assets: %w", err)
	}
	if _, err := os.Stat(a.Config); err != nil {
		_ = os.RemoveAll(root)
		return nil, fmt.Errorf("extracting playbook assets: ansible/ansible.cfg is missing: %w", err)
	}
	return a, nil
}

// Close removes the extracted files.
func (a *Assets) Close() error {
	if err := os.RemoveAll(a.Root); err != nil {
		return fmt.Errorf("removing playbook assets: %w", err)
	}
	return nil
}
