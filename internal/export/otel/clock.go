package otelexport

import (
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// resyncEvery bounds how stale the monotonic-to-wall offset may get: NTP
// slews and steps move CLOCK_REALTIME, not CLOCK_MONOTONIC.
const resyncEvery = time.Minute

// clock converts CLOCK_MONOTONIC nanoseconds (what bpf_ktime_get_ns returns)
// to wall time. Re-syncing is driven by the timestamps being converted, so
// the hot path reads no clock.
type clock struct {
	offset atomic.Int64 // realtime - monotonic, ns
	synced atomic.Int64 // monotonic ns of the last sync
}

func newClock() (*clock, error) {
	c := &clock{}
	if err := c.sync(); err != nil {
		return nil, err
	}
	return c, nil
}

// sync measures the offset. Reading REALTIME on both sides of MONOTONIC and
// keeping the tightest of a few tries bounds the error by half that window
// (well under a microsecond with the vDSO).
func (c *clock) sync() error {
	var best, bestWin, mono int64 = 0, -1, 0
	for range 3 {
		var r1, m, r2 unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_REALTIME, &r1); err != nil {
			return fmt.Errorf("reading CLOCK_REALTIME: %w", err)
		}
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &m); err != nil {
			return fmt.Errorf("reading CLOCK_MONOTONIC: %w", err)
		}
		if err := unix.ClockGettime(unix.CLOCK_REALTIME, &r2); err != nil {
			return fmt.Errorf("reading CLOCK_REALTIME: %w", err)
		}
		win := r2.Nano() - r1.Nano()
		if bestWin < 0 || win < bestWin {
			bestWin, mono = win, m.Nano()
			best = r1.Nano() + win/2 - mono
		}
	}
	c.offset.Store(best)
	c.synced.Store(mono)
	return nil
}

// wall converts a monotonic timestamp, re-syncing first when the timestamp
// is more than resyncEvery past the last sync. A failed re-sync keeps the old
// offset; only one caller re-syncs at a time.
func (c *clock) wall(mono uint64) time.Time {
	m := int64(mono)
	if last := c.synced.Load(); m-last > int64(resyncEvery) && c.synced.CompareAndSwap(last, m) {
		_ = c.sync()
	}
	return time.Unix(0, m+c.offset.Load())
}
