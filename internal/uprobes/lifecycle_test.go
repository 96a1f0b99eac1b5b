package uprobes

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/inspect"
	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// startServer runs testdata/httpserver (built once per test binary run)
// until the test ends.
func startServer(t *testing.T) *e2e.Proc {
	t.Helper()
	return e2e.Start(t, testBuilds(t).HTTPServer(t, e2e.Variant{Name: "current"}), nil)
}

var builds *e2e.Builds

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obsd-uprobes-")
	if err != nil {
		panic(err)
	}
	builds = e2e.NewBuilds(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func testBuilds(*testing.T) *e2e.Builds { return builds }

func exePath(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/exe" }

// within fails t unless f returns within d: the manager's lock must not be
// held meanwhile.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s blocked for %v while a binary was being loaded", what, d)
	}
}

// TestLoadWithoutLock: while one binary is being loaded (held at inspection
// here, as a large binary's DWARF or a slow verifier would), scrapes,
// detaches and refusals go on; a second process of the same binary waits
// for that load instead of loading it again.
func TestLoadWithoutLock(t *testing.T) {
	e2e.RequireRoot(t)
	m := newManager(t)
	a, b := startServer(t), startServer(t)
	var opens atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(free) // before the manager's Close, which needs the lock
	m.open = func(path string) (*inspect.Binary, error) {
		if opens.Add(1) == 1 {
			close(started)
			<-release
		}
		return inspect.Open(path)
	}
	errA, errB := make(chan error, 1), make(chan error, 1)
	go func() { _, err := m.Attach(a.PID(), exePath(a.PID())); errA <- err }()
	<-started
	go func() { _, err := m.Attach(b.PID(), exePath(b.PID())); errB <- err }()

	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())
	within(t, 2*time.Second, "Histograms", func() { m.Histograms(probe.KindHTTPServer) })
	within(t, 2*time.Second, "ActiveRequests", func() { m.ActiveRequests() })
	within(t, 2*time.Second, "a scrape of the manager's metrics", func() { reg.Gather() })
	within(t, 2*time.Second, "Detach of another process", func() { m.Detach(1 << 22) })
	sleep := exec.Command("sleep", "30")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
	within(t, 2*time.Second, "attaching another binary", func() {
		if _, err := m.Attach(sleep.Process.Pid, exePath(sleep.Process.Pid)); inspect.ReasonOf(err) != inspect.ReasonNotGo {
			t.Errorf("attach to sleep: %v, want reason %s", err, inspect.ReasonNotGo)
		}
	})
	select {
	case err := <-errB:
		t.Fatalf("second process of the binary attached before its load finished: %v", err)
	case <-time.After(100 * time.Millisecond):
	}

	free()
	for _, c := range []chan error{errA, errB} {
		select {
		case err := <-c:
			if err != nil {
				t.Fatalf("attach: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("attach did not finish")
		}
	}
	// Two opens: the server's binary once, sleep once.
	if n := opens.Load(); n != 2 {
		t.Errorf("inspected %d times, want 2: one load per binary", n)
	}
	if n := m.Processes(); n != 2 {
		t.Errorf("%d processes attached, want 2", n)
	}
}

// TestTransientFailureRetried: a transient failure (here an I/O error
// reading the executable) is not cached; the next attempt loads the binary
// and attaches.
func TestTransientFailureRetried(t *testing.T) {
	e2e.RequireRoot(t)
	m := newManager(t)
	srv := startServer(t)
	var opens atomic.Int32
	m.open = func(path string) (*inspect.Binary, error) {
		if opens.Add(1) == 1 {
			return nil, &inspect.Error{Reason: inspect.ReasonUnreadable, Err: syscall.EIO}
		}
		return inspect.Open(path)
	}
	_, err := m.Attach(srv.PID(), exePath(srv.PID()))
	if !errors.Is(err, syscall.EIO) || Permanent(err) {
		t.Fatalf("first attach: %v (permanent %v), want a transient EIO", err, Permanent(err))
	}
	if _, err := m.Attach(srv.PID(), exePath(srv.PID())); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("inspected %d times, want 2", n)
	}
	if n := m.stats.attachErrs[inspect.ReasonUnreadable]; n != 1 {
		t.Errorf("obsd_instrumentation_errors_total{reason=%q} = %d, want 1", inspect.ReasonUnreadable, n)
	}
}

// TestPermanentRefusalReleased: a permanent refusal is inspected once while
// processes of the binary run, and forgotten with the last of them.
func TestPermanentRefusalReleased(t *testing.T) {
	e2e.RequireRoot(t)
	m := newManager(t)
	var opens atomic.Int32
	m.open = func(path string) (*inspect.Binary, error) {
		opens.Add(1)
		return inspect.Open(path)
	}
	var pids []int
	for i := 0; i < 2; i++ {
		c := exec.Command("sleep", "30")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		pids = append(pids, c.Process.Pid)
	}
	for _, pid := range pids {
		if _, err := m.Attach(pid, exePath(pid)); !Permanent(err) {
			t.Fatalf("attach to sleep: %v, want a permanent refusal", err)
		}
	}
	if n := opens.Load(); n != 1 {
		t.Errorf("inspected %d times for two processes of one binary, want 1", n)
	}
	m.Detach(pids[0])
	if n := m.refused.len(); n != 1 {
		t.Errorf("%d refusals cached with one process left, want 1", n)
	}
	m.Detach(pids[1])
	if n := m.refused.len(); n != 0 {
		t.Errorf("%d refusals cached after the last process went, want 0", n)
	}
}

// TestRefusalsBounded: the cache holds at most maxRefused binaries and
// evicts the least recently used.
func TestRefusalsBounded(t *testing.T) {
	r := newRefusals()
	refuse := errors.New("refused")
	for i := 0; i < maxRefused; i++ {
		r.add(binKey{ino: uint64(i)}, 100000+i, refuse)
	}
	if _, ok := r.lookup(binKey{ino: 0}, 99); !ok {
		t.Fatal("entry 0 missing")
	}
	for i := maxRefused; i < maxRefused+10; i++ {
		r.add(binKey{ino: uint64(i)}, 100000+i, refuse)
	}
	if n := r.len(); n != maxRefused {
		t.Errorf("%d entries, want %d", n, maxRefused)
	}
	if _, ok := r.byBin[binKey{ino: 0}]; !ok {
		t.Error("the most recently used entry was evicted")
	}
	if _, ok := r.byBin[binKey{ino: 1}]; ok {
		t.Error("the least recently used entry was kept")
	}
	if len(r.byPID) != maxRefused+1 { // entry 0 has two pids
		t.Errorf("%d pids tracked, want %d: evicted entries' pids must go too", len(r.byPID), maxRefused+1)
	}
}

// pidCounter counts the HTTP server requests the reader hands over, by pid
// and status.
type pidCounter struct {
	mu sync.Mutex
	n  map[uint32]map[int]int
}

func (c *pidCounter) Event(ev probe.Event) {
	r, ok := ev.(probe.Request)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[r.PID] == nil {
		c.n[r.PID] = map[int]int{}
	}
	c.n[r.PID][r.Status]++
}

func (c *pidCounter) get(pid int) map[int]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n[uint32(pid)])
}

// TestSamePathNewBuild: a new build written over the old executable in
// place (same path, same inode: `cp new old`, as a rolling deploy on a
// host does) and started before obsd has noticed the old process exit. The
// new process must get the new file's sites and offsets: the old ones
// would put breakpoints in the middle of its instructions.
func TestSamePathNewBuild(t *testing.T) {
	e2e.RequireRoot(t)
	sink := &pidCounter{n: map[uint32]map[int]int{}}
	m, err := New(Options{Sink: sink, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, nil) }()
	t.Cleanup(func() { cancel(); <-done; m.Close() })

	// Two builds whose probed functions sit at different offsets.
	oldBuild := testBuilds(t).HTTPServer(t, e2e.Variant{Name: "go1.22.12", Toolchain: "go1.22.12"})
	newBuild := testBuilds(t).HTTPServer(t, e2e.Variant{Name: "current"})
	path := filepath.Join(t.TempDir(), "svc")
	write := func(from string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		// O_TRUNC keeps the inode, as cp does over an existing file.
		if err := os.WriteFile(path, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ino := func() uint64 {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	serve := func(want int) *e2e.Proc {
		t.Helper()
		p := e2e.Start(t, path, nil)
		if _, err := m.Attach(p.PID(), exePath(p.PID())); err != nil {
			t.Fatalf("attach to %s: %v", path, err)
		}
		for range want {
			resp, err := http.Get("http://" + p.First + "/hello")
			if err != nil {
				t.Fatalf("request to the %s: %v", path, err)
			}
			resp.Body.Close()
		}
		deadline := time.Now().Add(5 * time.Second)
		for sink.get(p.PID())[200] != want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := sink.get(p.PID()); got[200] != want || len(got) != 1 {
			t.Errorf("pid %d: requests by status %v, want %d × 200", p.PID(), got, want)
		}
		return p
	}

	write(oldBuild)
	first := ino()
	old := serve(7)
	old.Cmd.Process.Kill()
	old.Cmd.Wait()
	// No Detach: obsd has not noticed the exit yet.
	write(newBuild)
	if ino() != first {
		t.Fatal("the rewrite changed the inode; the test needs the same one")
	}
	p := serve(11)
	if err := p.Cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the new process died: %v", err)
	}
}
