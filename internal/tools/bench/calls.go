package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	chi "github.com/obsd-dev/obsd/bpf/github.com/go-chi/chi/v5"
	grpcclient "github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/client"
	grpcserver "github.com/obsd-dev/obsd/bpf/google.golang.org/grpc/server"
	httpclient "github.com/obsd-dev/obsd/bpf/net/http/client"
	httpserver "github.com/obsd-dev/obsd/bpf/net/http/server"
	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/inspect"
	"github.com/obsd-dev/obsd/internal/uprobes"
)

// callLoad is a load of calls measured on the one process obsd instruments
// (the target), pinned to the server CPU: the gRPC server, the gRPC client,
// the HTTP client or a chi service. Its peer runs on the load CPU.
type callLoad struct {
	name  string // as in -loads
	title string
	// probes are obsd's probes that act on each call in the target: the
	// floor puts the empty program at each of their sites the target has.
	probes []*probe.Probe
	// hits is how many of those sites each call runs: the BPF runs per
	// call the floor and obsd must show.
	hits int
	// setup describes how the target and its peer run, for the report.
	setup string
}

// The chi-server load's request path, and the route chi reports for it to
// its own middleware: three parts from two nested Route groups (each a
// mounted sub-router), so the probe joins several patterns.
const (
	chiPath  = "/orders/42/items/7"
	chiRoute = "/orders/{oid}/items/{iid}"
)

// httpClientConns is how many requests the HTTP client load keeps in
// flight, each on its own keep-alive connection: one at a time left the
// client's CPU time per request dominated by the Go scheduler spinning
// between requests (plain's spread above the limit in every run).
const httpClientConns = 16

// callLoads are the loads beside the HTTP server's, in report order.
func callLoads(o options) []callLoad {
	return []callLoad{
		{name: "grpc-server", title: "gRPC unary, server side", probes: []*probe.Probe{grpcserver.New()}, hits: 2,
			setup: fmt.Sprintf("`grpcapp -listen` (testdata/grpc, grpc-go %s) on CPU %d; `grpcapp -call ADDR -load %d` (%d goroutines sending UnaryCall on one connection, each waiting for its answer) on CPU %d",
				benchGRPC, o.serverCPU, o.callConc, o.callConc, o.loadCPU)},
		{name: "grpc-client", title: "gRPC unary, client side", probes: []*probe.Probe{grpcclient.New()}, hits: 2,
			setup: fmt.Sprintf("`grpcapp -call ADDR -load %d` on CPU %d; `grpcapp -listen` on CPU %d",
				o.callConc, o.serverCPU, o.loadCPU)},
		{name: "http-client", title: "HTTP client (net/http), concurrent keep-alive GETs", probes: []*probe.Probe{httpclient.New()}, hits: 2,
			setup: fmt.Sprintf("`httpclient -loop %d -loop-conns %d` (testdata/httpclient: GET /ok from %d goroutines, each on its own keep-alive connection) on CPU %d; a net/http server inside this tool on CPU %d",
				o.httpLoop, httpClientConns, httpClientConns, o.serverCPU, o.loadCPU)},
		// The server probe's two hits and the chi probe's one: the floor
		// covers both probes' sites, so obsd over it is what obsd's code
		// costs, route included.
		{name: "chi-server", title: "chi router (HTTP server with a chi v5 route)", probes: []*probe.Probe{httpserver.New(), chi.New()}, hits: 3,
			setup: fmt.Sprintf("the chi test service (testdata/routers/chi, chi %s) on CPU %d; `wrk -t1 -c16 %s` (keep-alive GETs on 16 connections, route `%s`) on CPU %d",
				chiVersion, o.serverCPU, chiPath, chiRoute, o.loadCPU)},
	}
}

// callRound is one round of a load generator's, as it reported it.
type callRound struct {
	calls, errors int64
	elapsed       time.Duration
}

// parseLoadLine parses grpcapp -load's "calls N errors E ns T".
func parseLoadLine(line string) (callRound, error) {
	var r callRound
	var ns int64
	if _, err := fmt.Sscanf(strings.TrimSpace(line), "calls %d errors %d ns %d", &r.calls, &r.errors, &ns); err != nil {
		return r, fmt.Errorf("parse load line %q: %w", line, err)
	}
	if r.calls <= 0 || ns <= 0 || r.errors < 0 || r.errors > r.calls {
		return r, fmt.Errorf("parse load line %q: want calls > 0, 0 ≤ errors ≤ calls, ns > 0", line)
	}
	r.elapsed = time.Duration(ns)
	return r, nil
}

// parseLoopLine parses httpclient -loop's "ns_per_request X", a round of n
// requests.
func parseLoopLine(line string, n int) (callRound, error) {
	var ns int64
	if _, err := fmt.Sscanf(strings.TrimSpace(line), "ns_per_request %d", &ns); err != nil {
		return callRound{}, fmt.Errorf("parse loop line %q: %w", line, err)
	}
	if ns <= 0 || n <= 0 {
		return callRound{}, fmt.Errorf("parse loop line %q: want ns_per_request > 0 for %d requests", line, n)
	}
	return callRound{calls: int64(n), elapsed: time.Duration(ns * int64(n))}, nil
}

// lineProc is a child driven line by line: a line on its stdin asks for a
// round, a line on its stdout answers.
type lineProc struct {
	*proc
	in    *os.File
	lines chan string
}

// startLineProc starts argv with OS pipes as stdin and stdout: with an
// io.Pipe, exec.Cmd.Wait would wait for a stdin copier that only ends when
// this side closes the pipe, and a killed child would never be reaped.
func startLineProc(name string, argv []string) (*lineProc, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p, err := startProcIO(name, argv, nil, inR, outW)
	// The child holds its own copies of these ends.
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	lp := &lineProc{proc: p, in: inW, lines: make(chan string, 16)}
	go func() {
		defer outR.Close()
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			select {
			case lp.lines <- sc.Text():
			default: // nobody waits for this line: drop it rather than block the child
			}
		}
		close(lp.lines)
	}()
	return lp, nil
}

// next waits up to timeout for the child's next stdout line with prefix,
// skipping others.
func (lp *lineProc) next(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-lp.lines:
			if !ok {
				return "", lp.failure(fmt.Sprintf("wait for %q", prefix))
			}
			if strings.HasPrefix(line, prefix) {
				return line, nil
			}
		case <-deadline:
			return "", fmt.Errorf("%s: no %q line within %s; its output:\n%s", lp.name, prefix, timeout, lp.out)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

func (lp *lineProc) stop(grace time.Duration) {
	if lp == nil {
		return
	}
	lp.in.Close() // the load programs exit at stdin's end
	select {
	case <-lp.done:
	case <-time.After(grace):
		lp.proc.stop(time.Second)
	}
}

// kill ends a child that does not watch its stdin (grpcapp -listen): SIGTERM
// at once.
func (lp *lineProc) kill() {
	lp.proc.stop(2 * time.Second)
	lp.in.Close()
}

// callRig is one load's processes, started fresh for each configuration.
type callRig struct {
	target *proc
	driver *lineProc
	// admin is a router service's tally server (GET /tally), "" for
	// other loads.
	admin   string
	round   func(ctx context.Context, d time.Duration) (callRound, error)
	cleanup []func()
}

func (r *callRig) close() {
	for i := len(r.cleanup) - 1; i >= 0; i-- {
		r.cleanup[i]()
	}
}

// callBins are the programs the call loads run, built once; a program no
// selected load needs is "".
type callBins struct {
	grpcapp, httpclient, chi string
}

// chiVersion is the chi release the chi-server load's service is built
// with: the newest the routers' e2e tests pin.
const chiVersion = "v5.5.0"

// benchGRPC is the grpc-go release the gRPC loads are built with: one whose
// client --propagate=tcp carries context for (v1.82.1 and later).
const benchGRPC = "v1.85.0"

// grpcModuleAt copies testdata/grpc's module into a directory under dir
// with its grpc-go requirement set to version, for go build -mod=mod.
func grpcModuleAt(root, dir, version string) (string, error) {
	src := filepath.Join(dir, "grpcapp-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(root, "testdata/grpc", f))
		if err != nil {
			return "", fmt.Errorf("copying testdata/grpc: %w", err)
		}
		if err := os.WriteFile(filepath.Join(src, f), b, 0o644); err != nil {
			return "", fmt.Errorf("copying testdata/grpc: %w", err)
		}
	}
	cmd := exec.Command("go", "mod", "edit", "-require=google.golang.org/grpc@"+version)
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go mod edit in %s: %w\n%s", src, err, out)
	}
	return src, nil
}

// targetBin is the executable of load's target, where its floor sites are.
func (b callBins) targetBin(load string) (string, error) {
	bin := map[string]string{"grpc-server": b.grpcapp, "grpc-client": b.grpcapp,
		"http-client": b.httpclient, "chi-server": b.chi}[load]
	if bin == "" {
		return "", fmt.Errorf("no target program built for load %q", load)
	}
	return bin, nil
}

// buildCallBins builds into dir the programs the loads named in loads run.
func buildCallBins(ctx context.Context, root, dir string, loads []string) (callBins, error) {
	var bins callBins
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	type build struct {
		dir, pkg, out string
		env           []string
	}
	var builds []build
	if slices.Contains(loads, "grpc-server") || slices.Contains(loads, "grpc-client") {
		bins.grpcapp = filepath.Join(dir, "grpcapp")
		src, err := grpcModuleAt(root, dir, benchGRPC)
		if err != nil {
			return bins, err
		}
		// A copy of its module at another grpc-go: go.sum completed by the build.
		builds = append(builds, build{src, ".", bins.grpcapp, []string{"GOWORK=off", "GOFLAGS=-mod=mod"}})
	}
	if slices.Contains(loads, "http-client") || slices.Contains(loads, "chi-server") {
		bins.httpclient = filepath.Join(dir, "httpclient")
		builds = append(builds, build{root, "./testdata/httpclient", bins.httpclient, nil})
	}
	for _, b := range builds {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = b.dir
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return bins, fmt.Errorf("build %s in %s: %w\n%s", b.pkg, b.dir, err, out)
		}
	}
	if slices.Contains(loads, "chi-server") {
		bins.chi = filepath.Join(dir, "chi")
		if err := buildChiService(ctx, root, dir, bins.chi); err != nil {
			return bins, err
		}
	}
	return bins, nil
}

// buildChiService builds testdata/routers/chi, which has no go.mod of its
// own (the e2e tests build it against several chi releases), in a temporary
// module under dir requiring chiVersion, as out.
func buildChiService(ctx context.Context, root, dir, out string) error {
	src := filepath.Join(root, "testdata/routers/chi")
	mod, err := os.MkdirTemp(dir, "chi-module-")
	if err != nil {
		return fmt.Errorf("build the chi service: %w", err)
	}
	defer os.RemoveAll(mod)
	ents, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("build the chi service: %w", err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".go") {
			continue
		}
		// ReadFile follows the symlink (record.go is shared by every
		// router's service).
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return fmt.Errorf("build the chi service: %w", err)
		}
		if err := os.WriteFile(filepath.Join(mod, e.Name()), data, 0o644); err != nil {
			return fmt.Errorf("build the chi service: %w", err)
		}
	}
	gomod := "module chi\n\ngo 1.24\n\nrequire github.com/go-chi/chi/v5 " + chiVersion + "\n"
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte(gomod), 0o644); err != nil {
		return fmt.Errorf("build the chi service: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	cmd.Dir = mod
	// -mod=mod writes go.sum from the module cache or proxy.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the chi service (chi %s) from %s: %w\n%s", chiVersion, src, err, b)
	}
	return nil
}

// startGRPCServer runs grpcapp -listen pinned to cpu and returns its address.
func (b *bench) startGRPCServer(ctx context.Context, cpu int) (*lineProc, string, error) {
	p, err := startLineProc("grpcapp -listen", []string{b.taskset, "-c", fmt.Sprint(cpu), b.calls.grpcapp, "-listen", "127.0.0.1:0"})
	if err != nil {
		return nil, "", err
	}
	line, err := p.next(ctx, "listening ", 20*time.Second)
	if err != nil {
		p.kill()
		return nil, "", err
	}
	addr := strings.TrimPrefix(line, "listening ")
	if !strings.HasPrefix(addr, "127.") {
		p.kill()
		return nil, "", fmt.Errorf("grpcapp listens on %q, not on loopback", addr)
	}
	return p, addr, nil
}

// startRig starts l's target and peer.
func (b *bench) startRig(ctx context.Context, l callLoad) (*callRig, error) {
	rig := &callRig{}
	ok := false
	defer func() {
		if !ok {
			rig.close()
		}
	}()
	switch l.name {
	case "grpc-server", "grpc-client":
		srvCPU, cliCPU := b.o.serverCPU, b.o.loadCPU
		if l.name == "grpc-client" {
			srvCPU, cliCPU = cliCPU, srvCPU
		}
		srv, addr, err := b.startGRPCServer(ctx, srvCPU)
		if err != nil {
			return nil, err
		}
		rig.cleanup = append(rig.cleanup, func() { srv.kill() })
		cli, err := startLineProc("grpcapp -load", []string{b.taskset, "-c", fmt.Sprint(cliCPU), b.calls.grpcapp,
			"-call", addr, "-load", fmt.Sprint(b.o.callConc)})
		if err != nil {
			return nil, err
		}
		rig.cleanup = append(rig.cleanup, func() { cli.stop(2 * time.Second) })
		if _, err := cli.next(ctx, "ready", 20*time.Second); err != nil {
			return nil, err
		}
		rig.driver, rig.target = cli, srv.proc
		if l.name == "grpc-client" {
			rig.target = cli.proc
		}
		rig.round = func(ctx context.Context, d time.Duration) (callRound, error) {
			if _, err := fmt.Fprintf(cli.in, "%g\n", d.Seconds()); err != nil {
				return callRound{}, fmt.Errorf("ask grpcapp for a round: %w", err)
			}
			line, err := cli.next(ctx, "calls ", d+30*time.Second)
			if err != nil {
				return callRound{}, err
			}
			return parseLoadLine(line)
		}
	case "http-client":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("listen for the HTTP client load: %w", err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		}), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		rig.cleanup = append(rig.cleanup, func() { srv.Close() })
		cli, err := b.startLoop(ctx, rig, b.o.serverCPU, "http://"+ln.Addr().String(), "/ok", httpClientConns)
		if err != nil {
			return nil, err
		}
		rig.driver, rig.target = cli, cli.proc
	case "chi-server":
		srv, err := startLineProc("chi service", []string{b.taskset, "-c", fmt.Sprint(b.o.serverCPU), b.calls.chi,
			"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"})
		if err != nil {
			return nil, err
		}
		rig.cleanup = append(rig.cleanup, func() { srv.kill() })
		line, err := srv.next(ctx, "listening ", 20*time.Second)
		if err != nil {
			return nil, err
		}
		addr, admin, err := parseRouterListening(line)
		if err != nil {
			return nil, err
		}
		rig.admin = "http://" + admin
		// A path chi does not route would still cost the traps (404s pass
		// through the Mux too) but would measure another route: check.
		if err := checkRouted(ctx, "http://"+addr+chiPath); err != nil {
			return nil, err
		}
		// wrk, as for the HTTP server load, keeps the service busy: one
		// request at a time left its CPU time per request dominated by the
		// Go scheduler spinning between requests (plain's spread was above
		// the limit in every sequential run).
		url := "http://" + addr + chiPath
		rig.target = srv.proc
		rig.round = func(ctx context.Context, d time.Duration) (callRound, error) {
			d = max(d.Round(time.Second), time.Second) // wrk's unit
			w, err := runWrk(ctx, b.taskset, b.o.wrk, b.o.loadCPU, d, url)
			if err != nil {
				return callRound{}, err
			}
			if w.Requests <= 0 || w.RPS <= 0 {
				return callRound{}, fmt.Errorf("wrk %s: no requests completed", url)
			}
			return callRound{calls: w.Requests, errors: w.SocketErrors + w.Non2xx,
				elapsed: time.Duration(float64(w.Requests) / w.RPS * float64(time.Second))}, nil
		}
	default:
		return nil, fmt.Errorf("unknown load %q", l.name)
	}
	ok = true
	return rig, nil
}

// startLoop starts httpclient -loop on cpu, sending GETs of path to base,
// adds it to rig's cleanup and sets rig.round: a round is a fixed number of
// requests (-http-client-requests), the duration asked for only bounds the
// wait.
func (b *bench) startLoop(ctx context.Context, rig *callRig, cpu int, base, path string, conns int) (*lineProc, error) {
	cli, err := startLineProc("httpclient -loop", []string{b.taskset, "-c", fmt.Sprint(cpu), b.calls.httpclient,
		"-http", base, "-loop", fmt.Sprint(b.o.httpLoop), "-loop-path", path, "-loop-conns", fmt.Sprint(conns)})
	if err != nil {
		return nil, err
	}
	rig.cleanup = append(rig.cleanup, func() { cli.stop(2 * time.Second) })
	if _, err := cli.next(ctx, "ready", 20*time.Second); err != nil {
		return nil, err
	}
	rig.round = func(ctx context.Context, d time.Duration) (callRound, error) {
		if _, err := io.WriteString(cli.in, "\n"); err != nil {
			return callRound{}, fmt.Errorf("ask httpclient for a round: %w", err)
		}
		line, err := cli.next(ctx, "ns_per_request ", 5*time.Minute)
		if err != nil {
			return callRound{}, err
		}
		return parseLoopLine(line, b.o.httpLoop)
	}
	return cli, nil
}

// parseRouterListening parses a router test service's first line,
// "listening ADDR ADMIN" (testdata/routers/common/record.go), and insists
// both are on loopback.
func parseRouterListening(line string) (addr, admin string, err error) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "listening" {
		return "", "", fmt.Errorf("router service says %q, want \"listening ADDR ADMIN\"", line)
	}
	for _, a := range f[1:] {
		if host, _, err := net.SplitHostPort(a); err != nil || !net.ParseIP(host).IsLoopback() {
			return "", "", fmt.Errorf("router service listens on %q, not on loopback", a)
		}
	}
	return f[1], f[2], nil
}

// checkRouted GETs url once and wants a 200.
func checkRouted(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("check the load's path: %w", err)
	}
	// Its own transport, closed after: the target keeps no extra connection.
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("check the load's path: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("check the load's path: GET %s answered %s, want 200", url, resp.Status)
	}
	return nil
}

// floorSites resolves the sites of probes in bin as obsd does: an entry's
// PUSHQ BP, every RET of a Returns site, every call to Calls of a Calls
// site; optional sites bin lacks are skipped, and sites attached only with
// a feature on (Site.When) unless when. The offsets come in the order of
// probes and their sites.
func floorSites(bin string, probes []*probe.Probe, when bool) ([]uint64, error) {
	insp, err := inspect.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", bin, err)
	}
	defer insp.Close()
	var offs []uint64
	for _, p := range probes {
		for _, s := range p.Sites {
			if s.When != "" && !when {
				continue // not attached unless its feature is on
			}
			var got []uint64
			switch {
			case s.Returns:
				got, err = insp.ReturnSites(s.Symbol)
			case s.Calls != "":
				got, err = insp.CallSites(s.Symbol, s.Calls)
			default:
				var off uint64
				off, err = insp.EntrySite(s.Symbol)
				got = []uint64{off}
			}
			if err != nil && s.Optional && inspect.ReasonOf(err) == inspect.ReasonSymbol {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("floor site %s of probe %s in %s: %w", s.Symbol, p.Name, bin, err)
			}
			offs = append(offs, got...)
		}
	}
	return offs, nil
}

// allObsdPrograms names every program of every obsd probe: when obsd
// attaches a probe the load does not exercise (grpcapp links net/http),
// its runs still show in BPF runs/call.
func allObsdPrograms() map[string]bool {
	names := map[string]bool{}
	for _, p := range uprobes.Probes() {
		for _, s := range p.Sites {
			names[s.Program] = true
		}
	}
	return names
}

// callSample is one measured round of a call load.
type callSample struct {
	round     callRound
	runs      uint64
	runtime   time.Duration
	targetCPU time.Duration // the target's own CPU time during the round (schedstat)
	// progs are runs and run time by program name: where obsd's BPF time
	// per call goes, probe by probe.
	progs map[string]progCount
}

// callConfigs are the configurations of the call loads: no spans, the
// production-relevant and cheapest obsd setting, so that obsd's cost over
// the floor is the probes' (spans are measured on the HTTP server load).
// The HTTP and gRPC client loads also run with spans at 1%, with and
// without --propagate=tcp (one more site each: their own floor), and with
// --propagate=headers (the same sites); endpoint is the
// span receiver's.
func callConfigs(o options, endpoint string) []config {
	cs := []config{
		{name: "plain", label: "plain", kind: plain},
		{name: "floor", label: "floor (empty programs at the probes' sites)", kind: floorKind},
	}
	if o.obsd == "" {
		return cs
	}
	cs = append(cs, config{name: "obsd", label: "obsd (--traces none)", kind: obsdKind, traces: "none"})
	if !o.spans {
		return cs
	}
	env := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + endpoint, "OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_TRACES_SAMPLER=parentbased_traceidratio", fmt.Sprintf("OTEL_TRACES_SAMPLER_ARG=%g", sampleRatio)}
	clients := []string{"http-client", "grpc-client"}
	return append(cs,
		config{name: "obsd 1%", label: "obsd (OTLP, 1% sampled)", kind: obsdKind, traces: "otlp", ratio: sampleRatio,
			env: env, loads: clients},
		config{name: "floor tcp", label: "floor with --propagate=tcp's site", kind: floorKind, when: true,
			loads: clients, extraHits: 1},
		config{name: "obsd 1% tcp", label: "obsd (OTLP, 1% sampled, --propagate=tcp)", kind: obsdKind, traces: "otlp", ratio: sampleRatio,
			env: env, args: tcpArgs, loads: clients, floor: "floor tcp", extraHits: 1},
		// The header injector: HTTP/1.1 heads on the HTTP client load,
		// HTTP/2 frames (every message of the connection) on the gRPC one.
		config{name: "obsd 1% headers", label: "obsd (OTLP, 1% sampled, --propagate=headers)", kind: obsdKind, traces: "otlp", ratio: sampleRatio,
			env: env, args: []string{"--propagate=headers"}, loads: clients, floor: "floor tcp", extraHits: 1},
	)
}

// runCalls measures every call load, configurations round-robin in each
// round, a fresh target and peer per configuration and round.
func (b *bench) runCalls(ctx context.Context, loads []callLoad) (map[string]map[string][]callSample, error) {
	out := map[string]map[string][]callSample{}
	floors := map[string]*floorProbe{} // by load, then load + " when" with the When sites
	defer func() {
		for _, f := range floors {
			f.close()
		}
	}()
	names := allObsdPrograms()
	for _, l := range loads {
		out[l.name] = map[string][]callSample{}
		bin, err := b.calls.targetBin(l.name)
		if err != nil {
			return nil, err
		}
		for _, when := range []bool{false, true} {
			offs, err := floorSites(bin, l.probes, when)
			if err != nil {
				return nil, err
			}
			name := l.name
			if when {
				name += " when"
			}
			if floors[name], err = newFloorAt(bin, offs); err != nil {
				return nil, err
			}
			b.log.Info("floor sites", "load", l.name, "with When sites", when, "sites", len(offs))
		}
	}
	for r := 1; r <= b.o.rounds; r++ {
		for _, l := range loads {
			for _, c := range callConfigs(b.o, b.recv.endpoint) {
				if c.loads != nil && !slices.Contains(c.loads, l.name) {
					continue
				}
				fl := floors[l.name]
				if c.when {
					fl = floors[l.name+" when"]
				}
				b.log.Info("measuring calls", "round", r, "of", b.o.rounds, "load", l.name, "config", c.name)
				s, err := b.runCallConfig(ctx, l, c, fl, names, r)
				if err != nil {
					return nil, fmt.Errorf("round %d, %s, %s: %w", r, l.name, c.name, err)
				}
				out[l.name][c.name] = append(out[l.name][c.name], s)
			}
		}
	}
	return out, nil
}

func (b *bench) runCallConfig(ctx context.Context, l callLoad, c config, fl *floorProbe, names map[string]bool, round int) (callSample, error) {
	rig, err := b.startRig(ctx, l)
	if err != nil {
		return callSample{}, err
	}
	defer rig.close()
	var set *progSet
	switch c.kind {
	case floorKind:
		lk, err := fl.attach(rig.target.pid())
		if err != nil {
			return callSample{}, err
		}
		defer lk.Close()
		set = &progSet{progs: []*ebpf.Program{fl.prog}, names: []string{"floor_probe"}}
	case obsdKind:
		ob, _, err := startObsd(ctx, append(b.obsdArgv(), c.args...), obsdEnv(os.Environ(), c.env), c.traces, rig.target.pid())
		if err != nil {
			return callSample{}, err
		}
		defer ob.stop(5 * time.Second)
		var others []string
		set, others, err = obsdProgramsNamed(ob.pid(), names)
		if err != nil {
			return callSample{}, err
		}
		defer set.close()
		for _, o := range others {
			if !b.obsdOthers[o] {
				b.obsdOthers[o] = true
				b.note("%s: obsd also holds BPF program %s, not counted in BPF runs/call", l.name, o)
			}
		}
	}
	if b.o.warmup > 0 {
		if _, err := rig.round(ctx, b.o.warmup); err != nil {
			return callSample{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	var before, after counters
	if set != nil {
		if before, err = set.read(); err != nil {
			return callSample{}, err
		}
	}
	cpu0, err := procRunTime(rig.target.pid())
	if err != nil {
		return callSample{}, err
	}
	cr, err := rig.round(ctx, b.o.duration)
	if err != nil {
		return callSample{}, err
	}
	cpu1, err := procRunTime(rig.target.pid())
	if err != nil {
		return callSample{}, err
	}
	if set != nil {
		if after, err = set.read(); err != nil {
			return callSample{}, err
		}
	}
	if rig.target.exited() {
		return callSample{}, rig.target.failure("measure " + l.name)
	}
	s := callSample{round: cr, runs: after.runs - before.runs, runtime: after.runtime - before.runtime, targetCPU: cpu1 - cpu0,
		progs: after.since(before)}
	if cr.errors > 0 {
		b.note("round %d, %s, %s: %d of %d calls failed", round, l.name, c.name, cr.errors, cr.calls)
	}
	if set != nil {
		if msg, off := hitsOff(l.hits+c.extraHits, s.runs, cr.calls); off {
			b.note("round %d, %s, %s: %s", round, l.name, c.name, msg)
		}
	}
	b.log.Info("measured calls", "load", l.name, "config", c.name, "calls/s", fmt.Sprintf("%.0f", float64(cr.calls)/cr.elapsed.Seconds()),
		"runs/call", fmt.Sprintf("%.3f", float64(s.runs)/float64(cr.calls)),
		"targetCPU µs/call", fmt.Sprintf("%.2f", float64(s.targetCPU.Nanoseconds())/1e3/float64(cr.calls)))
	return s, nil
}

// hitsOff says whether runs BPF runs over calls calls stray more than 0.5%
// from hits per call, and how.
func hitsOff(hits int, runs uint64, calls int64) (string, bool) {
	h, want := float64(runs)/float64(calls), float64(hits)
	if h >= want*0.995 && h <= want*1.005 {
		return "", false
	}
	return fmt.Sprintf("%.3f BPF runs per call (%d runs, %d calls), want %d", h, runs, calls, hits), true
}

// parseLoads parses -loads, a comma-separated subset of knownLoads.
func parseLoads(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !isKnownLoad(f) {
			return nil, fmt.Errorf("-loads: unknown load %q; known: %s", f, strings.Join(knownLoads, ", "))
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-loads: no load named")
	}
	return out, nil
}

// knownLoads are -loads' names: the HTTP server load (wrk, fixed rate,
// spans) and the call loads, chi-server included.
var knownLoads = []string{"http-server", "grpc-server", "grpc-client", "http-client", "chi-server"}

func isKnownLoad(s string) bool {
	for _, k := range knownLoads {
		if k == s {
			return true
		}
	}
	return false
}
