// Package routers tests that http_route is what chi, gin, echo and
// gorilla/mux report to their own middleware, for services built with
// releases of each router spanning two years (testdata/routers).
package routers

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
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

// variant is one build of a router's test service.
type variant struct {
	router    string // directory under testdata/routers
	module    string // the router's module path
	version   string
	toolchain string // "" is the Go running the tests
	stripped  bool
	pie       bool // -buildmode=pie
	// spans runs obsd with every request sampled, so that metrics come
	// from records (and spans are checked); else metrics only, counted in
	// the kernel.
	spans bool
	// h2 serves over TLS, where the client negotiates HTTP/2: the router
	// runs on each stream's own handler goroutine.
	h2 bool
}

func (v variant) name() string {
	n := v.router + "-" + v.version
	if v.toolchain != "" {
		n += "-" + strings.TrimSuffix(v.toolchain[:strings.LastIndexByte(v.toolchain, '.')], ".")
	}
	if v.stripped {
		n += "-stripped"
	}
	if v.pie {
		n += "-pie"
	}
	if v.h2 {
		n += "-h2"
	}
	return n
}

// probe is the prefix of the router probe's program name.
func (v variant) probe() string {
	return map[string]string{"chi": "chi_route", "gin": "gin_route", "echo": "echo_route", "gorillamux": "gorilla_route"}[v.router]
}

// The oldest release of each router from two years back (built with the
// oldest Go obsd supports), one from the middle and the newest; each router
// once with spans.
var variants = []variant{
	{router: "chi", module: "github.com/go-chi/chi/v5", version: "v5.2.3", toolchain: "go1.21.13"},
	{router: "chi", module: "github.com/go-chi/chi/v5", version: "v5.5.0", spans: true},
	{router: "gin", module: "github.com/gin-gonic/gin", version: "v1.10.0", toolchain: "go1.21.13"},
	{router: "gin", module: "github.com/gin-gonic/gin", version: "v1.12.0", spans: true},
	{router: "echo", module: "github.com/labstack/echo/v4", version: "v4.13.2", toolchain: "go1.21.13"},
	{router: "echo", module: "github.com/labstack/echo/v4", version: "v4.16.0", spans: true},
	{router: "gorillamux", module: "github.com/gorilla/mux", version: "v1.8.0", toolchain: "go1.21.13"},
	{router: "gorillamux", module: "github.com/gorilla/mux", version: "v1.8.1", spans: true},
	// A release from the middle of the two years.
	{router: "chi", module: "github.com/go-chi/chi/v5", version: "v5.3.0"},
	{router: "gin", module: "github.com/gin-gonic/gin", version: "v1.11.0"},
	{router: "echo", module: "github.com/labstack/echo/v4", version: "v4.15.0"},
	// Without DWARF the router probes take their offsets from the table
	// (internal/offsets): the newest release of each stripped, and the
	// oldest chi the table lists built by the oldest Go as a stripped PIE
	// (the table was generated with the Go at hand, non-PIE). Most over
	// HTTP/2 (TLS, h2), counted in the kernel: the router then runs on each
	// stream's own handler goroutine.
	{router: "chi", module: "github.com/go-chi/chi/v5", version: "v5.5.0", stripped: true, h2: true},
	{router: "chi", module: "github.com/go-chi/chi/v5", version: "v5.2.0", toolchain: "go1.21.13", stripped: true, pie: true},
	{router: "gin", module: "github.com/gin-gonic/gin", version: "v1.12.0", stripped: true, h2: true},
	{router: "echo", module: "github.com/labstack/echo/v4", version: "v4.16.5", stripped: true, spans: true},
	{router: "echo", module: "github.com/labstack/echo/v4", version: "v4.16.0", h2: true},
	{router: "gorillamux", module: "github.com/gorilla/mux", version: "v1.8.1", stripped: true, h2: true},
}

func service(t *testing.T, v variant) string {
	t.Helper()
	return builds.Program(t, e2e.Program{
		Name:      "router-" + v.router,
		Src:       filepath.Join(e2e.RepoRoot(), "testdata", "routers", v.router),
		Toolchain: v.toolchain,
		Flavour:   e2e.Flavour{Stripped: v.stripped, PIE: v.pie},
		Require:   []string{v.module + " " + v.version},
	})
}

// mix is e2e.RouterMix, one of each request.
func mix() []e2e.RouterRequest { return e2e.RouterMix() }

const rounds, workers = 3, 4

// send sends rounds × mix from workers goroutines, each on its own
// keep-alive connection (HTTP/2 over TLS with h2), and returns how many
// requests got a response.
func send(t *testing.T, addr string, h2 bool) int {
	t.Helper()
	jobs := make(chan e2e.RouterRequest)
	var mu sync.Mutex
	var errs []error
	n := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{}
			scheme := "http://"
			if h2 {
				scheme = "https://"
				tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // the service's throwaway certificate
				tr.ForceAttemptHTTP2 = true
			}
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			defer c.CloseIdleConnections()
			for r := range jobs {
				hr, _ := http.NewRequest(r.Method, scheme+addr+r.Path, nil)
				resp, err := c.Do(hr)
				if err == nil && h2 && resp.ProtoMajor != 2 {
					err = fmt.Errorf("%s %s: answered over %s, want HTTP/2", r.Method, r.Path, resp.Proto)
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					n++
				}
				mu.Unlock()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	for range rounds {
		for _, r := range mix() {
			jobs <- r
		}
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d requests failed, first: %v", len(errs), errs[0])
	}
	return n
}

// seen is one line of the service's tally (testdata/routers/common).
type seen struct {
	Method  string `json:"method"`
	Route   string `json:"route"`
	Matched bool   `json:"matched"`
	Status  int    `json:"status"`
	Count   int    `json:"count"`
}

func tally(t *testing.T, admin string) []seen {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/tally")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []seen
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

type key struct {
	method, route string
	status        int
}

// counted reads http_server_request_duration_seconds counts of pid by
// method, route and status, leaving out the service's /tally.
func counted(fams map[string]*dto.MetricFamily, pid int, proto string) map[key]int {
	got := map[key]int{}
	fam := fams["http_server_request_duration_seconds"]
	if fam == nil {
		return got
	}
	for _, m := range fam.GetMetric() {
		l := e2e.Labels(m)
		if l["service_instance_id"] != e2e.InstanceID(pid) || l["http_route"] == "/tally" {
			continue
		}
		if l["network_protocol_version"] != proto {
			// Counted, but under another protocol: the test fails on it.
			l["http_route"] = "(over " + l["network_protocol_version"] + ") " + l["http_route"]
		}
		status, _ := strconv.Atoi(l["http_response_status_code"])
		got[key{l["http_request_method"], l["http_route"], status}] += int(m.GetHistogram().GetSampleCount())
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

// TestRoutesAsRoutersReport: every request's http_route (and span
// http.route) is the route the router reported to its own middleware,
// request by request, for each router and release.
func TestRoutesAsRoutersReport(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, v := range variants {
		t.Run(v.name(), func(t *testing.T) {
			bin := service(t, v)
			var svcArgs []string
			if v.h2 {
				svcArgs = append(svcArgs, "-tls")
			}
			svc := e2e.Start(t, bin, []string{"OTEL_SERVICE_NAME=routers-" + v.name()}, svcArgs...)
			f := strings.Fields(svc.First)
			if len(f) != 3 || f[0] != "listening" {
				t.Fatalf("service said %q", svc.First)
			}
			addr, admin := f[1], f[2]
			var recv *e2e.Receiver
			env := []string{}
			args := []string{"--pid", strconv.Itoa(svc.PID())}
			if v.spans {
				recv = e2e.StartReceiver(t)
				env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+recv.Endpoint, "OTEL_EXPORTER_OTLP_INSECURE=true",
					"OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_TRACES_SAMPLER=always_on")
			} else {
				args = append(args, "--traces", "none")
			}
			o := e2e.StartObsd(t, obsdBin, env, args...)
			o.WaitScrape(t, 20*time.Second, "the service to be instrumented", func(f map[string]*dto.MetricFamily) bool {
				return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
			})
			if n := e2e.ProbeLinks(t, v.probe(), svc.PID()); n != 1 {
				t.Fatalf("%d links of %s, want 1", n, v.probe())
			}

			sent := send(t, addr, v.h2)
			proto := "1.1"
			if v.h2 {
				proto = "2"
			}
			seen := tally(t, admin)
			want := map[key]int{}
			for _, s := range seen {
				// Unmatched, every router's answer is no route: "".
				want[key{s.Method, s.Route, s.Status}] += s.Count
			}
			if total(want) != sent {
				t.Fatalf("the service tallied %d requests, the client sent %d", total(want), sent)
			}
			scrape := o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d requests", sent), func(f map[string]*dto.MetricFamily) bool {
				return total(counted(f, svc.PID(), proto)) >= sent
			})
			time.Sleep(300 * time.Millisecond) // anything extra would show now
			scrape = o.Scrape(t)
			fams := e2e.Families(t, scrape)
			got := counted(fams, svc.PID(), proto)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("obsd counted (method, route, status):\n%s\nthe router reported:\n%s", show(got), show(want))
			}
			probeName := map[string]string{"probe": "net/http/server"}
			if n := e2e.Sum(fams, "obsd_events_lost_total", probeName); n != 0 {
				t.Errorf("obsd_events_lost_total of the server probe = %v, want 0", n)
			}
			if n := e2e.Sum(fams, "obsd_probe_anomalies_total", nil); n != 0 {
				t.Errorf("obsd_probe_anomalies_total = %v, want 0", n)
			}
			e2e.Promtool(t, scrape)
			if v.spans {
				checkSpans(t, recv.WaitSpans(t, sent, 15*time.Second), want, v)
			}
		})
	}
}

// checkSpans: the spans carry the same routes as the metrics: http.route,
// the name "{method} {route}" (the method alone without a route), and
// obsd.route.source naming the router.
func checkSpans(t *testing.T, spans []e2e.Span, want map[key]int, v variant) {
	t.Helper()
	source := map[string]string{"chi": "chi", "gin": "gin", "echo": "echo", "gorillamux": "gorilla/mux"}[v.router]
	got := map[key]int{}
	for _, s := range spans {
		route := s.Attr("http.route")
		if route == "/tally" {
			continue
		}
		status, _ := strconv.Atoi(s.Attr("http.response.status_code"))
		method := s.Attr("http.request.method")
		k := key{method, route, status}
		name := method
		if route != "" {
			name += " " + route
		}
		if s.GetName() != name {
			t.Errorf("span %q, want %q", s.GetName(), name)
		}
		if src := s.Attr("obsd.route.source"); route != "" && src != source {
			t.Errorf("span %q: obsd.route.source %q, want %q", s.GetName(), src, source)
		}
		got[k]++
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("spans (method, http.route, status):\n%s\nthe router reported:\n%s", show(got), show(want))
	}
}

func show(m map[key]int) string {
	var lines []string
	for k, n := range m {
		lines = append(lines, fmt.Sprintf("  %s %q %d: %d", k.method, k.route, k.status, n))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// chiModule and chiVersion are the chi TestUnlistedRouterRefused copies.
const chiModule, chiVersion = "github.com/go-chi/chi/v5", "v5.5.0"

// replacedChi builds the chi test service stripped, against a local copy of
// chi v5.5.0 named by a replace directive, as a vendored fork is: its build
// info gives chi the version "(devel)", which no offsets table can list.
func replacedChi(t *testing.T) string {
	t.Helper()
	return builds.Get(t, "router-chi-replaced", func(out string) error {
		dir, err := os.MkdirTemp("", "obsd-chi-replaced-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		env := []string{"GOTOOLCHAIN=local", "GOWORK=off", "GOFLAGS=-mod=mod", "CGO_ENABLED=0"}
		dl := exec.Command("go", "mod", "download", "-json", chiModule+"@"+chiVersion)
		dl.Dir, dl.Env = dir, append(os.Environ(), env...)
		b, err := dl.Output()
		if err != nil {
			return fmt.Errorf("go mod download %s@%s: %w", chiModule, chiVersion, err)
		}
		var m struct{ Dir string }
		if err := json.Unmarshal(b, &m); err != nil || m.Dir == "" {
			return fmt.Errorf("go mod download %s@%s said %s: %v", chiModule, chiVersion, b, err)
		}
		if err := os.CopyFS(filepath.Join(dir, "chi"), os.DirFS(m.Dir)); err != nil {
			return fmt.Errorf("copying chi: %w", err)
		}
		src := filepath.Join(e2e.RepoRoot(), "testdata", "routers", "chi")
		files, err := filepath.Glob(filepath.Join(src, "*.go"))
		if err != nil || len(files) == 0 {
			return fmt.Errorf("no Go files in %s (%v)", src, err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f) // record.go is a symlink: read through it
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), data, 0o644); err != nil {
				return err
			}
		}
		minor := regexp.MustCompile(`^go1\.\d+`).FindString(runtime.Version())
		mod := fmt.Sprintf("module chi\n\ngo %s\n\nrequire %s %s\n\nreplace %s => ./chi\n",
			strings.TrimPrefix(minor, "go"), chiModule, chiVersion, chiModule)
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
			return err
		}
		return e2e.GoBuild(dir, env, "-ldflags=-s -w", "-o", out, ".")
	})
}

// TestUnlistedRouterRefused: a stripped binary linking a chi the offsets
// table does not list (here a local replacement, version "(devel)") has
// no DWARF to read chi's offsets from. Its chi probe is refused, with one
// log line naming the module and one
// obsd_instrumentation_errors_total{reason="unsupported_version"}, never
// attached with another release's offsets; the HTTP server probe stays and
// counts every request exactly, under learned routes.
func TestUnlistedRouterRefused(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	bin := replacedChi(t)
	svc := e2e.Start(t, bin, []string{"OTEL_SERVICE_NAME=routers-chi-replaced"})
	f := strings.Fields(svc.First)
	if len(f) != 3 || f[0] != "listening" {
		t.Fatalf("service said %q", svc.First)
	}
	addr, admin := f[1], f[2]
	unsupported := map[string]string{"reason": "unsupported_version"}
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", strconv.Itoa(svc.PID()), "--traces", "none")
	o.WaitScrape(t, 20*time.Second, "the service instrumented and chi refused", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1 &&
			e2e.Sum(f, "obsd_instrumentation_errors_total", unsupported) >= 1
	})
	if n := e2e.ProbeLinks(t, "chi_route", svc.PID()); n != 0 {
		t.Errorf("%d chi_route links on an unlisted chi, want 0", n)
	}
	if n := e2e.ProbeLinks(t, "http_server", svc.PID()); n == 0 {
		t.Fatal("no http_server links: the server probe went with chi's")
	}

	sent := send(t, addr, false)
	want := map[key]int{}
	routed := map[string]bool{} // the templates chi reported
	for _, s := range tally(t, admin) {
		want[key{s.Method, "", s.Status}] += s.Count
		if s.Matched {
			routed[s.Route] = true
		}
	}
	if total(want) != sent {
		t.Fatalf("the service tallied %d requests, the client sent %d", total(want), sent)
	}
	o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d requests", sent), func(f map[string]*dto.MetricFamily) bool {
		return total(counted(f, svc.PID(), "1.1")) >= sent
	})
	time.Sleep(300 * time.Millisecond) // anything extra would show now
	scrape := o.Scrape(t)
	fams := e2e.Families(t, scrape)
	got := map[key]int{}
	for k, n := range counted(fams, svc.PID(), "1.1") {
		// A route with a parameter chi named ({oid}, not the fallback's)
		// could only have come from the refused probe.
		if strings.Contains(k.route, "{") && routed[k.route] {
			t.Errorf("route %q is chi's own, from a refused probe", k.route)
		}
		got[key{k.method, "", k.status}] += n
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("obsd counted (method, status):\n%s\nthe service served:\n%s", show(got), show(want))
	}
	if n := e2e.Sum(fams, "obsd_instrumentation_errors_total", unsupported); n != 1 {
		t.Errorf("obsd_instrumentation_errors_total{reason=\"unsupported_version\"} = %v, want 1", n)
	}
	// A module replaced by a directory is "(devel)" in the build info.
	re := regexp.MustCompile(`reason=unsupported_version.*` + regexp.QuoteMeta(chiModule+" (devel) is not in the offsets table"))
	if n := len(re.FindAllString(o.Log.String(), -1)); n != 1 {
		t.Errorf("%d log lines naming chi, want 1:\n%s", n, o.Log)
	}
	if n := e2e.Sum(fams, "obsd_probe_anomalies_total", nil); n != 0 {
		t.Errorf("obsd_probe_anomalies_total = %v, want 0", n)
	}
	e2e.Promtool(t, scrape)
}
