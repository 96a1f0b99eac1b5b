package nethttp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

var builds *e2e.Builds

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obsd-e2e-")
	if err != nil {
		panic(err)
	}
	builds = e2e.NewBuilds(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// call is one request of the known mix and the labels it must be counted under.
type call struct {
	method, path, body string
	n                  int
	status             int
	// route with and without ServeMux patterns (Go 1.21).
	route, route121 string
}

var mix = []call{
	{"GET", "/hello", "", 60, 200, "/hello", "/hello"},
	{"GET", "/items/%d", "", 40, 200, "/items/{id}", "/items/{param}"},
	{"GET", "/status/500", "", 12, 500, "/status/{code}", "/status/{param}"},
	{"GET", "/status/404", "", 8, 404, "/status/{code}", "/status/{param}"},
	{"POST", "/echo", "ping", 15, 200, "/echo", "/echo"},
	{"GET", "/empty", "", 5, 200, "/empty", "/empty"},
	{"GET", "/nope/42", "", 6, 404, "/nope/{param}", "/nope/{param}"},
	{"GET", "/dyn/%d", "", 5, 200, "/dyn/{name}", "/dyn/{param}"},
	{"PURGE", "/hello", "", 4, 200, "/hello", "/hello"},
}

// notLiteral counts the requests of the mix that no pattern written as a
// literal routed: /nope (unrouted) and /dyn (pattern built at run time).
const notLiteral = 6 + 5

func total() int {
	n := 0
	for _, c := range mix {
		n += c.n
	}
	return n
}

// response is what the target answered, minus the Date header.
type response struct {
	status int
	header string
	body   string
}

// send runs the whole mix with 8 concurrent clients and returns responses
// keyed by request line, in a stable order.
func send(t *testing.T, addr string) map[string][]response {
	t.Helper()
	type job struct {
		method, url, body, key string
	}
	var jobs []job
	for _, c := range mix {
		for i := 0; i < c.n; i++ {
			p := c.path
			if strings.Contains(p, "%d") {
				p = fmt.Sprintf(p, i)
			}
			jobs = append(jobs, job{c.method, "http://" + addr + p, c.body, c.method + " " + p})
		}
	}
	out := map[string][]response{}
	var mu sync.Mutex
	ch := make(chan job)
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				var body io.Reader
				if j.body != "" {
					body = strings.NewReader(j.body)
				}
				req, _ := http.NewRequest(j.method, j.url, body)
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("%s: %v", j.key, err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				resp.Header.Del("Date")
				var hb bytes.Buffer
				resp.Header.Write(&hb)
				mu.Lock()
				out[j.key] = append(out[j.key], response{resp.StatusCode, hb.String(), string(b)})
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	return out
}

func requestCount(fams map[string]*dto.MetricFamily, pid int) float64 {
	return e2e.Sum(fams, "http_server_request_duration_seconds", map[string]string{
		"service_instance_id": instance(pid)})
}

// instance is the service_instance_id of the first image of the process
// running as pid, or of the last one seen running under it once gone.
func instance(pid int) string {
	instanceMu.Lock()
	defer instanceMu.Unlock()
	if id := e2e.InstanceID(pid); id != "" {
		instances[pid] = id
	}
	return instances[pid]
}

var (
	instanceMu sync.Mutex
	instances  = map[int]string{}
)

var variants = []e2e.Variant{
	{Name: "current"},
	{Name: "stripped", Stripped: true},
	{Name: "pie", PIE: true},
	// The others are CGO_ENABLED=0; this is go build's default where gcc is
	// installed (runtime/cgo and the cgo resolver linked in).
	{Name: "cgo", CGO: true},
	{Name: "go1.21", Toolchain: "go1.21.13"},
	{Name: "go1.21-stripped", Toolchain: "go1.21.13", Stripped: true},
	{Name: "go1.22", Toolchain: "go1.22.12"},
	{Name: "go1.27", Toolchain: "go1.27.3"},
	{Name: "go1.27-stripped", Toolchain: "go1.27.3", Stripped: true},
}

// TestRequestsCountedExactly is the core promise: a server started with no
// change gets exact per-(method, status, route) counts and one span per
// request, and answers exactly as it does without obsd.
func TestRequestsCountedExactly(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, v := range variants {
		for _, sel := range []string{"pid", "exe", "port"} {
			if v.Name != "current" && sel != "pid" {
				continue // selection is independent of the build
			}
			t.Run(v.Name+"/"+sel, func(t *testing.T) {
				srvBin := builds.HTTPServer(t, v)
				srv := e2e.Start(t, srvBin, []string{"OTEL_SERVICE_NAME=shop-" + v.Name})
				addr := srv.First
				baseline := send(t, addr)

				recv := e2e.StartReceiver(t)
				var args []string
				switch sel {
				case "pid":
					args = []string{"--pid", strconv.Itoa(srv.PID())}
				case "exe":
					args = []string{"--exe", srvBin}
				case "port":
					args = []string{"--port", addr[strings.LastIndex(addr, ":")+1:]}
				}
				o := e2e.StartObsd(t, obsdBin, []string{
					"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
					"OTEL_EXPORTER_OTLP_INSECURE=true",
					"OTEL_BSP_SCHEDULE_DELAY=100",
				}, args...)
				o.WaitScrape(t, 10*time.Second, "the server to be instrumented", func(f map[string]*dto.MetricFamily) bool {
					return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
				})

				got := send(t, addr)
				want := total()
				scrape := o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d requests", want), func(f map[string]*dto.MetricFamily) bool {
					return requestCount(f, srv.PID()) >= float64(want)
				})
				time.Sleep(300 * time.Millisecond) // anything extra would show now
				scrape = o.Scrape(t)
				fams := e2e.Families(t, scrape)
				checkCounts(t, fams, srv.PID(), "shop-"+v.Name, strings.HasPrefix(v.Toolchain, "go1.21."))
				e2e.Promtool(t, scrape)
				checkResponses(t, baseline, got)
				checkSpans(t, recv.WaitSpans(t, want, 15*time.Second), "shop-"+v.Name, strings.HasPrefix(v.Toolchain, "go1.21."))
				if lost := e2e.Sum(fams, "obsd_events_lost_total", nil); lost != 0 {
					t.Errorf("obsd_events_lost_total = %v, want 0", lost)
				}

				// Start, finishRequest, sendExpectationFailed, (*conn).close and
				// (*response).Hijack (the sample service hijacks on /upgrade);
				// HTTP/2's handlerDone and its panic's stream reset.
				if n := e2e.ProbeLinks(t, "http_server", srv.PID()); n != 7 {
					t.Errorf("%d links of http_server programs while attached, want 7", n)
				}
				o.Stop(t)
				e2e.WaitNoProbeLinks(t, "http_server", srv.PID())
			})
		}
	}
}

func checkCounts(t *testing.T, fams map[string]*dto.MetricFamily, pid int, service string, noPatterns bool) {
	t.Helper()
	type key struct{ method, status, route string }
	want := map[key]float64{}
	for _, c := range mix {
		route := c.route
		if noPatterns {
			route = c.route121
		}
		method := c.method
		if method == "PURGE" {
			method = "_OTHER"
		}
		want[key{method, strconv.Itoa(c.status), route}] += float64(c.n)
	}
	got := map[key]float64{}
	for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
		l := e2e.Labels(m)
		if l["service_instance_id"] != instance(pid) {
			continue
		}
		if l["service_name"] != service {
			t.Errorf("service_name = %q, want %q", l["service_name"], service)
		}
		if l["host_name"] == "" {
			t.Errorf("series without host_name: %v", l)
		}
		got[key{l["http_request_method"], l["http_response_status_code"], l["http_route"]}] += e2e.Value(m)
	}
	var keys []string
	for k := range want {
		keys = append(keys, fmt.Sprint(k))
	}
	sort.Strings(keys)
	for k, n := range want {
		if got[k] != n {
			t.Errorf("count %v = %v, want %v", k, got[k], n)
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected series %v = %v", k, n)
		}
	}
}

func checkResponses(t *testing.T, baseline, got map[string][]response) {
	t.Helper()
	if len(got) != len(baseline) {
		t.Errorf("%d distinct requests answered, want %d", len(got), len(baseline))
	}
	for k, want := range baseline {
		for i, r := range got[k] {
			if r != want[0] {
				t.Errorf("%s answer %d differs with obsd attached:\n got %+v\nwant %+v", k, i, r, want[0])
				break
			}
		}
	}
}

func checkSpans(t *testing.T, spans []e2e.Span, service string, noPatterns bool) {
	t.Helper()
	if len(spans) != total() {
		t.Errorf("%d spans, want %d", len(spans), total())
	}
	names := map[string]int{}
	errorsN := 0
	for _, s := range spans {
		names[s.GetName()]++
		if s.Resource["service.name"] != service {
			t.Errorf("span resource service.name = %q, want %q", s.Resource["service.name"], service)
		}
		if s.GetKind().String() != "SPAN_KIND_SERVER" {
			t.Errorf("span kind %v", s.GetKind())
		}
		if s.GetStatus().GetCode().String() == "STATUS_CODE_ERROR" {
			errorsN++
			if s.Attr("http.response.status_code") != "500" {
				t.Errorf("error status on a %s response", s.Attr("http.response.status_code"))
			}
		}
		if s.GetEndTimeUnixNano() < s.GetStartTimeUnixNano() || time.Since(time.Unix(0, int64(s.GetStartTimeUnixNano()))) > time.Minute {
			t.Errorf("span times off: start %d end %d", s.GetStartTimeUnixNano(), s.GetEndTimeUnixNano())
		}
	}
	if errorsN != 12 {
		t.Errorf("%d error spans, want 12 (the 500s)", errorsN)
	}
	wantItems := "GET /items/{id}"
	if noPatterns {
		wantItems = "GET /items/{param}"
	}
	if names[wantItems] < 40 {
		t.Errorf("span names %v: want 40 named %q", names, wantItems)
	}
	// Spans carry the route the metrics carry, fallback routes included.
	wantRoutes, gotRoutes := map[string]int{}, map[string]int{}
	for _, c := range mix {
		if noPatterns {
			wantRoutes[c.route121] += c.n
		} else {
			wantRoutes[c.route] += c.n
		}
	}
	for _, s := range spans {
		gotRoutes[s.Attr("http.route")]++
	}
	if !reflect.DeepEqual(gotRoutes, wantRoutes) {
		t.Errorf("spans by http.route = %v, want %v", gotRoutes, wantRoutes)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestCountedInKernel: without spans, a request that a ServeMux pattern
// written in the program routed is counted in the kernel and sends no
// record. The counts must be as exact as the records' for every build (PIE
// needs the load bias, Go 1.22 reads the pattern through Request.pat,
// stripped binaries still have .rodata), and must outlive the process until
// it is forgotten.
func TestCountedInKernel(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, v := range variants {
		t.Run(v.Name, func(t *testing.T) {
			noPatterns := strings.HasPrefix(v.Toolchain, "go1.21.")
			service := "kernel-" + v.Name
			srv := e2e.Start(t, builds.HTTPServer(t, v), []string{"OTEL_SERVICE_NAME=" + service})
			o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(srv.PID()), "--traces", "none")
			o.WaitScrape(t, 10*time.Second, "the server to be instrumented", instrumented(1))

			send(t, srv.First)
			o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d requests", total()), func(f map[string]*dto.MetricFamily) bool {
				return requestCount(f, srv.PID()) >= float64(total())
			})
			time.Sleep(300 * time.Millisecond) // anything extra would show now
			scrape := o.Scrape(t)
			fams := e2e.Families(t, scrape)
			checkCounts(t, fams, srv.PID(), service, noPatterns)
			e2e.Promtool(t, scrape)

			// Only requests no pattern routed (the 404s of /nope) and those
			// routed by a pattern built at run time (/dyn) travel as records.
			wantRecords := float64(notLiteral)
			if noPatterns {
				wantRecords = float64(total())
			}
			if n := e2e.Sum(fams, "obsd_events_total", nil); n != wantRecords {
				t.Errorf("obsd_events_total = %v, want %v", n, wantRecords)
			}
			for _, name := range []string{"obsd_events_lost_total", "obsd_probe_anomalies_total"} {
				if n := e2e.Sum(fams, name, nil); n != 0 {
					t.Errorf("%s = %v, want 0", name, n)
				}
			}

			srv.Cmd.Process.Kill()
			srv.Cmd.Wait()
			fams = e2e.Families(t, o.WaitScrape(t, 5*time.Second, "the exited process to be released", instrumented(0)))
			checkCounts(t, fams, srv.PID(), service, noPatterns)
			o.Stop(t)
		})
	}
}

// TestSampledInKernel: with a ratio sampler the probe samples. The sampled
// requests become spans whose trace IDs the SDK's TraceIDRatioBased agrees
// with; the others are counted in the kernel, so metrics stay exact.
func TestSampledInKernel(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srvBin := builds.HTTPServer(t, e2e.Variant{Name: "current"})
	for _, tc := range []struct {
		sampler, arg string
		ratio        float64
	}{
		{"parentbased_traceidratio", "0.5", 0.5},
		{"always_off", "", 0},
	} {
		t.Run(tc.sampler, func(t *testing.T) {
			srv := e2e.Start(t, srvBin, []string{"OTEL_SERVICE_NAME=sampled"})
			recv := e2e.StartReceiver(t)
			o := e2e.StartObsd(t, obsdBin, []string{
				"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
				"OTEL_EXPORTER_OTLP_INSECURE=true",
				"OTEL_BSP_SCHEDULE_DELAY=100",
				"OTEL_TRACES_SAMPLER=" + tc.sampler,
				"OTEL_TRACES_SAMPLER_ARG=" + tc.arg,
				// Head sampling alone: slow or failing requests kept
				// beside it would fall outside the ratio.
			}, "--pid", itoa(srv.PID()), "--keep-slow=0", "--keep-errors=false")
			o.WaitScrape(t, 10*time.Second, "the server to be instrumented", instrumented(1))

			send(t, srv.First)
			o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d requests", total()), func(f map[string]*dto.MetricFamily) bool {
				return requestCount(f, srv.PID()) >= float64(total())
			})
			// Binomial: within 5 standard deviations of the ratio. The
			// receiver's count, once it stops changing, is the truth; obsd's
			// span counters are not consulted.
			n := float64(total())
			mean, sd := n*tc.ratio, math.Sqrt(n*tc.ratio*(1-tc.ratio))
			spans := waitStableSpans(t, recv, int(math.Max(0, math.Ceil(mean-5*sd))))
			created := float64(len(spans))
			fams := e2e.Families(t, o.Scrape(t))
			checkCounts(t, fams, srv.PID(), "sampled", false)

			if math.Abs(float64(len(spans))-mean) > 5*sd {
				t.Errorf("%d of %v requests sampled, want %v ± %.0f", len(spans), n, mean, 5*sd)
			}
			bound := uint64(tc.ratio * (1 << 63))
			for _, s := range spans {
				if x := binary.BigEndian.Uint64(s.GetTraceId()[8:]); x>>1 >= bound {
					t.Errorf("trace ID %x is outside ratio %v", s.GetTraceId(), tc.ratio)
				}
			}
			// Records: the sampled requests, plus the unsampled ones no
			// literal pattern routed.
			if ev := e2e.Sum(fams, "obsd_events_total", nil); ev < created || ev > created+notLiteral {
				t.Errorf("obsd_events_total = %v, want between %v and %v", ev, created, created+notLiteral)
			}
			if lost := e2e.Sum(fams, "obsd_events_lost_total", nil); lost != 0 {
				t.Errorf("obsd_events_lost_total = %v, want 0", lost)
			}
			o.Stop(t)
		})
	}
}
