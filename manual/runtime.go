package manual

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Default sampling intervals of RuntimeCollector.
const (
	// DefaultMemStatsInterval: runtime.ReadMemStats stops the world for a
	// moment, cheap every 10 s but not per scrape of every scraper.
	DefaultMemStatsInterval = 10 * time.Second
	// DefaultGCStatsInterval is the window of the window series: long
	// enough that a rate over it is steady, short enough to follow a
	// burst. (Cost is not the reason: debug.ReadGCStats measured 2.3 to
	// 7 µs with a full pause history, and client_golang's Go collector
	// calls it on every scrape anyway for go_gc_duration_seconds.)
	DefaultGCStatsInterval = 30 * time.Second
)

// PauseQuantiles are the quantiles of go_gc_stw_pause_window_seconds, in
// its label q.
var PauseQuantiles = []float64{0, 0.5, 0.9, 0.99, 1}

// RuntimeOpts configures NewRuntimeCollector. The zero value is ready to
// use.
type RuntimeOpts struct {
	// MemStatsInterval is how often runtime.ReadMemStats is sampled. Zero
	// means DefaultMemStatsInterval (10 s).
	MemStatsInterval time.Duration
	// GCStatsInterval is how often debug.ReadGCStats is sampled; it is also
	// the window of the window series. Zero means DefaultGCStatsInterval
	// (30 s).
	GCStatsInterval time.Duration
}

// RuntimeCollector is a prometheus.Collector for what client_golang's Go
// collector lacks for the on-call questions about garbage collection: the
// average and last stop-the-world pause, pause quantiles over a recent
// window and the GC rate over that window. It samples on intervals in the
// background and serves the last sample on scrape, so scraping never stops
// the world. Series (all gauges):
//
//	go_gc_stw_pause_average_seconds     PauseTotalNs/NumGC since start
//	go_gc_stw_pause_last_seconds        the most recent pause
//	go_gc_stw_pause_window_seconds{q}   pause quantiles over the window
//	go_gc_window_cycles_per_second      GC cycles per second over the window
//	go_gc_window_seconds                length of that window
//	go_runtime_sample_timestamp_seconds{source} when memstats/gcstats were read
//
// Undefined values (no GC yet, no GC in the window, no window yet) are NaN.
// See the package README for units and alert thresholds.
//
// MemStats' NumGC and TotalAlloc are deliberately not exported as gauges:
// they only grow, so in Prometheus they are counters, and the Go collector
// already exports them as go_gc_duration_seconds_count and
// go_memstats_alloc_bytes_total, which rate() handles across restarts.
type RuntimeCollector struct {
	memEvery, gcEvery time.Duration

	avgDesc, lastDesc, quantDesc, rateDesc, windowDesc, stampDesc *prometheus.Desc

	mu        sync.Mutex
	memAt     time.Time
	numGC     uint32
	pauseTot  uint64
	lastPause uint64
	heapAlloc uint64

	gcAt       time.Time
	gcNum      int64
	winLen     time.Duration
	winRate    float64
	winQuant   []float64 // seconds, per PauseQuantiles; NaN when empty
	winPauses  uint64    // pauses the window's quantiles cover
	haveWindow bool

	// pauseHist is the runtime's cumulative histogram of GC pauses at the
	// last GCStats sample; its difference over a window covers every pause
	// in it, where MemStats and GCStats keep only the last 256 (half a
	// second of history at 448 GCs per second).
	pauseHist  []metrics.Sample
	prevCounts []uint64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewRuntimeCollector takes a first sample and starts the sampling
// goroutine; Close stops it.
func NewRuntimeCollector(opts RuntimeOpts) (*RuntimeCollector, error) {
	if opts.MemStatsInterval < 0 || opts.GCStatsInterval < 0 {
		return nil, fmt.Errorf("creating runtime collector: negative interval (memstats %s, gcstats %s)", opts.MemStatsInterval, opts.GCStatsInterval)
	}
	c := &RuntimeCollector{memEvery: opts.MemStatsInterval, gcEvery: opts.GCStatsInterval}
	if c.memEvery == 0 {
		c.memEvery = DefaultMemStatsInterval
	}
	if c.gcEvery == 0 {
		c.gcEvery = DefaultGCStatsInterval
	}
	c.avgDesc = prometheus.NewDesc("go_gc_stw_pause_average_seconds",
		"Average stop-the-world GC pause since the process started (MemStats PauseTotalNs/NumGC), sampled every "+c.memEvery.String()+".", nil, nil)
	c.lastDesc = prometheus.NewDesc("go_gc_stw_pause_last_seconds",
		"The most recent stop-the-world GC pause, sampled every "+c.memEvery.String()+".", nil, nil)
	c.quantDesc = prometheus.NewDesc("go_gc_stw_pause_window_seconds",
		"Quantile q of the stop-the-world GC pauses (each of the two per cycle, from runtime/metrics) in the last GCStats window, in seconds.", []string{"q"}, nil)
	c.rateDesc = prometheus.NewDesc("go_gc_window_cycles_per_second",
		"Completed GC cycles per second over the last GCStats window.", nil, nil)
	c.windowDesc = prometheus.NewDesc("go_gc_window_seconds",
		"Length of the last GCStats window, in seconds.", nil, nil)
	c.stampDesc = prometheus.NewDesc("go_runtime_sample_timestamp_seconds",
		"Unix time at which the runtime statistics were last read, by source.", []string{"source"}, nil)
	c.winQuant = nanSlice(len(PauseQuantiles))

	c.sampleMem()
	c.sampleGC()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.loop(ctx)
	}()
	return c, nil
}

func nanSlice(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = math.NaN()
	}
	return s
}

func (c *RuntimeCollector) loop(ctx context.Context) {
	// Timers re-armed after each sample rather than tickers: a late sample
	// then never makes the next window shorter than the interval.
	mem := time.NewTimer(c.memEvery)
	defer mem.Stop()
	gc := time.NewTimer(c.gcEvery)
	defer gc.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-mem.C:
			c.sampleMem()
			mem.Reset(c.memEvery)
		case <-gc.C:
			c.sampleGC()
			gc.Reset(c.gcEvery)
		}
	}
}

// Close stops sampling. Collect keeps serving the last sample.
func (c *RuntimeCollector) Close() {
	c.cancel()
	c.wg.Wait()
}

func (c *RuntimeCollector) sampleMem() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.memAt = time.Now()
	c.numGC = ms.NumGC
	c.pauseTot = ms.PauseTotalNs
	c.lastPause = ms.PauseNs[(ms.NumGC+255)%256]
	c.heapAlloc = ms.HeapAlloc
}

// pauseMetric is the runtime/metrics histogram of GC pause times
// (stopping plus stopped), the quantity MemStats.PauseNs records.
const pauseMetric = "/sched/pauses/total/gc:seconds"

func (c *RuntimeCollector) sampleGC() {
	var st debug.GCStats
	debug.ReadGCStats(&st)
	if c.pauseHist == nil {
		c.pauseHist = []metrics.Sample{{Name: pauseMetric}}
	}
	metrics.Read(c.pauseHist)
	var hist *metrics.Float64Histogram
	if c.pauseHist[0].Value.Kind() == metrics.KindFloat64Histogram {
		hist = c.pauseHist[0].Value.Float64Histogram()
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.gcAt.IsZero() {
		c.winLen = now.Sub(c.gcAt)
		c.winRate = float64(st.NumGC-c.gcNum) / c.winLen.Seconds()
		if hist != nil && len(c.prevCounts) == len(hist.Counts) {
			diff := make([]uint64, len(hist.Counts))
			c.winPauses = 0
			for i, n := range hist.Counts {
				diff[i] = n - c.prevCounts[i]
				c.winPauses += diff[i]
			}
			c.winQuant = histogramQuantiles(hist.Buckets, diff, PauseQuantiles)
		} else {
			// A runtime without the histogram: the 256 pauses GCStats keeps.
			var pauses []float64
			// st.Pause and st.PauseEnd are most recent first.
			for i, end := range st.PauseEnd {
				if !end.After(c.gcAt) || i >= len(st.Pause) {
					break
				}
				pauses = append(pauses, st.Pause[i].Seconds())
			}
			c.winQuant = quantiles(pauses, PauseQuantiles)
			c.winPauses = uint64(len(pauses))
		}
		c.haveWindow = true
	}
	if hist != nil {
		c.prevCounts = slices.Clone(hist.Counts)
	}
	c.gcAt = now
	c.gcNum = st.NumGC
}

// histogramQuantiles returns quantiles of the values counted in counts,
// where counts[i] counts values in [buckets[i], buckets[i+1]): the upper
// bound of the bucket holding the nearest rank (its lower bound when the
// upper is +Inf, and for q = 0 the lower bound of the first non-empty
// bucket), so each is within one bucket (a few percent for the runtime's
// time histograms) of the exact value. NaN when nothing was counted.
func histogramQuantiles(buckets []float64, counts []uint64, qs []float64) []float64 {
	out := nanSlice(len(qs))
	var total uint64
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		return out
	}
	for i, q := range qs {
		rank := uint64(max(math.Ceil(q*float64(total)), 1))
		var cum uint64
		for b, n := range counts {
			cum += n
			if cum < rank {
				continue
			}
			lo, hi := buckets[b], buckets[b+1]
			switch {
			case q == 0 || math.IsInf(hi, 1):
				out[i] = max(lo, 0)
			default:
				out[i] = hi
			}
			break
		}
	}
	return out
}

// quantiles returns the nearest-rank quantiles of xs (NaN when empty).
func quantiles(xs []float64, qs []float64) []float64 {
	out := nanSlice(len(qs))
	if len(xs) == 0 {
		return out
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	for i, q := range qs {
		rank := int(math.Ceil(q*float64(len(s)))) - 1
		out[i] = s[min(max(rank, 0), len(s)-1)]
	}
	return out
}

// Describe implements prometheus.Collector.
func (c *RuntimeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.avgDesc, c.lastDesc, c.quantDesc, c.rateDesc, c.windowDesc, c.stampDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. It only reads the last sample.
func (c *RuntimeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	avg, last := math.NaN(), math.NaN()
	if c.numGC > 0 {
		avg = float64(c.pauseTot) / float64(c.numGC) / 1e9
		last = float64(c.lastPause) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(c.avgDesc, prometheus.GaugeValue, avg)
	ch <- prometheus.MustNewConstMetric(c.lastDesc, prometheus.GaugeValue, last)
	for i, q := range PauseQuantiles {
		ch <- prometheus.MustNewConstMetric(c.quantDesc, prometheus.GaugeValue, c.winQuant[i], formatQ(q))
	}
	rate, win := math.NaN(), math.NaN()
	if c.haveWindow {
		rate, win = c.winRate, c.winLen.Seconds()
	}
	ch <- prometheus.MustNewConstMetric(c.rateDesc, prometheus.GaugeValue, rate)
	ch <- prometheus.MustNewConstMetric(c.windowDesc, prometheus.GaugeValue, win)
	ch <- prometheus.MustNewConstMetric(c.stampDesc, prometheus.GaugeValue, float64(c.memAt.UnixNano())/1e9, "memstats")
	ch <- prometheus.MustNewConstMetric(c.stampDesc, prometheus.GaugeValue, float64(c.gcAt.UnixNano())/1e9, "gcstats")
}

func formatQ(q float64) string { return fmt.Sprint(q) }

// HeapCheck is a liveness check on the sampled MemStats.HeapAlloc: it fails
// when the heap exceeded maxBytes at the last sample. It costs nothing at
// probe time; the sample may be up to MemStatsInterval old.
func (c *RuntimeCollector) HeapCheck(maxBytes uint64) Check {
	return func(context.Context) error {
		c.mu.Lock()
		heap, at := c.heapAlloc, c.memAt
		c.mu.Unlock()
		if heap > maxBytes {
			return fmt.Errorf("heap %d bytes at %s, limit %d", heap, at.UTC().Format(time.RFC3339), maxBytes)
		}
		return nil
	}
}
