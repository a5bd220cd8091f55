package apply

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// CheckSSHFiles refuses, with a message naming the file and the problem, a private key or a
// known_hosts file that ansible-playbook could not use: unreadable, malformed, protected by a
// passphrase (nothing can type it in), permissions that ssh itself refuses, or a known_hosts file
// without a single entry (every host would be refused). Errors never contain key material.
func CheckSSHFiles(keyPath, knownHostsPath string) error {
	if _, err := loadSigner(keyPath); err != nil {
		return err
	}
	if _, err := loadKnownHosts(knownHostsPath); err != nil {
		return err
	}
	n, err := countKnownHosts(knownHostsPath)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("known_hosts %s: no entries: every edge host would be refused", knownHostsPath)
	}
	return nil
}

// loadSigner parses the private key at path. The parser's own error is not passed on: it is not
// needed to fix the problem and must never carry bytes of the key into a log.
func loadSigner(path string) (ssh.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("ssh private key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("ssh private key %s: not a regular file", path)
	}
	// ssh refuses a key that its owner left readable by others ("UNPROTECTED PRIVATE KEY FILE");
	// say so now rather than as a failed run on every host.
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == os.Getuid() && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("ssh private key %s: permissions %04o are too open, ssh refuses the key (want 0600 or 0400)", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ssh private key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	clear(data)
	if err != nil {
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return nil, fmt.Errorf("ssh private key %s: protected by a passphrase; the watcher cannot type it in, use a key without one", path)
		}
		return nil, fmt.Errorf("ssh private key %s: not a valid private key (expected OpenSSH or PEM format)", path)
	}
	return signer, nil
}

func loadKnownHosts(path string) (ssh.HostKeyCallback, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	cb, err := knownhosts.New(path)
	if err != nil {
		// knownhosts errors name the file and line, never the key bytes.
		return nil, fmt.Errorf("known_hosts %s: malformed: %w", path, err)
	}
	return cb, nil
}

// countKnownHosts counts the lines of a known_hosts file that are neither empty nor comments.
func countKnownHosts(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("known_hosts: %w", err)
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) > 0 && line[0] != '#' {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("known_hosts %s: %w", path, err)
	}
	return n, nil
}
