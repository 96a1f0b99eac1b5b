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
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/discover"
	"github.com/obsd-dev/obsd/internal/export"
	otelexport "github.com/obsd-dev/obsd/internal/export/otel"
	"github.com/obsd-dev/obsd/internal/export/prom"
	"github.com/obsd-dev/obsd/internal/health"
	"github.com/obsd-dev/obsd/internal/kube"
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
	// Forget is how long an exited process's series stay exported, so the
	// last scrape sees its final counts.
	Forget time.Duration
	Logger *slog.Logger
	// Version is obsd's own version, for obsd_build_info.
	Version string
	// Kubernetes, when set, adds the opted-in pods of this node as a
	// discovery source (Logger is taken from this Config).
	Kubernetes *kube.Options
}

// Agent is one running obsd.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	host    string
	reg     *prometheus.Registry
	mgr     *uprobes.Manager
	spans   *otelexport.Exporter
	http    *prom.HTTPServer
	watcher *discover.Watcher
	kube    *kube.Source
	checks  *health.Checker
	beat    *health.Heartbeat
	ln      net.Listener

	unattributed prometheus.Counter

	mu       sync.RWMutex
	services map[uint32]*target
}

type target struct {
	svc   export.Service
	spans bool
}

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
	a := &Agent{
		cfg:      cfg,
		log:      cfg.Logger,
		host:     host,
		reg:      prometheus.NewRegistry(),
		services: map[uint32]*target{},
		checks:   health.New(time.Second),
		beat:     health.NewHeartbeat(5 * time.Second),
	}
	spans := cfg.Traces != otelexport.ModeNone && cfg.Traces != ""
	ratio := 0.0
	if spans {
		if ratio, err = otelexport.SampleRatio(os.Getenv); err != nil {
			return nil, fmt.Errorf("setting up trace export: %w", err)
		}
	}
	a.mgr, err = uprobes.New(uprobes.Options{
		Logger:          cfg.Logger,
		Sink:            a,
		Spans:           spans,
		SampleRatio:     ratio,
		DurationBuckets: prom.DurationBuckets,
	})
	if err != nil {
		return nil, fmt.Errorf("loading probes: %w", err)
	}
	a.spans, err = otelexport.New(ctx, otelexport.Options{Mode: cfg.Traces, Registerer: a.reg, Logger: cfg.Logger})
	if err != nil {
		a.mgr.Close()
		return nil, fmt.Errorf("setting up trace export: %w", err)
	}
	a.http = prom.NewHTTPServer(a.active, a.kernel)
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

	a.watcher = discover.New(cfg.Criteria, discover.Options{Logger: cfg.Logger})
	a.checks.AddLiveness("event_loop", a.beat.Check)
	a.checks.AddLiveness("goroutines", health.GoroutinesBelow(10000))
	a.checks.AddLiveness("heap", health.HeapBelow(1<<30))
	a.checks.AddReadiness("bpf", func(context.Context) error { return nil }) // New failed otherwise
	a.checks.AddReadiness("discovery", func(context.Context) error {
		if a.watcher.Scans() == 0 {
			return errors.New("no scan completed yet")
		}
		return nil
	})
	a.checks.AddReadiness("trace_exporter", a.spans.Check)
	if cfg.Kubernetes != nil {
		o := *cfg.Kubernetes
		o.Logger = cfg.Logger
		if a.kube, err = kube.New(o); err != nil {
			a.spans.Shutdown(ctx)
			a.mgr.Close()
			return nil, err
		}
		a.reg.MustRegister(a.kube.Collector())
		a.checks.AddReadiness("kubernetes", a.kube.Check)
	}

	a.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		a.spans.Shutdown(ctx)
		a.mgr.Close()
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
	a.log.Info("obsd running", "listen", a.ln.Addr().String(), "traces", string(a.cfg.Traces))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	stop()
	wg.Wait()

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := []error{runErr, srv.Shutdown(shutdownCtx)}
	errs = append(errs, a.mgr.Close(), a.spans.Shutdown(shutdownCtx), a.watcher.Close())
	a.log.Info("obsd stopped; all probes detached")
	return errors.Join(errs...)
}

// Added implements discover.Handler.
func (a *Agent) Added(p discover.Process) {
	info, err := a.mgr.Attach(p.PID, p.ExePath)
	if err != nil {
		return // logged and counted by the manager
	}
	t := &target{
		svc: export.Service{
			Name:       p.ServiceName,
			InstanceID: a.host + ":" + strconv.Itoa(p.PID),
			Host:       a.host,
			PID:        p.PID,
			Attrs:      p.ResourceAttrs,
		},
		spans: emitsSpans(info.Modules[manualSDKModule] != "", p.ManualTracing),
	}
	if p.InstanceID != "" {
		t.svc.InstanceID = p.InstanceID
	}
	if t.svc.Name == "" {
		t.svc.Name = filepath.Base(p.Exe)
	}
	a.mu.Lock()
	a.services[uint32(p.PID)] = t
	a.mu.Unlock()
	a.log.Info("instrumented process", "pid", p.PID, "exe", p.Exe, "service", t.svc.Name,
		"go", info.GoVersion, "spans", t.spans)
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

// Removed implements discover.Handler.
func (a *Agent) Removed(p discover.Process) {
	if err := a.mgr.Detach(p.PID); err != nil {
		a.log.Warn("detaching exited process", "pid", p.PID, "err", err)
	}
	a.mu.RLock()
	t := a.services[uint32(p.PID)]
	a.mu.RUnlock()
	if t == nil {
		return
	}
	a.log.Info("process exited; probes released", "pid", p.PID, "service", t.svc.Name)
	// Records still in the ring buffer and the last scrape need the
	// service for a while.
	time.AfterFunc(a.cfg.Forget, func() {
		a.mu.Lock()
		if a.services[uint32(p.PID)] == t {
			delete(a.services, uint32(p.PID))
		}
		a.mu.Unlock()
		a.http.Forget(t.svc)
		a.mgr.Forget(p.PID)
		a.spans.Forget(p.PID)
	})
}

// Request implements uprobes.Sink.
func (a *Agent) Request(r probe.Request) {
	a.mu.RLock()
	t := a.services[r.PID]
	a.mu.RUnlock()
	if t == nil {
		// Only possible for a process forgotten before its last records
		// were read.
		a.unattributed.Inc()
		return
	}
	switch r.Kind {
	case probe.KindHTTPServer:
		var sc trace.SpanContext
		if t.spans {
			sc = a.spans.Span(t.svc, r)
		}
		a.http.Observe(t.svc, r, sc)
	}
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

// kernel attributes the histograms the probes counted in the kernel.
func (a *Agent) kernel() ([]prom.Kernel, error) {
	hs, err := a.mgr.Histograms()
	out := make([]prom.Kernel, 0, len(hs))
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, h := range hs {
		t := a.services[h.PID]
		if t == nil || h.Kind != probe.KindHTTPServer {
			continue
		}
		out = append(out, prom.Kernel{Service: t.svc, Histogram: h})
	}
	return out, err
}
