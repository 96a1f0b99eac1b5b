// Command bench measures what obsd costs an instrumented Go HTTP server, and
// how much of that is the uprobe traps alone (the floor) rather than obsd's
// BPF code and user-space processing.
//
// In one run it alternates, round-robin so machine drift hits all equally:
// the server alone (plain), two empty uprobes at obsd's two sites (floor),
// obsd without span export, and obsd exporting spans over OTLP/gRPC, 1%
// sampled (the production setting) and 100% sampled, to a receiver inside
// this tool that counts and drops them. The server is pinned to one CPU;
// wrk, this tool (with the receiver) and by default obsd to another, so
// 1/throughput is about the server's CPU time per request. It then drives
// /hello at a fixed rate to read obsd's own CPU and memory, and checks that
// no event was lost and every sampled span arrived.
//
// Then, for each of the other probes, a call load beside its own floor
// (calls.go): gRPC unary calls measured on the server and on the client,
// concurrent net/http client requests, and requests to a chi service (the
// server probe with the chi route probe); -loads picks which loads run.
//
// It prints a Markdown table on stdout. Run from the module root as root:
//
//	go build -o bin/obsd ./cmd/obsd && go run ./internal/tools/bench
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pinnedEnv marks the re-executed, CPU-pinned bench process.
const pinnedEnv = "OBSD_BENCH_PINNED"

type options struct {
	rounds    int
	duration  time.Duration
	warmup    time.Duration
	obsd      string
	out       string
	spans     bool
	rate      int
	rateFor   time.Duration
	serverCPU int
	loadCPU   int
	obsdCPUs  string
	wrk       string
	waitQuiet time.Duration
	loads     []string // of knownLoads, in the order given
	callConc  int      // concurrent calls of the gRPC load client
	httpLoop  int      // requests per round of the HTTP client load
	// extraRoute is a path of testdata/httpserver measured beside the
	// HTTP server load's two routes, "" for none.
	extraRoute string
}

// has reports whether load is among -loads.
func (o options) has(load string) bool { return slices.Contains(o.loads, load) }

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each round runs every configuration once, in turn")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "wrk duration per configuration and route (whole seconds)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured wrk run before each measurement (whole seconds, 0 for none)")
	fs.StringVar(&o.obsd, "obsd", "bin/obsd", `obsd binary; "" skips the obsd configurations`)
	fs.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	fs.BoolVar(&o.spans, "spans", true, "also run obsd exporting spans over OTLP/gRPC to an in-process receiver, 1% and 100% sampled")
	fs.IntVar(&o.rate, "rate", 10000, "requests/s of the fixed-rate run that measures obsd's CPU and memory")
	fs.DurationVar(&o.rateFor, "rate-duration", 5*time.Second, "length of the fixed-rate run")
	fs.IntVar(&o.serverCPU, "server-cpu", 0, "CPU the server is pinned to")
	fs.IntVar(&o.loadCPU, "load-cpu", 1, "CPU wrk and this tool's own load loop are pinned to")
	fs.StringVar(&o.obsdCPUs, "obsd-cpus", "", `taskset CPU list for obsd, e.g. "1" or "0-1,3" (default: the -load-cpu CPU); "all" leaves it free on every CPU`)
	fs.StringVar(&o.wrk, "wrk", "/usr/bin/wrk", "wrk binary")
	fs.DurationVar(&o.waitQuiet, "wait-quiet", 0, "wait up to this long for every CPU to be under 10% busy before measuring")
	loads := fs.String("loads", strings.Join(knownLoads, ","), "loads to measure, comma-separated: http-server (wrk; fixed rate; spans), grpc-server, grpc-client, http-client, chi-server (a chi v5 service: the server probe and the chi route probe)")
	fs.StringVar(&o.extraRoute, "extra-route", "", `also measure this path of testdata/httpserver in the HTTP server load (e.g. "/hello/unrouted": a 404, reported with a record)`)
	fs.IntVar(&o.callConc, "grpc-concurrency", 16, "concurrent unary calls of the gRPC load client")
	fs.IntVar(&o.httpLoop, "http-client-requests", 20000, "requests per round of the HTTP client load")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.loads, err = parseLoads(*loads); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case o.rounds < 1:
		return o, fmt.Errorf("-rounds must be at least 1, got %d", o.rounds)
	case o.duration < time.Second || o.duration%time.Second != 0:
		return o, fmt.Errorf("-duration must be whole seconds, at least 1s (wrk's unit), got %s", o.duration)
	case o.warmup < 0 || o.warmup%time.Second != 0:
		return o, fmt.Errorf("-warmup must be whole seconds, got %s", o.warmup)
	case o.rate < 1 || o.rate > 200000:
		return o, fmt.Errorf("-rate must be in 1..200000, got %d", o.rate)
	case o.rateFor < time.Second || o.rateFor > time.Minute:
		return o, fmt.Errorf("-rate-duration must be in 1s..1m, got %s", o.rateFor)
	case o.waitQuiet < 0 || o.waitQuiet > time.Hour:
		return o, fmt.Errorf("-wait-quiet must be in 0..1h, got %s", o.waitQuiet)
	case o.callConc < 1 || o.callConc > 1024:
		return o, fmt.Errorf("-grpc-concurrency must be in 1..1024, got %d", o.callConc)
	case o.httpLoop < 100 || o.httpLoop > 10_000_000:
		return o, fmt.Errorf("-http-client-requests must be in 100..10000000, got %d", o.httpLoop)
	case o.serverCPU < 0 || o.loadCPU < 0 || o.serverCPU == o.loadCPU:
		return o, fmt.Errorf("-server-cpu (%d) and -load-cpu (%d) must be two different CPUs", o.serverCPU, o.loadCPU)
	}
	if _, _, err := o.obsdCPUSet(); err != nil {
		return o, err
	}
	return o, nil
}

// obsdCPUSet returns the CPUs obsd is pinned to, sorted, or all=true when
// it runs unpinned.
func (o options) obsdCPUSet() (cpus []int, all bool, err error) {
	switch o.obsdCPUs {
	case "":
		return []int{o.loadCPU}, false, nil
	case "all":
		return nil, true, nil
	}
	cpus, err = parseCPUList(o.obsdCPUs)
	if err != nil {
		return nil, false, fmt.Errorf("-obsd-cpus: %w", err)
	}
	return cpus, false, nil
}

// parseCPUList parses a taskset CPU list of numbers and ranges, "0-2,5",
// into sorted distinct CPU numbers. Strides ("0-7:2") are refused.
func parseCPUList(s string) ([]int, error) {
	seen := map[int]bool{}
	for _, item := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(item), "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("parse CPU list %q: %q is not a CPU number or range", s, item)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("parse CPU list %q: %q is not a CPU number or range", s, item)
			}
		}
		if b > 4095 {
			return nil, fmt.Errorf("parse CPU list %q: CPU %d is out of range", s, b)
		}
		for c := a; c <= b; c++ {
			seen[c] = true
		}
	}
	cpus := make([]int, 0, len(seen))
	for c := range seen {
		cpus = append(cpus, c)
	}
	slices.Sort(cpus)
	return cpus, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func run(args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it attaches uprobes, loads BPF and enables kernel.bpf_stats_enabled (try: sudo go run ./internal/tools/bench)")
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return fmt.Errorf("find taskset (util-linux), needed to pin the server and the load generator: %w", err)
	}
	ncpu, err := onlineCPUs()
	if err != nil {
		return err
	}
	if o.serverCPU >= ncpu || o.loadCPU >= ncpu {
		return fmt.Errorf("need CPUs %d and %d, this host has %d", o.serverCPU, o.loadCPU, ncpu)
	}
	if cpus, _, _ := o.obsdCPUSet(); len(cpus) > 0 && cpus[len(cpus)-1] >= ncpu {
		return fmt.Errorf("-obsd-cpus %s: this host has CPUs 0-%d", o.obsdCPUs, ncpu-1)
	}
	// Pin this process, the fixed-rate load generator, away from the server's
	// CPU before it starts any thread of consequence; children are pinned
	// explicitly by taskset.
	if os.Getenv(pinnedEnv) == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable to re-run it pinned: %w", err)
		}
		argv := append([]string{"taskset", "-c", strconv.Itoa(o.loadCPU), exe}, args...)
		err = syscall.Exec(taskset, argv, append(os.Environ(), pinnedEnv+"=1"))
		return fmt.Errorf("re-run pinned to CPU %d: %w", o.loadCPU, err)
	}
	if _, err := os.Stat(o.wrk); err != nil && o.has("http-server") {
		return fmt.Errorf("find wrk: %w", err)
	}
	if o.obsd != "" {
		if _, err := os.Stat(o.obsd); err != nil {
			return fmt.Errorf("find obsd binary (build it with `make build`, or pass -obsd \"\" to skip obsd): %w", err)
		}
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	b, err := newBench(ctx, o, log, taskset, ncpu)
	if err != nil {
		return err
	}
	defer b.close()
	rep, err := b.run(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", err)
		}
		return err
	}
	md := rep.markdown()
	fmt.Print(md)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	return nil
}

// onlineCPUs counts the host's CPUs from /proc/cpuinfo, not from this
// process's affinity mask, which may already be a single CPU.
func onlineCPUs() (int, error) {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0, fmt.Errorf("count CPUs: %w", err)
	}
	n := countPrefix(string(data), "processor\t")
	if n == 0 {
		return 0, errors.New("count CPUs: no processor line in /proc/cpuinfo")
	}
	return n, nil
}
