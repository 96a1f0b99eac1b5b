// Package propagate tests --propagate end to end: trace context carried
// between services in a TCP option and in traceparent headers, both under
// kernel lockdown (no write into any target's memory), with every request
// still counted exactly against the client's own tally.
package propagate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

var builds *e2e.Builds

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obsd-e2e-propagate-")
	if err != nil {
		panic(err)
	}
	builds = e2e.NewBuilds(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lockdownMode reads the kernel's lockdown mode without obsd: from
// securityfs, mounted in a private mount namespace when the host has not
// mounted it (as on these machines), so the test changes nothing outside.
func lockdownMode(t *testing.T) string {
	t.Helper()
	const path = "/sys/kernel/security/lockdown"
	b, err := os.ReadFile(path)
	if err != nil {
		unshare := e2e.RequireTool(t, "unshare")
		out, uerr := exec.Command(unshare, "--mount", "sh", "-c",
			"mount -t securityfs securityfs /sys/kernel/security 2>/dev/null; cat "+path).Output()
		if uerr != nil {
			e2e.Skip(t, "cannot read the lockdown mode (%v, then in a private mount namespace: %v)", err, uerr)
		}
		b = out
	}
	for _, f := range strings.Fields(string(b)) {
		if strings.HasPrefix(f, "[") && strings.HasSuffix(f, "]") {
			return strings.Trim(f, "[]")
		}
	}
	t.Fatalf("no [mode] in %s: %q", path, b)
	return ""
}

// call is one kind of request and how many of it are sent.
type call struct {
	method, path string
	n            int
}

var mix = []call{
	{"GET", "/hello", 80},
	{"GET", "/status/404", 15},
	{"GET", "/status/503", 10},
	{"POST", "/echo", 15},
}

// answer is what the target answered, minus the Date header.
type answer struct {
	status       int
	header, body string
}

// send runs the mix over 8 keep-alive clients. It returns the client's own
// tally of answers per status code and the answers by request.
func send(t *testing.T, addr string) (map[string]int, map[string]answer) {
	t.Helper()
	type job struct{ method, path string }
	jobs := make(chan job)
	tally := map[string]int{}
	answers := map[string]answer{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for range 8 {
		wg.Go(func() {
			for j := range jobs {
				var body io.Reader
				if j.method == "POST" {
					body = strings.NewReader("ping")
				}
				req, _ := http.NewRequest(j.method, "http://"+addr+j.path, body)
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("%s %s: %v", j.method, j.path, err)
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Errorf("%s %s: reading the answer: %v", j.method, j.path, err)
					continue
				}
				resp.Header.Del("Date")
				var hb bytes.Buffer
				resp.Header.Write(&hb)
				a := answer{resp.StatusCode, hb.String(), string(b)}
				key := j.method + " " + j.path
				mu.Lock()
				tally[strconv.Itoa(resp.StatusCode)]++
				if prev, ok := answers[key]; ok && prev != a {
					t.Errorf("%s answered differently: %+v, then %+v", key, prev, a)
				}
				answers[key] = a
				mu.Unlock()
			}
		})
	}
	for _, c := range mix {
		for range c.n {
			jobs <- job{c.method, c.path}
		}
	}
	close(jobs)
	wg.Wait()
	return tally, answers
}

// clientRequests is how many GETs testdata/httpclient sends (-loop), one
// at a time on one keep-alive connection.
const clientRequests = 40

// waitFor waits until p's output holds a line starting with prefix.
func waitFor(t *testing.T, p *e2e.Proc, prefix string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := p.Out.String()
		if i := strings.Index(out, prefix); i >= 0 && strings.Contains(out[i:], "\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line from the client:\n%s", prefix, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sent is the number of requests in the mix.
func sent() int {
	n := 0
	for _, c := range mix {
		n += c.n
	}
	return n
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestPropagationActive: obsd started with header injection asked for (by
// flag, or by OBSD_PROPAGATE together with tcp) runs it even under kernel
// lockdown, which refuses bpf_probe_write_user (the header goes into the
// kernel's copy of each message, never into the target): each mechanism
// active in obsd_trace_propagation_info and /readyz, no warning; every
// request of a real server counted exactly, with one span each; a real
// client's 40 requests each reach the peer with exactly one traceparent,
// naming the client span obsd exported for it, counted in
// obsd_trace_headers_injected_total; the probes attached as with tcp; the
// server's answers unchanged.
func TestPropagationActive(t *testing.T) {
	e2e.RequireRoot(t)
	lock := lockdownMode(t)
	t.Logf("lockdown=%s: header injection must be active all the same", lock)
	headers := map[string]string{"mode": "headers", "state": "active", "reason": ""}
	tcp := map[string]string{"mode": "tcp", "state": "active", "reason": ""}

	obsdBin := builds.Obsd(t)
	srvBin := builds.HTTPServer(t, e2e.Variant{Name: "current"})
	clientBin := builds.TestdataProgram(t, "httpclient", e2e.Variant{Name: "current"})
	for _, tt := range []struct {
		name   string
		args   []string
		env    []string
		series []map[string]string // of obsd_trace_propagation_info
	}{
		{name: "flag headers", args: []string{"--propagate=headers"},
			series: []map[string]string{headers}},
		{name: "env tcp,headers", env: []string{"OBSD_PROPAGATE=tcp,headers"},
			series: []map[string]string{headers, tcp}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := e2e.Start(t, srvBin, []string{"OTEL_SERVICE_NAME=propagate-e2e"})
			addr := srv.First
			_, baseline := send(t, addr)

			// An instrumented client too: header injection acts on its
			// requests. A server in this (uninstrumented) process keeps
			// the traceparent values each request arrived with.
			var served atomic.Int64
			var tpMu sync.Mutex
			var tps [][]string
			peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				served.Add(1)
				tpMu.Lock()
				tps = append(tps, r.Header.Values("Traceparent"))
				tpMu.Unlock()
				io.WriteString(w, "ok\n")
			}))
			t.Cleanup(peer.Close)
			cmd := exec.Command(clientBin, "-http", peer.URL, "-loop", strconv.Itoa(clientRequests))
			clientIn, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { clientIn.Close() })
			client := e2e.StartCmd(t, cmd)

			recv := e2e.StartReceiver(t)
			env := append([]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
				"OTEL_EXPORTER_OTLP_INSECURE=true",
				"OTEL_BSP_SCHEDULE_DELAY=100",
			}, tt.env...)
			o := e2e.StartObsd(t, obsdBin, env, append([]string{"--pid", strconv.Itoa(srv.PID()), "--pid", strconv.Itoa(client.PID())}, tt.args...)...)
			o.WaitScrape(t, 10*time.Second, "the server and the client to be instrumented", func(f map[string]*dto.MetricFamily) bool {
				return e2e.Sum(f, "obsd_instrumented_processes", nil) == 2
			})
			if _, err := io.WriteString(clientIn, "go\n"); err != nil {
				t.Fatal(err)
			}

			tally, answers := send(t, addr)
			want := sum(tally)
			if sent := sent(); want != sent {
				t.Fatalf("the client got %d answers of %d requests: %v", want, sent, tally)
			}
			waitFor(t, client, "ns_per_request ")
			clientWant := int(served.Load())
			if clientWant != clientRequests {
				t.Fatalf("the peer served %d of the client's %d requests", clientWant, clientRequests)
			}
			id, clientID := e2e.InstanceID(srv.PID()), e2e.InstanceID(client.PID())
			count := func(f map[string]*dto.MetricFamily) float64 {
				return e2e.Sum(f, "http_server_request_duration_seconds", map[string]string{"service_instance_id": id})
			}
			clientCount := func(f map[string]*dto.MetricFamily) float64 {
				return e2e.Sum(f, "http_client_request_duration_seconds", map[string]string{"service_instance_id": clientID})
			}
			o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d server and %d client requests", want, clientWant), func(f map[string]*dto.MetricFamily) bool {
				return count(f) >= float64(want) && clientCount(f) >= float64(clientWant)
			})
			time.Sleep(300 * time.Millisecond) // anything extra would show now
			scrape := o.Scrape(t)
			fams := e2e.Families(t, scrape)
			e2e.Promtool(t, scrape)

			// Every request counted once, under the status the client got.
			got := map[string]int{}
			for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
				if l := e2e.Labels(m); l["service_instance_id"] == id {
					got[l["http_response_status_code"]] += int(e2e.Value(m))
				}
			}
			if !reflect.DeepEqual(got, tally) {
				t.Errorf("obsd counted %v by status, the client got %v", got, tally)
			}
			// Every client request counted once, as the peer saw it.
			if n := clientCount(fams); n != float64(clientWant) {
				t.Errorf("obsd counted %v client requests, the peer served %d", n, clientWant)
			}
			// One span per request, on each side.
			recv.WaitSpans(t, want+clientWant, 15*time.Second)
			time.Sleep(300 * time.Millisecond)
			kinds := map[string]int{}
			for _, sp := range recv.Spans() {
				kinds[sp.Resource["service.instance.id"]+" "+sp.GetKind().String()]++
			}
			wantKinds := map[string]int{id + " SPAN_KIND_SERVER": want, clientID + " SPAN_KIND_CLIENT": clientWant}
			if !reflect.DeepEqual(kinds, wantKinds) {
				t.Errorf("spans by instance and kind %v, want %v", kinds, wantKinds)
			}
			// The target answered as it does without obsd.
			if !reflect.DeepEqual(answers, baseline) {
				t.Errorf("answers with obsd attached differ:\n got %v\nwant %v", answers, baseline)
			}
			// The probes are those of a plain run (nethttp's
			// TestRequestsCountedExactly: 7 http_server links).
			if n := e2e.ProbeLinks(t, "http_server", srv.PID()); n != 7 {
				t.Errorf("%d links of http_server programs, want 7", n)
			}
			// httpclient's TestHTTPClientCountedExactly: 2 http_client
			// links, and with context to carry the HTTP/1 connection's site
			// and the HTTP/2 stream's (one of its two names is in any
			// binary), for the TCP option and the header injector alike.
			const wantClient = 4
			if n := e2e.ProbeLinks(t, "http_client", client.PID()); n != wantClient {
				t.Errorf("%d links of http_client programs, want %d", n, wantClient)
			}
			// Each of the client's requests arrived with one traceparent,
			// the context of the client span obsd exported for it.
			clientSpans := map[string]bool{}
			for _, sp := range recv.Spans() {
				if sp.Resource["service.instance.id"] == clientID && sp.GetKind().String() == "SPAN_KIND_CLIENT" {
					clientSpans[fmt.Sprintf("00-%x-%x-01", sp.GetTraceId(), sp.GetSpanId())] = true
				}
			}
			tpMu.Lock()
			seen := map[string]bool{}
			for i, v := range tps {
				if len(v) != 1 || !clientSpans[v[0]] || seen[v[0]] {
					t.Errorf("request %d arrived with traceparent %q; want one, naming its own exported client span", i, v)
					continue
				}
				seen[v[0]] = true
			}
			tpMu.Unlock()
			if n := e2e.Sum(fams, "obsd_trace_headers_injected_total", nil); n != float64(clientWant) {
				t.Errorf("obsd_trace_headers_injected_total = %v, want %d", n, clientWant)
			}

			// The metric, read with the text parser.
			var series []map[string]string
			for _, m := range fams["obsd_trace_propagation_info"].GetMetric() {
				if v := e2e.Value(m); v != 1 {
					t.Errorf("obsd_trace_propagation_info%v = %v, want 1", e2e.Labels(m), v)
				}
				series = append(series, e2e.Labels(m))
			}
			if fams["obsd_trace_propagation_info"].GetType() != dto.MetricType_GAUGE {
				t.Errorf("obsd_trace_propagation_info is a %v, want a gauge", fams["obsd_trace_propagation_info"].GetType())
			}
			byMode := func(s []map[string]string) { sort.Slice(s, func(i, j int) bool { return s[i]["mode"] < s[j]["mode"] }) }
			byMode(series)
			byMode(tt.series)
			if !reflect.DeepEqual(series, tt.series) {
				t.Errorf("obsd_trace_propagation_info series %v, want %v", series, tt.series)
			}

			// /readyz: ready, the mechanisms too.
			code, body := o.Get(t, "/readyz")
			var ready struct {
				Status string            `json:"status"`
				Checks map[string]string `json:"checks"`
			}
			if err := json.Unmarshal(body, &ready); err != nil {
				t.Fatalf("/readyz body %q: %v", body, err)
			}
			t.Logf("/readyz: %d %s", code, bytes.TrimSpace(body))
			if code != 200 || ready.Status != "ok" {
				t.Errorf("/readyz = %d %s, want 200 ok: %s", code, ready.Status, body)
			}
			if _, ok := ready.Checks["trace_propagation"]; !ok {
				t.Errorf("/readyz has no trace_propagation check: %s", body)
			}
			for name, v := range ready.Checks {
				if v != "ok" {
					t.Errorf("/readyz check %s = %q", name, v)
				}
			}

			// Nothing warned.
			o.Stop(t)
			var warns []string
			for _, line := range strings.Split(o.Log.String(), "\n") {
				if strings.Contains(line, "level=WARN") {
					warns = append(warns, line)
				}
			}
			if len(warns) != 0 {
				t.Errorf("warnings, want none:\n%s", strings.Join(warns, "\n"))
			}
			e2e.WaitNoProbeLinks(t, "http_server", srv.PID())
			e2e.WaitNoProbeLinks(t, "http_client", client.PID())
		})
	}
}

// concurrently calls fn for each id, workers at a time, and stops the test
// if any call failed.
func concurrently(t *testing.T, workers int, ids []int, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	work := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range work {
				if err := fn(i); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for _, i := range ids {
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// seqIDs returns from, from+1, ..., from+n-1, appended to more.
func seqIDs(more []int, from, n int) []int {
	for i := range n {
		more = append(more, from+i)
	}
	return more
}
