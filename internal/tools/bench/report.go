package main

import (
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// slowTrapUS is the floor cost per trap above which the host counts as slow
// (nested virtualization): ~0.5 µs on plain KVM, ~6.7 µs nested.
const slowTrapUS = 3.0

type hostInfo struct {
	kernel, cpu, goVersion string
	ncpu                   int
}

func readHost(ncpu int, goVersion string) hostInfo {
	h := hostInfo{ncpu: ncpu, goVersion: goVersion, kernel: "?", cpu: "?"}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.kernel = unix.ByteSliceToString(u.Release[:])
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				h.cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return h
}

type report struct {
	o       options
	host    hostInfo
	configs []config
	samples map[string]map[string][]sample // config name → route path → one per round
	rates   []rateResult
	notes   []string
	elapsed time.Duration
	// busyBefore is the busiest CPU's share of other work just before.
	busyBefore float64
	// The call loads: load name → config name → one sample per round.
	callLoads   []callLoad
	callConfigs []config
	calls       map[string]map[string][]callSample
}

// stat is one configuration on one route, as medians over rounds.
type stat struct {
	rps       float64
	rounds    []float64
	runsPer   float64 // BPF runs per request
	nsPer     float64 // BPF ns per request
	serverCPU float64
	serverUS  float64 // server CPU µs per request, measured
	foreign   float64
	hasBPF    bool
	// spreadUS is how far apart the rounds are in µs per request
	// (1e6/slowest − 1e6/fastest): the noise any cost below is subject to.
	spreadUS float64
}

func (r *report) stat(cfg, path string) (stat, bool) {
	ss := r.samples[cfg][path]
	if len(ss) == 0 {
		return stat{}, false
	}
	var rps, runs, ns, cpu, us, foreign []float64
	for _, s := range ss {
		rps = append(rps, s.wrk.RPS)
		runs = append(runs, float64(s.runs)/float64(s.wrk.Requests))
		ns = append(ns, float64(s.runtime.Nanoseconds())/float64(s.wrk.Requests))
		cpu = append(cpu, s.serverCPU)
		us = append(us, s.serverUS)
		foreign = append(foreign, s.foreign)
	}
	lo, hi := slices.Min(rps), slices.Max(rps)
	return stat{rps: median(rps), rounds: rps, runsPer: median(runs), nsPer: median(ns),
		serverCPU: median(cpu), serverUS: median(us), foreign: median(foreign), hasBPF: cfg != "plain", spreadUS: 1e6/lo - 1e6/hi}, true
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// costUS is the CPU time per request a configuration adds over plain, from
// throughput: the server has one core, so 1/rps is its time per request.
func costUS(rps, plainRPS float64) float64 { return 1e6/rps - 1e6/plainRPS }

// addedTarget is obsd's allowance over the floor: max(1 µs, 30% of the floor).
func addedTarget(floorUS float64) float64 { return math.Max(1, 0.3*floorUS) }

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// hostKind names the host from the floor's cost per trap on /hello.
func (r *report) hostKind() (kind string, trapUS float64, ok bool) {
	p, ok1 := r.stat("plain", "/hello")
	f, ok2 := r.stat("floor", "/hello")
	if !ok1 || !ok2 || f.runsPer == 0 {
		return "unknown host", 0, false
	}
	trapUS = costUS(f.rps, p.rps) / f.runsPer
	if trapUS > slowTrapUS {
		return "slow (nested-virt) host", trapUS, true
	}
	return "fast host", trapUS, true
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	kind, trapUS, kindOK := r.hostKind()

	w("## obsd benchmark\n\n")
	w("Host: %d CPUs (%s), kernel %s, %s. ", r.host.ncpu, r.host.cpu, r.host.kernel, r.host.goVersion)
	if kindOK {
		w("**%s**: one floor trap costs %.2f µs by throughput", kind, trapUS)
		if p, ok := r.stat("plain", "/hello"); ok {
			if f, ok := r.stat("floor", "/hello"); ok {
				w(", %.2f µs by server CPU time", (f.serverUS-p.serverUS)/f.runsPer)
			}
		}
		w(" (> %.0f µs counts as slow).\n\n", slowTrapUS)
	} else {
		w("Host kind unknown (no floor measurement).\n\n")
	}
	if r.o.has("http-server") {
		r.httpServerMarkdown(w)
	}
	if len(r.callLoads) > 0 {
		r.callsMarkdown(w)
	}

	w("### Anomalies\n\n")
	notes := r.anomalies()
	if len(notes) == 0 {
		w("None: every probed request or call ran exactly its probes' BPF programs (±1%%: 2 per request or call, 3 with the chi route), the load generators saw no errors, nothing was lost.\n")
	}
	for _, n := range notes {
		w("- %s\n", n)
	}
	w("\nTotal measuring time %s.\n", r.elapsed.Round(time.Second))
	return b.String()
}

// httpServerMarkdown writes the HTTP server load's sections.
func (r *report) httpServerMarkdown(w func(string, ...any)) {
	kind, _, _ := r.hostKind()
	w("Server (testdata/httpserver) pinned to CPU %d, `wrk -t1 -c16 -d%ds` pinned to CPU %d (the load CPU); "+
		"%d rounds, configurations round-robin within each round, a fresh server per configuration and round, "+
		"%s wrk warm-up before each measurement; figures are medians over rounds. "+
		"Cost per request = 1e6/rps − 1e6/rps(plain), as the server has one core; "+
		"\"server CPU µs/req\" is the server's own CPU time (schedstat) over wrk's request count, a cross-check that holds even when the server is not saturated. "+
		"BPF run-time statistics (kernel.bpf_stats_enabled) were on for the whole run. "+
		"Before the run the busiest CPU was %.0f%% busy.\n\n",
		r.o.serverCPU, int(r.o.duration/time.Second), r.o.loadCPU,
		r.o.rounds, r.o.warmup, 100*r.busyBefore)
	if slices.ContainsFunc(r.configs, func(c config) bool { return c.kind == obsdKind }) {
		w("%s\n\n", r.o.obsdPlacement())
	}
	if slices.ContainsFunc(r.configs, func(c config) bool { return c.ratio > 0 }) {
		w("The OTLP configurations run obsd with `--traces otlp`, OTEL_EXPORTER_OTLP_ENDPOINT set to a receiver inside this tool " +
			"(OTLP/gRPC on 127.0.0.1, insecure, on the load CPU) that counts the spans and drops them, and the SDK's default batching; " +
			"1%% sampled is OTEL_TRACES_SAMPLER=parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG=0.01 (the production setting), " +
			"100%% sampled is OTEL_TRACES_SAMPLER=always_on.\n\n")
	}

	w("### Throughput\n\n")
	w("| route | configuration | req/s | per round | vs plain | µs/req over plain | BPF runs/req | BPF ns/req | server CPU | server CPU µs/req |\n")
	w("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, rt := range r.o.routes() {
		p, havePlain := r.stat("plain", rt.path)
		for _, c := range r.configs {
			s, ok := r.stat(c.name, rt.path)
			if !ok {
				continue
			}
			var rounds []string
			for _, v := range s.rounds {
				rounds = append(rounds, thousands(v))
			}
			ratio, cost, runs, ns := "—", "—", "—", "—"
			if havePlain {
				ratio = fmt.Sprintf("%.3f", s.rps/p.rps)
				if c.name != "plain" {
					cost = fmt.Sprintf("%.2f", costUS(s.rps, p.rps))
				}
			}
			if s.hasBPF {
				runs = fmt.Sprintf("%.3f", s.runsPer)
				ns = fmt.Sprintf("%.0f", s.nsPer)
			}
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %.0f%% | %.2f |\n", rt.path, c.label, thousands(s.rps),
				strings.Join(rounds, " / "), ratio, cost, runs, ns, 100*s.serverCPU, s.serverUS)
		}
	}
	w("\n")

	w("### obsd over the floor (traps alone)\n\n")
	if slices.ContainsFunc(r.configs, func(c config) bool { return c.kind == obsdKind }) {
		r.overFloor(w, kind)
	} else {
		w("obsd was not measured (-obsd \"\").\n\n")
	}

	if len(r.rates) > 0 {
		w("### obsd itself at a fixed %s req/s on /hello for %s\n\n", thousands(float64(r.o.rate)), r.o.rateFor)
		w("| configuration | responses (of planned) | achieved req/s | obsd CPU, %% of one core (utime+stime; schedstat) | obsd RSS MiB before → after | obsd peak RSS MiB | events lost | requests counted by obsd |\n")
		w("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |\n")
		for _, rr := range r.rates {
			l := rr.load
			counted := fmt.Sprintf("%.0f of %d: %s", rr.counted, l.Responses, passFail(int(rr.counted) == l.Responses))
			w("| %s | %s (of %s) | %s | %.1f%%; %.2f%% | %.1f → %.1f | %.1f | %.0f: %s | %s |\n", rr.cfg.label,
				thousands(float64(l.Responses)), thousands(float64(l.Planned)),
				thousands(float64(l.Responses)/l.Elapsed.Seconds()), 100*rr.cpu, 100*rr.cpuSched,
				mib(rr.memBefore.RSS), mib(rr.memAfter.RSS), mib(rr.peak()),
				rr.lost, passFail(rr.lost == 0), counted)
		}
		w("\n")
		r.spanTable(w)
	}
}

// anomalies adds to the notes gathered while running those only visible in
// the aggregate.
func (r *report) anomalies() []string {
	notes := append([]string(nil), r.notes...)
	for _, c := range r.configs {
		for _, rt := range r.o.routes() {
			s, ok := r.stat(c.name, rt.path)
			if ok && s.serverCPU < 0.9 {
				notes = append(notes, fmt.Sprintf("%s, %s: the server used only %.0f%% of its core, so it was not the bottleneck and 1/rps overstates its CPU time per request", c.name, rt.path, 100*s.serverCPU))
			}
		}
	}
	for _, rr := range r.rates {
		if rr.lost != 0 {
			notes = append(notes, fmt.Sprintf("fixed-rate run, %s: obsd_events_lost_total = %.0f", rr.cfg.name, rr.lost))
		}
		if int(rr.counted) != rr.load.Responses {
			notes = append(notes, fmt.Sprintf("fixed-rate run, %s: obsd counted %.0f requests, %d were answered", rr.cfg.name, rr.counted, rr.load.Responses))
		}
		if rr.load.Non200 > 0 {
			notes = append(notes, fmt.Sprintf("fixed-rate run, %s: %d responses were not 200", rr.cfg.name, rr.load.Non200))
		}
		if rr.cfg.ratio == 0 {
			continue
		}
		sc := rr.spans
		if want, tol, ok := rr.spansExpected(); !ok {
			notes = append(notes, fmt.Sprintf("fixed-rate run, %s: the receiver got %d spans for %d responses, want %.0f ± %.0f", rr.cfg.name, sc.received, rr.load.Responses, want, tol))
		}
		if float64(sc.received) != sc.exported {
			notes = append(notes, fmt.Sprintf("fixed-rate run, %s: the receiver got %d spans, obsd_spans_exported_total is %.0f", rr.cfg.name, sc.received, sc.exported))
		}
		if sc.exportErrors != 0 || sc.dropped != 0 {
			notes = append(notes, fmt.Sprintf("fixed-rate run, %s: obsd_span_export_errors_total = %.0f, obsd_spans_dropped_total = %.0f", rr.cfg.name, sc.exportErrors, sc.dropped))
		}
	}
	return notes
}

// obsdPlacement says in one sentence where obsd ran and what that means for
// the throughput figures.
func (o options) obsdPlacement() string {
	cpus, all, _ := o.obsdCPUSet()
	switch {
	case all:
		return "obsd ran unpinned on every CPU (-obsd-cpus all), so the throughput figures also count whatever of obsd's own work the scheduler put on the server's CPU."
	case len(cpus) == 1 && cpus[0] == o.loadCPU:
		return fmt.Sprintf("obsd is pinned to the load CPU (%d) so that it takes no CPU from the pinned server: "+
			"the throughput figures measure what obsd costs the server, not where the scheduler put obsd, "+
			"whose own CPU the fixed-rate run reports.", o.loadCPU)
	case slices.Contains(cpus, o.serverCPU):
		return fmt.Sprintf("obsd was pinned to CPUs %s, which include the server's, so the throughput figures also count whatever of obsd's own work ran there.", joinInts(cpus))
	default:
		return fmt.Sprintf("obsd was pinned to CPUs %s, away from the server's, so the throughput figures measure what obsd costs the server, not obsd's own CPU, which the fixed-rate run reports.", joinInts(cpus))
	}
}

// spansExpected is how many spans the receiver should have for the run's
// responses: each is sampled with probability ratio, so the count is
// binomial and tol is 5 standard deviations (0 when every span is sampled).
func (rr rateResult) spansExpected() (want, tol float64, ok bool) {
	n, p := float64(rr.load.Responses), rr.cfg.ratio
	want = n * p
	tol = 5 * math.Sqrt(n*p*(1-p))
	return want, tol, math.Abs(float64(rr.spans.received)-want) <= tol
}

// spanTable writes what became of the fixed-rate runs' spans.
func (r *report) spanTable(w func(string, ...any)) {
	if !slices.ContainsFunc(r.rates, func(rr rateResult) bool { return rr.cfg.ratio > 0 }) {
		return
	}
	w("Spans of the fixed-rate run, after waiting for obsd's batch span processor to flush (the receiver's count is the run's alone; obsd's counters are totals of an obsd started for the run):\n\n")
	w("| configuration | responses | spans received | received / responses | expected | obsd_spans_created_total | obsd_spans_exported_total | obsd_span_export_errors_total | obsd_spans_dropped_total |\n")
	w("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n")
	for _, rr := range r.rates {
		if rr.cfg.ratio == 0 {
			continue
		}
		sc := rr.spans
		share := "—"
		if rr.load.Responses > 0 {
			share = fmt.Sprintf("%.2f%%", 100*float64(sc.received)/float64(rr.load.Responses))
		}
		want, tol, ok := rr.spansExpected()
		expected := fmt.Sprintf("%s: %s", thousands(want), passFail(ok))
		if tol > 0 {
			expected = fmt.Sprintf("%s ± %s (5σ): %s", thousands(want), thousands(tol), passFail(ok))
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rr.cfg.label, thousands(float64(rr.load.Responses)),
			thousands(float64(sc.received)), share, expected, thousands(sc.created), thousands(sc.exported),
			thousands(sc.exportErrors), thousands(sc.dropped))
	}
	w("\n")
}

func mib(kib uint64) float64 { return float64(kib) / 1024 }

// overFloor writes what obsd adds over the floor, and the fast-host target.
func (r *report) overFloor(w func(string, ...any), kind string) {
	w("| route | configuration | floor µs/req | obsd µs/req | added µs/req | added, %% of floor | target: added ≤ max(1 µs, 30%% of floor) | noise: plain's spread, µs/req | cross-check: added by server CPU time, µs/req |\n")
	w("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n")
	for _, rt := range r.o.routes() {
		p, ok1 := r.stat("plain", rt.path)
		f, ok2 := r.stat("floor", rt.path)
		if !ok1 || !ok2 {
			continue
		}
		floorUS := costUS(f.rps, p.rps)
		for _, c := range r.configs {
			if c.kind != obsdKind {
				continue
			}
			s, ok := r.stat(c.name, rt.path)
			if !ok {
				continue
			}
			obsdUS := costUS(s.rps, p.rps)
			added := obsdUS - floorUS
			target := addedTarget(floorUS)
			pct := "—"
			if floorUS > 0 {
				pct = fmt.Sprintf("%.0f%%", 100*added/floorUS)
			}
			verdict := fmt.Sprintf("%s (limit %.2f µs)", passFail(added <= target), target)
			if p.spreadUS >= target {
				verdict += ", inconclusive: noise ≥ limit"
			}
			w("| %s | %s | %.2f | %.2f | %.2f | %s | %s | %.2f | %.2f |\n", rt.path, c.label, floorUS, obsdUS, added, pct,
				verdict, p.spreadUS, s.serverUS-f.serverUS)
		}
	}
	w("\n")
	if p, ok := r.stat("plain", "/hello"); ok {
		for _, c := range r.configs {
			if c.kind != obsdKind {
				continue
			}
			if s, ok := r.stat(c.name, "/hello"); ok {
				ratio := s.rps / p.rps
				w("- /hello %s vs plain: %.3f; fast-host target ≥ 0.75: **%s** (this is a %s).\n", c.label, ratio, passFail(ratio >= 0.75), kind)
			}
		}
		w("\n")
	}
}

// peak is the highest resident set seen: VmHWM, unless the kernel's lazily
// synced per-thread counters left it below an RSS reading.
func (rr rateResult) peak() uint64 {
	return max(rr.memAfter.HWM, rr.memBefore.RSS, rr.memAfter.RSS)
}
