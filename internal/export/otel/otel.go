// Package otelexport turns observed requests into OpenTelemetry spans with
// the OTel Go SDK.
//
// Each instrumented process gets its own TracerProvider, because the
// resource (service.name, service.instance.id, process.pid, ...) is per
// provider; all of them feed one shared exporter. The SDK's standard
// environment applies: OTEL_EXPORTER_OTLP_* (endpoint, TLS, headers,
// timeout, compression), OTEL_BSP_* (queue and batching),
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (checked at New, applied by
// the SDK), and OTEL_RESOURCE_ATTRIBUTES (added to every resource).
//
// obsd's own OTEL_SERVICE_NAME names obsd, not the processes it observes: a
// span's service.name is always the target's (export.Service.Name), as are
// service.instance.id, host.name and process.pid. Precedence, lowest first:
// obsd's OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, telemetry.sdk.*,
// Options.Attrs, the target's Service.Attrs, the target's identity.
package otelexport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

// ScopeName is the instrumentation scope of every span obsd makes.
const ScopeName = "github.com/obsd-dev/obsd"

// forgetTimeout bounds flushing the spans of one exited process.
const forgetTimeout = 10 * time.Second

// Options configures New. The zero value is invalid only for lacking a
// Registerer.
type Options struct {
	// Mode selects the exporter; "" means ModeNone.
	Mode Mode
	// Stdout receives spans in ModeStdout; nil means os.Stdout.
	Stdout io.Writer
	// Registerer gets the obsd_span* self-metrics. Required.
	Registerer prometheus.Registerer
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Attrs are obsd-wide resource attributes (e.g. k8s.node.name) added to
	// every process's resource; optional.
	Attrs map[string]string
}

// Exporter makes spans. Its methods are safe for concurrent use.
type Exporter struct {
	mode Mode
	log  *slog.Logger

	// Nil in ModeNone.
	real     sdktrace.SpanExporter
	shared   *countingExporter
	base     *resource.Resource
	clock    *clock
	endpoint collector

	created prometheus.Counter
	dropped prometheus.Counter

	mu      sync.Mutex
	procs   map[int]*process
	closed  bool
	forgets sync.WaitGroup
}

// process is the TracerProvider of one instrumented process.
type process struct {
	name, instance string
	tp             *sdktrace.TracerProvider
	tracer         trace.Tracer
}

// New builds the shared exporter (none in ModeNone) and registers the
// self-metrics. Invalid OTEL_* settings are errors here rather than
// silent fallbacks later.
func New(ctx context.Context, o Options) (*Exporter, error) {
	if o.Registerer == nil {
		return nil, errors.New("creating span exporter: Options.Registerer is nil")
	}
	if o.Mode == "" {
		o.Mode = ModeNone
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	e := &Exporter{
		mode:  o.Mode,
		log:   o.Logger,
		procs: make(map[int]*process),
		created: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "obsd_spans_created_total",
			Help: "Spans started for the requests the probes sampled (the SDK may still drop them).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "obsd_spans_dropped_total",
			Help: "Spans the SDK's batch processor dropped because its queue was full " +
				"(counted only with OTEL_GO_X_OBSERVABILITY=true and MeterProvider installed).",
		}),
	}
	shared := &countingExporter{
		log: o.Logger,
		exported: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "obsd_spans_exported_total",
			Help: "Spans the exporter delivered.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "obsd_span_export_errors_total",
			Help: "Spans in batches the exporter failed to deliver, or the collector rejected.",
		}),
	}
	for _, c := range []prometheus.Collector{e.created, e.dropped, shared.exported, shared.failed} {
		if err := o.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("registering span metrics: %w", err)
		}
	}

	switch o.Mode {
	case ModeNone:
		return e, nil
	case ModeOTLP:
		ep, err := collectorFromEnv(os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("configuring OTLP exporter: %w", err)
		}
		e.endpoint = ep
		// Reads every OTEL_EXPORTER_OTLP_* variable; does not connect yet.
		x, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("creating OTLP exporter: %w", err)
		}
		e.real = x
	case ModeStdout:
		w := o.Stdout
		if w == nil {
			w = os.Stdout
		}
		x, err := stdouttrace.New(stdouttrace.WithWriter(w))
		if err != nil {
			return nil, fmt.Errorf("creating stdout exporter: %w", err)
		}
		e.real = x
	default:
		return nil, fmt.Errorf("creating span exporter: unknown mode %q", o.Mode)
	}
	shared.next = e.real
	e.shared = shared

	if _, err := SampleRatio(os.Getenv); err != nil {
		return nil, errors.Join(err, e.real.Shutdown(ctx))
	}
	base, err := baseResource(ctx, o.Attrs)
	if err != nil {
		return nil, errors.Join(err, e.real.Shutdown(ctx))
	}
	e.base = base
	if e.clock, err = newClock(); err != nil {
		return nil, errors.Join(err, e.real.Shutdown(ctx))
	}
	if !strings.EqualFold(os.Getenv(observabilityEnv), "true") {
		e.log.Info("spans dropped by a full SDK queue are not counted; set " +
			observabilityEnv + "=true and install Exporter.MeterProvider to count them")
	}
	return e, nil
}

// baseResource is what every process's resource starts from.
func baseResource(ctx context.Context, attrs map[string]string) (*resource.Resource, error) {
	env, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("reading OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	res, err := resource.Merge(env, resource.NewSchemaless(mapAttrs(attrs)...))
	if err != nil {
		return nil, fmt.Errorf("merging resource attributes: %w", err)
	}
	return res, nil
}

// mapAttrs sorts so that resources are built deterministically.
func mapAttrs(m map[string]string) []attribute.KeyValue {
	kv := make([]attribute.KeyValue, 0, len(m))
	for k, v := range m {
		kv = append(kv, attribute.String(k, v))
	}
	sort.Slice(kv, func(i, j int) bool { return kv[i].Key < kv[j].Key })
	return kv
}

// MeterProvider returns a metric.MeterProvider that turns the SDK's
// experimental count of spans dropped on a full queue into
// obsd_spans_dropped_total and ignores every other SDK self-metric. To use
// it, main sets OTEL_GO_X_OBSERVABILITY=true and calls
// otel.SetMeterProvider with it before the first span.
func (e *Exporter) MeterProvider() metric.MeterProvider {
	return dropMeterProvider{dropped: e.dropped}
}

// Span makes one span of kind for c, a call the probe sampled, started and
// ended at the call's own times, and returns its context so the caller can
// attach a trace_id exemplar when it is sampled. build gives the span's
// attributes and status; it runs only when the span records, so unsampled
// calls cost no attribute building. For a call the probe did not sample,
// in ModeNone, or after Shutdown, Span returns an empty SpanContext. Each
// signal's own file (http_server.go, …) calls it with its builder.
func (e *Exporter) Span(svc export.Service, c probe.Call, kind trace.SpanKind, name string, build func() ([]attribute.KeyValue, codes.Code)) trace.SpanContext {
	if e.real == nil || !c.Sampled {
		return trace.SpanContext{}
	}
	p := e.process(svc)
	if p == nil {
		return trace.SpanContext{}
	}
	e.created.Inc()

	start := e.clock.wall(c.StartNS)
	end := start
	if c.EndNS > c.StartNS {
		end = start.Add(time.Duration(c.EndNS - c.StartNS))
	}
	// The probe decided the sampling (probeSampler keeps what it kept) and,
	// where it can, the IDs and the parent.
	_, span := p.tracer.Start(spanContext(c), name,
		trace.WithSpanKind(kind),
		trace.WithTimestamp(start),
	)
	if !span.IsRecording() {
		return span.SpanContext()
	}
	attrs, status := build()
	span.SetAttributes(attrs...)
	if r := keptReason(c.Trace); r != "" {
		span.SetAttributes(attribute.String(KeptReasonKey, r))
	}
	if status != codes.Unset {
		span.SetStatus(status, "")
	}
	span.End(trace.WithTimestamp(end))
	return span.SpanContext()
}

// KeptReasonKey is the attribute of a span head sampling dropped but obsd
// kept at its end: "slow", "error" or "slow,error".
const KeptReasonKey = "obsd.kept_reason"

func keptReason(t probe.Trace) string {
	switch {
	case t.KeptSlow && t.KeptError:
		return "slow,error"
	case t.KeptSlow:
		return "slow"
	case t.KeptError:
		return "error"
	}
	return ""
}

// spanContext is the context a call's span starts in: the IDs the probe
// chose (for idGenerator) and its parent, when the probe decided them; else
// only the probe's draw for the trace ID's last 8 bytes, and no parent.
func spanContext(c probe.Call) context.Context {
	ctx := context.Background()
	if c.Trace.SpanID == 0 {
		return context.WithValue(ctx, traceIDLowKey{}, c.TraceIDLow)
	}
	var tid trace.TraceID
	binary.BigEndian.PutUint64(tid[:8], c.Trace.TraceIDHigh)
	binary.BigEndian.PutUint64(tid[8:], c.TraceIDLow)
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], c.Trace.SpanID)
	ctx = context.WithValue(ctx, probeIDsKey{}, probeIDs{trace: tid, span: sid})
	if c.Trace.ParentSpanID == 0 {
		return ctx
	}
	cfg := trace.SpanContextConfig{TraceID: tid, Remote: c.Trace.Remote}
	binary.BigEndian.PutUint64(cfg.SpanID[:], c.Trace.ParentSpanID)
	if c.Trace.ParentSampled {
		cfg.TraceFlags = trace.FlagsSampled
	}
	if c.Trace.TraceState != "" {
		// An invalid tracestate is dropped, as the W3C spec asks (3.3.1.1);
		// the parent link stands.
		if ts, err := trace.ParseTraceState(c.Trace.TraceState); err == nil {
			cfg.TraceState = ts
		}
	}
	return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(cfg))
}

// process returns the provider for svc.PID, creating it on first use; nil
// after Shutdown. A PID reused by another service gets a new provider.
func (e *Exporter) process(svc export.Service) *process {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	if p, ok := e.procs[svc.PID]; ok {
		if p.name == svc.Name && p.instance == svc.InstanceID {
			return p
		}
		e.forgetLocked(svc.PID, p)
	}
	p := e.newProcess(svc)
	e.procs[svc.PID] = p
	return p
}

func (e *Exporter) newProcess(svc export.Service) *process {
	name := svc.Name
	if name == "" {
		// Never let obsd's own service.name stand in for the target.
		name = "unknown_service"
	}
	attrs := append(mapAttrs(svc.Attrs),
		semconv.ServiceName(name),
		semconv.ServiceInstanceID(svc.InstanceID),
		semconv.HostName(svc.Host),
		semconv.ProcessPID(svc.PID),
	)
	// Merging a schemaless resource into base cannot conflict.
	res, _ := resource.Merge(e.base, resource.NewSchemaless(attrs...))
	res = cleanResource(res)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithIDGenerator(idGenerator{}),
		// The probes sample (from the same OTEL_TRACES_SAMPLER, see
		// SampleRatio and ParentBased) and keep slow and failing calls;
		// Span sees only what they kept.
		sdktrace.WithSampler(probeSampler{}),
		sdktrace.WithBatcher(e.shared, batchOptions(os.Getenv)...),
	)
	return &process{
		name:     svc.Name,
		instance: svc.InstanceID,
		tp:       tp,
		tracer:   tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
	}
}

// cleanResource makes every string of res valid UTF-8 within
// export.MaxValueLen: the target's environment (OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES) may hold any bytes, and one invalid string
// would make the collector reject every span of the batch.
func cleanResource(res *resource.Resource) *resource.Resource {
	attrs := res.Attributes()
	changed := false
	for i, kv := range attrs {
		k := export.Clean(string(kv.Key), export.MaxValueLen, false)
		if k != string(kv.Key) {
			attrs[i].Key = attribute.Key(k)
			changed = true
		}
		if kv.Value.Type() == attribute.STRING {
			if s := export.Clean(kv.Value.AsString(), export.MaxValueLen, false); s != kv.Value.AsString() {
				attrs[i].Value = attribute.StringValue(s)
				changed = true
			}
		}
	}
	if !changed {
		return res
	}
	return resource.NewWithAttributes(res.SchemaURL(), attrs...)
}

// defaultQueueSize replaces the SDK's 2,048-span queue, sized for one
// application: a node agent sees the traffic of every service on the node.
// 65,536 spans hold a 5 s batch interval at 13k sampled requests/s;
// whatever still overflows is counted in obsd_spans_dropped_total.
const defaultQueueSize = 65536

// batchOptions applies obsd's defaults where OTEL_BSP_* leave them unset:
// options passed to the SDK override its environment variables.
func batchOptions(getenv func(string) string) []sdktrace.BatchSpanProcessorOption {
	if getenv("OTEL_BSP_MAX_QUEUE_SIZE") != "" {
		return nil
	}
	return []sdktrace.BatchSpanProcessorOption{sdktrace.WithMaxQueueSize(defaultQueueSize)}
}

// Forget is called when a process exits: its provider is dropped at once
// and its queued spans are flushed in the background (bounded by a
// timeout; Shutdown waits for it).
func (e *Exporter) Forget(pid int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.procs[pid]; ok && !e.closed {
		e.forgetLocked(pid, p)
	}
}

func (e *Exporter) forgetLocked(pid int, p *process) {
	delete(e.procs, pid)
	e.forgets.Add(1)
	go func() {
		defer e.forgets.Done()
		ctx, cancel := context.WithTimeout(context.Background(), forgetTimeout)
		defer cancel()
		if err := p.tp.Shutdown(ctx); err != nil {
			e.log.Warn("flushing spans of an exited process", "pid", pid, "service", p.name, "err", err)
		}
	}()
}

// Check is a readiness check. It passes in ModeNone and ModeStdout. With
// OTLP it fails while the latest export failed (until one succeeds), and
// before any export it dials the collector, so a wrong endpoint shows at
// start-up rather than with the first span.
func (e *Exporter) Check(ctx context.Context) error {
	if e.mode != ModeOTLP {
		return nil
	}
	if r := e.shared.result(); r != nil {
		if r.err != nil {
			return fmt.Errorf("exporting spans at %s: %w", r.at.Format(time.RFC3339), r.err)
		}
		return nil
	}
	return e.endpoint.dial(ctx)
}

// Shutdown flushes every provider and then closes the exporter, within ctx.
// Spans made afterwards are ignored. It is safe to call more than once.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	procs := e.procs
	e.procs = nil
	e.mu.Unlock()
	if e.real == nil {
		return nil
	}

	var (
		errsMu sync.Mutex
		errs   []error
		wg     sync.WaitGroup
	)
	addErr := func(err error) {
		errsMu.Lock()
		errs = append(errs, err)
		errsMu.Unlock()
	}
	wg.Go(func() {
		done := make(chan struct{})
		go func() { e.forgets.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			addErr(fmt.Errorf("flushing spans of exited processes: %w", ctx.Err()))
		}
	})
	for pid, p := range procs {
		wg.Go(func() {
			if err := p.tp.Shutdown(ctx); err != nil {
				addErr(fmt.Errorf("flushing spans of pid %d: %w", pid, err))
			}
		})
	}
	wg.Wait()
	// Closing the real exporter last also cancels exports still running
	// when ctx has expired.
	if err := e.real.Shutdown(ctx); err != nil {
		addErr(fmt.Errorf("closing span exporter: %w", err))
	}
	return errors.Join(errs...)
}

// ErrorHandler returns an otel.ErrorHandler for main to install with
// otel.SetErrorHandler. Without one the SDK prints each failed batch to
// stderr through the standard log package. Export failures, already counted
// and logged at a bounded rate by the Exporter, go to Debug; anything else
// is a warning.
func ErrorHandler(l *slog.Logger) otel.ErrorHandler {
	return otel.ErrorHandlerFunc(func(err error) {
		if errors.As(err, new(countedError)) {
			l.Debug("span export failed", "err", err)
			return
		}
		l.Warn("OpenTelemetry SDK error", "err", err)
	})
}
