package httpclient

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestDefaultPortInKernel: a URL without a port ("http://127.0.0.2/ok")
// has server_port from its scheme (80). Counted in the kernel (metrics
// only), the scheme travels in the series' name: a wrong one would label
// these requests 443, or none. The other tests' servers listen on random
// ports, so every URL there carries its own.
func TestDefaultPortInKernel(t *testing.T) {
	e2e.RequireRoot(t)
	// Port 80 needs root; 127.0.0.2 keeps clear of anything on 127.0.0.1.
	ln, err := net.Listen("tcp", "127.0.0.2:80")
	if err != nil {
		t.Fatalf("listen on 127.0.0.2:80 (a loopback address this test needs for itself): %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	const n = 40
	bin := builds.TestdataProgram(t, "httpclient", e2e.Variant{Name: "current"})
	cmd := execCommand(bin, "-http", "http://127.0.0.2", "-loop", strconv.Itoa(n), "-loop-path", "/ok")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	p := e2e.StartCmd(t, cmd)
	o := e2e.StartObsd(t, builds.Obsd(t), nil, "--pid", strconv.Itoa(p.PID()), "--traces", "none")
	o.WaitScrape(t, 20*time.Second, "the client to be instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
	})
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.Out.String(), "ns_per_request") {
		if time.Now().After(deadline) {
			t.Fatalf("the client did not finish its %d requests:\n%s", n, p.Out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	inst := e2e.InstanceID(p.PID())
	want := map[string]string{"service_instance_id": inst, "server_address": "127.0.0.2", "server_port": "80",
		"http_request_method": "GET", "http_response_status_code": "200"}
	scrape := o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d requests", n), func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "http_client_request_duration_seconds", map[string]string{"service_instance_id": inst}) >= n
	})
	fams := e2e.Families(t, scrape)
	if got := e2e.Sum(fams, "http_client_request_duration_seconds", want); got != n {
		t.Errorf("%v requests labelled server_address 127.0.0.2, server_port 80; the client sent %d:\n%s", got, n, scrape)
	}
	if got := e2e.Sum(fams, "http_client_request_duration_seconds", map[string]string{"service_instance_id": inst}); got != n {
		t.Errorf("%v requests in all, the client sent %d", got, n)
	}
}
