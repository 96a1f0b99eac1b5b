package discover

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// This file holds the pure parsers of procfs text. They take bytes or a
// reader and touch no files, so they are tested on fixtures in testdata/.

// stat is what obsd needs from /proc/PID/stat.
type stat struct {
	Comm  string
	State byte
	// Start is field 22, starttime, in clock ticks since boot. With the pid
	// it identifies a process: a reused pid gets a later start time.
	Start uint64
	// StartCode and StartStack (fields 26 and 28) are set by each exec and,
	// with address space randomization, differ between two execs of the
	// same file: they reveal an exec that keeps pid, start time and name.
	// They read 0 without ptrace access to the process, and are absent
	// from stat lines written by tests.
	StartCode, StartStack uint64
}

// gone reports whether the process has exited and awaits (or is past)
// reaping: zombie 'Z' or dead 'X'. Its exe link is already gone.
func (s stat) gone() bool { return s.State == 'Z' || s.State == 'X' }

// sameImage reports whether two reads of one pid's stat show the same
// process running the same exec.
func (s stat) sameImage(o stat) bool {
	return s.Start == o.Start && s.Comm == o.Comm && s.StartCode == o.StartCode && s.StartStack == o.StartStack
}

// Fields of /proc/PID/stat, numbered from 1 as in proc(5).
const (
	statState      = 3
	statStartTime  = 22
	statStartCode  = 26
	statStartStack = 28
)

// parseStat parses the contents of /proc/PID/stat. The command name
// (field 2) may contain spaces, parentheses and any byte but NUL, so it
// runs from the first '(' to the last ')'; the fields after it are plain.
// It runs for every process on every scan, so it walks the fields instead
// of splitting them all.
func parseStat(data []byte) (stat, error) {
	open := bytes.IndexByte(data, '(')
	closing := bytes.LastIndexByte(data, ')')
	if open < 0 || closing < open {
		return stat{}, errors.New("parsing stat: no command name in parentheses")
	}
	var raw [statStartStack + 1][]byte
	rest, field := data[closing+1:], 2
	for field < statStartStack {
		rest = bytes.TrimLeft(rest, " \n")
		if len(rest) == 0 {
			break
		}
		end := bytes.IndexAny(rest, " \n")
		if end < 0 {
			end = len(rest)
		}
		field++
		raw[field] = rest[:end]
		rest = rest[end:]
	}
	if field < statStartTime {
		return stat{}, fmt.Errorf("parsing stat: %d fields after the command name, want at least %d", field-2, statStartTime-2)
	}
	st := stat{Comm: string(data[open+1 : closing])}
	if len(raw[statState]) != 1 {
		return stat{}, fmt.Errorf("parsing stat: state %q is not one character", raw[statState])
	}
	st.State = raw[statState][0]
	for _, f := range []struct {
		n   int
		dst *uint64
	}{{statStartTime, &st.Start}, {statStartCode, &st.StartCode}, {statStartStack, &st.StartStack}} {
		if raw[f.n] == nil {
			continue
		}
		v, err := strconv.ParseUint(string(raw[f.n]), 10, 64)
		if err != nil {
			return stat{}, fmt.Errorf("parsing stat field %d: %w", f.n, err)
		}
		*f.dst = v
	}
	return st, nil
}

// parseEnviron parses /proc/PID/environ: NUL-separated KEY=VALUE entries.
// Entries without '=' or with an empty key are skipped. A duplicated key
// keeps its first value, as getenv in libc and Go's os.Getenv do.
func parseEnviron(data []byte) map[string]string {
	env := make(map[string]string)
	for len(data) > 0 {
		var entry []byte
		if i := bytes.IndexByte(data, 0); i >= 0 {
			entry, data = data[:i], data[i+1:]
		} else {
			entry, data = data, nil
		}
		k, v, ok := bytes.Cut(entry, []byte{'='})
		if !ok || len(k) == 0 {
			continue
		}
		if _, dup := env[string(k)]; !dup {
			env[string(k)] = string(v)
		}
	}
	return env
}

// parseResourceAttrs parses OTEL_RESOURCE_ATTRIBUTES:
// "key1=value1,key2=value2", W3C Baggage syntax without properties, values
// percent-encoded. It behaves as the OpenTelemetry Go SDK does, so the
// attributes obsd attaches equal those the target's own SDK would report:
// keys and values are trimmed of spaces and tabs, values are
// percent-decoded ('+' stays '+'), a value that fails to decode is kept as
// written, and a member without '=' (or with an empty key) is dropped and
// named in the returned error while the valid members are still returned.
// Empty members (",,") are ignored. A later duplicate key wins.
func parseResourceAttrs(s string) (map[string]string, error) {
	var attrs map[string]string
	var invalid, undecodable []string
	for member := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(member) == "" {
			continue
		}
		k, v, ok := strings.Cut(member, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			invalid = append(invalid, member)
			continue
		}
		v = strings.TrimSpace(v)
		if dec, err := url.PathUnescape(v); err == nil {
			v = dec
		} else {
			undecodable = append(undecodable, k)
		}
		if attrs == nil {
			attrs = make(map[string]string)
		}
		attrs[k] = v
	}
	var errs []error
	if len(invalid) > 0 {
		errs = append(errs, fmt.Errorf("parsing resource attributes: members without key=value: %q", invalid))
	}
	if len(undecodable) > 0 {
		errs = append(errs, fmt.Errorf("parsing resource attributes: values of %q are not valid percent-encoding, kept as written", undecodable))
	}
	return attrs, errors.Join(errs...)
}

// Names of the target's environment variables obsd reads.
const (
	envServiceName  = "OTEL_SERVICE_NAME"
	envResourceAttr = "OTEL_RESOURCE_ATTRIBUTES"
	// envManual is the marker of manual/ ("Working with obsd").
	envManual = "OTEL_GO_MANUAL"
)

// serviceName picks service.name as the OpenTelemetry SDK inside the target
// would: OTEL_SERVICE_NAME, else service.name from OTEL_RESOURCE_ATTRIBUTES,
// else (where the SDK would say "unknown_service:NAME") the executable's
// base name. Empty values count as unset, as the OTel spec requires.
func serviceName(env, attrs map[string]string, exe string) string {
	if s := strings.TrimSpace(env[envServiceName]); s != "" {
		return s
	}
	if s := attrs["service.name"]; s != "" {
		return s
	}
	return path.Base(exe)
}

// listener is one TCP socket in LISTEN state.
type listener struct {
	Port  int
	Inode uint64
}

// tcpListen is the st column of a LISTEN socket (TCP_LISTEN = 10).
const tcpListen = "0A"

// parseListeners reads /proc/net/tcp or /proc/net/tcp6 and returns the
// sockets in LISTEN state with their local port and socket inode. The
// first line is the column header. Lines look like
//
//	0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 12345 1 ...
//
// with the local address (hex IP, hex port) in column 2, the state in
// column 4 and the inode in column 10; tcp6 differs only in the IP width.
// A malformed line is an error naming its number.
func parseListeners(r io.Reader) ([]listener, error) {
	var out []listener
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), 64*1024)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if line == 1 {
			if f := strings.Fields(text); len(f) == 0 || f[0] != "sl" {
				return nil, fmt.Errorf("parsing tcp table: header %q does not start with \"sl\"", text)
			}
			continue
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		if len(f) < 10 {
			return out, fmt.Errorf("parsing tcp table line %d: %d columns, want at least 10", line, len(f))
		}
		// Most sockets are connections, so check the state before parsing.
		if f[3] != tcpListen {
			continue
		}
		i := strings.LastIndexByte(f[1], ':')
		if i < 0 {
			return out, fmt.Errorf("parsing tcp table line %d: local address %q has no port", line, f[1])
		}
		port, err := strconv.ParseUint(f[1][i+1:], 16, 16)
		if err != nil {
			return out, fmt.Errorf("parsing tcp table line %d port: %w", line, err)
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return out, fmt.Errorf("parsing tcp table line %d inode: %w", line, err)
		}
		// Inode 0 means no socket file (orphaned); no process can own it.
		if inode != 0 {
			out = append(out, listener{Port: int(port), Inode: inode})
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("reading tcp table: %w", err)
	}
	return out, nil
}

// parseSocketLink returns the inode of an fd link target "socket:[12345]".
func parseSocketLink(link string) (uint64, bool) {
	if kind, n, ok := parseInodeLink(link); ok && kind == "socket" {
		return n, true
	}
	return 0, false
}

// parseNSLink returns the inode of a namespace link target "net:[4026531840]".
func parseNSLink(link string) (uint64, bool) {
	_, n, ok := parseInodeLink(link)
	return n, ok
}

// parseInodeLink splits the kernel's "KIND:[INODE]" link targets.
func parseInodeLink(link string) (kind string, inode uint64, ok bool) {
	kind, s, ok := strings.Cut(link, ":[")
	if !ok {
		return "", 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return "", 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return kind, n, err == nil
}

// deletedSuffix is what the kernel appends to the exe link of a process
// whose executable file was unlinked (typically replaced by an upgrade).
const deletedSuffix = " (deleted)"

// parseExeLink splits the target of /proc/PID/exe into the path and
// whether the file was deleted.
func parseExeLink(link string) (exe string, deleted bool) {
	if s, ok := strings.CutSuffix(link, deletedSuffix); ok {
		return s, true
	}
	return link, false
}
