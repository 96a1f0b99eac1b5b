package prom

import (
	"errors"
	"fmt"
)

// KernelSeries is one histogram a probe counted in the kernel, cumulative
// since its process was attached, with the label values it is exported
// under (in its family's order, service labels last). Its Buckets are those
// of DurationBuckets plus +Inf last, not cumulative.
type KernelSeries struct {
	Instance string
	Labels   []string
	Buckets  []uint64
	SumNS    uint64
}

// withKernel returns copies of the observed series with the kernel's added:
// a series may come from both (calls sampled for a span are observed one
// by one, the others counted in the kernel) and must be exported once.
// Called with the family's lock held; the copies are the caller's.
func withKernel[K comparable](observed map[K]*histogram, kernel []KernelSeries) ([]*histogram, error) {
	merged := make(map[string]*histogram, len(observed)+len(kernel))
	for _, s := range observed {
		c := newHistogram(s.instance, s.labels)
		copy(c.counts, s.counts)
		copy(c.exemplars, s.exemplars)
		c.sum = s.sum
		merged[seriesKey(s.labels)] = c
	}
	var errs []error
	for _, k := range kernel {
		if len(k.Buckets) != len(DurationBuckets)+1 {
			errs = append(errs, fmt.Errorf("kernel histogram with %d buckets, want %d", len(k.Buckets), len(DurationBuckets)+1))
			continue
		}
		key := seriesKey(k.Labels)
		c := merged[key]
		if c == nil {
			c = newHistogram(k.Instance, k.Labels)
			merged[key] = c
		}
		for i, n := range k.Buckets {
			c.counts[i] += n
		}
		c.sum += float64(k.SumNS) / 1e9
	}
	out := make([]*histogram, 0, len(merged))
	for _, c := range merged {
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}
