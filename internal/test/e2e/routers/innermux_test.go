package routers

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// muxSeen is one line of testdata/innermux's tally.
type muxSeen struct {
	Method  string `json:"method"`
	Pattern string `json:"pattern"`
	Status  int    `json:"status"`
	Count   int    `json:"count"`
}

// TestInnerServeMux: a ServeMux behind http.StripPrefix, one behind
// middleware that copies the request with r.WithContext, and one behind
// http.TimeoutHandler (on a goroutine of its own) set their patterns on
// copies the server probe never sees. obsd notices (a subtree
// pattern, a request routed by no pattern), attaches the on-demand
// net/http/servemux probe, and from then on every request's http_route is
// the pattern the inner mux set, as its handler saw it.
func TestInnerServeMux(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	for _, v := range []struct {
		name      string
		toolchain string
		stripped  bool
	}{
		{name: "go1.22", toolchain: "go1.22.12"}, // Request.pat, no Request.Pattern yet
		{name: "current"},
		{name: "go1.27-stripped", toolchain: "go1.27.3", stripped: true},
	} {
		t.Run(v.name, func(t *testing.T) {
			bin := builds.Program(t, e2e.Program{
				Name:      "innermux",
				Src:       filepath.Join(e2e.RepoRoot(), "testdata", "innermux"),
				Toolchain: v.toolchain,
				Flavour:   e2e.Flavour{Stripped: v.stripped},
			})
			svc := e2e.Start(t, bin, nil)
			f := strings.Fields(svc.First)
			if len(f) != 5 || f[0] != "listening" {
				t.Fatalf("service said %q", svc.First)
			}
			stripped, copied, timed, admin := "http://"+f[1], "http://"+f[2], "http://"+f[3], "http://"+f[4]
			o := e2e.StartObsd(t, obsdBin, nil, "--pid", strconv.Itoa(svc.PID()), "--traces", "none")
			o.WaitScrape(t, 20*time.Second, "the service to be instrumented", func(f map[string]*dto.MetricFamily) bool {
				return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
			})
			if n := e2e.ProbeLinks(t, "servemux_route", svc.PID()); n != 0 {
				t.Fatalf("%d servemux_route links before any request, want 0 (on demand)", n)
			}
			c := &http.Client{Timeout: 10 * time.Second}
			do := func(method, url string) {
				t.Helper()
				req, _ := http.NewRequest(method, url, nil)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			// Until obsd has attached the probe: requests that show hidden
			// muxes (each scrape reads the kernel's subtree patterns).
			deadline := time.Now().Add(15 * time.Second)
			for e2e.ProbeLinks(t, "servemux_route", svc.PID()) != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("obsd did not attach the servemux probe:\n%s", o.Scrape(t))
				}
				do("GET", stripped+"/api/items/0")
				do("GET", copied+"/users/zed")
				o.Scrape(t)
				time.Sleep(100 * time.Millisecond)
			}
			before, seenBefore := counts(t, o, svc.PID()), muxTally(t, admin)

			const n = 7
			for i := range n {
				do("GET", fmt.Sprintf("%s/api/items/%d", stripped, i))
				do("POST", stripped+"/api/items")
				do("GET", fmt.Sprintf("%s/api/items/%d/parts/p%d", stripped, i, i))
				do("GET", stripped+"/top")
				do("GET", fmt.Sprintf("%s/users/u%c", copied, 'a'+i))
				do("DELETE", copied+"/users/x")
				do("GET", copied+"/healthz")
				do("GET", fmt.Sprintf("%s/slow/%d", timed, i))
				do("PUT", fmt.Sprintf("%s/slow/%d/done", timed, i))
			}
			const sent = 9 * n
			want := map[key]int{}
			for k, c := range muxTally(t, admin) {
				if d := c - seenBefore[k]; d != 0 {
					want[k] = d
				}
			}
			if total(want) != sent {
				t.Fatalf("the service tallied %d requests, the client sent %d", total(want), sent)
			}
			var got map[key]int
			o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d more requests", sent), func(map[string]*dto.MetricFamily) bool {
				got = delta(counts(t, o, svc.PID()), before)
				return total(got) >= sent
			})
			time.Sleep(300 * time.Millisecond)
			got = delta(counts(t, o, svc.PID()), before)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("obsd counted (method, route, status):\n%s\nthe inner muxes set:\n%s", show(got), show(want))
			}
		})
	}
}

// muxTally reads the service's tally, keyed by the route its pattern names:
// the pattern's path (ServeMux patterns are "[METHOD ][HOST]/path").
func muxTally(t *testing.T, admin string) map[key]int {
	t.Helper()
	resp, err := http.Get(admin + "/tally")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []muxSeen
	if err := json.NewDecoder(resp.Body).Decode(&lines); err != nil {
		t.Fatal(err)
	}
	out := map[key]int{}
	for _, s := range lines {
		route := s.Pattern
		if i := strings.IndexByte(route, '/'); i >= 0 {
			route = route[i:]
		}
		out[key{s.Method, route, s.Status}] += s.Count
	}
	return out
}

func counts(t *testing.T, o *e2e.Obsd, pid int) map[key]int {
	t.Helper()
	fams := e2e.Families(t, o.Scrape(t))
	got := map[key]int{}
	for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
		l := e2e.Labels(m)
		if l["service_instance_id"] != e2e.InstanceID(pid) || l["http_route"] == "/tally" {
			continue
		}
		status, _ := strconv.Atoi(l["http_response_status_code"])
		got[key{l["http_request_method"], l["http_route"], status}] += int(m.GetHistogram().GetSampleCount())
	}
	return got
}

func delta(after, before map[key]int) map[key]int {
	out := map[key]int{}
	for k, n := range after {
		if d := n - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
