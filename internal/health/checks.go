package health

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// overLimit is the one rule of every limit check here and in manual/: the
// limit is the largest healthy value. manual/testdata/health_rules.json
// specifies it for both.
func overLimit(value, limit uint64) bool { return value > limit }

// GoroutineLimit fails when the process runs more than max goroutines
// (max itself passes), the usual sign of a leak. A negative max fails
// always.
func GoroutineLimit(max int) Check {
	return func(context.Context) error {
		g := runtime.NumGoroutine()
		if max < 0 || overLimit(uint64(g), uint64(max)) {
			return fmt.Errorf("%d goroutines, limit %d", g, max)
		}
		return nil
	}
}

// GoroutinesBelow fails when the process runs n goroutines or more.
//
// Deprecated: use GoroutineLimit(n-1); it states the limit the way
// manual.GoroutineCheck does.
func GoroutinesBelow(n int) Check { return GoroutineLimit(n - 1) }

// heapMetric is the heap occupied by objects, live or not yet swept: what
// MemStats.HeapAlloc reports, read without stopping the world.
const heapMetric = "/memory/classes/heap/objects:bytes"

// HeapLimit fails when the heap's objects occupy more than maxBytes
// (maxBytes itself passes). It reads runtime/metrics, which unlike
// runtime.ReadMemStats does not stop the world.
func HeapLimit(maxBytes uint64) Check {
	return func(context.Context) error {
		s := []metrics.Sample{{Name: heapMetric}}
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindUint64 {
			return fmt.Errorf("reading %s: not supported by this Go runtime", heapMetric)
		}
		if h := s[0].Value.Uint64(); overLimit(h, maxBytes) {
			return fmt.Errorf("heap %d bytes, limit %d", h, maxBytes)
		}
		return nil
	}
}

// HeapBelow fails when the heap holds bytes or more (bytes 0 fails
// always).
//
// Deprecated: use HeapLimit(bytes-1); it states the limit the way
// manual.HeapCheck does.
func HeapBelow(bytes uint64) Check {
	if bytes == 0 {
		return func(context.Context) error { return fmt.Errorf("heap limit below 0 bytes") }
	}
	return HeapLimit(bytes - 1)
}

// Heartbeat is a liveness check for a loop: the loop calls Beat on every
// pass (or on an idle tick), and Check fails once no beat came within
// maxAge. Creation counts as a beat, giving start-up maxAge of grace.
type Heartbeat struct {
	maxAge time.Duration
	base   time.Time    // carries a monotonic reading; immune to clock steps
	last   atomic.Int64 // ns since base of the latest beat
}

// NewHeartbeat returns a Heartbeat; a maxAge of 0 or less means 1 minute.
func NewHeartbeat(maxAge time.Duration) *Heartbeat {
	if maxAge <= 0 {
		maxAge = time.Minute
	}
	return &Heartbeat{maxAge: maxAge, base: time.Now()}
}

// Beat records that the loop is alive. It is cheap enough for every pass.
func (h *Heartbeat) Beat() { h.last.Store(int64(time.Since(h.base))) }

// Check fails when the latest beat is older than maxAge (exactly maxAge
// passes), measured on the monotonic clock.
func (h *Heartbeat) Check(context.Context) error {
	age := time.Since(h.base) - time.Duration(h.last.Load())
	if age > h.maxAge {
		return fmt.Errorf("no heartbeat for %v, limit %v", age.Round(time.Millisecond), h.maxAge)
	}
	return nil
}
