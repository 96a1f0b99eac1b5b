package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 105979.6: "105,980", -1234567: "-1,234,567"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestAddedTarget(t *testing.T) {
	for floor, want := range map[float64]float64{0: 1, 1: 1, 3.3333333333333335: 1, 10: 3, 16.78: 5.034} {
		if got := addedTarget(floor); math.Abs(got-want) > 1e-9 {
			t.Errorf("addedTarget(%v) = %v, want %v", floor, got, want)
		}
	}
}

// fakeReport builds a report whose /hello and /work medians are the given
// rates, with 2 BPF runs of 50 ns per request for the probed configurations.
func fakeReport(rps map[string][2]float64) *report {
	r := &report{
		o:       options{rounds: 1, duration: 5 * time.Second, rate: 10000, rateFor: 5 * time.Second, loadCPU: 1, loads: []string{"http-server"}},
		configs: []config{{name: "plain", label: "plain"}, {name: "floor", label: "floor", kind: floorKind}, {name: "obsd", label: "obsd", kind: obsdKind}},
		samples: map[string]map[string][]sample{},
	}
	for cfg, v := range rps {
		r.samples[cfg] = map[string][]sample{}
		for i, rt := range r.o.routes() {
			n := int64(v[i] * 5)
			s := sample{wrk: wrkResult{RPS: v[i], Requests: n}, serverCPU: 1, serverUS: 1e6 / v[i]}
			if cfg != "plain" {
				s.runs = uint64(2 * n)
				s.runtime = time.Duration(100 * n)
			}
			r.samples[cfg][rt.path] = []sample{s}
		}
	}
	return r
}

func TestReportFastHost(t *testing.T) {
	r := fakeReport(map[string][2]float64{
		"plain": {100000, 4400},
		"floor": {90000, 4390},
		"obsd":  {80000, 4380},
	})
	r.rates = []rateResult{{cfg: r.configs[2], load: loadResult{Planned: 50000, Responses: 50000, Elapsed: 5 * time.Second},
		cpu: 0.031, cpuSched: 0.0305, memBefore: memory{RSS: 20480}, memAfter: memory{RSS: 22528, HWM: 23552}, counted: 49999}}
	kind, trap, ok := r.hostKind()
	if !ok || kind != "fast host" || math.Abs(trap-0.5556) > 1e-3 {
		t.Errorf("hostKind = %q, %.4f, %v; want fast host, 0.5556", kind, trap, ok)
	}
	md := r.markdown()
	for _, want := range []string{
		"**fast host**: one floor trap costs 0.56 µs",
		"| /hello | obsd | 80,000 | 80,000 | 0.800 | 2.50 | 2.000 | 100 | 100% | 12.50 |",
		// floor 1.11 µs, obsd 2.50 µs: added 1.39 µs > max(1, 0.33).
		"| /hello | obsd | 1.11 | 2.50 | 1.39 | 125% | FAIL (limit 1.00 µs) | 0.00 | 1.39 |",
		"- /hello obsd vs plain: 0.800; fast-host target ≥ 0.75: **PASS** (this is a fast host).",
		"| obsd | 50,000 (of 50,000) | 10,000 | 3.1%; 3.05% | 20.0 → 22.0 | 23.0 | 0: PASS | 49999 of 50000: FAIL |",
		"- fixed-rate run, obsd: obsd counted 49999 requests, 50000 were answered",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q; report:\n%s", want, md)
		}
	}
}

func TestReportSlowHost(t *testing.T) {
	r := fakeReport(map[string][2]float64{
		"plain": {55000, 4400},
		"floor": {28600, 4180},
		"obsd":  {26000, 4170},
	})
	md := r.markdown()
	for _, want := range []string{
		"**slow (nested-virt) host**: one floor trap costs 8.39 µs",
		// floor 16.78 µs, obsd 20.28 µs: added 3.50 µs ≤ 30% of the floor.
		"| /hello | obsd | 16.78 | 20.28 | 3.50 | 21% | PASS (limit 5.03 µs) | 0.00 |",
		"fast-host target ≥ 0.75: **FAIL** (this is a slow (nested-virt) host).",
		"### Anomalies\n\nNone:",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q; report:\n%s", want, md)
		}
	}
}

func TestReportAnomalies(t *testing.T) {
	r := fakeReport(map[string][2]float64{"plain": {100000, 4400}})
	r.samples["plain"]["/hello"][0].serverCPU = 0.5
	r.notes = []string{"round 1, obsd, /hello: 1.500 BPF runs per request"}
	md := r.markdown()
	for _, want := range []string{
		"- round 1, obsd, /hello: 1.500 BPF runs per request",
		"- plain, /hello: the server used only 50% of its core",
		"Host kind unknown",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q; report:\n%s", want, md)
		}
	}
}

func TestFixedRate(t *testing.T) {
	var served atomic.Int64
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fmt.Fprintln(w, "hello")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	start := time.Now()
	res := fixedRate(context.Background(), srv.URL, 2000, time.Second, 4)
	took := time.Since(start)
	if res.Planned != 2000 || res.Responses != 2000 || res.Errors != 0 || res.Skipped != 0 || res.Non200 != 0 {
		t.Errorf("fixedRate = %+v, want 2000 responses and nothing else", res)
	}
	if served.Load() != 2000 {
		t.Errorf("server saw %d requests, want 2000", served.Load())
	}
	// Paced, not a burst: the last token is released at 1 s.
	if took < 990*time.Millisecond || took > 1500*time.Millisecond {
		t.Errorf("fixedRate took %s, want about 1s", took)
	}
	if n := conns.Load(); n > 4 {
		t.Errorf("fixedRate opened %d connections, want at most 4 (keep-alive)", n)
	}
}

func TestFixedRateCancelled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := fixedRate(ctx, srv.URL, 1000, 10*time.Second, 2)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("cancelled fixedRate took %s", took)
	}
	if res.Responses+res.Errors+res.Skipped != res.Planned {
		t.Errorf("fixedRate = %+v: responses, errors and skipped do not add up to planned", res)
	}
}

func TestReportInconclusive(t *testing.T) {
	r := fakeReport(map[string][2]float64{
		"plain": {100000, 4400},
		"floor": {90000, 4390},
		"obsd":  {80000, 4380},
	})
	// Two plain rounds 5.29 µs/req apart: more than the 1 µs limit.
	r.samples["plain"]["/work?us=200"] = append(r.samples["plain"]["/work?us=200"],
		sample{wrk: wrkResult{RPS: 4300, Requests: 21500}, serverCPU: 1})
	md := r.markdown()
	if !strings.Contains(md, "inconclusive: noise ≥ limit | 5.29 |") {
		t.Errorf("report does not mark /work inconclusive:\n%s", md)
	}
	if strings.Count(md, "inconclusive") != 1 {
		t.Errorf("report marks more than /work inconclusive:\n%s", md)
	}
}

func TestReportSpans(t *testing.T) {
	r := fakeReport(map[string][2]float64{
		"plain": {100000, 4400},
		"floor": {90000, 4390},
		"obsd":  {80000, 4380},
	})
	cfgs := benchConfigs(options{obsd: "bin/obsd", spans: true}, "http://127.0.0.1:4317")
	r.configs = cfgs
	one, all := cfgs[3], cfgs[5] // 1%, 100% (4 is 1% with --propagate=tcp)
	load := loadResult{Planned: 50000, Responses: 50000, Elapsed: 5 * time.Second}
	r.rates = []rateResult{
		{cfg: cfgs[2], load: load, counted: 50000},
		// 1%: 500 expected, σ = √(50000·0.01·0.99) ≈ 22.2, so 5σ ≈ 111.
		{cfg: one, load: load, counted: 50000, spans: spanCounts{received: 523, created: 50000, exported: 523}},
		{cfg: all, load: load, counted: 50000, spans: spanCounts{received: 49000, created: 50000, exported: 49000, dropped: 1000}},
	}
	md := r.markdown()
	for _, want := range []string{
		"obsd is pinned to the load CPU (1) so that it takes no CPU from the pinned server",
		"1% sampled is OTEL_TRACES_SAMPLER=parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG=0.01",
		"| obsd (OTLP, 1% sampled) | 50,000 | 523 | 1.05% | 500 ± 111 (5σ): PASS | 50,000 | 523 | 0 | 0 |",
		"| obsd (OTLP, 100% sampled) | 50,000 | 49,000 | 98.00% | 50,000: FAIL | 50,000 | 49,000 | 0 | 1,000 |",
		"- fixed-rate run, obsd+otlp 100%: the receiver got 49000 spans for 50000 responses, want 50000 ± 0",
		"- fixed-rate run, obsd+otlp 100%: obsd_span_export_errors_total = 0, obsd_spans_dropped_total = 1000",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q; report:\n%s", want, md)
		}
	}
	if strings.Contains(md, "obsd+otlp 1%: the receiver") || strings.Contains(md, "| obsd (--traces none) | 50,000 | 0 |") {
		t.Errorf("report flags the 1%% run or lists spans for --traces none:\n%s", md)
	}
	// A receiver short of what obsd says it exported is a lost export.
	r.rates[1].spans.received = 500
	if md := r.markdown(); !strings.Contains(md, "obsd+otlp 1%: the receiver got 500 spans, obsd_spans_exported_total is 523") {
		t.Errorf("report does not flag received ≠ exported:\n%s", md)
	}
}
