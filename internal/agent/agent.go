// Package agent wires obsd together: discovery selects processes, uprobes
// instruments them, and every observed request becomes a metric observation
// and a span.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/metric"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/discover"
	"github.com/obsd-dev/obsd/internal/export"
	otelexport "github.com/obsd-dev/obsd/internal/export/otel"
	"github.com/obsd-dev/obsd/internal/export/prom"
	"github.com/obsd-dev/obsd/internal/health"
	"github.com/obsd-dev/obsd/internal/inspect"
	"github.com/obsd-dev/obsd/internal/kube"
	"github.com/obsd-dev/obsd/internal/propagate"
	"github.com/obsd-dev/obsd/internal/uprobes"
)

// manualSDKModule, when linked into a target, means the service traces
// itself (see manual/README.md, "Working with obsd"): obsd keeps its metrics
// but emits no spans for it, so no request is traced twice.
const manualSDKModule = "go.opentelemetry.io/otel/sdk"

// Config is what cmd/obsd parsed from flags and environment.
type Config struct {
	Criteria discover.Criteria
	// Listen is the address of /metrics, /healthz and /readyz.
	Listen string
	Traces otelexport.Mode
	// KeepSlow, if positive, exports the span of a request head sampling
	// dropped when it took at least this long; KeepErrors when it failed
	// (5xx, a gRPC error). Spans kept so say why (obsd.kept_reason).
	KeepSlow   time.Duration
	KeepErrors bool
	// Forget is how long an exited process's series stay exported, so the
	// last scrape sees its final counts.
	Forget time.Duration
	Logger *slog.Logger
	// Version is obsd's own version, for obsd_build_info.
	Version string
	// Kubernetes, when set, adds the opted-in pods of this node as a
	// discovery source (Logger is taken from this Config).
	Kubernetes *kube.Options
	// Propagate is --propagate: how trace context crosses services. The
	// zero value is none. What this kernel and build allow of it is
	// decided once in New, logged, exported as
	// obsd_trace_propagation_info and shown in /readyz without failing it.
	Propagate propagate.Mode
}

// Agent is one running obsd.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	host   string
	reg    *prometheus.Registry
	mgr    *uprobes.Manager
	spans  *otelexport.Exporter
	http   *prom.HTTPServer
	routes *export.Routes
	inner  *innerMux
	// signals has one entry per probe.Kind the enabled probes report.
	signals map[probe.Kind]signal
	watcher *discover.Watcher
	kube    *kube.Source
	checks  *health.Checker
	// tcp is --propagate=tcp when active, else nil.
	tcp  *tcpPropagation
	beat *health.Heartbeat
	ln   net.Listener

	unattributed prometheus.Counter

	// procs attaches and detaches processes: the manager, a fake in tests.
	procs attacher
	// delivered counts discovery scans handed to Added and Removed.
	delivered func() uint64
	retryMin  time.Duration // first retry of a transient failure

	// ops counts the attach, retry and detach operations in flight; each
	// runs on its own goroutine, serialized per pid by chains, at most
	// maxConcurrentAttaches at a time (slots).
	ops     sync.WaitGroup
	slots   chan struct{}
	closing bool // guarded by mu: no new operation starts

	mu sync.RWMutex
	// services holds the latest instrumented incarnation of each pid: ring
	// buffer records and live in-kernel series carry the pid alone, and
	// only one image runs under a pid at a time.
	services map[uint32]*target
	// exited holds incarnations detached and not yet forgotten, with their
	// final in-kernel series, so the last scrapes still see their counts.
	exited map[*target]bool
	// selected is every process discovery selected now, by pid; pending
	// those not yet attached nor refused (readiness waits for them).
	selected map[int]discover.Process
	pending  map[int]discover.Process
	// early holds the records of a selected pid read before its target
	// was registered: the probes fire as soon as they are linked, and
	// the reader may get there first. attach replays them.
	early  map[uint32][]probe.Event
	chains map[int]chan struct{}
	// images remembers, per pid, the start time and the number of the
	// last image instrumented, for as long as that process runs: an image
	// attached after its predecessor was forgotten must still not reuse
	// its service.instance.id, or the series would restart from 0.
	images map[int]imageCount
}

type imageCount struct {
	start uint64
	n     int
}

// target is one instrumented incarnation of a process: a pid, its start
// time and one exec image. Everything obsd keeps per process hangs off it.
type target struct {
	svc   export.Service
	spans bool
	proc  discover.Process
	// image numbers the images of one process (pid and start time) that
	// this obsd instrumented, from 1; an exec in place starts a new one.
	image int
	// final are the in-kernel series the probes counted for this image,
	// handed over by Detach when it is gone (then it is in Agent.exited).
	final []probe.Histogram
	// carried are the final in-kernel series of earlier processes that
	// had the same service.instance.id (a restarted Kubernetes container
	// keeps namespace.pod.container), folded in when they were forgotten,
	// so the series they share never goes backwards.
	carried []probe.Histogram
}

// sameSeries says a and b are the same series: every label, whatever
// their process and counts.
func sameSeries(a, b probe.Histogram) bool {
	if len(a.Buckets) != len(b.Buckets) {
		return false
	}
	a.PID, a.Buckets, a.SumNS, a.NameHash, a.PatternAddr = b.PID, b.Buckets, b.SumNS, b.NameHash, b.PatternAddr
	return reflect.DeepEqual(a, b)
}

// carry adds hs to t.carried, one histogram per series.
func (t *target) carry(hs []probe.Histogram) {
	for _, h := range hs {
		merged := false
		for i := range t.carried {
			c := &t.carried[i]
			if sameSeries(*c, h) {
				for j := range c.Buckets {
					c.Buckets[j] += h.Buckets[j]
				}
				c.SumNS += h.SumNS
				merged = true
				break
			}
		}
		if !merged {
			h.Buckets = append([]uint64(nil), h.Buckets...)
			t.carried = append(t.carried, h)
		}
	}
}

// attacher is what the agent needs of uprobes.Manager to follow processes.
type attacher interface {
	Attach(pid int, exePath string) (*inspect.Binary, error)
	Detach(pid int) ([]probe.Histogram, error)
}

// maxConcurrentAttaches bounds the attaches (and binary loads) in flight,
// so a node full of new processes does not parse many binaries at once.
const maxConcurrentAttaches = 4

// New loads the probes and binds the listen address; nothing is attached
// until Run.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Forget == 0 {
		cfg.Forget = time.Minute
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("reading host name: %w", err)
	}
	// A label value that is not UTF-8 would fail registration and scrapes.
	host = export.Clean(host, export.MaxValueLen, false)
	a := &Agent{
		cfg:      cfg,
		log:      cfg.Logger,
		host:     host,
		reg:      prometheus.NewRegistry(),
		services: map[uint32]*target{},
		exited:   map[*target]bool{},
		selected: map[int]discover.Process{},
		early:    map[uint32][]probe.Event{},
		pending:  map[int]discover.Process{},
		chains:   map[int]chan struct{}{},
		images:   map[int]imageCount{},
		slots:    make(chan struct{}, maxConcurrentAttaches),
		retryMin: retryMin,
		checks:   health.New(health.DefaultTimeout),
		beat:     health.NewHeartbeat(5 * time.Second),
	}
	spans := cfg.Traces != otelexport.ModeNone && cfg.Traces != ""
	ratio := 0.0
	if spans {
		if ratio, err = otelexport.SampleRatio(os.Getenv); err != nil {
			return nil, fmt.Errorf("setting up trace export: %w", err)
		}
	}
	var tcpRes, hdrRes propagate.Result
	var tcpMaps map[string]*ebpf.Map
	if cfg.Propagate != propagate.None {
		if a.tcp, tcpRes, hdrRes = openTCP(cfg.Propagate, spans, cfg.Logger); a.tcp != nil {
			tcpMaps = a.tcp.p.Maps()
		}
	}
	a.mgr, err = uprobes.New(uprobes.Options{
		Logger:          cfg.Logger,
		Sink:            a,
		Spans:           spans,
		SampleRatio:     ratio,
		ParentBased:     otelexport.ParentBased(os.Getenv),
		KeepSlow:        cfg.KeepSlow,
		KeepErrors:      cfg.KeepErrors,
		DurationBuckets: prom.DurationBuckets,
		TCPMaps:         tcpMaps,
		TCPNoOption:     !cfg.Propagate.Has(propagate.TCP),
		TCPHeaders:      hdrRes.State == propagate.Active,
	})
	if err != nil {
		a.closeTCP()
		return nil, fmt.Errorf("loading probes: %w", err)
	}
	a.spans, err = otelexport.New(ctx, otelexport.Options{Mode: cfg.Traces, Registerer: a.reg, Logger: cfg.Logger})
	if err != nil {
		a.mgr.Close()
		a.closeTCP()
		return nil, fmt.Errorf("setting up trace export: %w", err)
	}
	a.setSignals()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "obsd_build_info", Help: "Always 1; labels say which obsd runs.",
		ConstLabels: prometheus.Labels{"version": cfg.Version, "host_name": host},
	})
	buildInfo.Set(1)
	a.unattributed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "obsd_events_unattributed_total",
		Help: "Records dropped because their process was already forgotten.",
	})
	a.reg.MustRegister(a.http, a.mgr.Collector(), buildInfo, a.unattributed)
	// A signal that exports its own families is a Collector.
	for _, s := range a.signals {
		if c, ok := s.(prometheus.Collector); ok {
			a.reg.MustRegister(c)
		}
	}

	// Setup reports each mechanism asked for; one that cannot work here
	// says so instead of silently doing nothing.
	prop := propagate.Setup(propagate.Options{Mode: cfg.Propagate, Logger: cfg.Logger,
		TCP: func() propagate.Result { return tcpRes }, Headers: func() propagate.Result { return hdrRes }})
	a.reg.MustRegister(prop.Collector())
	if a.tcp != nil {
		a.reg.MustRegister(a.tcp.collectors()...)
	}

	a.watcher = discover.New(cfg.Criteria, discover.Options{Logger: cfg.Logger})
	a.procs, a.delivered = a.mgr, a.watcher.Delivered
	a.checks.AddLiveness("event_loop", a.beat.Check)
	a.checks.AddLiveness("goroutines", health.GoroutineLimit(9999))
	a.checks.AddLiveness("heap", health.HeapLimit(1<<30-1))
	a.checks.AddReadiness("bpf", func(context.Context) error { return nil }) // New failed otherwise
	a.checks.AddReadiness("discovery", a.ready)
	a.checks.AddReadiness("trace_exporter", a.spans.Check)
	if cfg.Propagate != propagate.None {
		// A detail, never a reason to withhold traffic: everything but
		// the mechanism keeps working.
		a.checks.AddReadiness("trace_propagation", func(context.Context) error { return health.Degraded(prop.Check()) })
	}
	if cfg.Kubernetes != nil {
		o := *cfg.Kubernetes
		o.Logger = cfg.Logger
		if a.kube, err = kube.New(o); err != nil {
			a.spans.Shutdown(ctx)
			a.mgr.Close()
			a.closeTCP()
			return nil, err
		}
		a.reg.MustRegister(a.kube.Collector())
		a.checks.AddReadiness("kubernetes", a.kube.Check)
	}

	a.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		a.spans.Shutdown(ctx)
		a.mgr.Close()
		a.closeTCP()
		return nil, fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	return a, nil
}

// MeterProvider receives the OTel SDK's self-metrics (spans dropped by the
// batch queue); main installs it globally.
func (a *Agent) MeterProvider() metric.MeterProvider { return a.spans.MeterProvider() }

// Addr is the bound address of the HTTP endpoints.
func (a *Agent) Addr() net.Addr { return a.ln.Addr() }

// Handler serves /metrics, /healthz and /readyz.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	var g prometheus.Gatherer = a.reg
	if a.kube != nil {
		g = a.kube.Gatherer(g)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		ErrorHandling:     promhttp.ContinueOnError,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}))
	a.checks.Register(mux)
	return mux
}

// Run serves and instruments until ctx is done, then detaches everything.
func (a *Agent) Run(ctx context.Context) error {
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 4)
	go func() {
		if err := srv.Serve(a.ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving %s: %w", a.ln.Addr(), err)
		}
	}()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := a.mgr.Run(runCtx, a.beat.Beat); err != nil {
			errc <- err
		}
	}()
	go func() {
		defer wg.Done()
		if err := a.watcher.Run(runCtx, a); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("discovering processes: %w", err)
		}
	}()
	if a.kube != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.kube.Run(runCtx, a); err != nil {
				errc <- fmt.Errorf("watching pods: %w", err)
			}
		}()
	}
	a.log.Info("obsd running", "listen", a.ln.Addr().String(), "traces", string(a.cfg.Traces), "propagate", a.cfg.Propagate.String(),
		"pids", a.cfg.Criteria.PIDs, "exe", a.cfg.Criteria.ExeGlobs, "ports", a.cfg.Criteria.Ports,
		"keep_exited", a.cfg.Forget.String())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	stopping := time.Now()
	stop()
	wg.Wait()
	// No attach starts after this; those in flight end early once the
	// manager is closed (a load in progress is discarded).
	a.mu.Lock()
	a.closing = true
	a.mu.Unlock()
	mgrErr := a.mgr.Close()
	a.ops.Wait()
	if a.tcp != nil {
		mgrErr = errors.Join(mgrErr, a.tcp.close())
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := []error{runErr, srv.Shutdown(shutdownCtx)}
	errs = append(errs, mgrErr, a.spans.Shutdown(shutdownCtx), a.watcher.Close())
	if mgrErr != nil {
		a.log.Warn("obsd stopped; closing some probes failed (the kernel releases them with obsd's file descriptors)", "err", mgrErr)
	} else {
		a.log.Info("obsd stopped; all probes detached", "took", time.Since(stopping).Round(time.Millisecond))
	}
	return errors.Join(errs...)
}

// Added implements discover.Handler. The attach runs on its own goroutine,
// so a large binary being loaded holds up neither discovery nor other
// targets; until it is attached or refused the process is pending, and
// /readyz says so.
func (a *Agent) Added(p discover.Process) {
	a.mu.Lock()
	a.selected[p.PID] = p
	a.pending[p.PID] = p
	a.mu.Unlock()
	a.serial(p.PID, func() { a.attach(p, 1) })
}

// serial runs op on a goroutine after every operation queued before it for
// the same pid, so the detach of an image and the attach of the next one
// (exec, pid reuse) happen in discovery's order.
func (a *Agent) serial(pid int, op func()) {
	a.mu.Lock()
	if a.closing {
		delete(a.pending, pid)
		a.mu.Unlock()
		return
	}
	prev := a.chains[pid]
	done := make(chan struct{})
	a.chains[pid] = done
	a.ops.Add(1)
	a.mu.Unlock()
	go func() {
		defer a.ops.Done()
		if prev != nil {
			<-prev
		}
		a.slots <- struct{}{}
		op()
		<-a.slots
		a.mu.Lock()
		if a.chains[pid] == done {
			delete(a.chains, pid)
		}
		a.mu.Unlock()
		close(done)
	}()
}

// Retry backoff for transient attach failures: the first retry after
// retryMin, doubling up to retryMax, for as long as the process runs.
const (
	retryMin = time.Second
	retryMax = 5 * time.Minute
)

// attach instruments one incarnation; attempt counts from 1.
func (a *Agent) attach(p discover.Process, attempt int) {
	a.mu.RLock()
	cur, still := a.selected[p.PID]
	a.mu.RUnlock()
	if !still || cur.Seq != p.Seq {
		return // exited or replaced before its turn; Removed unblocked readiness
	}
	info, err := a.procs.Attach(p.PID, p.ExePath)
	if err != nil {
		// Logged and counted by the manager.
		a.mu.Lock()
		if a.pending[p.PID].Seq == p.Seq {
			delete(a.pending, p.PID)
		}
		a.mu.Unlock()
		if !uprobes.Permanent(err) && inspect.ReasonOf(err) != uprobes.ReasonExited && !errors.Is(err, uprobes.ErrClosed) {
			wait := min(a.retryMin<<min(attempt-1, 20), retryMax)
			time.AfterFunc(wait, func() { a.serial(p.PID, func() { a.attach(p, attempt+1) }) })
		}
		return
	}
	t := &target{proc: p, image: 1, spans: emitsSpans(info.Modules[manualSDKModule] != "", p.ManualTracing)}
	a.mu.Lock()
	if prev, ok := a.images[p.PID]; ok && prev.start == p.StartTime {
		t.image = prev.n + 1
	}
	a.images[p.PID] = imageCount{start: p.StartTime, n: t.image}
	t.svc = export.Service{
		Name:       p.ServiceName,
		InstanceID: instanceID(a.host, p.PID, p.StartTime, t.image),
		Host:       a.host,
		PID:        p.PID,
		Attrs:      p.ResourceAttrs,
	}
	if p.InstanceID != "" {
		t.svc.InstanceID = p.InstanceID
	}
	if t.svc.Name == "" {
		t.svc.Name = filepath.Base(p.Exe)
	}
	t.svc = t.svc.Clean()
	a.services[uint32(p.PID)] = t
	if a.pending[p.PID].Seq == p.Seq {
		delete(a.pending, p.PID)
	}
	early := a.early[uint32(p.PID)]
	delete(a.early, uint32(p.PID))
	a.mu.Unlock()
	for _, r := range early {
		a.observe(t, r)
	}
	args := []any{"pid", p.PID, "exe", p.Exe, "service", t.svc.Name, "instance", t.svc.InstanceID, "go", info.GoVersion}
	switch {
	case a.cfg.Traces == otelexport.ModeNone || a.cfg.Traces == "":
		args = append(args, "spans", "off (--traces none)")
	case t.spans:
		args = append(args, "spans", "on")
	default:
		args = append(args, "spans", "off (the service links the OTel SDK and traces itself; OTEL_GO_MANUAL=0 in its environment overrides)")
	}
	if a.tcp != nil && t.spans {
		a.tcp.add(p.PID)
	}
	a.log.Info("instrumented process", args...)
}

// instanceID is service.instance.id of one incarnation:
// "host:pid:starttime", where starttime is /proc/PID/stat's field 22 (clock
// ticks since boot), so a reused pid gets a new one; the second and later
// images of one process (exec in place) that this obsd instruments append
// ":image" (":2", ":3", ...), so no two incarnations share series.
func instanceID(host string, pid int, start uint64, image int) string {
	id := host + ":" + strconv.Itoa(pid) + ":" + strconv.FormatUint(start, 10)
	if image > 1 {
		id += ":" + strconv.Itoa(image)
	}
	return id
}

// emitsSpans applies the rule of manual/README.md ("Working with obsd"): a
// service linking the OTel SDK traces itself, unless OTEL_GO_MANUAL in its
// environment says otherwise ("1": it does, "0": it does not).
func emitsSpans(linksSDK bool, manualEnv string) bool {
	switch manualEnv {
	case "1", "true":
		return false
	case "0", "false":
		return true
	}
	return !linksSDK
}

// Removed implements discover.Handler. The incarnation's probes are
// released at once; its series stay exported for Config.Forget, under its
// own service.instance.id, so neither a new image under the same pid nor a
// reused pid ever makes a counter go backwards.
func (a *Agent) Removed(p discover.Process) {
	a.mu.Lock()
	if a.selected[p.PID].Seq == p.Seq {
		delete(a.selected, p.PID)
		// Held records of a process that never got a target.
		if n := len(a.early[uint32(p.PID)]); n > 0 {
			a.unattributed.Add(float64(n))
			delete(a.early, uint32(p.PID))
		}
	}
	if a.pending[p.PID].Seq == p.Seq {
		delete(a.pending, p.PID) // no longer selected: nothing to wait for
	}
	a.mu.Unlock()
	a.serial(p.PID, func() { a.detach(p) })
}

func (a *Agent) detach(p discover.Process) {
	final, err := a.procs.Detach(p.PID)
	if a.tcp != nil {
		a.tcp.remove(p.PID)
	}
	if err != nil {
		a.log.Warn("detaching exited process", "pid", p.PID, "err", err)
	}
	a.mu.Lock()
	t := a.services[uint32(p.PID)]
	if t == nil || t.proc.Seq != p.Seq {
		a.mu.Unlock()
		return // never instrumented (refused, or gone before its turn)
	}
	t.final = final
	a.exited[t] = true
	a.mu.Unlock()
	a.log.Info("process gone or no longer selected; probes released", "pid", p.PID, "service", t.svc.Name,
		"instance", t.svc.InstanceID, "series_kept_for", a.cfg.Forget.String())
	// Records still in the ring buffer and the last scrapes need the
	// service for a while.
	time.AfterFunc(a.cfg.Forget, func() { a.forget(t) })
}

// forget drops everything kept for an exited incarnation.
func (a *Agent) forget(t *target) {
	a.mu.Lock()
	delete(a.exited, t)
	// A live process with the same instance ID (a restarted container)
	// shares t's series: they stay, and t's in-kernel counts are carried
	// into it.
	var heir *target
	for _, o := range a.services {
		if o != t && !a.exited[o] && o.svc.InstanceID == t.svc.InstanceID {
			heir = o
			break
		}
	}
	if heir != nil {
		heir.carry(t.final)
		heir.carry(t.carried)
	}
	pid := t.svc.PID
	latest := a.services[uint32(pid)] == t
	if latest {
		delete(a.services, uint32(pid))
	}
	// Keep counting images while the process runs (a later image of it
	// is selected); once it is gone, its next pid owner starts afresh.
	if cur, ok := a.selected[pid]; !ok || cur.StartTime != t.proc.StartTime {
		if a.images[pid].start == t.proc.StartTime {
			delete(a.images, pid)
		}
	}
	a.mu.Unlock()
	if heir == nil {
		for _, s := range a.signals {
			s.forget(t.svc)
		}
	}
	if latest {
		// A newer incarnation under this pid replaced the span provider
		// on its first span already; this would drop the newer one's.
		a.spans.Forget(t.svc.PID)
	}
}

// ready is the readiness check of discovery: a scan has been handed over,
// and every process it selected is attached or refused with a reason.
func (a *Agent) ready(context.Context) error {
	if a.delivered() == 0 {
		return errors.New("no discovery scan completed yet")
	}
	a.mu.RLock()
	waiting := make([]discover.Process, 0, len(a.pending))
	for _, p := range a.pending {
		waiting = append(waiting, p)
	}
	a.mu.RUnlock()
	if len(waiting) == 0 {
		return nil
	}
	slices.SortFunc(waiting, func(x, y discover.Process) int { return x.PID - y.PID })
	var b strings.Builder
	fmt.Fprintf(&b, "waiting to instrument %d selected process(es):", len(waiting))
	for i, p := range waiting {
		if i == 10 {
			fmt.Fprintf(&b, " and %d more", len(waiting)-i)
			break
		}
		fmt.Fprintf(&b, " pid %d (%s)", p.PID, p.Exe)
	}
	return errors.New(b.String())
}

// Event implements uprobes.Sink.
func (a *Agent) Event(ev probe.Event) {
	pid := ev.Common().PID
	a.mu.RLock()
	t := a.services[pid]
	a.mu.RUnlock()
	if t == nil && !a.hold(pid, ev) {
		return
	}
	if t == nil {
		// Registered between the two looks in hold.
		a.mu.RLock()
		t = a.services[pid]
		a.mu.RUnlock()
	}
	a.observe(t, ev)
}

// maxEarly bounds the records held for one pid whose attach is finishing.
const maxEarly = 4096

// hold keeps r for its pid's attach to replay when the pid is selected but
// its target not registered yet, and reports false when the target was
// registered meanwhile (the caller then observes r itself). Records of a
// pid neither registered nor selected (forgotten before its last records
// were read) are counted as unattributed.
func (a *Agent) hold(pid uint32, ev probe.Event) (registered bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.services[pid] != nil {
		return true
	}
	if _, ok := a.selected[int(pid)]; ok && len(a.early[pid]) < maxEarly {
		a.early[pid] = append(a.early[pid], ev)
		return false
	}
	a.unattributed.Inc()
	return false
}

// setSignals creates one signal per probe.Kind; a new kind adds one line
// here. It needs a.log and a.spans.
func (a *Agent) setSignals() {
	a.routes = export.NewRoutes(a.log)
	a.inner = newInnerMux(func(pid int, name string) error {
		if a.mgr == nil { // tests that run the agent without a manager
			return uprobes.ErrNotAttached
		}
		return a.mgr.Enable(pid, name)
	}, a.log)
	a.http = prom.NewHTTPServer(a.active, a.kernelOf(probe.KindHTTPServer), a.routes)
	a.signals = map[probe.Kind]signal{
		probe.KindHTTPServer: &httpServer{routes: a.routes, prom: a.http, spans: a.spans, inner: a.inner},
		probe.KindRPCServer:  newRPCServer(a),
		probe.KindRPCClient:  newRPCClient(a),
		probe.KindHTTPClient: a.newHTTPClient(),
	}
}

// observe hands one event to its kind's signal; an event of a kind
// without one is counted as unattributed (a probe enabled without its
// signal is a programming error, but never a reason to stop).
func (a *Agent) observe(t *target, ev probe.Event) {
	s := a.signals[ev.Common().Kind]
	if s == nil {
		a.unattributed.Inc()
		return
	}
	s.observe(t.svc, t.spans, ev)
}

func (a *Agent) active() ([]prom.Active, error) {
	act, err := a.mgr.ActiveRequests()
	out := make([]prom.Active, 0, len(act))
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, x := range act {
		if t := a.services[x.PID]; t != nil {
			out = append(out, prom.Active{Service: t.svc, Method: x.Method, N: x.N})
		}
	}
	return out, err
}

// kernelOf returns what reads the histograms the probes of kind counted in
// the kernel: the live ones by pid attributed to the attached incarnation,
// the final ones of exited incarnations to their own, each with what it
// counted since the previous read (Kernel.New).
func (a *Agent) kernelOf(kind probe.Kind) func() ([]prom.Kernel, error) {
	var d deltas
	return func() ([]prom.Kernel, error) {
		hs, err := a.mgr.Histograms(kind)
		if kind == probe.KindHTTPServer {
			for _, h := range hs {
				if h.Kind == kind {
					a.inner.kernel(int(h.PID), h)
				}
			}
		}
		ks := a.attribute(kind, hs)
		d.set(ks)
		return ks, err
	}
}

// deltas remembers how many calls each in-kernel series had counted at the
// previous read. Safe for concurrent use.
type deltas struct {
	mu   sync.Mutex
	last map[string]uint64
}

// set sets each series' New to what it counted since the previous read
// (all it counted, the first time); series not read now are forgotten.
func (d *deltas) set(ks []prom.Kernel) {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := make(map[string]uint64, len(ks))
	for i := range ks {
		id, n := seriesID(ks[i]), uint64(0)
		for _, b := range ks[i].Buckets {
			n += b
		}
		seen[id] = n
		if n > d.last[id] {
			ks[i].New = n - d.last[id]
		}
	}
	d.last = seen
}

// seriesID names one in-kernel series of one incarnation: every label,
// its process and its service, not its counts.
func seriesID(k prom.Kernel) string {
	h := k.Histogram
	h.Buckets, h.SumNS = nil, 0
	return fmt.Sprintf("%s\x00%+v", k.Service.InstanceID, h)
}

// attribute pairs live in-kernel series of kind with the incarnation
// attached now under their pid, and adds the final series of exited
// incarnations.
func (a *Agent) attribute(kind probe.Kind, hs []probe.Histogram) []prom.Kernel {
	out := make([]prom.Kernel, 0, len(hs))
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, h := range hs {
		t := a.services[h.PID]
		if t == nil || a.exited[t] || h.Kind != kind {
			continue
		}
		out = append(out, prom.Kernel{Service: t.svc, Histogram: h})
	}
	for t := range a.exited {
		for _, h := range t.final {
			if h.Kind == kind {
				out = append(out, prom.Kernel{Service: t.svc, Histogram: h})
			}
		}
	}
	carriers := make(map[*target]bool, len(a.services)+len(a.exited))
	for _, t := range a.services {
		carriers[t] = true
	}
	for t := range a.exited {
		carriers[t] = true
	}
	for t := range carriers {
		for _, h := range t.carried {
			if h.Kind == kind {
				out = append(out, prom.Kernel{Service: t.svc, Histogram: h})
			}
		}
	}
	return out
}
