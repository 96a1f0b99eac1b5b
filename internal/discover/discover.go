// Package discover finds the processes obsd instruments and keeps watching
// for them: by pid, by executable path glob, and by listening TCP port. A
// Watcher diffs each scan against the previous one and reports processes
// added and removed. A process is identified by pid and start time, so a
// reused pid is a removal plus an addition, and so is an exec.
//
// Everything comes from procfs, except that listening sockets are asked of
// the kernel by sock_diag netlink, inside each network namespace, because
// /proc/net/tcp is far costlier (see sockdiag.go); the tcp tables remain
// the fallback without root and for fake procfs trees in tests.
package discover

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Criteria select target processes. A process matching any criterion is
// selected (union); empty Criteria select nothing.
type Criteria struct {
	// PIDs selects processes by pid (--pid).
	PIDs []int
	// ExeGlobs selects processes by executable path (--exe). The syntax is
	// path.Match's except that '*' and '?' also match '/'. A pattern
	// containing '/' must match the whole absolute path as the process sees
	// it (inside its mount namespace, e.g. "/app/server" in a container),
	// e.g. "/usr/local/bin/myservice" or "*/bin/*"; a pattern without '/'
	// is matched against the base name only, e.g. "myservice" or "my*".
	ExeGlobs []string
	// Ports selects processes holding a TCP socket in LISTEN state on the
	// port (--port), IPv4 or IPv6, in any network namespace.
	Ports []int
}

// Empty reports whether no criterion is set.
func (c Criteria) Empty() bool {
	return len(c.PIDs) == 0 && len(c.ExeGlobs) == 0 && len(c.Ports) == 0
}

// Validate checks every criterion and returns all problems found.
func (c Criteria) Validate() error {
	var errs []error
	for _, pid := range c.PIDs {
		if pid <= 0 {
			errs = append(errs, fmt.Errorf("pid %d: must be positive", pid))
		}
	}
	for _, p := range c.ExeGlobs {
		if _, err := compileGlob(p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, port := range c.Ports {
		if port < 1 || port > 65535 {
			errs = append(errs, fmt.Errorf("port %d: must be in 1..65535", port))
		}
	}
	return errors.Join(errs...)
}

// Process is a selected target. Values are snapshots taken when the
// process was first matched; Removed receives the same value Added did.
// A process that exec'd is removed and added again, even when it ran its
// own file again and the two values are equal.
type Process struct {
	PID int
	// StartTime is /proc/PID/stat starttime (clock ticks since boot); with
	// PID it tells a reused pid from the process that had it before.
	StartTime uint64
	// Exe is the executable's path as the target sees it (readlink of
	// /proc/PID/exe) without the kernel's " (deleted)" suffix.
	Exe string
	// ExeDeleted is set when the file was unlinked after the process
	// started (e.g. replaced by an upgrade); ExePath still opens it.
	ExeDeleted bool
	// ExePath is ProcRoot/PID/exe, the path to open or attach through: it
	// reaches the exact file the process runs, across mount namespaces and
	// even when deleted.
	ExePath string
	// ServiceName is OTEL_SERVICE_NAME from the target's environment, else
	// service.name from its OTEL_RESOURCE_ATTRIBUTES, else Exe's base name.
	ServiceName string
	// ResourceAttrs are the target's OTEL_RESOURCE_ATTRIBUTES, decoded; nil
	// when unset or unreadable. Shared between values: do not modify.
	ResourceAttrs map[string]string
	// InstanceID is service.instance.id when the source knows a stable one
	// (Kubernetes: namespace.pod.container); "" means host:pid.
	InstanceID string
	// ManualTracing is the target's OTEL_GO_MANUAL ("1" or "0"), which
	// overrides obsd's guess whether the service traces itself; "" if unset.
	ManualTracing string
	// Seq numbers the incarnations a Watcher reported, from 1: pid, start
	// time and exec image together. Two values describe the same
	// incarnation exactly when their Seq is equal.
	Seq uint64
}

// Options configure a Watcher. The zero value works.
type Options struct {
	// ProcRoot is where procfs is mounted; "" means "/proc". Tests point
	// it at a fake tree.
	ProcRoot string
	// Interval is the time between scans in Run; 0 means 500ms.
	Interval time.Duration
	// Logger receives debug detail and warnings; nil means no logging.
	Logger *slog.Logger
	// Self is a pid never reported, obsd's own; 0 means os.Getpid().
	Self int
}

// Handler receives the changes Run finds. Calls come from Run's goroutine,
// one at a time; for each scan, removals come before additions, so a reused
// pid is removed before it is added again.
type Handler interface {
	Added(Process)
	Removed(Process)
}

// Watcher finds processes matching Criteria. Its methods may be called from
// several goroutines; scans are serialized.
type Watcher struct {
	root     string
	interval time.Duration
	log      *slog.Logger
	self     int
	err      error // invalid criteria: every Scan and Run returns it
	// diag is set when listening sockets are asked of the kernel by
	// sock_diag, which sees the real system: only with the real /proc.
	diag   bool
	selfNS string // obsd's own network namespace link, with diag

	pids  map[int]bool
	globs []glob
	ports map[int]bool

	scans     atomic.Uint64
	delivered atomic.Uint64
	seq       uint64 // last Process.Seq given, under mu

	mu      sync.Mutex
	scanNo  uint64
	procs   map[int]*proc       // every live candidate seen, by pid
	nets    map[string]*netns   // listening sockets per network namespace
	version uint64              // bumped whenever a namespace gains a listening socket
	current map[procKey]Process // reported and not yet removed
	missing map[int]bool        // requested pids not running, already logged
	ranPID  map[int]bool        // requested pids seen running at least once
	idle    map[int]bool        // watched ports without a listener, already logged
	buf     []byte              // reused for reading stat files

	// fdSweeps counts per-process walks of /proc/PID/fd, so tests can
	// check that they are not repeated while nothing changes.
	fdSweeps uint64
}

// procKey identifies a reported process. An exec changes what runs (and
// what can be probed) under the same pid and start time, so the exe and
// the exec's stat fingerprint are part of it.
type procKey struct {
	pid        int
	start      uint64
	startCode  uint64
	startStack uint64
	exe        string
	// exeDev and exeIno identify the file the image runs, so an exec of
	// another file under the same path is seen even when stat shows
	// nothing (no address randomization, same name).
	exeDev, exeIno uint64
}

// proc caches what was learned about one process, valid for as long as
// its stat shows the same image (stat.sameImage).
type proc struct {
	stat stat
	seen uint64 // scanNo when last seen alive

	exeDone bool
	exe     string
	deleted bool
	exeErr  error
	// exeDev and exeIno are the file it runs, as last seen (see
	// execChanged); 0 until first read.
	exeDev, exeIno uint64

	nsDone bool
	ns     string // "net:[inode]", or "" when unreadable

	swept uint64   // Watcher.version at the last fd sweep; 0: never swept
	held  []uint64 // listening sockets on watched ports among its fds then
	ports []int    // watched ports it listens on now

	info *Process // built once on first match
}

// netns is one network namespace's set of listening sockets on watched
// ports, and how it is read.
type netns struct {
	inodes map[uint64]int // inode -> port
	grew   uint64         // Watcher.version when it last gained a socket
	seen   uint64
	warned bool
	conn   *diagConn // sock_diag socket inside the namespace, once opened
	tables bool      // sock_diag unavailable: read the tcp tables instead
}

func (n *netns) close() {
	if n.conn != nil {
		n.conn.Close()
		n.conn = nil
	}
}

// portRecheckEvery is how many scans pass before processes matched by port
// have their fds checked again, to notice one that closed its listener
// while another process (e.g. a forked child) keeps the socket open.
const portRecheckEvery = 20

// New returns a Watcher for c. Invalid criteria (see Criteria.Validate)
// make every Scan and Run return the error.
func New(c Criteria, o Options) *Watcher {
	w := &Watcher{
		root:     o.ProcRoot,
		interval: o.Interval,
		log:      o.Logger,
		self:     o.Self,
		pids:     make(map[int]bool),
		ports:    make(map[int]bool),
		procs:    make(map[int]*proc),
		nets:     make(map[string]*netns),
		current:  make(map[procKey]Process),
		missing:  make(map[int]bool),
		ranPID:   make(map[int]bool),
		idle:     make(map[int]bool),
		buf:      make([]byte, 0, 1024),
	}
	if w.root == "" {
		w.root = "/proc"
	}
	if w.root == "/proc" {
		w.diag = true
		w.selfNS, _ = os.Readlink("/proc/self/ns/net")
	}
	if w.interval <= 0 {
		w.interval = 500 * time.Millisecond
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.self == 0 {
		w.self = os.Getpid()
	}
	if err := c.Validate(); err != nil {
		w.err = fmt.Errorf("invalid discovery criteria: %w", err)
		return w
	}
	for _, pid := range c.PIDs {
		if pid == w.self {
			w.log.Warn("ignoring requested pid: it is obsd itself", "pid", pid)
			continue
		}
		w.pids[pid] = true
	}
	for _, p := range c.ExeGlobs {
		g, _ := compileGlob(p) // checked by Validate
		w.globs = append(w.globs, g)
	}
	for _, port := range c.Ports {
		w.ports[port] = true
	}
	return w
}

// Close releases the sock_diag sockets kept per network namespace (each
// keeps its namespace alive). A later Scan opens them again.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ns, n := range w.nets {
		n.close()
		delete(w.nets, ns)
	}
	return nil
}

// Scans returns how many scans have completed successfully.
func (w *Watcher) Scans() uint64 { return w.scans.Load() }

// Delivered returns how many scans Run has completed and handed to its
// Handler: every Added and Removed call of those scans has returned.
func (w *Watcher) Delivered() uint64 { return w.delivered.Load() }

// Run scans at once and then every Interval until ctx is done, passing
// changes to h. It returns nil when ctx is done, the criteria error, or the
// first scan's error (procfs unreadable); later scan errors are logged and
// the next scan retries. Processes still reported when Run returns are not
// passed to Removed. h must not be nil.
func (w *Watcher) Run(ctx context.Context, h Handler) error {
	if w.err != nil {
		return w.err
	}
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for first := true; ; first = false {
		if ctx.Err() != nil {
			return nil
		}
		added, removed, err := w.Scan()
		if err != nil {
			if first {
				return err
			}
			w.log.Warn("process discovery scan failed", "err", err)
		}
		for _, p := range removed {
			h.Removed(p)
		}
		for _, p := range added {
			h.Added(p)
		}
		if err == nil {
			w.delivered.Add(1)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Scan looks at procfs once and returns the processes that match now but
// did not at the previous scan, and those that no longer do (exited, pid
// reused, exec'd, stopped listening). Both are sorted by pid. A process
// vanishing mid-scan is not an error.
func (w *Watcher) Scan() (added, removed []Process, err error) {
	if w.err != nil {
		return nil, nil, w.err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scanNo++

	pids, err := w.candidates()
	if err != nil {
		return nil, nil, err
	}
	live := make(map[int]*proc, len(pids))
	for _, pid := range pids {
		if p := w.refresh(pid); p != nil {
			live[pid] = p
		}
	}
	for pid := range w.pids {
		if _, ok := live[pid]; ok {
			delete(w.missing, pid)
			w.ranPID[pid] = true
		} else if !w.missing[pid] {
			w.missing[pid] = true
			if w.ranPID[pid] {
				w.log.Info("requested process exited; obsd will instrument whichever process gets this pid next (to follow a service across restarts, select it with --exe or --port)", "pid", pid)
			} else {
				w.log.Info("no process has the requested pid; check it (obsd will instrument a process that gets this pid later)", "pid", pid)
			}
		}
	}
	if len(w.ports) > 0 {
		w.matchPorts(live)
		w.logIdlePorts(live)
	}

	next := make(map[procKey]Process)
	for pid, p := range live {
		if p.stat.StartCode == 0 && p.stat.StartStack == 0 && p.stat.State != 'Z' && p.stat.State != 'X' {
			// Mid-exec: the new image's address space is in place but
			// not yet laid out (the kernel sets both after switching to
			// it). Its fingerprint would change again at the next scan: a
			// second, spurious incarnation. Keep what it was until then.
			// (A process on its way out also has no address space; it is
			// a zombie, or gone, at the next scan.)
			for k, proc := range w.current {
				if k.pid == pid {
					next[k] = proc
				}
			}
			continue
		}
		if !w.matches(pid, p) {
			continue
		}
		if w.execChanged(pid, p) {
			// Same stat fingerprint, another file: a new image.
			p = w.reset(pid, p)
			if !w.matches(pid, p) {
				continue
			}
			w.execChanged(pid, p)
		}
		next[procKey{pid, p.stat.Start, p.stat.StartCode, p.stat.StartStack, p.exe, p.exeDev, p.exeIno}] = w.describe(pid, p)
	}
	for k, proc := range w.current {
		if _, ok := next[k]; !ok {
			removed = append(removed, proc)
		}
	}
	for k, proc := range next {
		if _, ok := w.current[k]; !ok {
			added = append(added, proc)
		}
	}
	w.current = next
	for pid, p := range w.procs {
		if p.seen != w.scanNo {
			delete(w.procs, pid)
		}
	}
	w.scans.Add(1)
	byPID := func(a, b Process) int { return a.PID - b.PID }
	slices.SortFunc(added, byPID)
	slices.SortFunc(removed, byPID)
	for _, p := range removed {
		w.log.Debug("target process removed", "pid", p.PID, "exe", p.Exe)
	}
	for _, p := range added {
		w.log.Debug("target process added", "pid", p.PID, "exe", p.Exe, "service", p.ServiceName)
	}
	return added, removed, nil
}

// logIdlePorts logs, once each time it happens, that no process listens on
// a watched port, and when one does again.
func (w *Watcher) logIdlePorts(live map[int]*proc) {
	held := make(map[int]bool, len(w.ports))
	for _, p := range live {
		for _, port := range p.ports {
			held[port] = true
		}
	}
	for port := range w.ports {
		switch {
		case !held[port] && !w.idle[port]:
			w.idle[port] = true
			w.log.Info("no process listens on the watched TCP port (in any network namespace); obsd will instrument one that starts listening", "port", port)
		case held[port] && w.idle[port]:
			delete(w.idle, port)
			w.log.Info("a process listens on the watched TCP port", "port", port)
		}
	}
}

// candidates lists the pids to look at: every process when an exe or port
// criterion needs them all, else just the requested pids.
func (w *Watcher) candidates() ([]int, error) {
	if len(w.globs) == 0 && len(w.ports) == 0 {
		pids := make([]int, 0, len(w.pids))
		for pid := range w.pids {
			pids = append(pids, pid)
		}
		return pids, nil
	}
	d, err := os.Open(w.root)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	defer d.Close()
	// Readdirnames, unlike ReadDir, does not stat each entry.
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing processes in %s: %w", w.root, err)
	}
	pids := make([]int, 0, len(names))
	for _, name := range names {
		if name[0] < '1' || name[0] > '9' {
			continue
		}
		if pid, err := strconv.Atoi(name); err == nil && pid != w.self {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// refresh reads the process's stat and returns its cache entry, reset if
// the pid was reused or the process exec'd; nil if it is gone or a zombie.
// This one read is all a known process costs per scan when only exe
// globs are watched.
func (w *Watcher) refresh(pid int) *proc {
	if pid == w.self {
		return nil
	}
	data, err := w.readSmall(w.root + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if !isGone(err) {
			w.log.Debug("reading process stat", "pid", pid, "err", err)
		}
		return nil
	}
	st, err := parseStat(data)
	if err != nil {
		w.log.Warn("skipping process with unparsable stat", "pid", pid, "err", err)
		return nil
	}
	if st.gone() {
		return nil
	}
	p := w.procs[pid]
	// A different start time is a new process under a reused pid. With
	// the same start time, a new command name (the kernel sets it from the
	// file name), start of code or start of stack means it exec'd. Either
	// way the exe, environment and fds must be read again.
	if p == nil || !p.stat.sameImage(st) {
		p = &proc{}
		w.procs[pid] = p
	}
	p.stat = st
	p.seen = w.scanNo
	return p
}

// reset starts a fresh cache entry for a process found running a new image.
func (w *Watcher) reset(pid int, old *proc) *proc {
	p := &proc{stat: old.stat, seen: old.seen}
	w.procs[pid] = p
	return p
}

// execChanged records the device and inode of the file a selected process
// runs (one stat of /proc/PID/exe per scan) and reports whether they
// differ from those recorded before. An unreadable link keeps the old
// values: the process is exiting, or it is a fake tree in tests.
func (w *Watcher) execChanged(pid int, p *proc) bool {
	var st syscall.Stat_t
	if err := syscall.Stat(w.root+"/"+strconv.Itoa(pid)+"/exe", &st); err != nil {
		return false
	}
	changed := p.exeIno != 0 && (p.exeDev != st.Dev || p.exeIno != st.Ino)
	p.exeDev, p.exeIno = st.Dev, st.Ino
	return changed
}

// readSmall reads a small procfs file into w.buf, which the result
// aliases until the next call. It runs for every process on every scan,
// so it skips os.File's bookkeeping (finalizer, poller registration).
func (w *Watcher) readSmall(name string) ([]byte, error) {
	fd, err := syscall.Open(name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer syscall.Close(fd)
	buf := w.buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, 512)
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	w.buf = buf[:0]
	return buf, nil
}

// isGone reports whether err means the process exited while we looked.
func isGone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// resolveExe reads the exe link once per process (and again after exec).
func (w *Watcher) resolveExe(pid int, p *proc) {
	if p.exeDone {
		return
	}
	p.exeDone = true
	link, err := os.Readlink(filepath.Join(w.root, strconv.Itoa(pid), "exe"))
	if err != nil {
		// Kernel threads have no exe; that, exiting and missing permission
		// all mean nothing to attach to.
		p.exeErr = err
		if w.pids[pid] {
			w.log.Warn("requested pid has no readable executable, so there is nothing to probe (a kernel thread, or obsd lacks the permission: run it as root); not instrumenting it", "pid", pid, "err", err)
		}
		return
	}
	p.exe, p.deleted = parseExeLink(link)
}

// matches reports whether a live process meets any criterion. It needs the
// exe in every case: without one there is nothing to attach to.
func (w *Watcher) matches(pid int, p *proc) bool {
	if !w.pids[pid] && len(w.globs) == 0 && len(p.ports) == 0 {
		return false
	}
	w.resolveExe(pid, p)
	if p.exeErr != nil {
		return false
	}
	if w.pids[pid] || len(p.ports) > 0 {
		return true
	}
	for _, g := range w.globs {
		if g.match(p.exe) {
			return true
		}
	}
	return false
}

// describe builds the Process for a match, reading its environment once.
func (w *Watcher) describe(pid int, p *proc) Process {
	if p.info != nil {
		return *p.info
	}
	dir := filepath.Join(w.root, strconv.Itoa(pid))
	info := &Process{
		PID:        pid,
		StartTime:  p.stat.Start,
		Exe:        p.exe,
		ExeDeleted: p.deleted,
		ExePath:    filepath.Join(dir, "exe"),
	}
	w.seq++
	info.Seq = w.seq
	var env map[string]string
	if data, err := os.ReadFile(filepath.Join(dir, "environ")); err != nil {
		w.log.Debug("reading target environment; naming it after its executable", "pid", pid, "err", err)
	} else {
		env = parseEnviron(data)
	}
	if s, ok := env[envResourceAttr]; ok {
		attrs, err := parseResourceAttrs(s)
		if err != nil {
			w.log.Warn("target has malformed "+envResourceAttr, "pid", pid, "err", err)
		}
		info.ResourceAttrs = attrs
	}
	info.ServiceName = serviceName(env, info.ResourceAttrs, p.exe)
	info.ManualTracing = strings.TrimSpace(env[envManual])
	p.info = info
	return *info
}
