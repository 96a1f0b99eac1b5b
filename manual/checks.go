package manual

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// GoroutineCheck is a liveness check that fails when the process runs more
// than max goroutines (max itself passes): a leak that only grows is a
// reason to restart. obsd's own /healthz applies the same rule; the table
// in testdata/health_rules.json specifies both.
func GoroutineCheck(max int) Check {
	return func(context.Context) error {
		if n := runtime.NumGoroutine(); max < 0 || overLimit(uint64(n), uint64(max)) {
			return fmt.Errorf("%d goroutines, limit %d", n, max)
		}
		return nil
	}
}

// overLimit is the one rule of every limit check here and in obsd's
// internal/health: the limit is the largest healthy value.
func overLimit(value, limit uint64) bool { return value > limit }

// heapObjectsMetric is the live-plus-unswept heap, the same quantity as
// MemStats.HeapAlloc, read through runtime/metrics, which does not stop
// the world.
const heapObjectsMetric = "/memory/classes/heap/objects:bytes"

// HeapCheck is a liveness check that fails when the heap's allocated
// objects exceed maxBytes (maxBytes itself passes). It reads runtime/metrics, which is cheap and
// does not stop the world, so it is safe on every probe.
func HeapCheck(maxBytes uint64) Check {
	return func(context.Context) error {
		s := []metrics.Sample{{Name: heapObjectsMetric}}
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindUint64 {
			return fmt.Errorf("reading %s: not supported by this Go runtime", heapObjectsMetric)
		}
		if v := s[0].Value.Uint64(); overLimit(v, maxBytes) {
			return fmt.Errorf("heap %d bytes, limit %d", v, maxBytes)
		}
		return nil
	}
}

// Heartbeat detects a stuck loop or a deadlock: the loop calls Beat on each
// iteration, and Check fails when the last beat is older than the allowed
// age. The zero value is not usable; use NewHeartbeat.
type Heartbeat struct {
	maxAge time.Duration
	// base carries a monotonic clock reading and last is an offset from
	// it, so a step of the wall clock (NTP, a VM resumed) neither fails
	// nor hides a stuck loop.
	base time.Time
	last atomic.Int64 // ns since base of the latest beat
}

// HeartbeatOpts configures NewHeartbeat.
type HeartbeatOpts struct {
	// MaxAge is how old the last beat may be before Check fails. Zero
	// means 30 s. Make it several times the loop's normal period.
	MaxAge time.Duration
}

// NewHeartbeat returns a Heartbeat whose first beat is now, so a loop has
// MaxAge to start.
func NewHeartbeat(opts HeartbeatOpts) *Heartbeat {
	hb := &Heartbeat{maxAge: opts.MaxAge, base: time.Now()}
	if hb.maxAge <= 0 {
		hb.maxAge = 30 * time.Second
	}
	return hb
}

// Beat records that the watched loop made progress. It costs one clock
// read and one atomic store.
func (hb *Heartbeat) Beat() { hb.last.Store(int64(time.Since(hb.base))) }

// Check is a liveness Check failing when no beat came within MaxAge (an
// age of exactly MaxAge passes). Ages are measured on the monotonic clock.
func (hb *Heartbeat) Check(context.Context) error {
	age := time.Since(hb.base) - time.Duration(hb.last.Load())
	if age > hb.maxAge {
		return fmt.Errorf("no heartbeat for %s, limit %s", age.Round(time.Millisecond), hb.maxAge)
	}
	return nil
}

// Pinger is what PingCheck needs; *sql.DB and *sql.Conn satisfy it.
type Pinger interface {
	PingContext(ctx context.Context) error
}

// PingCheck is a readiness check that pings a database. With *sql.DB the
// ping reuses or opens one pooled connection, which keeps it cheap.
func PingCheck(db Pinger) Check {
	return func(ctx context.Context) error {
		if err := db.PingContext(ctx); err != nil {
			return fmt.Errorf("pinging database: %w", err)
		}
		return nil
	}
}

// DialCheck is a readiness check that opens and closes a connection to
// address, for dependencies such as Redis without a client at hand.
// network is as for net.Dial ("tcp", "tcp4", "unix", ...).
func DialCheck(network, address string) Check {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			return fmt.Errorf("dialing %s: %w", address, err)
		}
		return c.Close()
	}
}

// FlagCheck is a readiness check that passes once flag is true, for
// conditions such as "configuration loaded" or "cache warmed".
// what names the condition in the failure message.
func FlagCheck(flag *atomic.Bool, what string) Check {
	return func(context.Context) error {
		if !flag.Load() {
			return errors.New(what + " not yet done")
		}
		return nil
	}
}
