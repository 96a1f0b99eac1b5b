package nethttp

import (
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

func instrumented(n float64) func(map[string]*dto.MetricFamily) bool {
	return func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == n
	}
}

// TestLateStartAndExit: obsd watches; a matching process started after it
// is instrumented within a second, and one that exits is forgotten with
// its probes released.
func TestLateStartAndExit(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srvBin := builds.HTTPServer(t, e2e.Variant{Name: "current"})
	o := e2e.StartObsd(t, obsdBin, nil, "--exe", "*/httpserver-current", "--traces", "none")
	o.WaitScrape(t, 5*time.Second, "first discovery", func(f map[string]*dto.MetricFamily) bool { return true })

	start := time.Now()
	srv := e2e.Start(t, srvBin, nil)
	o.WaitScrape(t, 5*time.Second, "the late process to be instrumented", instrumented(1))
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("instrumented %v after start, want within about a second", d)
	}
	get(t, "http://"+srv.First+"/hello", 7)
	o.WaitScrape(t, 5*time.Second, "7 requests", func(f map[string]*dto.MetricFamily) bool {
		return requestCount(f, srv.PID()) == 7
	})

	srv.Cmd.Process.Kill()
	srv.Cmd.Wait()
	o.WaitScrape(t, 5*time.Second, "the exited process to be released", instrumented(0))
	e2e.WaitNoProbeLinks(t, "http_server", srv.PID())
	o.Stop(t)
}

// TestExactUnderLoad sends 20,000 keep-alive requests from 16 clients and
// requires every one counted, none lost.
func TestExactUnderLoad(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srv := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), nil)
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(srv.PID()), "--traces", "none")
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))

	const workers, each = 16, 1250
	var failed atomic.Int64
	var wg sync.WaitGroup
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				resp, err := client.Get("http://" + srv.First + "/hello")
				if err != nil {
					failed.Add(1)
					continue
				}
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	tr.CloseIdleConnections()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d requests failed", n)
	}
	scrape := o.WaitScrape(t, 10*time.Second, "20000 requests", func(f map[string]*dto.MetricFamily) bool {
		return requestCount(f, srv.PID()) >= workers*each
	})
	time.Sleep(200 * time.Millisecond)
	fams := e2e.Families(t, o.Scrape(t))
	if n := requestCount(fams, srv.PID()); n != workers*each {
		t.Errorf("counted %v requests, want %d", n, workers*each)
	}
	if n := e2e.Sum(fams, "obsd_events_lost_total", nil); n != 0 {
		t.Errorf("obsd_events_lost_total = %v, want 0", n)
	}
	if n := e2e.Sum(fams, "http_server_active_requests", nil); n != 0 {
		t.Errorf("http_server_active_requests = %v after the load, want 0", n)
	}
	e2e.Promtool(t, scrape)
	o.Stop(t)
}

// TestTargetSurvives: a handler that panics, and obsd killed with SIGKILL,
// change nothing for the target: it keeps serving, the kernel drops the
// probes with obsd's file descriptors, and counting stays exact.
func TestTargetSurvives(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srv := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), nil)
	base := "http://" + srv.First
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(srv.PID()), "--traces", "none")
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))

	for i := 0; i < 3; i++ {
		if resp, err := http.Get(base + "/panic"); err == nil {
			resp.Body.Close()
			t.Fatalf("/panic answered %s; want the connection dropped", resp.Status)
		}
	}
	get(t, base+"/hello", 5)
	// The panics count too, as 500 (see TestRequestsThatNeverFinish).
	o.WaitScrape(t, 5*time.Second, "8 requests", func(f map[string]*dto.MetricFamily) bool {
		return requestCount(f, srv.PID()) == 8
	})
	time.Sleep(200 * time.Millisecond)
	if n := requestCount(e2e.Families(t, o.Scrape(t)), srv.PID()); n != 8 {
		t.Errorf("counted %v requests, want the 5 that completed and the 3 panics", n)
	}

	o.Cmd.Process.Kill()
	e2e.WaitNoProbeLinks(t, "http_server", srv.PID())
	get(t, base+"/hello", 3)
	if err := srv.Cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("target died: %v", err)
	}
}
