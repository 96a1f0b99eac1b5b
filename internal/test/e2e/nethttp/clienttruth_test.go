package nethttp

// Tests whose expected values come from outside obsd: the client's own
// tally of requests held in flight, the durations the client measured, and
// the spans a real receiver got. obsd's own counters (obsd_events_total,
// obsd_spans_*) never decide a pass; at most they say which path a request
// took.

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// timedBin builds testdata/timed: handlers that sleep {ms} and handlers held
// in flight until released.
func timedBin(t *testing.T) string {
	t.Helper()
	return builds.Get(t, "timed", func(out string) error {
		return e2e.GoBuild(e2e.RepoRoot(), nil, "-o", out, "./internal/test/e2e/nethttp/testdata/timed")
	})
}

// TestActiveRequestsExact holds N requests in the handler (it blocks until
// the test releases it), so exactly N are in flight by construction:
// http_server_active_requests must read N while they are held, and 0 once
// the client has every answer; the duration histogram must then count every
// released request.
func TestActiveRequestsExact(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srv := e2e.Start(t, timedBin(t), []string{"OTEL_SERVICE_NAME=gauge"})
	base := "http://" + srv.First
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(srv.PID()), "--traces", "none")
	o.WaitScrape(t, 10*time.Second, "the server to be instrumented", instrumented(1))

	inst := instance(srv.PID())
	active := func(f map[string]*dto.MetricFamily, method string) float64 {
		want := map[string]string{"service_instance_id": inst}
		if method != "" {
			want["http_request_method"] = method
		}
		return e2e.Sum(f, "http_server_active_requests", want)
	}
	blocked := func(f map[string]*dto.MetricFamily) float64 {
		return e2e.Sum(f, "http_server_request_duration_seconds", map[string]string{
			"service_instance_id": inst, "http_route": "/block", "http_response_status_code": "200"})
	}
	// Absent counts as 0 here; whether an idle gauge stays exported is
	// another test's concern.
	if n := active(e2e.Families(t, o.Scrape(t)), ""); n != 0 {
		t.Fatalf("http_server_active_requests = %v before any request, want 0", n)
	}

	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 40 * time.Second}
	released := 0
	for _, n := range []int{5, 1, 9} {
		codes := make(chan int, n)
		for range n {
			go func() {
				resp, err := client.Get(base + "/block")
				if err != nil {
					t.Errorf("GET /block: %v", err)
					codes <- 0
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				codes <- resp.StatusCode
			}()
		}
		waitArrived(t, client, base, n)
		// Every held request has entered its handler, and the /arrived
		// polls have ended: exactly n are in flight, whenever obsd is asked.
		for range 3 {
			f := e2e.Families(t, o.Scrape(t))
			if got := active(f, ""); got != float64(n) {
				t.Errorf("http_server_active_requests = %v with %d requests held, want %d", got, n, n)
			}
			if got := active(f, "GET"); got != float64(n) {
				t.Errorf("http_server_active_requests{http_request_method=GET} = %v, want %d", got, n)
			}
			if got := blocked(f); got != float64(released) {
				t.Errorf("held requests counted as done: %v, want %d", got, released)
			}
			time.Sleep(100 * time.Millisecond)
		}

		resp, err := client.Post(base+"/release", "", nil)
		if err != nil {
			t.Fatalf("POST /release: %v", err)
		}
		resp.Body.Close()
		for range n {
			select {
			case c := <-codes:
				if c != http.StatusOK {
					t.Errorf("held request answered %d, want 200", c)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("held requests not answered after release")
			}
		}
		released += n
		// The client has every answer, so every end probe has run.
		f := e2e.Families(t, o.WaitScrape(t, 5*time.Second, "the gauge back to 0", func(f map[string]*dto.MetricFamily) bool {
			return active(f, "") == 0
		}))
		if got := blocked(f); got != float64(released) {
			t.Errorf("GET /block counted %v times, the client sent %d", got, released)
		}
	}
	time.Sleep(300 * time.Millisecond) // a late change would show now
	if got := active(e2e.Families(t, o.Scrape(t)), ""); got != 0 {
		t.Errorf("http_server_active_requests = %v after every request ended, want 0", got)
	}
	o.Stop(t)
}

// waitArrived polls /arrived until n held requests are in their handler.
func waitArrived(t *testing.T, client *http.Client, base string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(base + "/arrived")
		if err != nil {
			t.Fatalf("GET /arrived: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if got == n {
			return
		}
		if got > n || time.Now().After(deadline) {
			t.Fatalf("%d requests in the handler, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// semconvBounds are the http.server.request.duration bucket bounds the
// OpenTelemetry semantic conventions advise, in seconds.
var semconvBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// timed is one request with its handler's sleep and what the client measured
// from before sending to after reading the body: the server's duration lies
// between the two.
type timed struct {
	path          string
	sleep, client time.Duration
}

// driveTimed sends GETs to prefix/{ms} for a known mix of sleeps, 4 at a time,
// and returns each request's sleep and client-measured duration.
func driveTimed(t *testing.T, addr, prefix string) []timed {
	t.Helper()
	var jobs []time.Duration
	for _, c := range []struct {
		ms, n int
	}{{0, 6}, {30, 12}, {300, 4}} {
		for range c.n {
			jobs = append(jobs, time.Duration(c.ms)*time.Millisecond)
		}
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var mu sync.Mutex
	var out []timed
	ch := make(chan time.Duration)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range ch {
				path := fmt.Sprintf("%s/%d", prefix, d.Milliseconds())
				start := time.Now()
				resp, err := client.Get("http://" + addr + path)
				if err != nil {
					t.Errorf("GET %s: %v", path, err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				elapsed := time.Since(start)
				if resp.StatusCode != 200 {
					t.Errorf("GET %s answered %d", path, resp.StatusCode)
				}
				mu.Lock()
				out = append(out, timed{path, d, elapsed})
				mu.Unlock()
			}
		}()
	}
	for _, d := range jobs {
		ch <- d
	}
	close(ch)
	wg.Wait()
	return out
}

// TestDurationBuckets checks every bucket and the sum of
// http_server_request_duration_seconds against durations the client
// measured, on each path a request can take: counted in the kernel (a
// literal pattern, no spans), sent as a record (a pattern built at run
// time), and sent as a record because it was sampled for a span (whose
// duration is checked too). For each bucket le, the requests the client saw
// end within le must be in it, and none that slept longer than le may be.
func TestDurationBuckets(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	bin := timedBin(t)
	for _, tc := range []struct {
		name, prefix string
		spans        bool
		records      bool // obsd_events_total counts one record per request
	}{
		{"kernel", "/sleep", false, false},
		{"records", "/rsleep", false, true},
		{"sampled", "/sleep", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := e2e.Start(t, bin, []string{"OTEL_SERVICE_NAME=timed-" + tc.name})
			var recv *e2e.Receiver
			args := []string{"--pid", itoa(srv.PID()), "--traces", "none"}
			var env []string
			if tc.spans {
				recv = e2e.StartReceiver(t)
				args = args[:2]
				env = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
					"OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100"}
			}
			o := e2e.StartObsd(t, obsdBin, env, args...)
			o.WaitScrape(t, 10*time.Second, "the server to be instrumented", instrumented(1))

			reqs := driveTimed(t, srv.First, tc.prefix)
			inst := instance(srv.PID())
			o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d requests", len(reqs)), func(f map[string]*dto.MetricFamily) bool {
				return requestCount(f, srv.PID()) >= float64(len(reqs))
			})
			time.Sleep(300 * time.Millisecond) // anything extra would show now
			fams := e2e.Families(t, o.Scrape(t))
			var series []*dto.Metric
			for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
				if e2e.Labels(m)["service_instance_id"] == inst {
					series = append(series, m)
				}
			}
			if len(series) != 1 {
				t.Fatalf("%d series for the target, want 1 (GET 200 %s/{ms})", len(series), tc.prefix)
			}
			l := e2e.Labels(series[0])
			if l["http_route"] != tc.prefix+"/{ms}" || l["http_request_method"] != "GET" || l["http_response_status_code"] != "200" {
				t.Errorf("series labels %v, want GET 200 %s/{ms}", l, tc.prefix)
			}
			checkHistogram(t, series[0].GetHistogram(), reqs)

			wantRecords := 0.0
			if tc.records {
				wantRecords = float64(len(reqs))
			}
			if n := e2e.Sum(fams, "obsd_events_total", nil); n != wantRecords {
				t.Errorf("obsd_events_total = %v, want %v: the requests did not take the path under test", n, wantRecords)
			}
			if tc.spans {
				checkSpanDurations(t, waitStableSpans(t, recv, len(reqs)), reqs)
			}
			o.Stop(t)
		})
	}
}

func checkHistogram(t *testing.T, h *dto.Histogram, reqs []timed) {
	t.Helper()
	if got := h.GetSampleCount(); got != uint64(len(reqs)) {
		t.Errorf("_count = %d, the client sent %d", got, len(reqs))
	}
	var bounds []float64
	for _, b := range h.GetBucket() {
		if !math.IsInf(b.GetUpperBound(), 1) {
			bounds = append(bounds, b.GetUpperBound())
		}
	}
	if fmt.Sprint(bounds) != fmt.Sprint(semconvBounds) {
		t.Errorf("bucket bounds %v, want the semconv %v", bounds, semconvBounds)
	}
	for _, b := range h.GetBucket() {
		le := b.GetUpperBound()
		var atLeast, atMost uint64 // the client's lower and upper bounds on the bucket
		for _, r := range reqs {
			if r.client.Seconds() <= le {
				atLeast++
			}
			if r.sleep.Seconds() <= le {
				atMost++
			}
		}
		if got := b.GetCumulativeCount(); got < atLeast || got > atMost {
			t.Errorf("bucket le=%v holds %d requests; the client measured %d within it and %d slept no longer", le, got, atLeast, atMost)
		}
	}
	var minSum, maxSum float64
	for _, r := range reqs {
		minSum += r.sleep.Seconds()
		maxSum += r.client.Seconds()
	}
	if s := h.GetSampleSum(); s < minSum || s > maxSum+1e-9 {
		t.Errorf("_sum = %.6f s, want between %.6f (the sleeps) and %.6f (the client's measurements)", s, minSum, maxSum)
	}
}

// checkSpanDurations: one span per request, each lasting between its
// handler's sleep and the longest the client measured for that path.
func checkSpanDurations(t *testing.T, spans []e2e.Span, reqs []timed) {
	t.Helper()
	if len(spans) != len(reqs) {
		t.Errorf("receiver got %d spans, the client sent %d requests", len(spans), len(reqs))
	}
	type bounds struct {
		sleep, client time.Duration
		n             int
	}
	byPath := map[string]*bounds{}
	for _, r := range reqs {
		b := byPath[r.path]
		if b == nil {
			b = &bounds{sleep: r.sleep}
			byPath[r.path] = b
		}
		b.client = max(b.client, r.client)
		b.n++
	}
	for _, s := range spans {
		p := s.Attr("url.path")
		b := byPath[p]
		if b == nil {
			t.Errorf("span for %q, a path the client never asked for", p)
			continue
		}
		b.n--
		d := time.Duration(s.GetEndTimeUnixNano() - s.GetStartTimeUnixNano())
		if d < b.sleep || d > b.client {
			t.Errorf("span for %s lasts %v, want between %v (sleep) and %v (client)", p, d, b.sleep, b.client)
		}
	}
	for p, b := range byPath {
		if b.n != 0 {
			t.Errorf("%s: %d more requests than spans", p, b.n)
		}
	}
}

// waitStableSpans waits until the receiver holds at least min spans and no
// more arrive for a second (obsd flushes every 100 ms in these tests), and
// returns them: the receiver's own count, not obsd's.
func waitStableSpans(t *testing.T, recv *e2e.Receiver, min int) []e2e.Span {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	last, since := -1, time.Now()
	for {
		s := recv.Spans()
		if len(s) != last {
			last, since = len(s), time.Now()
		}
		if len(s) >= min && time.Since(since) >= time.Second {
			return s
		}
		if time.Now().After(deadline) {
			if len(s) < min {
				t.Fatalf("receiver got %d spans, want at least %d", len(s), min)
			}
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSampledTraceIDsRandom: the probe draws the low half of each sampled
// trace ID. The receiver's spans must number what the ratio predicts from
// the client's tally, each for a request the client sent, with trace IDs
// that pass the SDK's ratio test and are random: distinct, and every bit
// the ratio leaves free taking both values.
func TestSampledTraceIDsRandom(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srvBin := builds.HTTPServer(t, e2e.Variant{Name: "current"})
	for _, tc := range []struct {
		name, sampler, arg string
		ratio              float64
		freeLowBits        int // low-half bits below this one are free under the ratio
	}{
		{"ratio 0.5", "parentbased_traceidratio", "0.5", 0.5, 63},
		{"always_on", "always_on", "", 1, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := e2e.Start(t, srvBin, []string{"OTEL_SERVICE_NAME=random"})
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

			got := send(t, srv.First)
			sentByPath := map[string]int{}
			n := 0
			for key, rs := range got {
				sentByPath[key[strings.Index(key, " ")+1:]] += len(rs)
				n += len(rs)
			}
			if n != total() {
				t.Fatalf("the client got %d answers, sent %d", n, total())
			}
			mean, sd := float64(n)*tc.ratio, math.Sqrt(float64(n)*tc.ratio*(1-tc.ratio))
			spans := waitStableSpans(t, recv, int(math.Ceil(mean-5*sd)))
			if math.Abs(float64(len(spans))-mean) > 5*sd {
				t.Errorf("receiver got %d spans for %d requests, want %v ± %.0f", len(spans), n, mean, 5*sd)
			}

			bound := uint64(tc.ratio * (1 << 63))
			traceIDs, spanIDs := map[string]bool{}, map[string]bool{}
			var hiOnes, hiZeros, loOnes, loZeros uint64 // bits seen set and clear, per position
			for _, s := range spans {
				p := s.Attr("url.path")
				if sentByPath[p] == 0 {
					t.Errorf("span for %q: more spans than requests the client sent there", p)
				}
				sentByPath[p]--
				id := s.GetTraceId()
				if len(id) != 16 {
					t.Fatalf("trace ID %x is not 16 bytes", id)
				}
				if traceIDs[string(id)] {
					t.Errorf("trace ID %x twice", id)
				}
				traceIDs[string(id)] = true
				if spanIDs[string(s.GetSpanId())] {
					t.Errorf("span ID %x twice", s.GetSpanId())
				}
				spanIDs[string(s.GetSpanId())] = true
				hi, lo := binary.BigEndian.Uint64(id[:8]), binary.BigEndian.Uint64(id[8:])
				if tc.ratio < 1 && lo>>1 >= bound {
					t.Errorf("trace ID %x fails the ratio %v test", id, tc.ratio)
				}
				hiOnes, hiZeros = hiOnes|hi, hiZeros|^hi
				loOnes, loZeros = loOnes|lo, loZeros|^lo
			}
			// With n spans a fair bit is constant with probability 2^(1-n).
			free := uint64(math.MaxUint64)
			if tc.freeLowBits < 64 {
				free = 1<<tc.freeLowBits - 1
			}
			if len(spans) >= 20 {
				if stuck := ^(hiOnes & hiZeros); stuck != 0 {
					t.Errorf("high half of the trace IDs: bits %s never change over %d spans", bitList(stuck), len(spans))
				}
				if stuck := ^(loOnes & loZeros) & free; stuck != 0 {
					t.Errorf("low half (the probe's draw): bits %s never change over %d spans", bitList(stuck), len(spans))
				}
			}
			o.Stop(t)
		})
	}
}

func bitList(x uint64) string {
	var bits []int
	for i := range 64 {
		if x&(1<<i) != 0 {
			bits = append(bits, i)
		}
	}
	sort.Ints(bits)
	return fmt.Sprint(bits)
}
