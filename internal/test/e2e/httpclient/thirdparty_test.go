package httpclient

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// vegetaPkg is a real third-party HTTP load tool, installed from the module
// proxy as `go install` builds it; its report is the client's own tally.
const vegetaPkg = "github.com/tsenart/vegeta/v12@v12.13.0"

// TestThirdPartyHTTPClient attacks a loopback server with vegeta under obsd
// (started stopped at its first instruction and resumed once instrumented,
// since it sends at once) and compares obsd's http_client series with
// vegeta's own report, status by status.
func TestThirdPartyHTTPClient(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	vegeta := builds.GoInstall(t, vegetaPkg)
	srv := httptest.NewServer(handler())
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	targets := filepath.Join(dir, "targets")
	var b strings.Builder
	for _, path := range []string{"/ok", "/status/404", "/status/503"} {
		fmt.Fprintf(&b, "GET %s%s\n", srv.URL, path)
	}
	if err := os.WriteFile(targets, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	results := filepath.Join(dir, "results.bin")
	attack := e2e.StartStopped(t, exec.Command(vegeta, "attack", "-targets", targets, "-rate", "90", "-duration", "1s", "-output", results))
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", strconv.Itoa(attack.PID()), "--traces", "none")
	o.WaitScrape(t, 20*time.Second, "vegeta instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
	})
	inst := instance(attack.PID())
	attack.Resume(t)
	if err := attack.Cmd.Wait(); err != nil {
		t.Fatalf("vegeta attack: %v", err)
	}
	out, err := exec.Command(vegeta, "report", "-type=json", results).Output()
	if err != nil {
		t.Fatalf("vegeta report: %v", err)
	}
	var report struct {
		Requests    int            `json:"requests"`
		StatusCodes map[string]int `json:"status_codes"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("vegeta report: %v\n%s", err, out)
	}
	// vegeta's own tally is the truth: on a busy host its pacer may fall
	// behind and send fewer than 90 within the second (88 was seen), which
	// changes nothing for the comparison, as long as enough were sent and
	// every one was answered.
	if report.Requests < 60 || report.StatusCodes["0"] != 0 {
		t.Fatalf("vegeta sent %d requests, %v by status; want at least 60 of 90, all answered", report.Requests, report.StatusCodes)
	}
	byStatus := func(f map[string]*dto.MetricFamily) map[string]int {
		got := map[string]int{}
		for _, m := range f["http_client_request_duration_seconds"].GetMetric() {
			if l := e2e.Labels(m); l["service_instance_id"] == inst {
				got[l["http_response_status_code"]] += int(e2e.Value(m))
			}
		}
		return got
	}
	fams := e2e.Families(t, o.WaitScrape(t, 10*time.Second, "every request", func(f map[string]*dto.MetricFamily) bool {
		n := 0
		for _, c := range byStatus(f) {
			n += c
		}
		return n >= report.Requests
	}))
	if got := byStatus(fams); fmt.Sprint(got) != fmt.Sprint(report.StatusCodes) {
		t.Errorf("obsd counted %v by status, vegeta reported %v", got, report.StatusCodes)
	}
}
