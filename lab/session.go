package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Session is a real FTP session driven by hand from the client namespace: a control
// connection that stays open as long as the caller wants, and passive data connections
// opened on demand from the same source address (as every FTP client does).
type Session struct {
	lab    *Lab
	src    netip.Addr
	server netip.AddrPort
	conn   net.Conn
	r      *bufio.Reader
}

// Reply is one FTP reply: its code and its (last) text line.
type Reply struct {
	Code int
	Text string
}

func (r Reply) String() string { return fmt.Sprintf("%d %s", r.Code, r.Text) }

// defaultIO bounds every exchange whose context has no deadline.
const defaultIO = 30 * time.Second

// Dial opens an FTP control connection from src (one of ClientAddrs) to server and reads the
// greeting, which must be 220.
func (l *Lab) Dial(ctx context.Context, src netip.Addr, server netip.AddrPort) (*Session, error) {
	conn, err := dialInNamespace(ctx, "/run/netns/"+l.Namespace("client"), src, server)
	if err != nil {
		return nil, err
	}
	s := &Session{lab: l, src: src, server: server, conn: conn, r: bufio.NewReader(conn)}
	rep, err := s.read(ctx)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading the greeting of %s: %w", server, err)
	}
	if rep.Code != 220 {
		conn.Close()
		return nil, fmt.Errorf("greeting of %s: %s", server, rep)
	}
	return s, nil
}

// Login logs in anonymously.
func (s *Session) Login(ctx context.Context) error {
	rep, err := s.Cmd(ctx, "USER anonymous")
	if err != nil {
		return err
	}
	if rep.Code == 331 {
		rep, err = s.Cmd(ctx, "PASS lab@")
		if err != nil {
			return err
		}
	}
	if rep.Code != 230 {
		return fmt.Errorf("login: %s", rep)
	}
	if rep, err = s.Cmd(ctx, "TYPE I"); err != nil {
		return err
	} else if rep.Code != 200 {
		return fmt.Errorf("TYPE I: %s", rep)
	}
	return nil
}

// Cmd sends one command line and reads its reply.
func (s *Session) Cmd(ctx context.Context, line string) (Reply, error) {
	if strings.ContainsAny(line, "\r\n") {
		return Reply{}, errors.New("an FTP command is one line")
	}
	s.deadline(ctx)
	if _, err := io.WriteString(s.conn, line+"\r\n"); err != nil {
		return Reply{}, fmt.Errorf("sending %s: %w", verb(line), err)
	}
	rep, err := s.read(ctx)
	if err != nil {
		return Reply{}, fmt.Errorf("reply to %s: %w", verb(line), err)
	}
	return rep, nil
}

// Retr downloads path over a new passive data connection.
func (s *Session) Retr(ctx context.Context, path string) ([]byte, error) {
	data, err := s.transfer(ctx, "RETR "+path, nil)
	if err != nil {
		return nil, fmt.Errorf("RETR %s: %w", path, err)
	}
	return data, nil
}

// Stor uploads content to path over a new passive data connection.
func (s *Session) Stor(ctx context.Context, path string, content []byte) error {
	if _, err := s.transfer(ctx, "STOR "+path, content); err != nil {
		return fmt.Errorf("STOR %s: %w", path, err)
	}
	return nil
}

// Close ends the session politely (QUIT) and closes the connection.
func (s *Session) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = s.Cmd(ctx, "QUIT")
	return s.conn.Close()
}

var pasvRE = regexp.MustCompile(`\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)`)

// transfer runs PASV, opens the data connection from the session's source address to the
// control connection's host (as curl does; the reply's host is the edge too), sends cmd and
// moves the data: upload when content is not nil, download otherwise.
func (s *Session) transfer(ctx context.Context, cmd string, content []byte) ([]byte, error) {
	rep, err := s.Cmd(ctx, "PASV")
	if err != nil {
		return nil, err
	}
	m := pasvRE.FindStringSubmatch(rep.Text)
	if rep.Code != 227 || m == nil {
		return nil, fmt.Errorf("PASV: %s", rep)
	}
	hi, _ := strconv.Atoi(m[5])
	lo, _ := strconv.Atoi(m[6])
	dataAddr := netip.AddrPortFrom(s.server.Addr(), uint16(hi*256+lo))
	data, err := dialInNamespace(ctx, "/run/netns/"+s.lab.Namespace("client"), s.src, dataAddr)
	if err != nil {
		return nil, fmt.Errorf("data connection: %w", err)
	}
	defer data.Close()
	if rep, err = s.Cmd(ctx, cmd); err != nil {
		return nil, err
	} else if rep.Code != 150 && rep.Code != 125 {
		return nil, fmt.Errorf("%s", rep)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = data.SetDeadline(d)
	} else {
		_ = data.SetDeadline(time.Now().Add(defaultIO))
	}
	var got []byte
	if content != nil {
		if _, err := data.Write(content); err != nil {
			return nil, fmt.Errorf("writing data: %w", err)
		}
		if err := data.Close(); err != nil {
			return nil, fmt.Errorf("closing data: %w", err)
		}
	} else if got, err = io.ReadAll(data); err != nil {
		return nil, fmt.Errorf("reading data: %w", err)
	}
	rep, err = s.read(ctx)
	if err != nil {
		return nil, fmt.Errorf("completion: %w", err)
	}
	if rep.Code != 226 {
		return nil, fmt.Errorf("completion: %s", rep)
	}
	return got, nil
}

// read reads one reply, multi-line ones ("123-..." up to "123 ...") included.
func (s *Session) read(ctx context.Context) (Reply, error) {
	s.deadline(ctx)
	var first string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return Reply{}, err
		}
		line = strings.TrimRight(line, "\r\n")
		if first == "" {
			if len(line) < 4 {
				return Reply{}, fmt.Errorf("malformed reply %q", line)
			}
			first = line
		}
		if len(line) >= 4 && line[:3] == first[:3] && line[3] == ' ' {
			code, err := strconv.Atoi(line[:3])
			if err != nil {
				return Reply{}, fmt.Errorf("malformed reply %q", line)
			}
			return Reply{Code: code, Text: line[4:]}, nil
		}
	}
}

func (s *Session) deadline(ctx context.Context) {
	if d, ok := ctx.Deadline(); ok {
		_ = s.conn.SetDeadline(d)
		return
	}
	_ = s.conn.SetDeadline(time.Now().Add(defaultIO))
}

// verb keeps arguments (paths, passwords) out of error messages.
func verb(line string) string {
	v, _, _ := strings.Cut(line, " ")
	return v
}
