package uprobes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf/ringbuf"
)

// PollInterval bounds how long a record waits in the ring buffer. Probes
// submit with BPF_RB_NO_WAKEUP (a wakeup costs the target several µs per
// request), so the reader wakes on a timer instead.
const PollInterval = 50 * time.Millisecond

// Run reads every probe's ring buffer until ctx is done, handing decoded
// requests to the Sink. beat, if not nil, is called after every poll so a
// liveness check can tell the loop is alive.
func (m *Manager) Run(ctx context.Context, beat func()) error {
	var wg sync.WaitGroup
	errs := make([]error, len(m.probes))
	readers := make([]*ringbuf.Reader, len(m.probes))
	for i, lp := range m.probes {
		if lp.Decode == nil {
			continue // a probe that only feeds others' maps (a router's)
		}
		rd, err := ringbuf.NewReader(lp.maps["events"])
		if err != nil {
			for _, r := range readers[:i] {
				if r != nil {
					r.Close()
				}
			}
			return fmt.Errorf("opening ring buffer of probe %s: %w", lp.Name, err)
		}
		readers[i] = rd
	}
	for i, lp := range m.probes {
		if readers[i] == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.read(lp, readers[i], beat)
		}()
	}
	tick := time.NewTicker(CounterCheckInterval)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
			m.stats.logCounters()
		}
	}
	for _, rd := range readers {
		if rd != nil {
			rd.Close()
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (m *Manager) read(lp *loadedProbe, rd *ringbuf.Reader, beat func()) error {
	var rec ringbuf.Record
	var n uint
	rd.SetDeadline(time.Now().Add(PollInterval))
	for {
		err := rd.ReadInto(&rec)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Everything pending was read; sleep until the next poll.
			if beat != nil {
				beat()
			}
			rd.SetDeadline(time.Now().Add(PollInterval))
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		default:
			return fmt.Errorf("reading ring buffer of probe %s: %w", lp.Name, err)
		}
		ev, err := lp.Decode(rec.RawSample)
		if err != nil {
			m.stats.decodeError(lp, err)
			continue
		}
		lp.events.Add(1)
		m.sink.Event(ev)
		// Under a load that never lets the ring run empty the deadline
		// never fires; the loop is still alive.
		if n++; n%1024 == 0 && beat != nil {
			beat()
		}
	}
}
