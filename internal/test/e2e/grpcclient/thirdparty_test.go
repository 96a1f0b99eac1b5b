package grpcclient

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// Third-party gRPC programs from the module proxy, built as `go install`
// builds them (DWARF kept): grpcurl's test server (interop TestService
// with reflection) and the ghz load tool, which reports its own tally.
const (
	testServerPkg = "github.com/fullstorydev/grpcurl/internal/testing/cmd/testserver@v1.9.4"
	ghzPkg        = "github.com/bojand/ghz/cmd/ghz@v0.120.0"
)

// ghzReport is the part of ghz's JSON report the test reads: its own count
// of calls by status code name (grpc-go's, e.g. "OK", "Unimplemented").
type ghzReport struct {
	Count                  int            `json:"count"`
	StatusCodeDistribution map[string]int `json:"statusCodeDistribution"`
}

// TestThirdPartyGRPC runs ghz against grpcurl's test server, both under
// obsd, and compares obsd's server and client series with ghz's own
// report. ghz calls as soon as it starts, so it is started stopped at its
// first instruction and resumed once obsd has instrumented it.
func TestThirdPartyGRPC(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srvBin, ghz := builds.GoInstall(t, testServerPkg), builds.GoInstall(t, ghzPkg)
	srv := e2e.Start(t, srvBin, nil, "-q")
	addr, ok := strings.CutPrefix(srv.First, "Listening on ")
	if !ok {
		t.Fatalf("test server said %q", srv.First)
	}
	// The test server fails a call with the code in its fail-early
	// metadata (grpcurl's internal/testing).
	runs := []struct {
		method  string // full method as ghz calls it
		meta    string
		n       int
		code    string // ghz's (grpc-go's) name, and semconv's
		semconv string
	}{
		{"testing.TestService/EmptyCall", "{}", 60, "OK", "OK"},
		{"testing.TestService/UnaryCall", `{"fail-early":"5"}`, 15, "NotFound", "NOT_FOUND"},
	}
	type started struct {
		p   *e2e.Stopped
		out *bytes.Buffer
	}
	var clients []started
	args := []string{"--pid", strconv.Itoa(srv.PID()), "--traces", "none"}
	for _, r := range runs {
		var out bytes.Buffer
		cmd := exec.Command(ghz, "--insecure", "--call", r.method, "-m", r.meta, "-n", strconv.Itoa(r.n), "-c", "4", "--format=json", addr)
		cmd.Stdout = &out
		cmd.Stderr = os.Stderr
		p := e2e.StartStopped(t, cmd)
		clients = append(clients, started{p, &out})
		args = append(args, "--pid", strconv.Itoa(p.PID()))
	}
	o := e2e.StartObsd(t, obsdBin, nil, args...)
	o.WaitScrape(t, 30*time.Second, "server and clients instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == float64(1+len(runs))
	})
	reports := make([]ghzReport, len(runs))
	for i, c := range clients {
		c.p.Resume(t)
		if err := c.p.Cmd.Wait(); err != nil {
			t.Fatalf("ghz %s: %v\n%s", runs[i].method, err, c.out)
		}
		if err := json.Unmarshal(c.out.Bytes(), &reports[i]); err != nil {
			t.Fatalf("ghz report: %v\n%s", err, c.out)
		}
		if got := reports[i].StatusCodeDistribution[runs[i].code]; got != runs[i].n || reports[i].Count != runs[i].n {
			t.Fatalf("ghz %s: %v, want %d × %s", runs[i].method, reports[i].StatusCodeDistribution, runs[i].n, runs[i].code)
		}
	}
	series := func(f map[string]*dto.MetricFamily, name, instance, method, code string) float64 {
		return e2e.Sum(f, name, map[string]string{"service_instance_id": instance, "rpc_method": method, "rpc_response_status_code": code})
	}
	srvInst := e2e.InstanceID(srv.PID())
	fams := e2e.Families(t, o.WaitScrape(t, 10*time.Second, "every call on both sides", func(f map[string]*dto.MetricFamily) bool {
		for i, r := range runs {
			if series(f, "rpc_server_call_duration_seconds", srvInst, r.method, r.semconv) != float64(reports[i].StatusCodeDistribution[r.code]) {
				return false
			}
		}
		return true
	}))
	time.Sleep(300 * time.Millisecond)
	fams = e2e.Families(t, o.Scrape(t))
	for i, r := range runs {
		want := float64(reports[i].StatusCodeDistribution[r.code])
		if got := series(fams, "rpc_server_call_duration_seconds", srvInst, r.method, r.semconv); got != want {
			t.Errorf("server %s %s: obsd counted %v, ghz %v", r.method, r.semconv, got, want)
		}
		// ghz's process has exited; its series stay for --keep-exited.
		inst := ""
		for _, m := range fams[duration].GetMetric() {
			l := e2e.Labels(m)
			if l["rpc_method"] == r.method && strings.Contains(l["service_instance_id"], ":"+strconv.Itoa(clients[i].p.PID())+":") {
				inst = l["service_instance_id"]
			}
		}
		if got := series(fams, duration, inst, r.method, r.semconv); got != want {
			t.Errorf("client %s %s: obsd counted %v, ghz %v", r.method, r.semconv, got, want)
		}
	}
}
