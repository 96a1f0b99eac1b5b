package health

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// GoroutinesBelow fails when the process runs n goroutines or more, the
// usual sign of a leak.
func GoroutinesBelow(n int) Check {
	return func(context.Context) error {
		if g := runtime.NumGoroutine(); g >= n {
			return fmt.Errorf("%d goroutines, limit %d", g, n)
		}
		return nil
	}
}

// heapMetric is the heap occupied by objects, live or not yet swept: what
// MemStats.HeapAlloc reports, read without stopping the world.
const heapMetric = "/memory/classes/heap/objects:bytes"

// HeapBelow fails when the heap holds bytes or more. It reads
// runtime/metrics, which unlike runtime.ReadMemStats does not stop the world.
func HeapBelow(bytes uint64) Check {
	return func(context.Context) error {
		s := []metrics.Sample{{Name: heapMetric}}
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindUint64 {
			return fmt.Errorf("reading %s: not supported by this Go runtime", heapMetric)
		}
		if h := s[0].Value.Uint64(); h >= bytes {
			return fmt.Errorf("heap %d bytes, limit %d", h, bytes)
		}
		return nil
	}
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

// Check fails when the latest beat is older than maxAge.
func (h *Heartbeat) Check(context.Context) error {
	age := time.Since(h.base) - time.Duration(h.last.Load())
	if age > h.maxAge {
		return fmt.Errorf("no heartbeat for %v, limit %v", age.Round(time.Millisecond), h.maxAge)
	}
	return nil
}
