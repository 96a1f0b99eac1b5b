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
// than max goroutines: a leak that only grows is a reason to restart.
func GoroutineCheck(max int) Check {
	return func(context.Context) error {
		if n := runtime.NumGoroutine(); n > max {
			return fmt.Errorf("%d goroutines, limit %d", n, max)
		}
		return nil
	}
}

// heapObjectsMetric is the live-plus-unswept heap, the same quantity as
// MemStats.HeapAlloc, read through runtime/metrics, which does not stop
// the world.
const heapObjectsMetric = "/memory/classes/heap/objects:bytes"

// HeapCheck is a liveness check that fails when the heap's allocated
// objects exceed maxBytes. It reads runtime/metrics, which is cheap and
// does not stop the world, so it is safe on every probe.
func HeapCheck(maxBytes uint64) Check {
	return func(context.Context) error {
		s := []metrics.Sample{{Name: heapObjectsMetric}}
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindUint64 {
			return fmt.Errorf("reading %s: not supported by this Go runtime", heapObjectsMetric)
		}
		if v := s[0].Value.Uint64(); v > maxBytes {
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
	last   atomic.Int64 // unix nanoseconds
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
	hb := &Heartbeat{maxAge: opts.MaxAge}
	if hb.maxAge <= 0 {
		hb.maxAge = 30 * time.Second
	}
	hb.Beat()
	return hb
}

// Beat records that the watched loop made progress.
func (hb *Heartbeat) Beat() { hb.last.Store(time.Now().UnixNano()) }

// Check is a liveness Check failing when no beat came within MaxAge.
func (hb *Heartbeat) Check(context.Context) error {
	age := time.Since(time.Unix(0, hb.last.Load()))
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
