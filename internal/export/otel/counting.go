package otelexport

import (
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// logEvery limits export-failure logging after the first line.
const logEvery = time.Minute

// exportResult is the outcome of the latest export, for readiness.
type exportResult struct {
	at  time.Time
	err error
}

// countingExporter is the one exporter every TracerProvider shares. It counts
// outcomes, logs failures at a bounded rate and ignores Shutdown, so that a
// provider closed when its process exits leaves the others working; the
// real exporter is shut down by Exporter.Shutdown.
type countingExporter struct {
	next     sdktrace.SpanExporter
	exported prometheus.Counter
	failed   prometheus.Counter
	log      *slog.Logger

	last atomic.Pointer[exportResult]

	mu      sync.Mutex
	logged  bool      // a failure line was ever written
	lastLog time.Time // of the last failure or recovery line
	failing bool      // failures happened since the last line said otherwise
	pending int       // failed spans not yet reported in a line
}

// countedError marks an export error already counted and logged here, so
// an otel.ErrorHandler can skip the copy the BatchSpanProcessor hands it.
type countedError struct{ err error }

func (e countedError) Error() string { return e.err.Error() }
func (e countedError) Unwrap() error { return e.err }

func (c *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := c.next.ExportSpans(ctx, spans)
	n := len(spans)
	failed := 0
	reachable := true
	if err != nil {
		if k, ok := partialRejected(err); ok {
			failed = min(k, n)
		} else {
			failed, reachable = n, false
		}
	}
	c.exported.Add(float64(n - failed))
	c.failed.Add(float64(failed))

	now := time.Now()
	res := &exportResult{at: now}
	if !reachable {
		res.err = err
	}
	c.last.Store(res)
	c.note(now, err, failed)
	if err != nil {
		return countedError{err}
	}
	return nil
}

// note logs the first failure at once and after that at most one line per
// logEvery, carrying the number of failed spans since the previous line.
func (c *countingExporter) note(now time.Time, err error, failed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending += failed
	due := !c.logged || now.Sub(c.lastLog) >= logEvery
	switch {
	case err != nil && due:
		c.log.Error("exporting spans failed", "err", err, "failed_spans", c.pending)
		c.logged, c.lastLog, c.failing, c.pending = true, now, true, 0
	case err != nil:
		c.failing = true
	case c.failing && due:
		c.log.Info("exporting spans works again", "failed_spans", c.pending)
		c.lastLog, c.failing, c.pending = now, false, 0
	}
}

// result returns the latest export outcome, nil before the first export.
func (c *countingExporter) result() *exportResult { return c.last.Load() }

// Shutdown does nothing: see the type comment.
func (*countingExporter) Shutdown(context.Context) error { return nil }

// partialSuccessRE matches the text of the OTLP exporters' partial-success
// error, whose type is internal to them: "[traces export: ]OTLP partial
// success: <message> (<n> spans rejected)". A transport error joined to it
// ends the text differently and so counts the whole batch as failed.
var partialSuccessRE = regexp.MustCompile(`(?s)(?:\A|: )OTLP partial success: .* \((\d+) spans rejected\)\z`)

// partialRejected reports whether err is only an OTLP partial success (the
// collector took the batch but rejected some spans) and how many it rejected.
func partialRejected(err error) (int, bool) {
	m := partialSuccessRE.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, false
	}
	n, convErr := strconv.Atoi(m[1])
	if convErr != nil {
		return 0, false
	}
	return n, true
}
