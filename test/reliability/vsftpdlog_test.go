package reliability

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The lab's vsftpd writes its protocol log (log_ftp_protocol=YES) to log/vsftpd-xfer.log: one
// line per command, reply and transfer, each with the process and the client address it saw:
//
//	Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP command: Client "10.246.3.12", "RETR pub/a.bin"
//	Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FAIL DOWNLOAD: Client "10.246.3.12", "/pub/a.bin", 0.00Kbyte/sec
//
// The lab's nodes MASQUERADE towards the pod, so that address is the pod-side address of the
// node that forwarded the control connection (see nodePodAddr).

var vsftpdLineRE = regexp.MustCompile(`\[pid (\d+)\] (?:\[[^\]]*\] )?([A-Z][A-Za-z ]*): Client "([^"]+)"(?:, "(.*)")?`)

// ftpSession is one vsftpd process's part of a session: vsftpd forks at login, so the
// process that greets and takes USER is not the one that serves the logged-in session, and
// every command naming a file is in the latter (from its "230" reply to its QUIT).
type ftpSession struct {
	pid    int
	client netip.Addr
	lines  []string
}

// ftpSessions splits a protocol log into sessions by pid; a pid that starts over (CONNECT, a
// "230" reply, or any line after a "221" goodbye) is a new session, as pids are reused.
func ftpSessions(log string) []*ftpSession {
	var all []*ftpSession
	open := map[int]*ftpSession{}
	for _, line := range strings.Split(log, "\n") {
		m := vsftpdLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		client, err := netip.ParseAddr(m[3])
		if err != nil {
			continue
		}
		kind, arg := m[2], m[4]
		s := open[pid]
		if s == nil || kind == "CONNECT" || (kind == "FTP response" && strings.HasPrefix(arg, "230 ")) {
			s = &ftpSession{pid: pid, client: client}
			open[pid] = s
			all = append(all, s)
		}
		s.lines = append(s.lines, line)
		if kind == "FTP response" && strings.HasPrefix(arg, "221 ") {
			delete(open, pid)
		}
	}
	return all
}

// lineKind is what a protocol log line does with the file it names.
type lineKind int

const (
	lineOther    lineKind = iota // names no file, or names it in another command (SIZE, MDTM, ...)
	lineTransfer                 // STOR, RETR, APPE or STOU: a transfer starts
	lineOK                       // OK UPLOAD or OK DOWNLOAD: vsftpd moved the whole file
	lineFail                     // FAIL UPLOAD or FAIL DOWNLOAD
)

// fileOf is the base name of the file a line names (the last argument of an FTP command, the
// path of an UPLOAD/DOWNLOAD line; "" when none) and what the line does with it.
func fileOf(line string) (string, lineKind) {
	m := vsftpdLineRE.FindStringSubmatch(line)
	if m == nil {
		return "", lineOther
	}
	kind, arg := m[2], m[4]
	switch {
	case kind == "FTP command":
		verb, p, found := strings.Cut(arg, " ")
		if !found {
			return "", lineOther
		}
		f := strings.Fields(p) // SITE UTIME <time> <path>
		if len(f) == 0 {
			return "", lineOther
		}
		switch strings.ToUpper(verb) {
		case "STOR", "RETR", "APPE", "STOU":
			return path.Base(f[len(f)-1]), lineTransfer
		}
		return path.Base(f[len(f)-1]), lineOther
	case strings.HasSuffix(kind, " UPLOAD") || strings.HasSuffix(kind, " DOWNLOAD"):
		p, _, _ := strings.Cut(arg, `"`)
		if strings.HasPrefix(kind, "OK ") {
			return path.Base(p), lineOK
		}
		return path.Base(p), lineFail
	}
	return "", lineOther
}

// outcome says whether s named file and, if so, whether it failed it: a FAIL line of it (a
// 425 on the data connection, a cut transfer), a transfer of it that never ended OK, or no
// transfer of it that did (a data connection that never came before the RETR). A session
// may upload a file and fail its download: every transfer counts, not the first.
func (s *ftpSession) outcome(file string) (named, failed bool) {
	pending, moved := false, false
	for _, line := range s.lines {
		f, kind := fileOf(line)
		if f != file {
			continue
		}
		named = true
		switch kind {
		case lineTransfer:
			if pending {
				failed = true
			}
			pending = true
		case lineOK:
			pending, moved = false, true
		case lineFail:
			pending, failed = false, true
		}
	}
	return named, named && (failed || pending || !moved)
}

// excerpt is what a failure report shows of s: its first line, then from two lines before
// the first naming file (the PASV) on, at most max lines; a long session holds every
// earlier transfer too.
func (s *ftpSession) excerpt(file string, max int) []string {
	first := len(s.lines)
	for i, line := range s.lines {
		if f, _ := fileOf(line); f == file {
			first = i
			break
		}
	}
	var out []string
	start := first - 2
	if start > 1 {
		out = append(out, s.lines[0], fmt.Sprintf("[%d lines]", start-1))
	} else {
		start = 0
	}
	rest := s.lines[start:]
	if len(rest) > max {
		out = append(out, rest[:max]...)
		return append(out, fmt.Sprintf("[%d more lines]", len(rest)-max))
	}
	return append(out, rest...)
}

// attribution is where a failed transfer's file went wrong according to vsftpd.
type attribution struct {
	nodes    []int // nodes of the sessions that failed the file, sorted; 0: an address of no node
	sessions []*ftpSession
}

// sessionsByFile indexes sessions by every file they name, in log order: a 30-minute soak's
// log has a million lines, read once, not once per failure.
func sessionsByFile(sessions []*ftpSession) map[string][]*ftpSession {
	byFile := map[string][]*ftpSession{}
	for _, s := range sessions {
		seen := map[string]bool{}
		for _, line := range s.lines {
			if f, _ := fileOf(line); f != "" && !seen[f] {
				seen[f] = true
				byFile[f] = append(byFile[f], s)
			}
		}
	}
	return byFile
}

// attribute finds the sessions of a failed transfer by its (unique) file name and the nodes
// of those that failed it. It is an error when no session names the file (the failure never
// reached vsftpd) or when every session that did moved it (the failure was not the server's):
// such a failure cannot be put on a node.
func attribute(byFile map[string][]*ftpSession, file string, nodes map[netip.Addr]int) (attribution, error) {
	var a attribution
	seen := map[int]bool{}
	for _, s := range byFile[file] {
		named, failed := s.outcome(file)
		if !named {
			continue
		}
		a.sessions = append(a.sessions, s)
		if failed && !seen[nodes[s.client]] {
			seen[nodes[s.client]] = true
			a.nodes = append(a.nodes, nodes[s.client])
		}
	}
	sort.Ints(a.nodes)
	switch {
	case len(a.sessions) == 0:
		return a, fmt.Errorf("no session in the vsftpd log names %s", file)
	case len(a.nodes) == 0:
		return a, fmt.Errorf("every session naming %s in the vsftpd log moved it (%d)", file, len(a.sessions))
	}
	return a, nil
}

// transfersByNode counts the OK and FAIL transfer lines of files whose name starts with
// prefix, per node (0: an address of no node).
func transfersByNode(log, prefix string, nodes map[netip.Addr]int) (ok, failed map[int]int) {
	ok, failed = map[int]int{}, map[int]int{}
	for _, line := range strings.Split(log, "\n") {
		f, kind := fileOf(line)
		if (kind != lineOK && kind != lineFail) || !strings.HasPrefix(f, prefix) {
			continue
		}
		m := vsftpdLineRE.FindStringSubmatch(line)
		client, err := netip.ParseAddr(m[3])
		if err != nil {
			continue
		}
		if kind == lineOK {
			ok[nodes[client]]++
		} else {
			failed[nodes[client]]++
		}
	}
	return ok, failed
}

// Real lines of the lab's vsftpd 3.0.3 with log_ftp_protocol=YES (net 10.246): a curl EPSV
// upload through node 1, a curl download through node 2 whose data connection reached
// another node (425), and an lftp round trip that failed the same way.
const (
	logCurlUpload = `Sat Nov 21 09:19:45 2026 [pid 9652] CONNECT: Client "10.246.3.11"
Sat Nov 21 09:19:45 2026 [pid 9652] FTP response: Client "10.246.3.11", "220 (vsFTPd 3.0.3)"
Sat Nov 21 09:19:45 2026 [pid 9652] FTP command: Client "10.246.3.11", "USER anonymous"
Sat Nov 21 09:19:45 2026 [pid 9651] [ftp] OK LOGIN: Client "10.246.3.11", anon password "<no_password>"
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP response: Client "10.246.3.11", "230 Login successful."
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP command: Client "10.246.3.11", "PWD"
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP response: Client "10.246.3.11", "257 "/" is the current directory"
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP command: Client "10.246.3.11", "CWD pub"
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP response: Client "10.246.3.11", "250 Directory successfully changed."
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP command: Client "10.246.3.11", "EPSV"
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP response: Client "10.246.3.11", "229 Entering Extended Passive Mode (|||21110|)"
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP command: Client "10.246.3.11", "TYPE I"
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP response: Client "10.246.3.11", "200 Switching to Binary mode."
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP command: Client "10.246.3.11", "STOR smoke.bin"
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP response: Client "10.246.3.11", "150 Ok to send data."
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] OK UPLOAD: Client "10.246.3.11", "/pub/smoke.bin", 1048576 bytes, 178895.88Kbyte/sec
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP response: Client "10.246.3.11", "226 Transfer complete."
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP command: Client "10.246.3.11", "QUIT"
Sat Nov 21 09:19:45 2026 [pid 9653] [ftp] FTP response: Client "10.246.3.11", "221 Goodbye."
`
	logCurlDownload425 = `Sat Nov 21 09:19:45 2026 [pid 9657] CONNECT: Client "10.246.3.12"
Sat Nov 21 09:19:45 2026 [pid 9657] FTP response: Client "10.246.3.12", "220 (vsFTPd 3.0.3)"
Sat Nov 21 09:19:45 2026 [pid 9657] FTP command: Client "10.246.3.12", "USER anonymous"
Sat Nov 21 09:19:45 2026 [pid 9656] [ftp] OK LOGIN: Client "10.246.3.12", anon password "<no_password>"
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP response: Client "10.246.3.12", "230 Login successful."
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP command: Client "10.246.3.12", "PWD"
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP response: Client "10.246.3.12", "257 "/" is the current directory"
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP command: Client "10.246.3.12", "CWD pub"
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP response: Client "10.246.3.12", "250 Directory successfully changed."
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP command: Client "10.246.3.12", "EPSV"
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP response: Client "10.246.3.12", "229 Entering Extended Passive Mode (|||21102|)"
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP command: Client "10.246.3.12", "TYPE I"
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP response: Client "10.246.3.12", "200 Switching to Binary mode."
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP command: Client "10.246.3.12", "SIZE smoke.bin"
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP response: Client "10.246.3.12", "213 1048576"
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP command: Client "10.246.3.12", "RETR smoke.bin"
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP response: Client "10.246.3.12", "425 Security: Bad IP connecting."
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FAIL DOWNLOAD: Client "10.246.3.12", "/pub/smoke.bin", 0.00Kbyte/sec
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP command: Client "10.246.3.12", "QUIT"
Sat Nov 21 09:19:45 2026 [pid 9658] [ftp] FTP response: Client "10.246.3.12", "221 Goodbye."
`
	logLftpRoundTrip425 = `Sat Nov 21 09:19:56 2026 [pid 11941] CONNECT: Client "10.246.3.11"
Sat Nov 21 09:19:56 2026 [pid 11941] FTP response: Client "10.246.3.11", "220 (vsFTPd 3.0.3)"
Sat Nov 21 09:19:56 2026 [pid 11941] FTP command: Client "10.246.3.11", "FEAT"
Sat Nov 21 09:19:56 2026 [pid 11941] FTP response: Client "10.246.3.11", "211-Features:"
Sat Nov 21 09:19:56 2026 [pid 11941] FTP response: Client "10.246.3.11", " EPSV??"
Sat Nov 21 09:19:56 2026 [pid 11941] FTP response: Client "10.246.3.11", "211 End"
Sat Nov 21 09:19:56 2026 [pid 11941] FTP command: Client "10.246.3.11", "USER anonymous"
Sat Nov 21 09:19:56 2026 [pid 11940] [ftp] OK LOGIN: Client "10.246.3.11", anon password "<no_password>"
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP response: Client "10.246.3.11", "230 Login successful."
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP command: Client "10.246.3.11", "TYPE I"
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP response: Client "10.246.3.11", "200 Switching to Binary mode."
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP command: Client "10.246.3.11", "PASV"
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP response: Client "10.246.3.11", "227 Entering Passive Mode (10,246,1,1,82,114)."
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP command: Client "10.246.3.11", "STOR pub/soak-lftp-1.bin"
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP response: Client "10.246.3.11", "150 Ok to send data."
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] OK UPLOAD: Client "10.246.3.11", "/pub/soak-lftp-1.bin", 262144 bytes, 137856.76Kbyte/sec
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP response: Client "10.246.3.11", "226 Transfer complete."
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP command: Client "10.246.3.11", "SITE UTIME 20261121091956 pub/soak-lftp-1.bin"
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP response: Client "10.246.3.11", "550 Permission denied."
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP command: Client "10.246.3.11", "QUIT"
Sat Nov 21 09:19:56 2026 [pid 11942] [ftp] FTP response: Client "10.246.3.11", "221 Goodbye."
Sat Nov 21 09:19:56 2026 [pid 11948] CONNECT: Client "10.246.3.12"
Sat Nov 21 09:19:56 2026 [pid 11948] FTP response: Client "10.246.3.12", "220 (vsFTPd 3.0.3)"
Sat Nov 21 09:19:56 2026 [pid 11948] FTP command: Client "10.246.3.12", "USER anonymous"
Sat Nov 21 09:19:56 2026 [pid 11947] [ftp] OK LOGIN: Client "10.246.3.12", anon password "<no_password>"
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP response: Client "10.246.3.12", "230 Login successful."
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP command: Client "10.246.3.12", "SIZE pub/soak-lftp-1.bin"
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP response: Client "10.246.3.12", "213 262144"
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP command: Client "10.246.3.12", "MDTM pub/soak-lftp-1.bin"
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP response: Client "10.246.3.12", "213 20261121091956"
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP command: Client "10.246.3.12", "PASV"
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP response: Client "10.246.3.12", "227 Entering Passive Mode (10,246,1,1,82,112)."
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP command: Client "10.246.3.12", "RETR pub/soak-lftp-1.bin"
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP response: Client "10.246.3.12", "425 Security: Bad IP connecting."
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FAIL DOWNLOAD: Client "10.246.3.12", "/pub/soak-lftp-1.bin", 0.00Kbyte/sec
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP command: Client "10.246.3.12", "QUIT"
Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP response: Client "10.246.3.12", "221 Goodbye."
`
	// Long sessions of the reliability lab (net 10.252), each a STOR, then node 3 removed from
	// the edge, then a RETR: the session on node 3 lost its data connection, the one on node
	// 2 did not.
	logLongSessionNode3 = `Sat Nov 21 09:29:01 2026 [pid 26448] CONNECT: Client "10.252.3.13"
Sat Nov 21 09:29:01 2026 [pid 26448] FTP response: Client "10.252.3.13", "220 (vsFTPd 3.0.3)"
Sat Nov 21 09:29:01 2026 [pid 26448] FTP command: Client "10.252.3.13", "USER anonymous"
Sat Nov 21 09:29:01 2026 [pid 26450] [ftp] FTP response: Client "10.252.3.13", "230 Login successful."
Sat Nov 21 09:29:01 2026 [pid 26450] [ftp] FTP command: Client "10.252.3.13", "TYPE I"
Sat Nov 21 09:29:01 2026 [pid 26450] [ftp] FTP response: Client "10.252.3.13", "200 Switching to Binary mode."
Sat Nov 21 09:29:01 2026 [pid 26450] [ftp] FTP command: Client "10.252.3.13", "PASV"
Sat Nov 21 09:29:01 2026 [pid 26450] [ftp] FTP response: Client "10.252.3.13", "227 Entering Passive Mode (10,252,1,1,82,111)."
Sat Nov 21 09:29:01 2026 [pid 26450] [ftp] FTP command: Client "10.252.3.13", "STOR pub/probe-4.bin"
Sat Nov 21 09:29:01 2026 [pid 26450] [ftp] FTP response: Client "10.252.3.13", "150 Ok to send data."
Sat Nov 21 09:29:01 2026 [pid 26450] [ftp] OK UPLOAD: Client "10.252.3.13", "/pub/probe-4.bin", 5 bytes, 9.59Kbyte/sec
Sat Nov 21 09:29:01 2026 [pid 26450] [ftp] FTP response: Client "10.252.3.13", "226 Transfer complete."
Sat Nov 21 09:29:16 2026 [pid 26450] [ftp] FTP command: Client "10.252.3.13", "PASV"
Sat Nov 21 09:29:16 2026 [pid 26450] [ftp] FTP response: Client "10.252.3.13", "227 Entering Passive Mode (10,252,1,1,82,113)."
Sat Nov 21 09:29:16 2026 [pid 26450] [ftp] FTP command: Client "10.252.3.13", "RETR pub/probe-4.bin"
Sat Nov 21 09:29:16 2026 [pid 26450] [ftp] FTP response: Client "10.252.3.13", "425 Security: Bad IP connecting."
Sat Nov 21 09:29:16 2026 [pid 26450] [ftp] FAIL DOWNLOAD: Client "10.252.3.13", "/pub/probe-4.bin", 0.00Kbyte/sec
Sat Nov 21 09:29:16 2026 [pid 26450] [ftp] FTP command: Client "10.252.3.13", "QUIT"
Sat Nov 21 09:29:16 2026 [pid 26450] [ftp] FTP response: Client "10.252.3.13", "221 Goodbye."
`
	logLongSessionNode2 = `Sat Nov 21 09:29:01 2026 [pid 26433] CONNECT: Client "10.252.3.12"
Sat Nov 21 09:29:01 2026 [pid 26433] FTP response: Client "10.252.3.12", "220 (vsFTPd 3.0.3)"
Sat Nov 21 09:29:01 2026 [pid 26433] FTP command: Client "10.252.3.12", "USER anonymous"
Sat Nov 21 09:29:01 2026 [pid 26432] [ftp] OK LOGIN: Client "10.252.3.12", anon password "<no_password>"
Sat Nov 21 09:29:01 2026 [pid 26434] [ftp] FTP response: Client "10.252.3.12", "230 Login successful."
Sat Nov 21 09:29:01 2026 [pid 26434] [ftp] FTP command: Client "10.252.3.12", "TYPE I"
Sat Nov 21 09:29:01 2026 [pid 26434] [ftp] FTP response: Client "10.252.3.12", "200 Switching to Binary mode."
Sat Nov 21 09:29:01 2026 [pid 26434] [ftp] FTP command: Client "10.252.3.12", "PASV"
Sat Nov 21 09:29:01 2026 [pid 26434] [ftp] FTP response: Client "10.252.3.12", "227 Entering Passive Mode (10,252,1,1,82,109)."
Sat Nov 21 09:29:01 2026 [pid 26434] [ftp] FTP command: Client "10.252.3.12", "STOR pub/probe-0.bin"
Sat Nov 21 09:29:01 2026 [pid 26434] [ftp] FTP response: Client "10.252.3.12", "150 Ok to send data."
Sat Nov 21 09:29:01 2026 [pid 26434] [ftp] OK UPLOAD: Client "10.252.3.12", "/pub/probe-0.bin", 5 bytes, 3.57Kbyte/sec
Sat Nov 21 09:29:01 2026 [pid 26434] [ftp] FTP response: Client "10.252.3.12", "226 Transfer complete."
Sat Nov 21 09:29:16 2026 [pid 26434] [ftp] FTP command: Client "10.252.3.12", "PASV"
Sat Nov 21 09:29:16 2026 [pid 26434] [ftp] FTP response: Client "10.252.3.12", "227 Entering Passive Mode (10,252,1,1,82,110)."
Sat Nov 21 09:29:16 2026 [pid 26434] [ftp] FTP command: Client "10.252.3.12", "RETR pub/probe-0.bin"
Sat Nov 21 09:29:16 2026 [pid 26434] [ftp] FTP response: Client "10.252.3.12", "150 Opening BINARY mode data connection for pub/probe-0.bin (5 bytes)."
Sat Nov 21 09:29:16 2026 [pid 26434] [ftp] OK DOWNLOAD: Client "10.252.3.12", "/pub/probe-0.bin", 5 bytes, 0.12Kbyte/sec
Sat Nov 21 09:29:16 2026 [pid 26434] [ftp] FTP response: Client "10.252.3.12", "226 Transfer complete."
Sat Nov 21 09:29:16 2026 [pid 26434] [ftp] FTP command: Client "10.252.3.12", "QUIT"
Sat Nov 21 09:29:16 2026 [pid 26434] [ftp] FTP response: Client "10.252.3.12", "221 Goodbye."
`
)

func TestAttribute(t *testing.T) {
	nodes := map[netip.Addr]int{}
	for k := 1; k <= 3; k++ {
		nodes[netip.AddrFrom4([4]byte{10, 246, 3, byte(10 + k)})] = k
		nodes[netip.AddrFrom4([4]byte{10, 252, 3, byte(10 + k)})] = k
	}
	// on node 3: the same lines with the download's session forwarded by node 3
	onNode3 := strings.ReplaceAll(logLftpRoundTrip425, `"10.246.3.12"`, `"10.246.3.13"`)
	// pid reuse: the failed download's logged-in pid serves a later session on node 1 that
	// names nothing of it
	reused := logCurlDownload425 + strings.ReplaceAll(strings.ReplaceAll(logCurlUpload,
		"[pid 9653]", "[pid 9658]"), `"10.246.3.11"`, `"10.246.3.13"`)
	// a data connection that never came: lftp asked for PASV and quit without RETR
	noRetr, _, _ := strings.Cut(onNode3, `Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP command: Client "10.246.3.13", "RETR`)
	noRetr += `Sat Nov 21 09:19:56 2026 [pid 11950] [ftp] FTP command: Client "10.246.3.13", "QUIT"` + "\n"

	tests := []struct {
		name      string
		log, file string
		want      []int // nodes; nil with wantErr
		sessions  int
		wantErr   string
	}{
		{name: "curl download 425 on node 2", log: logCurlUpload + logCurlDownload425, file: "smoke.bin", want: []int{2}, sessions: 2},
		{name: "lftp download 425 on node 2", log: logLftpRoundTrip425, file: "soak-lftp-1.bin", want: []int{2}, sessions: 2},
		{name: "lftp download 425 on node 3", log: onNode3, file: "soak-lftp-1.bin", want: []int{3}, sessions: 2},
		{name: "reused pid, the later session is not the failure's", log: reused, file: "smoke.bin", want: []int{2}, sessions: 2},
		{name: "no RETR: the data connection never came", log: noRetr, file: "soak-lftp-1.bin", want: []int{3}, sessions: 2},
		{name: "one session: upload OK, download 425 on node 3", log: logLongSessionNode2 + logLongSessionNode3, file: "probe-4.bin", want: []int{3}, sessions: 1},
		{name: "one session: upload and download OK", log: logLongSessionNode2 + logLongSessionNode3, file: "probe-0.bin",
			wantErr: "every session naming probe-0.bin in the vsftpd log moved it (1)"},
		{name: "never reached vsftpd", log: logLftpRoundTrip425, file: "soak-lftp-2.bin", wantErr: "no session in the vsftpd log names soak-lftp-2.bin"},
		{name: "every session moved it", log: logCurlUpload, file: "smoke.bin", wantErr: "every session naming smoke.bin in the vsftpd log moved it (1)"},
		{name: "a name is not a prefix of another", log: logLftpRoundTrip425, file: "lftp-1.bin", wantErr: "no session in the vsftpd log names lftp-1.bin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := attribute(sessionsByFile(ftpSessions(tc.log)), tc.file, nodes)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("attribute: error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("attribute: %v", err)
			}
			if diff := cmp.Diff(tc.want, a.nodes); diff != "" {
				t.Errorf("nodes (-want +got):\n%s", diff)
			}
			if len(a.sessions) != tc.sessions {
				t.Errorf("%d sessions name %s, want %d", len(a.sessions), tc.file, tc.sessions)
			}
		})
	}
}

func TestTransfersByNode(t *testing.T) {
	nodes := map[netip.Addr]int{netip.MustParseAddr("10.246.3.11"): 1, netip.MustParseAddr("10.246.3.12"): 2}
	log := logCurlUpload + logCurlDownload425 + logLftpRoundTrip425 +
		strings.ReplaceAll(logCurlUpload, `"10.246.3.11"`, `"10.246.9.9"`)
	ok, failed := transfersByNode(log, "s", nodes)
	if diff := cmp.Diff(map[int]int{1: 2, 0: 1}, ok); diff != "" {
		t.Errorf("ok (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[int]int{2: 2}, failed); diff != "" {
		t.Errorf("failed (-want +got):\n%s", diff)
	}
	ok, failed = transfersByNode(log, "soak-", nodes)
	if diff := cmp.Diff(map[int]int{1: 1}, ok); diff != "" {
		t.Errorf("soak- ok (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[int]int{2: 1}, failed); diff != "" {
		t.Errorf("soak- failed (-want +got):\n%s", diff)
	}
}

func TestExcerpt(t *testing.T) {
	s := ftpSessions(logLongSessionNode3)[1] // the logged-in process
	want := []string{
		`Sat Nov 21 09:29:01 2026 [pid 26450] [ftp] FTP response: Client "10.252.3.13", "230 Login successful."`,
		"[8 lines]",
		`Sat Nov 21 09:29:16 2026 [pid 26450] [ftp] FTP command: Client "10.252.3.13", "PASV"`,
		`Sat Nov 21 09:29:16 2026 [pid 26450] [ftp] FTP response: Client "10.252.3.13", "227 Entering Passive Mode (10,252,1,1,82,113)."`,
		`Sat Nov 21 09:29:16 2026 [pid 26450] [ftp] FTP command: Client "10.252.3.13", "RETR pub/probe-4.bin"`,
		"[4 more lines]",
	}
	// the session names probe-4.bin from its STOR on: pretend that was another file
	s.lines = append([]string(nil), s.lines...)
	for i := range s.lines[:9] { // up to the STOR's 226
		s.lines[i] = strings.ReplaceAll(s.lines[i], "probe-4.bin", "probe-3.bin")
	}
	if diff := cmp.Diff(want, s.excerpt("probe-4.bin", 3)); diff != "" {
		t.Errorf("excerpt (-want +got):\n%s", diff)
	}
	want = append([]string{s.lines[0], "[2 lines]"}, s.lines[3:]...)
	if diff := cmp.Diff(want, s.excerpt("probe-3.bin", 100)); diff != "" {
		t.Errorf("excerpt of the session's first file (-want +got):\n%s", diff)
	}
}
