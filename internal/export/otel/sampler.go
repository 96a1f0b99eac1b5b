package otelexport

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// SampleRatio reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG as the
// share of new traces to sample, which the probes apply in the kernel (a
// request not sampled costs no record). sdktrace.NewTracerProvider still
// applies the variables itself (sdk/trace/provider.go,
// tracerProviderOptionsFromEnv) to the sampled requests, and agrees, as
// their trace IDs come from the probe's draw (see idGenerator). A bad value
// there would only reach otel.Handle and fall back to sampling everything;
// checking up front turns that into a start-up error.
func SampleRatio(getenv func(string) string) (float64, error) {
	s := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG"))
	// The ratio is the root sampler's; see ParentBased for the rest.
	switch s {
	case "", "always_on", "parentbased_always_on":
		// The spec says an argument a sampler does not take is ignored.
		return 1, nil
	case "always_off", "parentbased_always_off":
		return 0, nil
	case "traceidratio", "parentbased_traceidratio":
		if arg == "" {
			return 1, nil // as the SDK
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing OTEL_TRACES_SAMPLER_ARG %q: %w", arg, err)
		}
		if !(r >= 0 && r <= 1) { // also refuses NaN
			return 0, fmt.Errorf("parsing OTEL_TRACES_SAMPLER_ARG: ratio %v is outside [0, 1]", r)
		}
		return r, nil
	}
	return 0, fmt.Errorf("parsing OTEL_TRACES_SAMPLER: %q is not supported by the Go SDK "+
		"(want always_on, always_off, traceidratio, parentbased_always_on, "+
		"parentbased_always_off or parentbased_traceidratio)", s)
}

// ParentBased says whether OTEL_TRACES_SAMPLER names a parent-based sampler:
// then a span whose request carries a trace context follows its parent's
// sampled flag. The variable's default, parentbased_always_on, is one (OTel
// specification, "General SDK Configuration").
func ParentBased(getenv func(string) string) bool {
	s := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	return s == "" || strings.HasPrefix(s, "parentbased_")
}

// traceIDLowKey carries a probe's draw from Span to idGenerator.
type traceIDLowKey struct{}

// idGenerator makes random IDs, except that the last 8 bytes of a trace ID
// are the probe's draw when the context carries one: the TraceIDRatioBased
// sampler tests exactly those bytes, so it keeps every span the probe
// sampled, and a downstream sampler with the same ratio decides alike.
type idGenerator struct{}

func (idGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if ids, ok := ctx.Value(probeIDsKey{}).(probeIDs); ok {
		return ids.trace, ids.span
	}
	var tid trace.TraceID
	low, ok := ctx.Value(traceIDLowKey{}).(uint64)
	if !ok {
		low = rand.Uint64()
	}
	binary.BigEndian.PutUint64(tid[8:], low)
	for !tid.IsValid() || tid[0]|tid[1]|tid[2]|tid[3]|tid[4]|tid[5]|tid[6]|tid[7] == 0 {
		binary.BigEndian.PutUint64(tid[:8], rand.Uint64())
	}
	return tid, newSpanID()
}

// NewSpanID is asked for a span with a parent, whose trace ID is the
// parent's.
func (idGenerator) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	if ids, ok := ctx.Value(probeIDsKey{}).(probeIDs); ok {
		return ids.span
	}
	return newSpanID()
}

// probeIDsKey carries the IDs a probe chose for a span (see probe.Trace):
// its children in other processes already name its span ID as their parent.
type probeIDsKey struct{}

type probeIDs struct {
	trace trace.TraceID
	span  trace.SpanID
}

// probeSampler records and samples every span: Exporter.Span is called only
// for calls a probe sampled or kept. The parent's tracestate goes on, as
// the SDK's own samplers pass it.
type probeSampler struct{}

func (probeSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	return sdktrace.SamplingResult{
		Decision:   sdktrace.RecordAndSample,
		Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState(),
	}
}

func (probeSampler) Description() string { return "obsd probe sampler" }

func newSpanID() trace.SpanID {
	var sid trace.SpanID
	for !sid.IsValid() {
		binary.BigEndian.PutUint64(sid[:], rand.Uint64())
	}
	return sid
}
