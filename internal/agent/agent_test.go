package agent

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/discover"
	"github.com/obsd-dev/obsd/internal/export"
	otelexport "github.com/obsd-dev/obsd/internal/export/otel"
	"github.com/obsd-dev/obsd/internal/export/prom"
	"github.com/obsd-dev/obsd/internal/inspect"
)

func TestEmitsSpans(t *testing.T) {
	tests := []struct {
		linksSDK bool
		env      string
		want     bool
	}{
		{false, "", true},
		{true, "", false},
		{true, "0", true},
		{false, "1", false},
		{false, "true", false},
		{true, "false", true},
		{true, "maybe", false},
	}
	for _, tt := range tests {
		if got := emitsSpans(tt.linksSDK, tt.env); got != tt.want {
			t.Errorf("emitsSpans(%v, %q) = %v, want %v", tt.linksSDK, tt.env, got, tt.want)
		}
	}
}

// fakeProcs stands in for uprobes.Manager: attach answers from a script.
type fakeProcs struct {
	mu   sync.Mutex
	fail func(pid, attempt int) error
	gate chan struct{} // when set, Attach waits for it to close
	// linked, when set, runs once the probes would be linked, before
	// Attach returns: records may reach the agent from then on.
	linked   func(pid int)
	attempts map[int]int
	attached map[int]bool
}

func (f *fakeProcs) Attach(pid int, _ string) (*inspect.Binary, error) {
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts[pid]++
	if f.fail != nil {
		if err := f.fail(pid, f.attempts[pid]); err != nil {
			return nil, err
		}
	}
	f.attached[pid] = true
	if f.linked != nil {
		f.linked(pid)
	}
	return &inspect.Binary{GoVersion: "go1.26.0", Modules: map[string]string{}}, nil
}

func (f *fakeProcs) Detach(pid int) ([]probe.Histogram, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.attached, pid)
	return []probe.Histogram{{PID: uint32(pid), Kind: probe.KindHTTPServer, SumNS: 20}}, nil
}

func (f *fakeProcs) tries(pid int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts[pid]
}

func newTestAgent(t *testing.T, f *fakeProcs) *Agent {
	t.Helper()
	f.attempts, f.attached = map[int]int{}, map[int]bool{}
	log := slog.New(slog.DiscardHandler)
	spans, err := otelexport.New(t.Context(), otelexport.Options{Mode: otelexport.ModeNone, Registerer: prometheus.NewRegistry(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{
		cfg: Config{Forget: time.Hour, Traces: otelexport.ModeNone}, log: log, host: "h",
		spans:    spans,
		services: map[uint32]*target{}, exited: map[*target]bool{},
		selected: map[int]discover.Process{}, pending: map[int]discover.Process{}, early: map[uint32][]probe.Event{}, chains: map[int]chan struct{}{},
		images: map[int]imageCount{},
		slots:  make(chan struct{}, maxConcurrentAttaches), retryMin: 10 * time.Millisecond,
		procs: f, delivered: func() uint64 { return 1 },
		unattributed: prometheus.NewCounter(prometheus.CounterOpts{Name: "obsd_events_unattributed_total"}),
	}
	a.setSignals()
	t.Cleanup(func() {
		a.mu.Lock()
		a.closing = true
		a.mu.Unlock()
		a.ops.Wait()
	})
	return a
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (a *Agent) instance(pid int) string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if t := a.services[uint32(pid)]; t != nil {
		return t.svc.InstanceID
	}
	return ""
}

func proc(pid int, start, seq uint64) discover.Process {
	return discover.Process{PID: pid, StartTime: start, Seq: seq, Exe: "/srv/app", ExePath: "/proc/x/exe"}
}

// TestTransientFailureRetried: a transient failure is retried with backoff
// until the attach succeeds; a permanent one is not retried, and counts as
// answered for readiness.
func TestTransientFailureRetried(t *testing.T) {
	f := &fakeProcs{fail: func(pid, attempt int) error {
		switch {
		case pid == 1 && attempt < 3:
			return &inspect.Error{Reason: inspect.ReasonUnreadable, Err: errors.New("EIO")}
		case pid == 2:
			return &inspect.Error{Reason: inspect.ReasonNotGo, Err: errors.New("not Go")}
		}
		return nil
	}}
	a := newTestAgent(t, f)
	a.Added(proc(1, 100, 1))
	a.Added(proc(2, 100, 2))
	waitUntil(t, "pid 1 attached on a retry", func() bool { return a.instance(1) != "" })
	time.Sleep(100 * time.Millisecond) // several backoffs of pid 2, were it retried
	if n := f.tries(1); n != 3 {
		t.Errorf("pid 1: %d attempts, want 3", n)
	}
	if n := f.tries(2); n != 1 {
		t.Errorf("pid 2 refused for good: %d attempts, want 1", n)
	}
	if err := a.ready(t.Context()); err != nil {
		t.Errorf("ready with every process attached or refused: %v", err)
	}
}

// TestReadyWaitsForSelected: readiness fails, naming the pids, while a
// selected process is neither attached nor refused, and before discovery
// has handed over a scan.
func TestReadyWaitsForSelected(t *testing.T) {
	f := &fakeProcs{gate: make(chan struct{})}
	a := newTestAgent(t, f)
	var delivered atomic.Uint64
	a.delivered = delivered.Load
	if err := a.ready(t.Context()); err == nil {
		t.Fatal("ready before any scan was delivered")
	}
	a.Added(proc(11, 100, 1))
	a.Added(proc(12, 100, 2))
	delivered.Add(1)
	err := a.ready(t.Context())
	if err == nil || !strings.Contains(err.Error(), "pid 11 (/srv/app)") || !strings.Contains(err.Error(), "pid 12 (/srv/app)") {
		t.Fatalf("ready while attaching: %v, want an error naming pids 11 and 12", err)
	}
	close(f.gate)
	waitUntil(t, "ready", func() bool { return a.ready(t.Context()) == nil })
}

// TestIncarnations: an exec in place and a reused pid are new
// incarnations with their own service.instance.id; the old one keeps its
// final series until forgotten, and forgetting it leaves the new one.
func TestIncarnations(t *testing.T) {
	f := &fakeProcs{}
	a := newTestAgent(t, f)
	first := proc(7, 100, 1)
	a.Added(first)
	waitUntil(t, "first image", func() bool { return a.instance(7) == "h:7:100" })
	a.mu.RLock()
	t1 := a.services[7]
	a.mu.RUnlock()

	// Exec in place: same pid and start time, new image.
	a.Removed(first)
	a.Added(proc(7, 100, 2))
	waitUntil(t, "second image", func() bool { return a.instance(7) == "h:7:100:2" })
	a.mu.RLock()
	t2 := a.services[7]
	kept := a.exited[t1] && len(t1.final) == 1
	a.mu.RUnlock()
	if !kept {
		t.Errorf("the first image's final series are not kept")
	}
	// A live series under pid 7 now belongs to the second image.
	ks := a.attribute(probe.KindHTTPServer, []probe.Histogram{{PID: 7, Kind: probe.KindHTTPServer, SumNS: 5}})
	if len(ks) != 2 || ks[0].Service.InstanceID != "h:7:100:2" || ks[0].SumNS != 5 {
		t.Errorf("in-kernel series %+v, want the live 5 under h:7:100:2 first", ks)
	}
	ks = ks[1:]
	if len(ks) != 1 || ks[0].Service.InstanceID != "h:7:100" || ks[0].SumNS != 20 {
		t.Errorf("in-kernel series %+v, want the first image's 20 under h:7:100", ks)
	}

	// The first image's timer fires: the second image is untouched.
	a.forget(t1)
	a.mu.RLock()
	if a.services[7] != t2 || a.exited[t1] {
		t.Errorf("forgetting the first image changed the second's state")
	}
	a.mu.RUnlock()

	// A third image attached only after the second was forgotten (a slow
	// load) still gets an instance of its own.
	a.Removed(proc(7, 100, 2))
	waitUntil(t, "second image detached", func() bool {
		a.mu.RLock()
		defer a.mu.RUnlock()
		return a.exited[t2]
	})
	third := proc(7, 100, 3)
	a.mu.Lock()
	a.selected[7] = third // discovery selected it; its attach is slow
	a.mu.Unlock()
	a.forget(t2)
	a.Added(third)
	waitUntil(t, "third image", func() bool { return a.instance(7) == "h:7:100:3" })

	// The pid reused by a new process.
	a.Removed(third)
	a.Added(proc(7, 300, 4))
	waitUntil(t, "the reused pid", func() bool { return a.instance(7) == "h:7:300" })
}

// TestRecordsBeforeRegistration: the probes fire as soon as they are
// linked, and the reader may hand over a record before the agent has
// registered the process; it must be counted, not dropped.
func TestRecordsBeforeRegistration(t *testing.T) {
	f := &fakeProcs{}
	a := newTestAgent(t, f)
	a.http = prom.NewHTTPServer(nil, nil, a.routes) // no manager behind the fake
	a.signals[probe.KindHTTPServer].(*httpServer).prom = a.http
	f.linked = func(pid int) {
		for range 3 {
			a.Event(probe.Request{Kind: probe.KindHTTPServer, PID: uint32(pid), Method: "GET", Path: "/early", Status: 200, StartNS: 1, EndNS: 2})
		}
	}
	a.Added(proc(9, 100, 1))
	waitUntil(t, "the process", func() bool { return a.instance(9) != "" })
	a.Event(probe.Request{Kind: probe.KindHTTPServer, PID: 9, Method: "GET", Path: "/early", Status: 200, StartNS: 1, EndNS: 2})
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.http)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == "http_server_request_duration_seconds" {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if n != 4 {
		t.Errorf("%d requests counted, want the 3 read before registration and 1 after", n)
	}
	if u := testutil.ToFloat64(a.unattributed); u != 0 {
		t.Errorf("obsd_events_unattributed_total = %v, want 0", u)
	}
}

// TestSameInstanceCarried: a restarted Kubernetes container keeps its
// service.instance.id; when the old process is forgotten, its in-kernel
// counts carry into the new one, so the series they share never goes
// backwards.
func TestSameInstanceCarried(t *testing.T) {
	f := &fakeProcs{}
	a := newTestAgent(t, f)
	// Long enough that the final counts are seen and the restarted
	// container added within it even on a loaded machine (at 10 ms the test
	// failed about once in 30 runs under -race).
	a.cfg.Forget = 500 * time.Millisecond
	sum := func() (n uint64) {
		for _, k := range a.attribute(probe.KindHTTPServer, nil) {
			if k.Service.InstanceID == "ns.pod.app" {
				n += k.SumNS
			}
		}
		return n
	}
	old := proc(11, 100, 1)
	old.InstanceID = "ns.pod.app"
	a.Added(old)
	waitUntil(t, "the first container", func() bool { return a.instance(11) == "ns.pod.app" })
	a.Removed(old) // Detach hands over a final series with SumNS 20
	waitUntil(t, "the final counts", func() bool { return sum() == 20 })
	restarted := proc(12, 200, 2)
	restarted.InstanceID = "ns.pod.app"
	a.Added(restarted)
	waitUntil(t, "the restarted container", func() bool { return a.instance(12) == "ns.pod.app" })
	// Past the grace period the first process is forgotten; its counts
	// must stay under the shared instance.
	time.Sleep(a.cfg.Forget + 300*time.Millisecond)
	a.mu.RLock()
	forgotten := len(a.exited) == 0
	a.mu.RUnlock()
	if !forgotten {
		t.Fatal("the first process was not forgotten")
	}
	if got := sum(); got != 20 {
		t.Errorf("in-kernel sum under the shared instance = %d after the first process was forgotten, want 20", got)
	}
}

// Each read of the in-kernel series gives each what it counted since the
// previous read, per process and labels, so that an overflowed label counts
// every call once however often it is scraped.
func TestKernelDeltas(t *testing.T) {
	k := func(pid uint32, status int, counts ...uint64) prom.Kernel {
		return prom.Kernel{Service: export.Service{InstanceID: "i"}, Histogram: probe.Histogram{Kind: probe.KindHTTPServer,
			PID: pid, Method: "GET", Status: status, Buckets: counts}}
	}
	var d deltas
	for i, step := range []struct {
		ks   []prom.Kernel
		want []uint64
	}{
		{[]prom.Kernel{k(1, 200, 2, 3), k(1, 404, 1, 0)}, []uint64{5, 1}},
		{[]prom.Kernel{k(1, 200, 2, 3), k(1, 404, 1, 4)}, []uint64{0, 4}},
		{[]prom.Kernel{k(1, 200, 9, 3), k(2, 200, 1, 0)}, []uint64{7, 1}},
		{[]prom.Kernel{k(1, 404, 1, 4)}, []uint64{5}}, // forgotten when not read: all again
	} {
		d.set(step.ks)
		for j, want := range step.want {
			if got := step.ks[j].New; got != want {
				t.Errorf("read %d, series %d: New = %d, want %d", i, j, got, want)
			}
		}
	}
}
