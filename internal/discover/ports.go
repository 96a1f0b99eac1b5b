package discover

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/obsd-dev/obsd/internal/nsenter"
)

// Finding the owner of a listening port takes two steps: the inodes of
// sockets in LISTEN state on watched ports, and the processes holding fds
// on those inodes, from readlink of /proc/PID/fd/*. Sockets are per network
// namespace, so processes are grouped by their /proc/PID/ns/net link and
// each namespace is asked once per scan: through a sock_diag socket opened
// inside it (see sockdiag.go), or, where that is not possible (not root,
// a ProcRoot other than /proc), through the tcp tables in one of its
// members' /proc/PID/net. Walking fds is the costly part, so a process's
// fds are walked only when it is new, when its namespace gained a
// listening socket since its last walk, or every portRecheckEvery scans
// while it matches. A socket that goes away needs no walk: the processes
// that held it simply stop matching on it.

// errNoMember is returned when every process of a namespace exited (or
// left it) before the namespace could be read.
var errNoMember = errors.New("no process of the namespace left to read it through")

// errMoved is returned when a process is no longer in the namespace it
// was grouped by.
var errMoved = nsenter.ErrMoved

// matchPorts sets p.ports for every live process.
func (w *Watcher) matchPorts(live map[int]*proc) {
	groups := make(map[string][]int)
	for pid, p := range live {
		ns := w.netnsOf(pid, p)
		groups[ns] = append(groups[ns], pid)
	}
	recheck := w.scanNo%portRecheckEvery == 0
	for ns, members := range groups {
		n := w.nets[ns]
		if n == nil {
			n = &netns{}
			w.nets[ns] = n
		}
		n.seen = w.scanNo
		set, err := w.readListeners(ns, n, members)
		switch {
		case err == nil:
			n.warned = false
			for inode := range set {
				if _, ok := n.inodes[inode]; !ok {
					w.version++
					n.grew = w.version
					break
				}
			}
			n.inodes = set
		case errors.Is(err, errNoMember):
			// All exited; they drop out of the next scan.
		case !n.warned:
			// Keep the last good set rather than dropping every target.
			n.warned = true
			w.log.Warn("reading listening sockets; keeping the previous set", "netns", ns, "err", err)
		}
		for _, pid := range members {
			p := live[pid]
			if len(n.inodes) == 0 {
				p.ports = nil
				continue
			}
			if recheck && len(p.ports) > 0 {
				p.swept = 0
			}
			if p.swept < n.grew {
				w.sweepFDs(pid, p, n)
			}
			p.ports = p.ports[:0]
			for _, inode := range p.held {
				if port, ok := n.inodes[inode]; ok && !slices.Contains(p.ports, port) {
					p.ports = append(p.ports, port)
				}
			}
		}
	}
	for ns, n := range w.nets {
		if n.seen != w.scanNo {
			n.close()
			delete(w.nets, ns)
		}
	}
}

// netnsOf returns the process's network namespace link, "net:[inode]",
// read once per process. "" (unreadable: no permission, or it exited)
// stands for obsd's own namespace.
func (w *Watcher) netnsOf(pid int, p *proc) string {
	if !p.nsDone {
		p.nsDone = true
		if link, err := os.Readlink(filepath.Join(w.root, strconv.Itoa(pid), "ns", "net")); err == nil {
			p.ns = link
		}
	}
	return p.ns
}

// readListeners returns inode -> port for the listening sockets on
// watched ports in one namespace.
func (w *Watcher) readListeners(ns string, n *netns, members []int) (map[uint64]int, error) {
	if w.diag && !n.tables {
		if n.conn == nil {
			conn, err := w.openDiagFor(ns, members)
			switch {
			case errors.Is(err, errNoMember):
				return nil, err
			case err != nil:
				// Expected when not root: entering a namespace needs
				// CAP_SYS_ADMIN.
				n.tables = true
				w.log.Debug("sock_diag unavailable in network namespace; reading its tcp tables", "netns", ns, "err", err)
			default:
				n.conn = conn
			}
		}
		if n.conn != nil {
			ls, err := n.conn.listeners()
			if err == nil {
				return w.watched(ls), nil
			}
			w.log.Warn("sock_diag dump failed; reading the namespace's tcp tables from now on", "netns", ns, "err", err)
			n.close()
			n.tables = true
		}
	}
	if ns == "" {
		return w.readNetDir(filepath.Join(w.root, "net"))
	}
	for _, pid := range members {
		set, err := w.readNetDir(filepath.Join(w.root, strconv.Itoa(pid), "net"))
		if err != nil && isGone(err) {
			continue
		}
		return set, err
	}
	return nil, errNoMember
}

// openDiagFor opens a sock_diag socket in namespace ns through one of its
// members.
func (w *Watcher) openDiagFor(ns string, members []int) (*diagConn, error) {
	if ns == "" || ns == w.selfNS {
		return openDiag("", 0)
	}
	ino, ok := parseNSLink(ns)
	if !ok {
		return nil, fmt.Errorf("unexpected network namespace link %q", ns)
	}
	for _, pid := range members {
		c, err := openDiag(filepath.Join(w.root, strconv.Itoa(pid), "ns", "net"), ino)
		if err != nil && (isGone(err) || errors.Is(err, errMoved)) {
			continue
		}
		return c, err
	}
	return nil, errNoMember
}

// watched keeps the listeners on watched ports.
func (w *Watcher) watched(ls []listener) map[uint64]int {
	set := make(map[uint64]int)
	for _, l := range ls {
		if w.ports[l.Port] {
			set[l.Inode] = l.Port
		}
	}
	return set
}

// readNetDir reads tcp and tcp6 in a procfs net directory and returns
// inode -> port for LISTEN sockets on watched ports.
func (w *Watcher) readNetDir(dir string) (map[uint64]int, error) {
	var all []listener
	for _, name := range []string{"tcp", "tcp6"} {
		file := filepath.Join(dir, name)
		f, err := os.Open(file)
		if err != nil {
			if name == "tcp6" && errors.Is(err, fs.ErrNotExist) {
				continue // IPv6 disabled
			}
			return nil, fmt.Errorf("opening tcp table: %w", err)
		}
		ls, err := parseListeners(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", file, err)
		}
		all = append(all, ls...)
	}
	return w.watched(all), nil
}

// sweepFDs finds which of the namespace's listening sockets the process
// holds, by reading its fd links.
func (w *Watcher) sweepFDs(pid int, p *proc, n *netns) {
	w.fdSweeps++
	p.swept = w.version
	p.held = p.held[:0]
	dir := filepath.Join(w.root, strconv.Itoa(pid), "fd")
	d, err := os.Open(dir)
	if err != nil {
		if !isGone(err) {
			w.log.Debug("listing process fds", "pid", pid, "err", err)
		}
		return
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		w.log.Debug("listing process fds", "pid", pid, "err", err)
		return
	}
	for _, name := range names {
		link, err := os.Readlink(filepath.Join(dir, name))
		if err != nil {
			continue // closed meanwhile
		}
		inode, ok := parseSocketLink(link)
		if !ok {
			continue
		}
		if _, ok := n.inodes[inode]; ok {
			p.held = append(p.held, inode)
		}
	}
}
