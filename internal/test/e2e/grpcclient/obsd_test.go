package grpcclient

// Tests of obsd as a whole on grpc-go clients. The expected numbers come from
// the client's own tally (grpcapp -call prints it) and from the spans a real
// OTLP receiver got; obsd's own counters never decide a pass.

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// specCodes maps the client's code names (grpc-go's codes.Code.String) to
// the gRPC specification's names, which rpc_response_status_code carries
// (grpc/doc/statuscodes.md).
var specCodes = map[string]string{
	"OK": "OK", "Canceled": "CANCELLED", "Unknown": "UNKNOWN", "InvalidArgument": "INVALID_ARGUMENT",
	"DeadlineExceeded": "DEADLINE_EXCEEDED", "NotFound": "NOT_FOUND", "AlreadyExists": "ALREADY_EXISTS",
	"PermissionDenied": "PERMISSION_DENIED", "ResourceExhausted": "RESOURCE_EXHAUSTED",
	"FailedPrecondition": "FAILED_PRECONDITION", "Aborted": "ABORTED", "OutOfRange": "OUT_OF_RANGE",
	"Unimplemented": "UNIMPLEMENTED", "Internal": "INTERNAL", "Unavailable": "UNAVAILABLE",
	"DataLoss": "DATA_LOSS", "Unauthenticated": "UNAUTHENTICATED",
}

const duration = "rpc_client_call_duration_seconds"

// versions spread over grpc-go's releases of the last two years and the
// internal renames between them (breadth-facts: transport.Stream split in
// v1.69, embedded by value in v1.77, headerFrame renamed in v1.82.1,
// processRPC in v1.84), each with a different Go; flavours ride on one
// version each.
var versions = []app{
	{Grpc: "v1.68.1", Toolchain: "go1.22.12"},
	{Grpc: "v1.69.4", Toolchain: "go1.23.12"},
	{Grpc: "v1.77.0", Toolchain: "go1.24.9"},
	{Grpc: "v1.82.1", Toolchain: "go1.25.14", Trimpath: true},
	{Grpc: "v1.85.0", PIE: true},
}

// TestClientCallsCounted runs grpcapp's call mix under obsd, against a live
// server and against a refused address, for each grpc-go version, and
// requires rpc_client_call_duration_seconds to count exactly what the client
// tallied per (method, code), with rpc_system_name, server_address and
// server_port as dialled. The server is not instrumented.
func TestClientCallsCounted(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for i, v := range versions {
		t.Run(v.name(), func(t *testing.T) {
			bin := grpcApp(t, v)
			srv := e2e.Start(t, bin, nil, "-listen", "127.0.0.1:0")
			addr := strings.TrimPrefix(srv.First, "listening ")
			for _, target := range []string{addr, "127.0.0.1:1"} {
				t.Run(target, func(t *testing.T) {
					cl := startClient(t, bin, target, 2)
					// Metrics only: every attempt counted in the kernel. Every
					// other release also samples half the attempts for spans
					// (records), which must add up with the kernel's counts.
					var env []string
					args := []string{"--pid", strconv.Itoa(cl.proc.PID()), "--traces", "none"}
					if i%2 == 1 {
						recv := e2e.StartReceiver(t)
						env = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint, "OTEL_EXPORTER_OTLP_INSECURE=true",
							"OTEL_TRACES_SAMPLER=traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.5"}
						args = []string{"--pid", strconv.Itoa(cl.proc.PID()), "--keep-slow=0", "--keep-errors=false"}
					}
					o := e2e.StartObsd(t, obsdBin, env, args...)
					waitLinks(t, cl.proc.PID())
					want := cl.run(t)
					inst := e2e.InstanceID(cl.proc.PID())
					host, port, _ := net.SplitHostPort(target)
					total := 0
					for _, codes := range want {
						for _, n := range codes {
							total += n
						}
					}
					scrape := o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d calls", total), func(f map[string]*dto.MetricFamily) bool {
						return e2e.Sum(f, duration, map[string]string{"service_instance_id": inst}) >= float64(total)
					})
					e2e.Promtool(t, scrape)
					fams := e2e.Families(t, scrape)
					for method, codes := range want {
						for code, n := range codes {
							labels := map[string]string{"service_instance_id": inst, "rpc_system_name": "grpc",
								"rpc_method": strings.TrimPrefix(method, "/"), "rpc_response_status_code": specCodes[code],
								"server_address": host, "server_port": port}
							if got := e2e.Sum(fams, duration, labels); got != float64(n) {
								t.Errorf("%s %s: obsd counted %v, the client %d", method, code, got, n)
							}
						}
					}
					if got := e2e.Sum(fams, duration, map[string]string{"service_instance_id": inst}); got != float64(total) {
						t.Errorf("obsd counted %v calls in all, the client %d:\n%s", got, total, scrape)
					}
				})
			}
		})
	}
}

// waitLinks waits until both client probe sites are attached to pid.
func waitLinks(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for e2e.ProbeLinks(t, "rpc_client", pid) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the gRPC client probe's 2 sites were not attached to pid %d", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStrippedClient: a stripped client has no DWARF, so the client probe's
// grpc-go offsets can come only from the generated table. Where the table
// knows them the calls are counted exactly; where it does not, the probe is
// refused for that binary, counted in obsd_instrumentation_errors_total
// with its reason and never attached with guessed offsets, and the client
// runs as it would without obsd.
func TestStrippedClient(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	v := versions[len(versions)-1]
	v.PIE, v.Stripped = false, true
	bin := grpcApp(t, v)
	srv := e2e.Start(t, bin, nil, "-listen", "127.0.0.1:0")
	addr := strings.TrimPrefix(srv.First, "listening ")
	cl := startClient(t, bin, addr, 1)
	pid := cl.proc.PID()
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", strconv.Itoa(pid), "--traces", "none")
	refused := func(f map[string]*dto.MetricFamily) float64 {
		return e2e.Sum(f, "obsd_instrumentation_errors_total", map[string]string{"reason": "offsets_unknown"}) +
			e2e.Sum(f, "obsd_instrumentation_errors_total", map[string]string{"reason": "unsupported_version"})
	}
	o.WaitScrape(t, 20*time.Second, "the client probe attached or refused", func(f map[string]*dto.MetricFamily) bool {
		return refused(f) > 0 || e2e.ProbeLinks(t, "rpc_client", pid) == 2
	})
	attached := e2e.ProbeLinks(t, "rpc_client", pid) == 2
	want := cl.run(t)
	total := 0
	for _, codes := range want {
		for _, n := range codes {
			total += n
		}
	}
	if total != 11 {
		t.Fatalf("the client made %d calls, want the mix's 11: %v", total, want)
	}
	inst := e2e.InstanceID(pid)
	if !attached {
		t.Logf("the table does not cover this grpc-go; refused:\n%s", o.Log)
		if n := e2e.ProbeLinks(t, "rpc_client", pid); n != 0 {
			t.Errorf("%d client probe links on a refused binary", n)
		}
		fams := e2e.Families(t, o.Scrape(t))
		if got := e2e.Sum(fams, duration, map[string]string{"service_instance_id": inst}); got != 0 {
			t.Errorf("a refused client counted %v calls", got)
		}
		if !strings.Contains(o.Log.String(), "google.golang.org/grpc") {
			t.Errorf("the refusal's log does not name grpc-go:\n%s", o.Log)
		}
		return
	}
	o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d calls", total), func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, duration, map[string]string{"service_instance_id": inst}) == float64(total)
	})
}
