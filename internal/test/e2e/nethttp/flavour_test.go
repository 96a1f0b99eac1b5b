package nethttp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

func flavourName(toolchain string) string {
	if toolchain == "" {
		return "current"
	}
	return strings.Join(strings.Split(toolchain, ".")[:2], ".")
}

// countExactly instruments srv by PID and requires the known mix to be
// counted exactly, answered as without obsd, and traced once per request.
func countExactly(t *testing.T, obsdBin string, srv *e2e.Proc, service string, noPatterns bool) {
	t.Helper()
	baseline := send(t, srv.First)
	recv := e2e.StartReceiver(t)
	o := e2e.StartObsd(t, obsdBin, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}, "--pid", itoa(srv.PID()))
	o.WaitScrape(t, 20*time.Second, "the server to be instrumented", instrumented(1))
	got := send(t, srv.First)
	o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d requests", total()), func(f map[string]*dto.MetricFamily) bool {
		return requestCount(f, srv.PID()) >= float64(total())
	})
	time.Sleep(300 * time.Millisecond) // anything extra would show now
	fams := e2e.Families(t, o.Scrape(t))
	checkCounts(t, fams, srv.PID(), service, noPatterns)
	checkResponses(t, baseline, got)
	checkSpans(t, recv.WaitSpans(t, total(), 15*time.Second), service, noPatterns)
	o.Stop(t)
}

// Distributions build with cgo and as PIE, which makes the Go linker hand
// over to the C linker: for Go 1.21–1.24 the line table is then in
// .data.rel.ro.gopclntab. Every supported toolchain's externally linked,
// stripped PIE is counted exactly.
func TestExternalPIECountedExactly(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, tc := range e2e.Toolchains {
		v := e2e.Variant{Name: flavourName(tc) + "-ext-pie-stripped", Toolchain: tc, External: true, PIE: true, Stripped: true}
		t.Run(v.Name, func(t *testing.T) {
			srv := e2e.Start(t, builds.HTTPServer(t, v), []string{"OTEL_SERVICE_NAME=shop-" + v.Name})
			countExactly(t, obsdBin, srv, "shop-"+v.Name, strings.HasPrefix(tc, "go1.21."))
		})
	}
}

// pgoToolchains are the toolchains whose PGO builds TestPGOCountedOrRefused
// runs: one per behaviour of the PGO inliner seen with profiles in which the
// server path is hot (2026-11, the profile differs from run to run):
// Go 1.21, the first PGO release, left every probed function out of line
// (counted); Go 1.22 and 1.23 inlined finishRequest into (*conn).serve beside
// its out-of-line copy (refused); Go 1.25 inlined (*conn).close everywhere,
// leaving no out-of-line copy (refused: that was once reported as a missing
// symbol); Go 1.27 is the newest inliner. The inline tree obsd reads has one
// layout in every supported version, and internal/inspect checks it against
// DWARF, so the versions left out (1.23, 1.24, 1.26) would repeat these cases
// at the cost of a PGO compilation of the standard library each.
var pgoToolchains = []string{"go1.21.13", "go1.22.12", "go1.25.14", "go1.27.3"}

// A server built with profile-guided optimisation may get a probed function
// inlined into its caller while an out-of-line copy survives: attaching would
// succeed and count nothing. PGO builds (pgoToolchains), with a profile in
// which the server path is hot, are either counted exactly or refused
// visibly: one log line naming the function and its caller, and
// obsd_instrumentation_errors_total{reason="inlined"}.
func TestPGOCountedOrRefused(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	refusedRE := regexp.MustCompile(`msg="not instrumenting process[^"]*".*reason=inlined.*net/http\.\S+ inlined into net/http\.`)
	for _, tc := range pgoToolchains {
		v := e2e.Variant{Name: flavourName(tc) + "-pgo", Toolchain: tc, PGO: true}
		t.Run(v.Name, func(t *testing.T) {
			srv := e2e.Start(t, builds.HTTPServer(t, v), []string{"OTEL_SERVICE_NAME=shop-" + v.Name})
			o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(srv.PID()))
			var refused bool
			o.WaitScrape(t, 20*time.Second, "the server to be instrumented or refused", func(f map[string]*dto.MetricFamily) bool {
				refused = e2e.Sum(f, "obsd_instrumentation_errors_total", map[string]string{"reason": "inlined"}) == 1
				return refused || e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
			})
			if refused {
				time.Sleep(200 * time.Millisecond)
				if n := len(refusedRE.FindAllString(o.Log.String(), -1)); n != 1 {
					t.Errorf("%d log lines refusing the inlined site, want 1:\n%s", n, o.Log)
				}
				if n := e2e.ProbeLinks(t, "http_server", srv.PID()); n != 0 {
					t.Errorf("%d probe links on a refused process", n)
				}
				t.Logf("refused: %s", refusedRE.FindString(o.Log.String()))
				return
			}
			o.Stop(t)
			countExactly(t, obsdBin, srv, "shop-"+v.Name, strings.HasPrefix(tc, "go1.21."))
		})
	}
}

// A corrupt executable (here a section header claiming a 1 TiB line table,
// which the kernel ignores, so the server runs) is refused with a reason, and
// obsd keeps running: a healthy server selected alongside is counted exactly.
func TestCorruptExecutableRefused(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	v := e2e.Variant{Name: "stripped", Stripped: true}
	good := builds.HTTPServer(t, v)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	shoff, shentsize := le.Uint64(data[0x28:]), uint64(le.Uint16(data[0x3a:]))
	patched := false
	for i, s := range f.Sections {
		if s.Name == ".gopclntab" {
			le.PutUint64(data[shoff+uint64(i)*shentsize+0x20:], 1<<40) // sh_size
			patched = true
		}
	}
	if !patched {
		t.Fatal("no .gopclntab section to patch")
	}
	bad := filepath.Join(t.TempDir(), "httpserver-corrupt")
	if err := os.WriteFile(bad, data, 0o755); err != nil {
		t.Fatal(err)
	}
	badSrv := e2e.Start(t, bad, nil)
	goodSrv := e2e.Start(t, good, []string{"OTEL_SERVICE_NAME=healthy"})
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(badSrv.PID()), "--pid", itoa(goodSrv.PID()))
	o.WaitScrape(t, 20*time.Second, "one refusal and one instrumented process", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumentation_errors_total", map[string]string{"reason": "exe_corrupt"}) == 1 &&
			e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
	})
	re := regexp.MustCompile(`msg="not instrumenting process[^"]*" pid=` + itoa(badSrv.PID()) + ` reason=exe_corrupt .*gopclntab`)
	if n := len(re.FindAllString(o.Log.String(), -1)); n != 1 {
		t.Errorf("%d log lines refusing the corrupt executable, want 1:\n%s", n, o.Log)
	}
	send(t, goodSrv.First)
	o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d requests", total()), func(f map[string]*dto.MetricFamily) bool {
		return requestCount(f, goodSrv.PID()) >= float64(total())
	})
	time.Sleep(300 * time.Millisecond)
	checkCounts(t, e2e.Families(t, o.Scrape(t)), goodSrv.PID(), "healthy", false)
	if code, _ := o.Get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz answered %d after the refusal", code)
	}
	o.Stop(t)
}
