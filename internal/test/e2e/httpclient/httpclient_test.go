// Package httpclient tests the net/http client probe end to end: a
// client-only program sends a known mix to servers this test runs, and
// obsd's series must equal the program's own tally of its round trips.
package httpclient

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

var builds *e2e.Builds

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obsd-e2e-httpclient-")
	if err != nil {
		panic(err)
	}
	builds = e2e.NewBuilds(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// series is one line of the client's tally (testdata/httpclient).
type series struct {
	Method   string `json:"method"`
	Status   string `json:"status"`
	Error    string `json:"error_type"`
	Address  string `json:"server_address"`
	Port     string `json:"server_port"`
	Protocol string `json:"protocol"`
	N        int    `json:"n"`
}

func (s series) key() string {
	return strings.Join([]string{s.Method, s.Status, s.Error, s.Address, s.Port, s.Protocol}, " ")
}

// servers are what the client talks to, all in this (uninstrumented)
// process: HTTP/1, TLS with h2, h2c, and a port where nothing listens.
type servers struct {
	plain, secure, h2c, refused, ca string
}

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		w.WriteHeader(code)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/"+r.URL.Query().Get("to"), http.StatusFound)
	})
	// Never answers: the client gives up (deadline or cancel).
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	return mux
}

func startServers(t *testing.T) servers {
	t.Helper()
	var s servers
	plain := httptest.NewServer(handler())
	t.Cleanup(plain.Close)
	s.plain = plain.URL

	secure := httptest.NewUnstartedServer(handler())
	secure.EnableHTTP2 = true
	secure.StartTLS()
	t.Cleanup(secure.Close)
	s.secure = secure.URL
	s.ca = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: secure.Certificate().Raw})
	if err := os.WriteFile(s.ca, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Server{Handler: handler(), Protocols: &p}
	go h2c.Serve(ln)
	t.Cleanup(func() { h2c.Close() })
	s.h2c = "http://" + ln.Addr().String()

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.refused = closed.Addr().String()
	closed.Close()
	return s
}

// runClient starts the client, lets obsd attach, has it send the mix and
// returns its tally, the process and a function that lets it exit.
func runClient(t *testing.T, bin string, s servers, attach func(pid int)) ([]series, *e2e.Proc) {
	t.Helper()
	cmd := execCommand(bin, "-http", s.plain, "-https", s.secure, "-ca", s.ca, "-h2c", s.h2c, "-refused", s.refused)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	p := e2e.StartCmd(t, cmd)
	if !strings.HasPrefix(p.First, "ready") {
		t.Fatalf("client said %q, want ready", p.First)
	}
	attach(p.PID())
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := p.Out.String()
		if i := strings.Index(out, "[{"); i >= 0 {
			if j := strings.Index(out[i:], "\n"); j >= 0 {
				var tally []series
				if err := json.Unmarshal([]byte(out[i:i+j]), &tally); err != nil {
					t.Fatalf("client tally: %v\n%s", err, out)
				}
				return tally, p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("client printed no tally:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// observed returns obsd's http_client_request_duration_seconds series of
// pid, keyed as the tally is.
func observed(fams map[string]*dto.MetricFamily, pid int) map[string]int {
	out := map[string]int{}
	for _, m := range fams["http_client_request_duration_seconds"].GetMetric() {
		l := e2e.Labels(m)
		if l["service_instance_id"] != instance(pid) {
			continue
		}
		s := series{Method: l["http_request_method"], Status: l["http_response_status_code"], Error: l["error_type"],
			Address: l["server_address"], Port: l["server_port"], Protocol: l["network_protocol_version"]}
		out[s.key()] += int(e2e.Value(m))
	}
	return out
}

func instance(pid int) string { return e2e.InstanceID(pid) }

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// checkMix asserts that the tally covers every case the mix is meant to
// (so a client that silently failed cannot pass); h2cPort is the h2c
// server's port when the client's Go speaks h2c (1.24+), else "".
func checkMix(t *testing.T, want map[string]int, h2cPort string) {
	t.Helper()
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	has := func(substr string) bool {
		for _, k := range keys {
			if strings.Contains(k, substr) {
				return true
			}
		}
		return false
	}
	for _, must := range []string{
		" 302 ", " 404 ", " 503 ", "DELETE 204 ", "_OTHER 200 ", "HEAD 200 ", "POST 200 ",
		"connection_refused", "timeout", "context_canceled", " tls ", " 2", " 1.1",
	} {
		if !has(must) {
			t.Errorf("the client's tally has no %q series: %v", must, keys)
		}
	}
	// The h2c server's own series: HTTP/2 on its port (the TLS server's
	// h2 series is another port; a check by " 443" once matched a random
	// TLS port 443xx and hid that Go 1.22 and 1.23 clients send no h2c).
	if h2cPort != "" && !has(" "+h2cPort+" 2") {
		t.Errorf("no h2c series (port %s) in the tally: %v", h2cPort, keys)
	}
}

// TestHTTPClientCountedExactly: over a spread of Go releases and builds
// (stripped, PIE, cgo, the C linker), every round trip of the mix is one observation in the
// series the client itself tallied, no more, no fewer.
func TestHTTPClientCountedExactly(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	s := startServers(t)
	for _, v := range []struct {
		e2e.Variant
		h2c bool
		// spans: every round trip also a span (a record), checked like
		// the metric; ratio: half of them sampled (records), the rest
		// counted in the kernel, merged into one series each. Otherwise
		// metrics only: all counted in the kernel.
		spans, ratio bool
	}{
		{e2e.Variant{Name: "go1.21", Toolchain: "go1.21.13"}, false, false, false},
		{e2e.Variant{Name: "go1.24", Toolchain: "go1.24.9"}, true, true, false},
		{e2e.Variant{Name: "current-stripped", Stripped: true}, true, false, false},
		{e2e.Variant{Name: "go1.27", Toolchain: "go1.27.3"}, true, false, true},
		// As distributions build: PIE, and cgo with the C linker (Go
		// 1.21–1.24 then keep the line table in .data.rel.ro.gopclntab).
		{e2e.Variant{Name: "go1.22-pie", Toolchain: "go1.22.12", PIE: true}, false, false, false},
		{e2e.Variant{Name: "go1.23-stripped-ext-pie", Toolchain: "go1.23.12", Stripped: true, External: true, PIE: true}, false, false, false},
		{e2e.Variant{Name: "current-cgo", CGO: true}, true, false, true},
	} {
		t.Run(v.Name, func(t *testing.T) {
			bin := builds.TestdataProgram(t, "httpclient", v.Variant)
			var o *e2e.Obsd
			var recv *e2e.Receiver
			tally, p := runClient(t, bin, s, func(pid int) {
				var env []string
				args := []string{"--pid", strconv.Itoa(pid), "--traces", "none"}
				if v.spans {
					recv = e2e.StartReceiver(t)
					env = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint,
						"OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100"}
					args = args[:2]
				}
				if v.ratio {
					recv := e2e.StartReceiver(t)
					env = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint, "OTEL_EXPORTER_OTLP_INSECURE=true",
						"OTEL_TRACES_SAMPLER=traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.5"}
					args = append(args[:2], "--keep-slow=0", "--keep-errors=false")
				}
				o = e2e.StartObsd(t, obsdBin, env, args...)
				o.WaitScrape(t, 20*time.Second, "the client to be instrumented", func(f map[string]*dto.MetricFamily) bool {
					return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
				})
				if n := e2e.ProbeLinks(t, "http_client", pid); n != 2 {
					t.Fatalf("%d http_client* links on the client, want 2 (entry, every RET)", n)
				}
			})
			want := map[string]int{}
			for _, s := range tally {
				want[s.key()] += s.N
			}
			h2cPort := ""
			if v.h2c {
				h2cPort = s.h2c[strings.LastIndex(s.h2c, ":")+1:]
			}
			checkMix(t, want, h2cPort)
			var got map[string]int
			scrape := o.WaitScrape(t, 10*time.Second, fmt.Sprintf("%d round trips", total(want)), func(f map[string]*dto.MetricFamily) bool {
				got = observed(f, p.PID())
				return total(got) >= total(want)
			})
			for k, n := range want {
				if got[k] != n {
					t.Errorf("series %q: obsd counted %d, the client %d", k, got[k], n)
				}
			}
			for k, n := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("series %q: obsd counted %d, the client none", k, n)
				}
			}
			e2e.Promtool(t, scrape)
			if v.spans {
				checkSpans(t, recv, p.PID(), want)
			}
			if t.Failed() {
				t.Logf("client tally: %v", tally)
			}
		})
	}
}

// checkSpans asserts one CLIENT span per round trip, with the metric's
// values as attributes, and url.full stripped of query values.
func checkSpans(t *testing.T, recv *e2e.Receiver, pid int, want map[string]int) {
	t.Helper()
	spans := recv.WaitSpans(t, total(want), 20*time.Second)
	got := map[string]int{}
	redirects := 0
	for _, sp := range spans {
		if sp.Resource["service.instance.id"] != instance(pid) {
			continue
		}
		if sp.GetKind().String() != "SPAN_KIND_CLIENT" {
			t.Errorf("span %q of kind %v", sp.GetName(), sp.GetKind())
		}
		full := sp.Attr("url.full")
		if strings.Contains(full, "secret") || strings.Contains(full, "@") {
			t.Errorf("url.full %q carries a query value or userinfo", full)
		}
		if strings.Contains(full, "/redirect?") {
			redirects++
			if !strings.HasSuffix(full, "/redirect?to=REDACTED&token=REDACTED") {
				t.Errorf("url.full %q, want the query's values REDACTED", full)
			}
		}
		s := series{Method: sp.Attr("http.request.method"), Status: sp.Attr("http.response.status_code"),
			Error: sp.Attr("error.type"), Address: sp.Attr("server.address"), Port: sp.Attr("server.port"),
			Protocol: sp.Attr("network.protocol.version")}
		got[s.key()]++
	}
	if redirects != 3 {
		t.Errorf("%d spans of /redirect, want 3", redirects)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("spans %q: %d, the client counted %d", k, got[k], n)
		}
	}
	if total(got) != total(want) {
		t.Errorf("%d spans, the client counted %d round trips", total(got), total(want))
	}
}
