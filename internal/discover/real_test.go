//go:build linux

package discover

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// These tests watch real processes in the real /proc: copies of
// testdata/child, built once in TestMain.

const childName = "obsd-discover-child"

// childBin is the path of the child binary, set by TestMain.
var childBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "discover-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The kernel reports the resolved path as exe.
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	childBin = filepath.Join(dir, childName)
	build := exec.Command("go", "build", "-buildvcs=false", "-o", childBin, "./testdata/child")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building test child: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

type child struct {
	cmd   *exec.Cmd
	pid   int
	port  int // listening port, if asked to listen
	stdin io.WriteCloser
	lines chan string // its stdout, closed at EOF
}

type childOpts struct {
	env   []string
	args  []string
	attrs *syscall.SysProcAttr
}

// startChild starts the child binary and waits for its first line. The
// child is killed and reaped at cleanup if the test did not stop it.
func startChild(t *testing.T, o childOpts) *child {
	t.Helper()
	c, err := tryStartChild(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tryStartChild(t *testing.T, o childOpts) (*child, error) {
	t.Helper()
	cmd := exec.Command(childBin, o.args...)
	cmd.Env = o.env
	cmd.SysProcAttr = o.attrs
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting child: %w", err)
	}
	c := &child{cmd: cmd, pid: cmd.Process.Pid, stdin: stdin, lines: make(chan string, 4)}
	t.Cleanup(c.stop)
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	s, err := c.line()
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("child %v: %w: %s", o.args, err, stderr.String())
	}
	if s != "ready" {
		if c.port, err = strconv.Atoi(s); err != nil {
			return nil, fmt.Errorf("child printed %q", s)
		}
	}
	return c, nil
}

// line returns the child's next line of output.
func (c *child) line() (string, error) {
	select {
	case s, ok := <-c.lines:
		if !ok {
			return "", errors.New("child exited")
		}
		return s, nil
	case <-time.After(10 * time.Second):
		return "", errors.New("no output from child within 10s")
	}
}

// stop kills and reaps the child; it may be called more than once.
func (c *child) stop() {
	c.stdin.Close()
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// newReal returns a Watcher of the real /proc, closed at cleanup. With
// tables set it reads the tcp tables instead of asking sock_diag, the
// fallback used without root.
func newReal(t *testing.T, c Criteria, o Options, tables bool) *Watcher {
	t.Helper()
	w := New(c, o)
	if !w.diag {
		t.Fatal("sock_diag not chosen for the real /proc")
	}
	w.diag = !tables
	t.Cleanup(func() { w.Close() })
	return w
}

// readMode names the two ways of reading listening sockets.
func readMode(tables bool) string {
	if tables {
		return "tables"
	}
	return "sock_diag"
}

// scanReal runs one Scan on the real /proc and returns the pids added,
// keeping only the processes this test started or itself, as other
// processes on the machine may match broad criteria.
func scanReal(t *testing.T, w *Watcher, ours ...int) (added, removed []Process) {
	t.Helper()
	added, removed, err := w.Scan()
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	foreign := func(p Process) bool { return !slices.Contains(ours, p.PID) && p.PID != os.Getpid() }
	return slices.DeleteFunc(added, foreign), slices.DeleteFunc(removed, foreign)
}

func TestRealScan(t *testing.T) {
	alpha := startChild(t, childOpts{env: []string{
		"OTEL_SERVICE_NAME=alpha",
		"OTEL_RESOURCE_ATTRIBUTES=team=core,deployment.environment=test%20env",
	}})
	beta := startChild(t, childOpts{
		env:  []string{"OTEL_RESOURCE_ATTRIBUTES=service.name=beta"},
		args: []string{"-listen", "127.0.0.1:0"},
	})
	// gamma listens on IPv6 loopback, delta holds a connection to beta's
	// port: a socket on that port, but not a listener.
	gamma := startChild(t, childOpts{args: []string{"-listen", "[::1]:0"}})
	delta := startChild(t, childOpts{args: []string{"-dial", "127.0.0.1:" + strconv.Itoa(beta.port)}})
	all := []int{alpha.pid, beta.pid, gamma.pid, delta.pid}
	slices.Sort(all)

	tests := []struct {
		name string
		c    Criteria
		want []int
	}{
		{"pid", Criteria{PIDs: []int{alpha.pid}}, []int{alpha.pid}},
		{"exe path", Criteria{ExeGlobs: []string{childBin}}, all},
		{"exe glob across dirs", Criteria{ExeGlobs: []string{"*/" + childName}}, all},
		{"exe base name", Criteria{ExeGlobs: []string{childName}}, all},
		{"exe base name glob", Criteria{ExeGlobs: []string{"obsd-discover-ch?ld*"}}, all},
		{"ipv4 port", Criteria{Ports: []int{beta.port}}, []int{beta.pid}},
		{"ipv6 port", Criteria{Ports: []int{gamma.port}}, []int{gamma.pid}},
		{"union", Criteria{PIDs: []int{alpha.pid}, Ports: []int{beta.port, gamma.port}}, []int{alpha.pid, beta.pid, gamma.pid}},
	}
	for _, tt := range tests {
		for _, tables := range []bool{false, true} {
			if tables && len(tt.c.Ports) == 0 {
				continue
			}
			name := tt.name
			if len(tt.c.Ports) > 0 {
				name += "/" + readMode(tables)
			}
			t.Run(name, func(t *testing.T) {
				w := newReal(t, tt.c, Options{}, tables)
				added, removed := scanReal(t, w, all...)
				if got := pidsOf(added); !slices.Equal(got, tt.want) || len(removed) > 0 {
					t.Errorf("added %v removed %v, want added %v", got, pidsOf(removed), tt.want)
				}
				if added, removed = scanReal(t, w, all...); len(added)+len(removed) > 0 {
					t.Errorf("second scan: added %v removed %v", pidsOf(added), pidsOf(removed))
				}
			})
		}
	}

	t.Run("process fields", func(t *testing.T) {
		w := newReal(t, Criteria{ExeGlobs: []string{childName}}, Options{}, false)
		added, _ := scanReal(t, w, all...)
		byPID := make(map[int]Process)
		for _, p := range added {
			byPID[p.PID] = p
		}
		for _, c := range []struct {
			pid     int
			service string
			attrs   map[string]string
		}{
			{alpha.pid, "alpha", map[string]string{"team": "core", "deployment.environment": "test env"}},
			{beta.pid, "beta", map[string]string{"service.name": "beta"}},
			{gamma.pid, childName, nil},
		} {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid))
			if err != nil {
				t.Fatal(err)
			}
			st, err := parseStat(data)
			if err != nil {
				t.Fatal(err)
			}
			want := Process{
				PID: c.pid, StartTime: st.Start, Exe: childBin,
				ExePath:     fmt.Sprintf("/proc/%d/exe", c.pid),
				ServiceName: c.service, ResourceAttrs: c.attrs,
			}
			got := byPID[c.pid]
			if got.Seq == 0 {
				t.Errorf("pid %d: Seq 0, want a number from 1", c.pid)
			}
			got.Seq = 0 // given in scan order, checked by TestRealReexec
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		}
	})
}

func TestRealRemoval(t *testing.T) {
	zombie := startChild(t, childOpts{})
	reaped := startChild(t, childOpts{})
	ours := []int{zombie.pid, reaped.pid}
	w := newReal(t, Criteria{ExeGlobs: []string{childName}}, Options{}, false)
	added, _ := scanReal(t, w, ours...)
	if got := pidsOf(added); !slices.Equal(got, slices.Sorted(slices.Values(ours))) {
		t.Fatalf("added %v, want %v", got, ours)
	}

	// Killed and reaped.
	reaped.stop()
	if _, removed := scanReal(t, w, ours...); !slices.Equal(pidsOf(removed), []int{reaped.pid}) {
		t.Errorf("after kill and wait: removed %v, want [%d]", pidsOf(removed), reaped.pid)
	}

	// Killed but not reaped: a zombie counts as gone. The signal is
	// delivered asynchronously, so poll briefly.
	if err := zombie.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, removed := scanReal(t, w, ours...)
		if slices.Equal(pidsOf(removed), []int{zombie.pid}) {
			break
		}
		if len(removed) > 0 || time.Now().After(deadline) {
			t.Fatalf("zombie: removed %v, want [%d]", pidsOf(removed), zombie.pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	zombie.stop()
	if added, removed := scanReal(t, w, ours...); len(added)+len(removed) > 0 {
		t.Errorf("after reaping: added %v removed %v", pidsOf(added), pidsOf(removed))
	}
}

// TestRealReexec checks that a process exec'ing its own file again, which
// keeps pid, start time, name and exe path, is still seen as a new image:
// a removal plus an addition.
func TestRealReexec(t *testing.T) {
	if aslr, err := os.ReadFile("/proc/sys/kernel/randomize_va_space"); err != nil || strings.TrimSpace(string(aslr)) == "0" {
		e2e.Skip(t, "address space randomization is off, so an exec of the same file cannot be told apart")
	}
	c := startChild(t, childOpts{})
	w := newReal(t, Criteria{ExeGlobs: []string{childName}}, Options{}, false)
	before, _ := scanReal(t, w, c.pid)
	if !slices.Equal(pidsOf(before), []int{c.pid}) {
		t.Fatalf("added %v, want [%d]", pidsOf(before), c.pid)
	}
	if _, err := io.WriteString(c.stdin, "exec\n"); err != nil {
		t.Fatal(err)
	}
	if s, err := c.line(); err != nil || s != "ready" {
		t.Fatalf("after exec: %q, %v", s, err)
	}
	added, removed := scanReal(t, w, c.pid)
	if !slices.Equal(pidsOf(added), []int{c.pid}) || !slices.Equal(pidsOf(removed), []int{c.pid}) {
		t.Fatalf("after exec: added %v removed %v, want both [%d]", pidsOf(added), pidsOf(removed), c.pid)
	}
	if !reflect.DeepEqual(removed[0], before[0]) {
		t.Errorf("removed %+v, want the process added before, %+v", removed[0], before[0])
	}
	// Only Seq tells the new image from the old one.
	if added[0].Seq == before[0].Seq {
		t.Errorf("added the new image with the old image's Seq %d", added[0].Seq)
	}
	re := added[0]
	re.Seq = before[0].Seq
	if !reflect.DeepEqual(re, before[0]) {
		t.Errorf("added %+v, want %+v but for Seq: same pid, start time and exe", added[0], before[0])
	}
}

func TestRealExcludesSelf(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w := newReal(t, Criteria{PIDs: []int{os.Getpid()}, ExeGlobs: []string{self, filepath.Base(self)}}, Options{}, false)
	added, _, err := w.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(pidsOf(added), os.Getpid()) {
		t.Errorf("own pid %d reported", os.Getpid())
	}

	// Options.Self names the pid to exclude.
	a := startChild(t, childOpts{})
	b := startChild(t, childOpts{})
	w = newReal(t, Criteria{ExeGlobs: []string{childName}}, Options{Self: a.pid}, false)
	if added, _ := scanReal(t, w, a.pid, b.pid); !slices.Equal(pidsOf(added), []int{b.pid}) {
		t.Errorf("with Self=%d: added %v, want [%d]", a.pid, pidsOf(added), b.pid)
	}
}

// recorder is a Handler passing events to channels.
type recorder struct{ added, removed chan Process }

func (r recorder) Added(p Process)   { r.added <- p }
func (r recorder) Removed(p Process) { r.removed <- p }

// next returns the next event for pid, skipping other processes'.
func next(t *testing.T, ch <-chan Process, pid int, within time.Duration) Process {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case p := <-ch:
			if p.PID == pid {
				return p
			}
		case <-deadline:
			t.Fatalf("no event for pid %d within %v", pid, within)
		}
	}
}

func TestRealRun(t *testing.T) {
	w := newReal(t, Criteria{ExeGlobs: []string{childName}}, Options{Interval: 50 * time.Millisecond}, false)
	rec := recorder{added: make(chan Process, 16), removed: make(chan Process, 16)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, rec) }()
	for w.Scans() == 0 {
		time.Sleep(5 * time.Millisecond)
	}

	start := time.Now()
	c := startChild(t, childOpts{})
	p := next(t, rec.added, c.pid, time.Second)
	t.Logf("added %d after %v", p.PID, time.Since(start))

	c.stop()
	start = time.Now()
	if r := next(t, rec.removed, c.pid, time.Second); !reflect.DeepEqual(r, p) {
		t.Errorf("removed %+v, want the added %+v", r, p)
	}
	t.Logf("removed after %v", time.Since(start))

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestRealRunPortLater checks the common start-up order of a service:
// the process is already known when it starts listening.
func TestRealRunPortLater(t *testing.T) {
	// Find a free port: bind it, note it, release it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	c := startChild(t, childOpts{})
	w := newReal(t, Criteria{Ports: []int{port}}, Options{Interval: 50 * time.Millisecond}, false)
	rec := recorder{added: make(chan Process, 16), removed: make(chan Process, 16)}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = w.Run(ctx, rec) }()
	for w.Scans() < 2 {
		time.Sleep(5 * time.Millisecond)
	}

	start := time.Now()
	if _, err := fmt.Fprintf(c.stdin, "listen 127.0.0.1:%d\n", port); err != nil {
		t.Fatal(err)
	}
	if s, err := c.line(); err != nil || s != strconv.Itoa(port) {
		t.Fatalf("child listening: %q, %v", s, err)
	}
	next(t, rec.added, c.pid, time.Second)
	t.Logf("added after %v", time.Since(start))
}

// TestRealPortOtherNetNS finds a listener in another network namespace,
// invisible in obsd's own /proc/net/tcp. Creating the namespace needs root,
// or an unprivileged user namespace where the kernel allows one.
func TestRealPortOtherNetNS(t *testing.T) {
	attrs := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if os.Geteuid() != 0 {
		attrs.Cloneflags |= syscall.CLONE_NEWUSER
		attrs.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attrs.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	// Loopback is down in a new namespace; the wildcard address still binds.
	c, err := tryStartChild(t, childOpts{args: []string{"-listen", "0.0.0.0:0"}, attrs: attrs})
	if err != nil {
		e2e.Skip(t, "cannot start a child in a new network namespace: %v", err)
	}
	own, _ := os.Readlink("/proc/self/ns/net")
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", c.pid))
	if err != nil || theirs == own {
		t.Fatalf("child netns %q (err %v), ours %q", theirs, err, own)
	}
	// The port is not listening in our namespace's tables.
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		ls, err := parseListeners(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			if l.Port == c.port && l.Inode == childListener(t, c.pid) {
				t.Fatalf("child's listener visible in %s", name)
			}
		}
	}

	for _, tables := range []bool{false, true} {
		t.Run(readMode(tables), func(t *testing.T) {
			w := newReal(t, Criteria{Ports: []int{c.port}}, Options{}, tables)
			if added, _ := scanReal(t, w, c.pid); !slices.Equal(pidsOf(added), []int{c.pid}) {
				t.Errorf("added %v, want [%d]", pidsOf(added), c.pid)
			}
			// Entering the namespace needs root; without it, the tables.
			n := w.nets[theirs]
			if n == nil {
				t.Fatalf("namespace %s not tracked", theirs)
			}
			wantDiag := !tables && os.Geteuid() == 0
			if gotDiag := n.conn != nil; gotDiag != wantDiag {
				t.Errorf("sock_diag socket in the namespace: %v, want %v", gotDiag, wantDiag)
			}
		})
	}
}

// childListener returns the inode of the child's only socket.
func childListener(t *testing.T, pid int) uint64 {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		link, _ := os.Readlink(filepath.Join(dir, n.Name()))
		if inode, ok := parseSocketLink(link); ok {
			return inode
		}
	}
	t.Fatalf("pid %d has no socket", pid)
	return 0
}

// BenchmarkScan measures a steady-state scan of the real /proc, where
// every process is already known.
func BenchmarkScan(b *testing.B) {
	for _, bc := range []struct {
		name string
		c    Criteria
	}{
		{"exe", Criteria{ExeGlobs: []string{"*/nothing-matches-this"}}},
		{"port", Criteria{Ports: []int{1}}},
		{"port listening", Criteria{Ports: []int{listeningPort(b)}}},
	} {
		for _, tables := range []bool{false, true} {
			if tables && len(bc.c.Ports) == 0 {
				continue
			}
			name := bc.name
			if len(bc.c.Ports) > 0 {
				name += "/" + readMode(tables)
			}
			b.Run(name, func(b *testing.B) {
				w := New(bc.c, Options{})
				w.diag = !tables
				defer w.Close()
				if _, _, err := w.Scan(); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					if _, _, err := w.Scan(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// listeningPort returns a port some process listens on, so the benchmark
// has a non-empty listening set; 1 when there is none.
func listeningPort(b *testing.B) int {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 1
	}
	defer f.Close()
	ls, err := parseListeners(io.Reader(f))
	if err != nil || len(ls) == 0 {
		return 1
	}
	return ls[0].Port
}
