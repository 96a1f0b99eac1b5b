package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// userHZ is the unit of utime and stime in /proc/PID/stat (USER_HZ, which
// `getconf CLK_TCK` prints); it is 100 on every Linux architecture Go runs on.
const userHZ = 100

type kind int

const (
	plain kind = iota
	floorKind
	obsdKind
)

// config is one way of running the server.
type config struct {
	name   string
	label  string
	kind   kind
	traces string   // obsd's --traces
	env    []string // added to obsd's environment
	// ratio is the share of requests whose spans obsd exports (1 for
	// always_on), 0 when it exports none.
	ratio float64
	// args are added to obsd's command line (e.g. --propagate=tcp).
	args []string
	// Call loads only. loads, if set, are the loads the configuration
	// runs for (nil: every one); floor names the floor configuration obsd is judged
	// against ("" is "floor"); when, for a floor, adds the sites attached
	// only with a feature on (probe.Site.When); extraHits are the probe
	// hits per call beyond the load's own.
	loads     []string
	floor     string
	when      bool
	extraHits int
}

// tcpArgs turn on trace propagation over TCP (issue 11 §3).
var tcpArgs = []string{"--propagate=tcp"}

// sampleRatio is the production sampling rate, ParentBased(TraceIDRatioBased(0.01)).
const sampleRatio = 0.01

// benchConfigs lists the configurations a run measures, in the order each
// round runs them. endpoint is the span receiver's, http://HOST:PORT.
func benchConfigs(o options, endpoint string) []config {
	cs := []config{
		{name: "plain", label: "plain", kind: plain},
		{name: "floor", label: "floor (2 empty uprobes)", kind: floorKind},
	}
	if o.obsd == "" {
		return cs
	}
	cs = append(cs, config{name: "obsd", label: "obsd (--traces none)", kind: obsdKind, traces: "none"})
	if !o.spans {
		return cs
	}
	otlp := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + endpoint, "OTEL_EXPORTER_OTLP_INSECURE=true"}
	return append(cs,
		config{name: "obsd+otlp 1%", label: "obsd (OTLP, 1% sampled)", kind: obsdKind, traces: "otlp", ratio: sampleRatio,
			env: append(otlp[:2:2], "OTEL_TRACES_SAMPLER=parentbased_traceidratio", fmt.Sprintf("OTEL_TRACES_SAMPLER_ARG=%g", sampleRatio))},
		config{name: "obsd+otlp 1% tcp", label: "obsd (OTLP, 1% sampled, --propagate=tcp)", kind: obsdKind, traces: "otlp", ratio: sampleRatio,
			env: append(otlp[:2:2], "OTEL_TRACES_SAMPLER=parentbased_traceidratio", fmt.Sprintf("OTEL_TRACES_SAMPLER_ARG=%g", sampleRatio)), args: tcpArgs},
		config{name: "obsd+otlp 100%", label: "obsd (OTLP, 100% sampled)", kind: obsdKind, traces: "otlp", ratio: 1,
			env: append(otlp[:2:2], "OTEL_TRACES_SAMPLER=always_on")},
	)
}

// obsdEnv is the environment obsd runs with: this process's without any
// OTEL_* or OBSD_* variable, so that only the configuration's settings
// apply (a stray OTEL_EXPORTER_OTLP_TRACES_ENDPOINT would win over the
// receiver's endpoint, OBSD_EXE would add processes), then extra.
func obsdEnv(base, extra []string) []string {
	var env []string
	for _, kv := range base {
		if strings.HasPrefix(kv, "OTEL_") || strings.HasPrefix(kv, "OBSD_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

type route struct{ name, path string }

// routes are the HTTP server load's routes: two of testdata/httpserver's,
// and -extra-route if given (e.g. "/hello/unrouted", which ServeMux
// answers 404 and obsd reports with a ring-buffer record carrying the
// path; docs/route-harvest.md).
func (o options) routes() []route {
	rs := []route{{"hello", "/hello"}, {"work 200 µs", "/work?us=200"}}
	if o.extraRoute != "" {
		rs = append(rs, route{o.extraRoute, o.extraRoute})
	}
	return rs
}

// sample is one measured wrk run.
type sample struct {
	wrk       wrkResult
	runs      uint64        // BPF program runs during the run
	runtime   time.Duration // BPF run time during the run
	serverCPU float64       // fraction of one core the server used
	serverUS  float64       // server CPU µs per request wrk counted
	foreign   float64       // fraction of the server's CPU busy with other processes
	steal     float64       // fraction of the server's CPU stolen by the hypervisor
}

// rateResult is the fixed-rate run against one obsd configuration.
type rateResult struct {
	cfg       config
	load      loadResult
	cpu       float64 // fraction of one core obsd used, from utime+stime (10 ms ticks)
	cpuSched  float64 // the same from its live threads' schedstat (ns)
	memBefore memory
	memAfter  memory
	lost      float64
	counted   float64 // http_server_request_duration_seconds_count added during the run
	spans     spanCounts
}

// spanCounts is what became of a fixed-rate run's spans, for configurations
// that export them. obsd's counters cover the run alone: its obsd started
// with it and saw no request before.
type spanCounts struct {
	received     int64   // by the receiver during the run and its flush
	created      float64 // obsd_spans_created_total: sampled or not
	exported     float64 // obsd_spans_exported_total
	exportErrors float64 // obsd_span_export_errors_total
	dropped      float64 // obsd_spans_dropped_total
}

// Once a run's requests are counted, the receiver's count is final when it
// has not moved for longer than the batch span processor's schedule delay
// (OTEL_BSP_SCHEDULE_DELAY, 5 s by default and left so), within flushWait.
const (
	flushQuiet = 6500 * time.Millisecond
	flushWait  = 20 * time.Second
)

// Remeasure when other processes took more than maxForeign of the server's
// CPU, at most maxRetries times in a run.
const (
	maxForeign = 0.05
	maxRetries = 8
)

type bench struct {
	retries    int
	o          options
	log        *slog.Logger
	taskset    string
	ncpu       int
	dir        string
	serverBin  string
	goVersion  string
	floor      *floorProbe
	stats      io.Closer
	configs    []config
	notes      []string
	obsdOthers map[string]bool
	recv       *spanReceiver
	calls      callBins
	// obsdOnServerCPU is whether obsd may run on the server's CPU, where
	// its CPU time is then not another process's.
	obsdOnServerCPU bool
}

func newBench(ctx context.Context, o options, log *slog.Logger, taskset string, ncpu int) (*bench, error) {
	b := &bench{o: o, log: log, taskset: taskset, ncpu: ncpu, obsdOthers: map[string]bool{}}
	cpus, all, err := o.obsdCPUSet()
	if err != nil {
		return nil, err
	}
	b.obsdOnServerCPU = all || slices.Contains(cpus, o.serverCPU)
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	// In this process, so on the load CPU with the load generators.
	if b.recv, err = startReceiver(); err != nil {
		return nil, err
	}
	b.configs = benchConfigs(o, b.recv.endpoint)
	dir, err := os.MkdirTemp("", "obsd-bench-")
	if err != nil {
		return nil, fmt.Errorf("make temp dir: %w", err)
	}
	b.dir = dir
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	b.serverBin = filepath.Join(dir, "httpserver")
	log.Info("building testdata/httpserver", "out", b.serverBin)
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(bctx, "go", "build", "-o", b.serverBin, "./testdata/httpserver")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build testdata/httpserver: %w\n%s", err, out)
	}
	if o.has("grpc-server") || o.has("grpc-client") || o.has("http-client") || o.has("chi-server") {
		log.Info("building the call loads' programs (testdata/grpc, testdata/httpclient, testdata/routers/chi as needed)")
		if b.calls, err = buildCallBins(ctx, root, dir, o.loads); err != nil {
			return nil, err
		}
	}
	if v, err := exec.CommandContext(bctx, "go", "version").Output(); err == nil {
		b.goVersion = strings.TrimSpace(string(v))
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	if b.floor, err = loadFloor(b.serverBin); err != nil {
		return nil, err
	}
	// Run counts and run times are only kept while stats are enabled;
	// closing restores the previous setting.
	if b.stats, err = ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err != nil {
		return nil, fmt.Errorf("enable BPF run-time stats: %w", err)
	}
	ok = true
	return b, nil
}

func (b *bench) close() {
	if b.stats != nil {
		b.stats.Close()
	}
	b.floor.close()
	b.recv.close()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// moduleRoot finds obsd's go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/obsd-dev/obsd\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: run from inside the obsd repository (no go.mod of github.com/obsd-dev/obsd above the working directory)")
		}
		dir = parent
	}
}

func (b *bench) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.log.Warn(msg)
	b.notes = append(b.notes, msg)
}

func (b *bench) obsdArgv() []string {
	cpus := fmt.Sprintf("0-%d", b.ncpu-1)
	if set, all, _ := b.o.obsdCPUSet(); !all {
		cpus = joinInts(set)
	}
	return []string{b.taskset, "-c", cpus, b.o.obsd}
}

func (b *bench) run(ctx context.Context) (*report, error) {
	rep := &report{
		o:       b.o,
		host:    readHost(b.ncpu, b.goVersion),
		configs: b.configs,
		samples: map[string]map[string][]sample{},
	}
	for _, c := range b.configs {
		rep.samples[c.name] = map[string][]sample{}
	}
	busy, err := b.waitQuiet(ctx)
	if err != nil {
		return nil, err
	}
	rep.busyBefore = busy
	start := time.Now()
	for r := 1; r <= b.o.rounds && b.o.has("http-server"); r++ {
		for _, c := range b.configs {
			b.log.Info("measuring", "round", r, "of", b.o.rounds, "config", c.name, "elapsed", time.Since(start).Round(time.Second))
			got, err := b.runConfig(ctx, c, r)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", r, c.name, err)
			}
			for path, s := range got {
				rep.samples[c.name][path] = append(rep.samples[c.name][path], s)
			}
		}
	}
	for _, c := range b.configs {
		if c.kind != obsdKind || !b.o.has("http-server") {
			continue
		}
		b.log.Info("fixed-rate run", "config", c.name, "rate", b.o.rate, "for", b.o.rateFor)
		rr, err := b.runFixedRate(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("fixed-rate run, %s: %w", c.name, err)
		}
		rep.rates = append(rep.rates, rr)
	}
	for _, l := range callLoads(b.o) {
		if b.o.has(l.name) {
			rep.callLoads = append(rep.callLoads, l)
		}
	}
	if len(rep.callLoads) > 0 {
		rep.callConfigs = callConfigs(b.o, b.recv.endpoint)
		if rep.calls, err = b.runCalls(ctx, rep.callLoads); err != nil {
			return nil, err
		}
	}
	rep.notes = b.notes
	rep.elapsed = time.Since(start)
	return rep, nil
}

// runConfig starts a fresh server, instruments it as c says, and measures
// every route once.
func (b *bench) runConfig(ctx context.Context, c config, round int) (map[string]sample, error) {
	srv, addr, err := startServer(ctx, b.taskset, b.serverBin, b.o.serverCPU)
	if err != nil {
		return nil, err
	}
	defer srv.stop(2 * time.Second)

	var set *progSet
	var ob *proc
	var obBase string
	switch c.kind {
	case floorKind:
		l, err := b.floor.attach(srv.pid())
		if err != nil {
			return nil, err
		}
		defer l.Close()
		set = &progSet{progs: []*ebpf.Program{b.floor.prog}, names: []string{"floor_probe"}}
	case obsdKind:
		ob, obBase, err = startObsd(ctx, append(b.obsdArgv(), c.args...), obsdEnv(os.Environ(), c.env), c.traces, srv.pid())
		if err != nil {
			return nil, err
		}
		defer ob.stop(5 * time.Second)
		var others []string
		set, others, err = obsdPrograms(ob.pid())
		if err != nil {
			return nil, err
		}
		defer set.close()
		for _, o := range others {
			if !b.obsdOthers[o] {
				b.obsdOthers[o] = true
				b.note("obsd also holds BPF program %s, not counted in BPF runs/request", o)
			}
		}
	}

	out := map[string]sample{}
	for _, rt := range b.o.routes() {
		url := "http://" + addr + rt.path
		var s sample
		for attempt := 1; ; attempt++ {
			if b.o.warmup > 0 {
				if _, err := runWrk(ctx, b.taskset, b.o.wrk, b.o.loadCPU, b.o.warmup, url); err != nil {
					return nil, fmt.Errorf("warm-up: %w", err)
				}
			}
			if s, err = b.measure(ctx, url, srv, ob, set); err != nil {
				return nil, err
			}
			// Other work on the server's CPU (another process, not obsd)
			// would be charged to the configuration: measure again.
			// A bounded budget keeps a busy host from stretching the run.
			if s.foreign < maxForeign || attempt == 3 || b.retries >= maxRetries {
				if s.foreign >= maxForeign {
					b.note("round %d, %s, %s: other processes took %.0f%% of the server's CPU after %d attempt(s); kept the last", round, c.name, rt.path, 100*s.foreign, attempt)
				}
				break
			}
			b.retries++
			b.note("round %d, %s, %s: other processes took %.0f%% of the server's CPU; measured again", round, c.name, rt.path, 100*s.foreign)
		}
		w := s.wrk
		if w.SocketErrors > 0 || w.Non2xx > 0 {
			b.note("round %d, %s, %s: wrk saw %d socket errors and %d non-2xx/3xx responses", round, c.name, rt.path, w.SocketErrors, w.Non2xx)
		}
		if set != nil {
			if h := float64(s.runs) / float64(w.Requests); h < 1.99 || h > 2.01 {
				b.note("round %d, %s, %s: %.3f BPF runs per request (%d runs, %d requests), want 2", round, c.name, rt.path, h, s.runs, w.Requests)
			}
		}
		b.log.Info("measured", "config", c.name, "route", rt.path, "rps", fmt.Sprintf("%.0f", w.RPS),
			"runs/req", fmt.Sprintf("%.3f", float64(s.runs)/float64(w.Requests)),
			"serverCPU", fmt.Sprintf("%.2f", s.serverCPU), "foreign", fmt.Sprintf("%.2f", s.foreign))
		out[rt.path] = s
	}
	if ob != nil {
		text, err := scrape(ctx, obBase)
		if err != nil {
			return nil, err
		}
		if lost, _ := sumMetric(text, "obsd_events_lost_total"); lost != 0 {
			b.note("round %d, %s: obsd_events_lost_total is %.0f after the wrk runs", round, c.name, lost)
		}
		// At wrk's rate a full batch queue drops spans: say how many, as
		// what the configuration measured is obsd doing less than asked.
		if c.ratio > 0 {
			dropped, _ := sumMetric(text, "obsd_spans_dropped_total")
			failed, _ := sumMetric(text, "obsd_span_export_errors_total")
			if dropped != 0 || failed != 0 {
				b.note("round %d, %s: after the wrk runs obsd_spans_dropped_total is %.0f and obsd_span_export_errors_total is %.0f", round, c.name, dropped, failed)
			}
		}
	}
	return out, nil
}

// measure runs wrk once against url and reads the BPF, server and CPU
// counters around it.
func (b *bench) measure(ctx context.Context, url string, srv, ob *proc, set *progSet) (sample, error) {
	var before, after counters
	var err error
	if set != nil {
		if before, err = set.read(); err != nil {
			return sample{}, err
		}
	}
	srv0, err := procRunTime(srv.pid())
	if err != nil {
		return sample{}, err
	}
	var ob0, ob1 time.Duration
	if ob != nil {
		if ob0, err = procRunTime(ob.pid()); err != nil {
			return sample{}, err
		}
	}
	cpu0, err := readCPUTimes(b.o.serverCPU)
	if err != nil {
		return sample{}, err
	}
	t0 := time.Now()
	w, err := runWrk(ctx, b.taskset, b.o.wrk, b.o.loadCPU, b.o.duration, url)
	if err != nil {
		return sample{}, err
	}
	wall := time.Since(t0)
	cpu1, err := readCPUTimes(b.o.serverCPU)
	if err != nil {
		return sample{}, err
	}
	srv1, err := procRunTime(srv.pid())
	if err != nil {
		return sample{}, err
	}
	if ob != nil {
		if ob1, err = procRunTime(ob.pid()); err != nil {
			return sample{}, err
		}
	}
	if set != nil {
		if after, err = set.read(); err != nil {
			return sample{}, err
		}
	}
	if srv.exited() {
		return sample{}, srv.failure("measure " + url)
	}
	if ob != nil && ob.exited() {
		return sample{}, ob.failure("measure " + url)
	}
	srvCPU := srv1 - srv0
	// Busy time on the server's CPU that neither the server nor obsd
	// accounts for; a lower bound when obsd may also run elsewhere.
	foreign := (cpu1.busy - cpu0.busy) - srvCPU
	if b.obsdOnServerCPU {
		foreign -= ob1 - ob0
	}
	return sample{
		wrk:       w,
		runs:      after.runs - before.runs,
		runtime:   after.runtime - before.runtime,
		serverCPU: srvCPU.Seconds() / wall.Seconds(),
		serverUS:  float64(srvCPU.Nanoseconds()) / 1e3 / float64(w.Requests),
		foreign:   max(0, foreign.Seconds()/wall.Seconds()),
		steal:     (cpu1.steal - cpu0.steal).Seconds() / wall.Seconds(),
	}, nil
}

// runFixedRate drives /hello at the configured rate against a fresh server
// and obsd, and reads obsd's CPU and memory around it.
func (b *bench) runFixedRate(ctx context.Context, c config) (rateResult, error) {
	rr := rateResult{cfg: c}
	srv, addr, err := startServer(ctx, b.taskset, b.serverBin, b.o.serverCPU)
	if err != nil {
		return rr, err
	}
	defer srv.stop(2 * time.Second)
	ob, base, err := startObsd(ctx, b.obsdArgv(), obsdEnv(os.Environ(), c.env), c.traces, srv.pid())
	if err != nil {
		return rr, err
	}
	defer ob.stop(5 * time.Second)

	text, err := scrape(ctx, base)
	if err != nil {
		return rr, err
	}
	count0, _ := sumMetric(text, "http_server_request_duration_seconds_count")
	recv0 := b.recv.received()
	if rr.memBefore, err = procMemory(ob.pid()); err != nil {
		return rr, err
	}
	cpu0, err := procCPUTicks(ob.pid())
	if err != nil {
		return rr, err
	}
	run0, err := procRunTime(ob.pid())
	if err != nil {
		return rr, err
	}
	t0 := time.Now()
	rr.load = fixedRate(ctx, "http://"+addr+"/hello", b.o.rate, b.o.rateFor, 8)
	run1, err := procRunTime(ob.pid())
	if err != nil {
		return rr, err
	}
	cpu1, err := procCPUTicks(ob.pid())
	if err != nil {
		return rr, err
	}
	wall := time.Since(t0).Seconds()
	rr.cpu = float64(cpu1-cpu0) / userHZ / wall
	rr.cpuSched = (run1 - run0).Seconds() / wall
	if rr.memAfter, err = procMemory(ob.pid()); err != nil {
		return rr, err
	}
	if ctx.Err() != nil {
		return rr, ctx.Err()
	}
	if rr.load.FirstErr != nil {
		b.note("fixed-rate run, %s: %d request errors, first: %v", c.name, rr.load.Errors, rr.load.FirstErr)
	}
	if got := float64(rr.load.Responses) / rr.load.Elapsed.Seconds(); got < 0.99*float64(b.o.rate) {
		b.note("fixed-rate run, %s: reached %.0f req/s, below the %d asked (%d skipped)", c.name, got, b.o.rate, rr.load.Skipped)
	}
	// obsd reads its ring buffer on its own schedule: wait for the count
	// to reach what was sent, or to stop moving.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if text, err = scrape(ctx, base); err != nil {
			return rr, err
		}
		n, _ := sumMetric(text, "http_server_request_duration_seconds_count")
		rr.counted = n - count0
		if int(rr.counted) >= rr.load.Responses || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return rr, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	rr.lost, _ = sumMetric(text, "obsd_events_lost_total")
	if c.ratio > 0 {
		if rr.spans, err = b.waitSpans(ctx, base, recv0, rr.load.Responses); err != nil {
			return rr, err
		}
	}
	if ob.exited() {
		return rr, ob.failure("fixed-rate run")
	}
	return rr, nil
}

// waitSpans waits for obsd's batch span processor to flush what the
// fixed-rate run queued, then reads the receiver's count (less recv0) and
// obsd's span counters. It stops early once every response has a span.
func (b *bench) waitSpans(ctx context.Context, base string, recv0 int64, responses int) (spanCounts, error) {
	var sc spanCounts
	deadline := time.Now().Add(flushWait)
	last, moved := int64(-1), time.Now()
	for {
		n := b.recv.received() - recv0
		if n != last {
			last, moved = n, time.Now()
		}
		if n >= int64(responses) || time.Since(moved) > flushQuiet || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return sc, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	text, err := scrape(ctx, base)
	if err != nil {
		return sc, err
	}
	sc.received = b.recv.received() - recv0
	sc.created, _ = sumMetric(text, "obsd_spans_created_total")
	sc.exported, _ = sumMetric(text, "obsd_spans_exported_total")
	sc.exportErrors, _ = sumMetric(text, "obsd_span_export_errors_total")
	sc.dropped, _ = sumMetric(text, "obsd_spans_dropped_total")
	return sc, nil
}

// waitQuiet samples how busy the host's CPUs are, for up to -wait-quiet,
// until a one-second window is below 10% on every CPU, and returns the
// busiest CPU's share in the last window.
func (b *bench) waitQuiet(ctx context.Context) (float64, error) {
	deadline := time.Now().Add(b.o.waitQuiet)
	for {
		var before []cpuTimes
		for n := range b.ncpu {
			t, err := readCPUTimes(n)
			if err != nil {
				return 0, err
			}
			before = append(before, t)
		}
		t0 := time.Now()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
		wall := time.Since(t0)
		busiest := 0.0
		for n := range b.ncpu {
			t, err := readCPUTimes(n)
			if err != nil {
				return 0, err
			}
			busiest = max(busiest, (t.busy-before[n].busy).Seconds()/wall.Seconds())
		}
		if busiest < 0.1 || time.Now().After(deadline) {
			if busiest >= 0.1 {
				b.note("the host was busy before the run: one CPU was %.0f%% busy with other work", 100*busiest)
			}
			return busiest, nil
		}
		b.log.Info("waiting for a quiet host", "busiest CPU", fmt.Sprintf("%.0f%%", 100*busiest), "until", deadline.Format(time.TimeOnly))
	}
}
