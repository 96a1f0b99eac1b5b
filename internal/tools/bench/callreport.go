package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// callStat is one configuration of one call load, as medians over rounds.
type callStat struct {
	rate    float64   // calls/s the load generator counted
	rounds  []float64 // calls/s of each round
	runsPer float64   // BPF runs per call
	nsPer   float64   // BPF ns per call
	cpuUS   float64   // the target's CPU µs per call
	// cpuSpread is how far apart the rounds' target CPU µs per call are:
	// the noise any cost below is subject to.
	cpuSpread float64
	errors    int64
}

func (r *report) callStat(load, cfg string) (callStat, bool) {
	ss := r.calls[load][cfg]
	if len(ss) == 0 {
		return callStat{}, false
	}
	var rate, runs, ns, cpu []float64
	var st callStat
	for _, s := range ss {
		n := float64(s.round.calls)
		rate = append(rate, n/s.round.elapsed.Seconds())
		runs = append(runs, float64(s.runs)/n)
		ns = append(ns, float64(s.runtime.Nanoseconds())/n)
		cpu = append(cpu, cpuPerCall(s))
		st.errors += s.round.errors
	}
	st.rate, st.rounds, st.runsPer, st.nsPer, st.cpuUS = median(rate), rate, median(runs), median(ns), median(cpu)
	st.cpuSpread = slices.Max(cpu) - slices.Min(cpu)
	return st, true
}

// callsMarkdown writes the call loads' sections: per load, every
// configuration, then obsd over the floor against the limit.
func (r *report) callsMarkdown(w func(string, ...any)) {
	w("### Call loads: gRPC unary (server and client side), HTTP client, chi router\n\n")
	w("Each load runs the instrumented process (the target) pinned to CPU %d and its peer on CPU %d; "+
		"%d rounds, configurations round-robin within each round, fresh processes per configuration and round, "+
		"a %s warm-up round before each measured %s round (the HTTP client's rounds are a fixed number of requests instead). "+
		"The floor is the empty BPF program at every site obsd's probes for that side attach to in the target "+
		"(an entry's PUSHQ BP; every RET of a return site; every call of a call site, such as chi's sync.(*Pool).Put in (*Mux).ServeHTTP): "+
		"for the chi service, the HTTP server probe's sites and the chi probe's. "+
		"**target CPU µs/call** is the target's own CPU time (schedstat, which includes the uprobe traps it takes) over the calls the load generator counted; "+
		"it is the figure the limit is checked on, as the target is not always the bottleneck of the throughput. "+
		"µs/call by throughput = 1e6/rate − 1e6/rate(plain) is shown beside it. obsd runs with `--traces none` unless its row says otherwise (OTLP at 1%% for the client loads' spans and --propagate=tcp rows).\n\n",
		r.o.serverCPU, r.o.loadCPU, r.o.rounds, r.o.warmup, r.o.duration)
	for _, l := range r.callLoads {
		w("#### %s\n\n%s.\n\n", l.title, l.setup)
		w("| configuration | calls/s | per round | vs plain | µs/call over plain (throughput) | BPF runs/call | BPF ns/call | target CPU µs/call | target CPU µs/call over plain |\n")
		w("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		p, havePlain := r.callStat(l.name, "plain")
		for _, c := range r.callConfigs {
			s, ok := r.callStat(l.name, c.name)
			if !ok {
				continue
			}
			var rounds []string
			for _, v := range s.rounds {
				rounds = append(rounds, thousands(v))
			}
			ratio, cost, cpuCost, runs, ns := "—", "—", "—", "—", "—"
			if havePlain {
				ratio = fmt.Sprintf("%.3f", s.rate/p.rate)
				if c.kind != plain {
					cost = fmt.Sprintf("%.2f", costUS(s.rate, p.rate))
					cpuCost = fmt.Sprintf("%.2f", s.cpuUS-p.cpuUS)
				}
			}
			if c.kind != plain {
				runs = fmt.Sprintf("%.3f", s.runsPer)
				ns = fmt.Sprintf("%.0f", s.nsPer)
			}
			w("| %s | %s | %s | %s | %s | %s | %s | %.2f | %s |\n", c.label, thousands(s.rate), strings.Join(rounds, " / "),
				ratio, cost, runs, ns, s.cpuUS, cpuCost)
		}
		w("\n")
		if by := progBreakdown(r.calls[l.name]["obsd"]); by != "" {
			w("obsd's BPF programs per call (median over rounds; programs that did not run are left out): %s.\n\n", by)
		}
	}
	w("#### Call loads: obsd over the floor (traps alone)\n\n")
	w("| load | floor µs/call | obsd µs/call | added µs/call | added, %% of floor | target: added ≤ max(1 µs, 30%% of floor) | noise: plain's spread, µs/call | cross-check: added by throughput, µs/call | BPF ns/call added | added, paired by round: median (each round) |\n")
	w("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |\n")
	for _, l := range r.callLoads {
		for _, c := range r.callConfigs {
			if c.kind != obsdKind {
				continue
			}
			floor := cmp.Or(c.floor, "floor")
			p, ok1 := r.callStat(l.name, "plain")
			f, ok2 := r.callStat(l.name, floor)
			o, ok3 := r.callStat(l.name, c.name)
			if !ok1 || !ok2 || !ok3 {
				continue
			}
			title := l.title
			if c.name != "obsd" {
				title += ", " + c.label + " over " + floor
			}
			floorUS, obsdUS := f.cpuUS-p.cpuUS, o.cpuUS-p.cpuUS
			w("| %s | %.2f | %.2f | %s | %s |\n", title, floorUS, obsdUS, overFloorCells(floorUS, obsdUS, p.cpuSpread,
				costUS(o.rate, p.rate)-costUS(f.rate, p.rate), o.nsPer-f.nsPer), r.pairedAdded(l.name, floor, c.name))
		}
	}
	w("\n")
}

// pairedAdded is obsd's CPU µs per call over its floor's within each round,
// whose two configurations ran minutes apart at most, and their median: less
// subject to the host's drift than the difference of medians.
func (r *report) pairedAdded(load, floor, obsd string) string {
	fs, obs := r.calls[load][floor], r.calls[load][obsd]
	var d []float64
	var each []string
	for i := range min(len(fs), len(obs)) {
		v := cpuPerCall(obs[i]) - cpuPerCall(fs[i])
		d = append(d, v)
		each = append(each, fmt.Sprintf("%.2f", v))
	}
	if len(d) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f (%s)", median(d), strings.Join(each, " / "))
}

// cpuPerCall is a sample's target CPU µs per call.
func cpuPerCall(s callSample) float64 {
	return float64(s.targetCPU.Nanoseconds()) / 1e3 / float64(s.round.calls)
}

// overFloorCells formats the cells after "obsd µs/call" of the over-the-floor
// table: added, its share of the floor, the verdict against the limit, the
// noise, the throughput cross-check and the BPF time added.
func overFloorCells(floorUS, obsdUS, noiseUS, byThroughput, bpfNS float64) string {
	added := obsdUS - floorUS
	target := addedTarget(floorUS)
	pct := "—"
	if floorUS > 0 {
		pct = fmt.Sprintf("%.0f%%", 100*added/floorUS)
	}
	verdict := fmt.Sprintf("%s (limit %.2f µs)", passFail(added <= target), target)
	if noiseUS >= target {
		verdict += ", inconclusive: noise ≥ limit"
	}
	return fmt.Sprintf("%.2f | %s | %s | %.2f | %.2f | %.0f", added, pct, verdict, noiseUS, byThroughput, bpfNS)
}

// callElapsed is for tests: a round of n calls at rate per second.
func callElapsed(n int64, rate float64) time.Duration {
	return time.Duration(float64(n) / rate * float64(time.Second))
}

// progBreakdown lists each program that ran in ss, by name, with its runs
// and BPF ns per call, medians over the rounds; "" when none ran.
func progBreakdown(ss []callSample) string {
	runs, ns := map[string][]float64{}, map[string][]float64{}
	for _, s := range ss {
		n := float64(s.round.calls)
		for name, c := range s.progs {
			if c.runs == 0 {
				continue
			}
			runs[name] = append(runs[name], float64(c.runs)/n)
			ns[name] = append(ns[name], float64(c.runtime.Nanoseconds())/n)
		}
	}
	names := make([]string, 0, len(runs))
	for name := range runs {
		names = append(names, name)
	}
	slices.Sort(names)
	var out []string
	for _, name := range names {
		out = append(out, fmt.Sprintf("`%s` %.3f runs, %.0f ns", name, median(runs[name]), median(ns[name])))
	}
	return strings.Join(out, "; ")
}
