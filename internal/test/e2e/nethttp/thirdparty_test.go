package nethttp

import (
	"fmt"
	"net"
	"net/http"
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

// natsVersion is a real third-party Go server with a net/http monitoring
// endpoint, installed from the module proxy.
const natsVersion = "github.com/nats-io/nats-server/v2@v2.15.2"

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never answered", url)
}

func get(t *testing.T, url string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp.Body.Close()
	}
}

// TestThirdPartyServer counts requests to NATS's monitoring endpoint
// exactly, selected by the port it listens on.
func TestThirdPartyServer(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	nats := builds.GoInstall(t, natsVersion) // named nats-server, the service name below
	mon := freePort(t)
	cmd := exec.Command(nats, "-a", "127.0.0.1", "-p", "-1", "-m", strconv.Itoa(mon))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	base := fmt.Sprintf("http://127.0.0.1:%d", mon)
	waitHTTP(t, base+"/healthz")

	o := e2e.StartObsd(t, obsdBin, nil, "--port", strconv.Itoa(mon), "--traces", "none")
	o.WaitScrape(t, 10*time.Second, "nats-server to be instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
	})
	want := map[string]int{"/varz": 25, "/healthz": 17, "/connz": 9}
	for path, n := range want {
		get(t, base+path, n)
	}
	scrape := o.WaitScrape(t, 10*time.Second, "51 requests", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "http_server_request_duration_seconds", map[string]string{"service_name": "nats-server"}) >= 51
	})
	time.Sleep(300 * time.Millisecond)
	scrape = o.Scrape(t)
	fams := e2e.Families(t, scrape)
	for path, n := range want {
		got := e2e.Sum(fams, "http_server_request_duration_seconds", map[string]string{
			"service_name": "nats-server", "http_route": path, "http_request_method": "GET", "http_response_status_code": "200"})
		if got != float64(n) {
			t.Errorf("%s counted %v times, want %d", path, got, n)
		}
	}
	if total := e2e.Sum(fams, "http_server_request_duration_seconds", nil); total != 51 {
		t.Errorf("%v requests counted in all, want 51", total)
	}
	e2e.Promtool(t, scrape)
	o.Stop(t)
}

// TestOldGoRefused points obsd at Debian's prometheus, built with Go 1.19:
// obsd refuses it once with a clear reason and it keeps serving.
func TestOldGoRefused(t *testing.T) {
	e2e.RequireRoot(t)
	bin := e2e.RequireTool(t, "prometheus") // Debian's package, built with Go 1.19
	obsdBin := builds.Obsd(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	healthy := fmt.Sprintf("http://127.0.0.1:%d/-/healthy", port)
	waitHTTP(t, healthy)

	o := e2e.StartObsd(t, obsdBin, nil, "--pid", strconv.Itoa(cmd.Process.Pid), "--traces", "none")
	o.WaitScrape(t, 10*time.Second, "the refusal to be counted", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumentation_errors_total", map[string]string{"reason": "go_version_unsupported"}) == 1
	})
	get(t, healthy, 5)
	time.Sleep(time.Second) // several discovery scans: still one refusal
	fams := e2e.Families(t, o.Scrape(t))
	if n := e2e.Sum(fams, "obsd_instrumentation_errors_total", nil); n != 1 {
		t.Errorf("obsd_instrumentation_errors_total = %v, want 1", n)
	}
	if n := e2e.Sum(fams, "obsd_instrumented_processes", nil); n != 0 {
		t.Errorf("obsd_instrumented_processes = %v, want 0", n)
	}
	if code, body := o.Get(t, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s; a refused target must not make obsd unready", code, body)
	}
	o.Stop(t)
	if !strings.Contains(o.Log.String(), "go1.19") {
		t.Errorf("obsd's log does not say why (go1.19):\n%s", o.Log)
	}
}
