package manual

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func gaugeValues(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("registering: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[seriesKey(mf.GetName(), m)] = m.GetGauge().GetValue()
		}
	}
	return out
}

func seriesKey(name string, m *dto.Metric) string {
	var b strings.Builder
	b.WriteString(name)
	for _, lp := range m.GetLabel() {
		b.WriteString("," + lp.GetName() + "=" + lp.GetValue())
	}
	return b.String()
}

func TestRuntimeCollectorReportsGCPauses(t *testing.T) {
	c, err := NewRuntimeCollector(RuntimeOpts{MemStatsInterval: 20 * time.Millisecond, GCStatsInterval: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Force collections until a whole GCStats window has held them (on a
	// busy machine the sampler may run late, so poll with a bound).
	start := time.Now()
	var v map[string]float64
	for {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
		v = gaugeValues(t, c)
		if time.Since(start) > 350*time.Millisecond && !math.IsNaN(v["go_gc_stw_pause_window_seconds,q=1"]) {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("no GC window completed within 5s")
		}
	}

	for _, name := range []string{"go_gc_stw_pause_average_seconds", "go_gc_stw_pause_last_seconds"} {
		if x := v[name]; !(x > 0 && x < 1) {
			t.Errorf("%s = %v, want a pause in (0, 1) s", name, x)
		}
	}
	prev := 0.0
	for _, q := range PauseQuantiles {
		key := "go_gc_stw_pause_window_seconds,q=" + formatQ(q)
		x, ok := v[key]
		if !ok || math.IsNaN(x) || x < prev {
			t.Errorf("%s = %v (present %v), want non-decreasing quantiles", key, x, ok)
		}
		prev = x
	}
	// About one runtime.GC per 10 ms: tens per second, far from zero.
	if r := v["go_gc_window_cycles_per_second"]; !(r > 10 && r < 1000) {
		t.Errorf("go_gc_window_cycles_per_second = %v, want tens per second", r)
	}
	if w := v["go_gc_window_seconds"]; !(w >= 0.15 && w < 5) {
		t.Errorf("go_gc_window_seconds = %v, want at least the 0.15 s interval", w)
	}

	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestRuntimeCollectorDoesNotSamplePerScrape(t *testing.T) {
	c, err := NewRuntimeCollector(RuntimeOpts{}) // 10 s and 30 s
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.memEvery != 10*time.Second || c.gcEvery != 30*time.Second {
		t.Errorf("defaults %s/%s, want 10s/30s", c.memEvery, c.gcEvery)
	}
	first := gaugeValues(t, c)
	runtime.GC()
	second := gaugeValues(t, c)
	for _, k := range []string{"go_runtime_sample_timestamp_seconds,source=memstats", "go_runtime_sample_timestamp_seconds,source=gcstats"} {
		if first[k] == 0 || first[k] != second[k] {
			t.Errorf("%s: %v then %v; a scrape must not take a new sample", k, first[k], second[k])
		}
	}
	// No window has passed: the window series are NaN, not invented zeros.
	if x := second["go_gc_window_cycles_per_second"]; !math.IsNaN(x) {
		t.Errorf("go_gc_window_cycles_per_second = %v before the first window, want NaN", x)
	}
}

func TestRuntimeCollectorRejectsNegativeIntervals(t *testing.T) {
	if _, err := NewRuntimeCollector(RuntimeOpts{GCStatsInterval: -time.Second}); err == nil {
		t.Error("negative interval accepted")
	}
}

func TestRuntimeHeapCheck(t *testing.T) {
	c, err := NewRuntimeCollector(RuntimeOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.HeapCheck(1 << 40)(context.Background()); err != nil {
		t.Errorf("1 TiB limit: %v", err)
	}
	if err := c.HeapCheck(1)(context.Background()); err == nil || !strings.Contains(err.Error(), "limit 1") {
		t.Errorf("1 byte limit: %v", err)
	}
}

func TestQuantiles(t *testing.T) {
	qs := []float64{0, 0.5, 0.9, 0.99, 1}
	tests := []struct {
		name string
		xs   []float64
		want []float64
	}{
		{"one", []float64{3}, []float64{3, 3, 3, 3, 3}},
		{"ten", []float64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, []float64{1, 5, 9, 10, 10}},
		{"two", []float64{2, 1}, []float64{1, 1, 2, 2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := quantiles(tt.xs, qs)
			for i := range qs {
				if got[i] != tt.want[i] {
					t.Fatalf("quantiles(%v) = %v, want %v", tt.xs, got, tt.want)
				}
			}
		})
	}
	for _, x := range quantiles(nil, qs) {
		if !math.IsNaN(x) {
			t.Fatalf("quantiles of nothing = %v, want NaN", x)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	qs := []float64{0, 0.5, 0.9, 0.99, 1}
	buckets := []float64{math.Inf(-1), 0.001, 0.002, 0.004, math.Inf(1)}
	tests := []struct {
		name   string
		counts []uint64
		want   []float64
	}{
		{"all in one bucket", []uint64{0, 10, 0, 0}, []float64{0.001, 0.002, 0.002, 0.002, 0.002}},
		{"spread", []uint64{0, 5, 4, 1}, []float64{0.001, 0.002, 0.004, 0.004, 0.004}},
		{"beyond the last bound", []uint64{0, 1, 0, 1}, []float64{0.001, 0.002, 0.004, 0.004, 0.004}},
	}
	for _, tt := range tests {
		got := histogramQuantiles(buckets, tt.counts, qs)
		for i := range qs {
			if got[i] != tt.want[i] {
				t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
				break
			}
		}
	}
	for _, x := range histogramQuantiles(buckets, []uint64{0, 0, 0, 0}, qs) {
		if !math.IsNaN(x) {
			t.Fatalf("quantiles of nothing = %v, want NaN", x)
		}
	}
}

// More than the 256 pauses that MemStats and GCStats keep fall in one
// window: the quantiles still cover every one of them.
func TestPauseWindowCoversMoreThan256Pauses(t *testing.T) {
	c, err := NewRuntimeCollector(RuntimeOpts{GCStatsInterval: time.Hour, MemStatsInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var before, after debug.GCStats
	debug.ReadGCStats(&before)
	for range 400 {
		runtime.GC()
	}
	c.sampleGC() // the window's end, as the timer would
	debug.ReadGCStats(&after)
	c.mu.Lock()
	defer c.mu.Unlock()
	// Each cycle stops the world twice (sweep termination, mark
	// termination). GCs may also run on their own between the reads: at
	// least 800 pauses, and no more than happened around the window.
	if c.winPauses < 800 || c.winPauses > 2*uint64(after.NumGC-before.NumGC)+2 {
		t.Errorf("window quantiles cover %d pauses; %d GCs ran", c.winPauses, after.NumGC-before.NumGC)
	}
	if math.IsNaN(c.winQuant[len(c.winQuant)-1]) {
		t.Error("no max pause for the window")
	}
}
