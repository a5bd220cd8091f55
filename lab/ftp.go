package lab

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
)

// Client is a real FTP client program run in the client namespace.
type Client string

const (
	// CurlEPSV is curl's default passive mode: EPSV (the reply carries a port only).
	CurlEPSV Client = "curl-epsv"
	// CurlPASV is curl with --disable-epsv: PASV, the reply carries address and port.
	CurlPASV Client = "curl-pasv"
	// Lftp is lftp in passive mode (PASV, and it connects to the address the reply names).
	Lftp Client = "lftp"
	// CurlFTPS is explicit FTPS: AUTH TLS on the control connection, TLS data connections
	// (--ssl-reqd; -k because the lab's certificate is self-signed).
	CurlFTPS Client = "curl-ftps"
)

// Clients lists every Client.
var Clients = []Client{CurlEPSV, CurlPASV, Lftp, CurlFTPS}

// Transfer says who moves a file where: a client program from a source address of the
// client namespace to a path on an FTP server (usually an edge address, port 21).
type Transfer struct {
	Client Client
	Source netip.Addr // one of ClientAddrs; zero: the namespace's first address
	Server netip.AddrPort
	Path   string // remote path, e.g. "pub/a.bin"
}

// Upload sends the local file to t.Path.
func (l *Lab) Upload(ctx context.Context, t Transfer, local string) error {
	return l.transferFile(ctx, t, local, true)
}

// Download fetches t.Path into the local file.
func (l *Lab) Download(ctx context.Context, t Transfer, local string) error {
	return l.transferFile(ctx, t, local, false)
}

// RoundTrip uploads size random bytes to t.Path and downloads them again with the same
// client; it fails unless the file in the pod's FTP root and the download both have the
// upload's sha256.
func (l *Lab) RoundTrip(ctx context.Context, t Transfer, size int64) error {
	dir, err := os.MkdirTemp(l.opts.Dir, "xfer-")
	if err != nil {
		return fmt.Errorf("round trip: %w", err)
	}
	defer os.RemoveAll(dir)
	up, down := filepath.Join(dir, "up.bin"), filepath.Join(dir, "down.bin")
	want, err := randomFile(up, size)
	if err != nil {
		return fmt.Errorf("round trip: %w", err)
	}
	if err := l.Upload(ctx, t, up); err != nil {
		return err
	}
	if got, err := fileSHA256(filepath.Join(l.FTPRoot(), t.Path)); err != nil {
		return fmt.Errorf("%s upload of %s: %w", t.Client, t.Path, err)
	} else if got != want {
		return fmt.Errorf("%s upload of %s: sha256 on the server %s, want %s", t.Client, t.Path, got, want)
	}
	if err := l.Download(ctx, t, down); err != nil {
		return err
	}
	if got, err := fileSHA256(down); err != nil {
		return fmt.Errorf("%s download of %s: %w", t.Client, t.Path, err)
	} else if got != want {
		return fmt.Errorf("%s download of %s: sha256 %s, want %s", t.Client, t.Path, got, want)
	}
	return nil
}

func (l *Lab) transferFile(ctx context.Context, t Transfer, local string, upload bool) error {
	src := t.Source
	if !src.IsValid() {
		src = l.ClientAddrs()[0]
	}
	url := fmt.Sprintf("ftp://%s/%s", t.Server, t.Path)
	var name string
	var args []string
	switch t.Client {
	case CurlEPSV, CurlPASV, CurlFTPS:
		name = "curl"
		args = []string{"-sS", "--fail", "--max-time", "60", "--connect-timeout", "10", "--interface", src.String()}
		switch t.Client {
		case CurlPASV:
			args = append(args, "--disable-epsv")
		case CurlFTPS:
			args = append(args, "--ssl-reqd", "-k")
		}
		if upload {
			args = append(args, "-T", local, url)
		} else {
			args = append(args, "-o", local, url)
		}
	case Lftp:
		name = "lftp"
		op := "get " + t.Path + " -o " + local
		if upload {
			op = "put " + local + " -o " + t.Path
		}
		script := "set net:max-retries 1; set net:timeout 15; set ftp:ssl-allow no; " +
			"set net:socket-bind-ipv4 " + src.String() + "; " +
			"open -u anonymous, -p " + strconv.Itoa(int(t.Server.Port())) + " " + t.Server.Addr().String() + "; " +
			op + "; bye"
		args = []string{"-c", script}
	default:
		return fmt.Errorf("unknown FTP client %q", t.Client)
	}
	dir := "download"
	if upload {
		dir = "upload"
	}
	if _, err := l.Exec(ctx, "client", name, args...); err != nil {
		return fmt.Errorf("%s %s of %s via %s: %w", t.Client, dir, t.Path, t.Server, err)
	}
	return nil
}

func randomFile(path string, size int64) (string, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.Reader, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
