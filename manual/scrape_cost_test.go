package manual_test

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// What a scrape costs in the runtime calls the docs talk about: the Go
// collector calls debug.ReadGCStats (heap lock, copy of the 256-entry
// pause history) on every scrape; RuntimeCollector does it every 30 s.
// Run: go test -run XXX -bench 'ReadGCStats|ReadMemStats|GoCollector|RegistryGather' .

// fullPauseHistory runs enough collections that the runtime's 256-entry
// pause history is full, as in any process that has run for a while.
func fullPauseHistory() {
	for range 260 {
		runtime.GC()
	}
}

func BenchmarkReadGCStats(b *testing.B) {
	fullPauseHistory()
	var st debug.GCStats
	st.PauseQuantiles = make([]time.Duration, 5) // as the Go collector asks
	for b.Loop() {
		debug.ReadGCStats(&st)
	}
}

func BenchmarkReadMemStats(b *testing.B) {
	var ms runtime.MemStats
	for b.Loop() {
		runtime.ReadMemStats(&ms)
	}
}

func BenchmarkGoCollectorScrape(b *testing.B) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	fullPauseHistory()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRegistryGather(b *testing.B) {
	reg, err := manual.NewRegistry(manual.RegistryOpts{ServiceName: "bench", Host: "h"})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
