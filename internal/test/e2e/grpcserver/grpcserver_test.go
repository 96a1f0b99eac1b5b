// Package grpcserver tests the gRPC server probe end to end: testdata/grpc's
// server built against a spread of grpc-go releases (and build flavours)
// runs under obsd while its own client sends a known mix of calls; obsd's
// rpc_server_call_duration_seconds must count exactly what the client
// tallied, and sampled spans must reach a real OTLP receiver.
package grpcserver

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

var builds *e2e.Builds

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obsd-e2e-grpc-")
	if err != nil {
		panic(err)
	}
	builds = e2e.NewBuilds(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// variant is one build of testdata/grpc.
type variant struct {
	grpc      string // grpc-go version
	toolchain string // GOTOOLCHAIN; "" is the Go running the tests
	stripped  bool   // -s -w: the offsets table is used
	pie       bool
	// external links with the C linker (cgo), as distributions build;
	// trimpath drops file system paths. Together: one variant.
	external bool
	// serveHTTP serves through (*grpc.Server).ServeHTTP behind net/http
	// (h2c), grpc-go's other server transport; the same binary.
	serveHTTP bool
	// traces is how obsd runs: "" exports every call as a span (each a
	// record), "none" metrics only (calls counted in the kernel, but
	// Unimplemented ones), "ratio" half the calls sampled (both at once,
	// merged into one series each).
	traces string
}

func (v variant) name() string {
	n := v.build()
	if v.serveHTTP {
		n += "-servehttp"
	}
	if v.traces != "" {
		n += "-traces-" + v.traces
	}
	return n
}

// obsdConfig returns the environment and arguments obsd runs with for v,
// beside the receiver's.
func (v variant) obsdConfig() (env, args []string) {
	switch v.traces {
	case "none":
		return nil, []string{"--traces", "none"}
	case "ratio":
		return []string{"OTEL_TRACES_SAMPLER=traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.5"}, []string{"--keep-slow=0", "--keep-errors=false"}
	}
	return nil, nil
}

// build names the build, apart from the transport it serves with.
func (v variant) build() string {
	n := "grpc" + v.grpc
	if v.toolchain != "" {
		n += "-" + v.toolchain
	}
	if v.stripped {
		n += "-stripped"
	}
	if v.pie {
		n += "-pie"
	}
	if v.external {
		n += "-external-trimpath"
	}
	return n
}

// grpcApp builds testdata/grpc (a module of its own) as v, with grpc-go
// at v.grpc, through the shared build cache, so that a build grpcclient's
// tests (or a later run) made is reused.
func grpcApp(t *testing.T, v variant) string {
	t.Helper()
	return builds.Program(t, e2e.Program{
		Name:      "grpcapp",
		Src:       filepath.Join(e2e.RepoRoot(), "testdata", "grpc"),
		Toolchain: v.toolchain,
		Flavour:   e2e.Flavour{Stripped: v.stripped, PIE: v.pie, External: v.external, Trimpath: v.external},
		Require:   []string{"google.golang.org/grpc " + v.grpc},
	})
}

// The spread: each side of the v1.69 rename (WriteStatus → writeStatus,
// ServerStream{*Stream}) and of the v1.77 layout change (Stream embedded by
// value), the newest release, ServeHTTP, and stripped builds (the offsets
// table) on each side of both changes, two of them with another Go than
// the one offsetgen built the table with (the fields obsd reads follow
// pointer-sized fields only, so the Go release does not move them).
// Each release and transport is also run in one of the three ways obsd
// reports calls: as records (spans), counted in the kernel (metrics
// only), or both at once.
var variants = []variant{
	{grpc: "v1.68.1", toolchain: "go1.22.12", stripped: true, traces: "none"},
	{grpc: "v1.69.4", stripped: true, traces: "ratio"},
	{grpc: "v1.76.0", stripped: true, pie: true, traces: "none"},
	{grpc: "v1.77.0", toolchain: "go1.27.3", stripped: true},
	{grpc: "v1.82.1", stripped: true, external: true, traces: "none"},
	{grpc: "v1.85.0", traces: "ratio"},
	{grpc: "v1.85.0", serveHTTP: true},
}

// codeNames are the semconv rpc.response.status_code values of the names
// grpc-go's codes.Code.String gives, written out here rather than taken
// from obsd.
var codeNames = map[string]string{
	"OK": "OK", "Canceled": "CANCELLED", "Unknown": "UNKNOWN", "InvalidArgument": "INVALID_ARGUMENT",
	"DeadlineExceeded": "DEADLINE_EXCEEDED", "NotFound": "NOT_FOUND", "AlreadyExists": "ALREADY_EXISTS",
	"PermissionDenied": "PERMISSION_DENIED", "ResourceExhausted": "RESOURCE_EXHAUSTED",
	"FailedPrecondition": "FAILED_PRECONDITION", "Aborted": "ABORTED", "OutOfRange": "OUT_OF_RANGE",
	"Unimplemented": "UNIMPLEMENTED", "Internal": "INTERNAL", "Unavailable": "UNAVAILABLE",
	"DataLoss": "DATA_LOSS", "Unauthenticated": "UNAUTHENTICATED",
}

// unknownService is the method of the mix no service serves: the server
// rejects it itself, and semconv calls its method _OTHER.
const unknownService = "/no.such.Service/Method"

type key struct{ method, code string }

// deadlineAsOne is a copy of a client's tally in which Canceled counts as
// DeadlineExceeded: the call whose deadline expires while the server sleeps
// ends either way, by which of the client's deadline and the server's
// answer to its own ending context wins (seen without obsd on a loaded
// machine), so two runs may differ there and nowhere else.
func deadlineAsOne(tally map[string]map[string]int) map[string]map[string]int {
	out := map[string]map[string]int{}
	for m, codes := range tally {
		out[m] = map[string]int{}
		for c, n := range codes {
			if c == "Canceled" {
				c = "DeadlineExceeded"
			}
			out[m][c] += n
		}
	}
	return out
}

// expected turns the client's tally into the series obsd must show. A
// client-side DeadlineExceeded is a call the server saw its context end
// for: it wrote DEADLINE_EXCEEDED if its own deadline timer fired first,
// CANCELLED if the client's RST_STREAM arrived first. Those calls are
// returned apart, as a count per method, for the two to add up to.
func expected(t *testing.T, tally map[string]map[string]int) (map[key]int, map[string]int) {
	t.Helper()
	want, deadline := map[key]int{}, map[string]int{}
	for full, codes := range tally {
		method := strings.TrimPrefix(full, "/")
		if full == unknownService {
			method = "_OTHER"
		}
		for c, n := range codes {
			if c == "DeadlineExceeded" {
				deadline[method] += n
				continue
			}
			name, ok := codeNames[c]
			if !ok {
				t.Fatalf("client tallied an unknown code %q", c)
			}
			want[key{method, name}] += n
		}
	}
	return want, deadline
}

// observed reads rpc_server_call_duration_seconds counts of pid.
func observed(f map[string]*dto.MetricFamily, pid int) map[key]int {
	got := map[key]int{}
	fam := f["rpc_server_call_duration_seconds"]
	if fam == nil {
		return got
	}
	for _, m := range fam.GetMetric() {
		l := e2e.Labels(m)
		if l["service_instance_id"] != e2e.InstanceID(pid) || l["rpc_system_name"] != "grpc" {
			continue
		}
		got[key{l["rpc_method"], l["rpc_response_status_code"]}] += int(m.GetHistogram().GetSampleCount())
	}
	return got
}

func total(m map[key]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

const rounds = 4

func TestCallsCountedExactly(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, v := range variants {
		t.Run(v.name(), func(t *testing.T) {
			if v.external {
				e2e.RequireTool(t, "gcc")
			}
			bin := grpcApp(t, v)
			args := []string{"-listen", "127.0.0.1:0"}
			if v.serveHTTP {
				args = append(args, "-servehttp")
			}
			srv := e2e.Start(t, bin, []string{"OTEL_SERVICE_NAME=grpc-" + v.name()}, args...)
			addr := strings.TrimPrefix(srv.First, "listening ")
			// The client's view without obsd, to compare with its view under it.
			baseline := callMix(t, bin, addr)
			recv := e2e.StartReceiver(t)
			env, args := v.obsdConfig()
			o := e2e.StartObsd(t, obsdBin, append([]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
				"OTEL_EXPORTER_OTLP_INSECURE=true",
				"OTEL_BSP_SCHEDULE_DELAY=100",
			}, env...), append(args, "--pid", strconv.Itoa(srv.PID()))...)
			o.WaitScrape(t, 20*time.Second, "the server to be instrumented", func(f map[string]*dto.MetricFamily) bool {
				return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
			})
			// The start, and an end per status-write method the binary has
			// (grpc-go's HTTP/2 server's; ServeHTTP's if linked in).
			if n := e2e.ProbeLinks(t, "rpc_server", srv.PID()); n < 2 || n > 3 {
				t.Fatalf("%d rpc_server probe links, want 2 or 3 (start and ends)", n)
			}

			tally := callMix(t, bin, addr)
			if !reflect.DeepEqual(deadlineAsOne(tally), deadlineAsOne(baseline)) {
				t.Errorf("the client saw %v under obsd, %v without", tally, baseline)
			}
			want, deadline := expected(t, tally)
			calls := total(want)
			for _, n := range deadline {
				calls += n
			}
			o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d calls", calls), func(f map[string]*dto.MetricFamily) bool {
				return total(observed(f, srv.PID())) >= calls
			})
			time.Sleep(300 * time.Millisecond) // anything extra would show now
			scrape := o.Scrape(t)
			got := observed(e2e.Families(t, scrape), srv.PID())
			for method, n := range deadline {
				d, c := got[key{method, "DEADLINE_EXCEEDED"}], got[key{method, "CANCELLED"}]
				if d+c != n || want[key{method, "CANCELLED"}] != 0 {
					t.Errorf("%s: %d DEADLINE_EXCEEDED + %d CANCELLED, want %d in all (the client's deadlines)", method, d, c, n)
				}
				delete(got, key{method, "DEADLINE_EXCEEDED"})
				delete(got, key{method, "CANCELLED"})
			}
			for k, n := range want {
				if got[k] != n {
					t.Errorf("%s %s: counted %d, client tallied %d", k.method, k.code, got[k], n)
				}
				delete(got, k)
			}
			for k, n := range got {
				t.Errorf("%s %s: counted %d, client tallied none", k.method, k.code, n)
			}
			if t.Failed() {
				t.Logf("client tally: %v", tally)
			}
			// Every start met its end and no end came unmatched: one start
			// and one end hit per call, whatever the messages.
			fams := e2e.Families(t, scrape)
			probeName := map[string]string{"probe": "google.golang.org/grpc/server"}
			if n := e2e.Sum(fams, "obsd_events_lost_total", probeName); n != 0 {
				t.Errorf("obsd_events_lost_total of the gRPC server probe = %v, want 0", n)
			}
			if n := e2e.Sum(fams, "obsd_probe_anomalies_total", probeName); n != 0 {
				t.Errorf("obsd_probe_anomalies_total of the gRPC server probe = %v, want 0", n)
			}
			e2e.Promtool(t, scrape)
			if v.traces == "" {
				checkSpans(t, recv.WaitSpans(t, calls, 15*time.Second), want)
			}
		})
	}
}

// callMix runs the client's mix against addr and returns its tally.
func callMix(t *testing.T, bin, addr string) map[string]map[string]int {
	t.Helper()
	out, err := exec.Command(bin, "-call", addr, "-rounds", strconv.Itoa(rounds)).Output()
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	var tally map[string]map[string]int
	if err := json.Unmarshal(out, &tally); err != nil {
		t.Fatalf("client tally %q: %v", out, err)
	}
	return tally
}

// checkSpans: one SERVER span per call (the default sampler keeps all),
// named and attributed per the RPC conventions.
func checkSpans(t *testing.T, spans []e2e.Span, want map[key]int) {
	t.Helper()
	byName := map[string]int{}
	for _, s := range spans {
		if s.Attr("http.request.method") != "" {
			// ServeHTTP: net/http's server sees the connection first (the
			// h2c preface is an HTTP/1 request it hands over): its span.
			continue
		}
		if s.GetKind().String() != "SPAN_KIND_SERVER" || s.Attr("rpc.system.name") != "grpc" {
			t.Errorf("span %q: kind %v, rpc.system.name %q", s.GetName(), s.GetKind(), s.Attr("rpc.system.name"))
			continue
		}
		byName[s.GetName()]++
		method := s.Attr("rpc.method")
		code := s.Attr("rpc.response.status_code")
		switch {
		case method == "_OTHER":
			if s.GetName() != "grpc" || s.Attr("rpc.method_original") != strings.TrimPrefix(unknownService, "/") {
				t.Errorf("unknown-service span %q: rpc.method_original %q", s.GetName(), s.Attr("rpc.method_original"))
			}
		case s.GetName() != method:
			t.Errorf("span %q has rpc.method %q", s.GetName(), method)
		}
		// Server errors per the gRPC conventions; NOT_FOUND and ABORTED are
		// the client's doing.
		isErr := map[string]bool{"UNKNOWN": true, "DEADLINE_EXCEEDED": true, "UNIMPLEMENTED": true,
			"INTERNAL": true, "UNAVAILABLE": true, "DATA_LOSS": true}[code]
		if gotErr := s.GetStatus().GetCode().String() == "STATUS_CODE_ERROR"; gotErr != isErr {
			t.Errorf("span %q code %s: error status %v, want %v", s.GetName(), code, gotErr, isErr)
		}
		if isErr && s.Attr("error.type") != code {
			t.Errorf("span %q: error.type %q, want %q", s.GetName(), s.Attr("error.type"), code)
		}
	}
	wantByName := map[string]int{}
	for k, n := range want {
		name := k.method
		if name == "_OTHER" {
			name = "grpc"
		}
		wantByName[name] += n
	}
	for name, n := range wantByName {
		// Deadline calls add spans to UnaryCall beyond want's.
		if byName[name] < n {
			t.Errorf("%d spans named %q, want at least %d", byName[name], name, n)
		}
	}
}

// A stripped binary of a grpc-go release the offsets table does not list
// has no DWARF to read offsets from: its gRPC server probe is refused, with
// one log line naming the version and
// obsd_instrumentation_errors_total{reason="unsupported_version"}, never
// attached with guessed offsets.
func TestUnlistedVersionRefused(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	v := variant{grpc: "v1.71.0", stripped: true}
	srv := e2e.Start(t, grpcApp(t, v), nil, "-listen", "127.0.0.1:0")
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", strconv.Itoa(srv.PID()))
	o.WaitScrape(t, 20*time.Second, "the refusal", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumentation_errors_total", map[string]string{"reason": "unsupported_version"}) >= 1
	})
	time.Sleep(500 * time.Millisecond)
	fams := e2e.Families(t, o.Scrape(t))
	if n := e2e.Sum(fams, "obsd_instrumentation_errors_total", map[string]string{"reason": "unsupported_version"}); n != 1 {
		t.Errorf("obsd_instrumentation_errors_total{reason=\"unsupported_version\"} = %v, want 1", n)
	}
	re := regexp.MustCompile(`reason=unsupported_version.*google\.golang\.org/grpc v1\.71\.0 is not in the offsets table`)
	if n := len(re.FindAllString(o.Log.String(), -1)); n != 1 {
		t.Errorf("%d log lines naming the version, want 1:\n%s", n, o.Log)
	}
	if n := e2e.ProbeLinks(t, "rpc_server", srv.PID()); n != 0 {
		t.Errorf("%d rpc_server probe links on a refused version", n)
	}
}
