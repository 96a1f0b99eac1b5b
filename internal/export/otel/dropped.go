package otelexport

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// The BatchSpanProcessor drops a span without a trace when its queue is
// full. SDK v1.47 reports such drops only through its experimental
// self-observability (enabled by OTEL_GO_X_OBSERVABILITY=true, read when a
// provider is created): the counter "otel.sdk.processor.span.processed" with
// error.type="queue_full", recorded on the global MeterProvider. These names
// mirror sdk/trace/internal/observ; TestDroppedSpansCounted breaks if an SDK
// upgrade renames them.
const (
	bspScope         = "go.opentelemetry.io/otel/sdk/trace/internal/observ"
	bspProcessed     = "otel.sdk.processor.span.processed"
	errorTypeKey     = "error.type"
	errorQueueFull   = "queue_full"
	observabilityEnv = "OTEL_GO_X_OBSERVABILITY"
)

// dropMeterProvider turns the SDK's queue-full count into a Prometheus
// counter; every other instrument is a no-op, whose Enabled reports false,
// so the SDK skips their bookkeeping.
type dropMeterProvider struct {
	noop.MeterProvider
	dropped prometheus.Counter
}

func (p dropMeterProvider) Meter(name string, _ ...metric.MeterOption) metric.Meter {
	if name != bspScope {
		return noop.Meter{}
	}
	return dropMeter{dropped: p.dropped}
}

type dropMeter struct {
	noop.Meter
	dropped prometheus.Counter
}

func (m dropMeter) Int64Counter(name string, _ ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	if name != bspProcessed {
		return noop.Int64Counter{}, nil
	}
	return dropCounter{dropped: m.dropped}, nil
}

type dropCounter struct {
	noop.Int64Counter
	dropped prometheus.Counter
}

func (dropCounter) Enabled(context.Context) bool { return true }

// Add sees every processed batch; only queue-full drops carry error.type.
func (c dropCounter) Add(_ context.Context, n int64, opts ...metric.AddOption) {
	set := metric.NewAddConfig(opts).Attributes()
	if v, ok := set.Value(errorTypeKey); ok && v.AsString() == errorQueueFull {
		c.dropped.Add(float64(n))
	}
}
