package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual/internal/otlptest"
)

var (
	buildDir  string
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// TestMain removes the binary that the tests build (once, on first use,
// so a benchmark-only run builds nothing).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "manual-service-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// serviceBinary builds the service once per test run.
func serviceBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binary = filepath.Join(buildDir, "service")
		out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building service: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

type service struct {
	cmd    *exec.Cmd
	url    string
	ready  chan struct{} // closed once url is set
	exited chan error
	stderr *lockedBuffer
}

// startService starts the service with args and extra environment, and reads the
// bound address from its first line of output.
func startService(t *testing.T, env []string, args ...string) *service {
	t.Helper()
	cmd := exec.Command(serviceBinary(t), append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Keep exports on loopback even where no receiver is wanted.
	cmd.Env = append(cmd.Env, "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1")
	cmd.Env = append(cmd.Env, env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &service{cmd: cmd, ready: make(chan struct{}), exited: make(chan error, 1), stderr: &lockedBuffer{}}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		s.url = "http://" + strings.TrimSpace(line)
		close(s.ready)
		io.Copy(io.Discard, r)
	}()
	go func() { s.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-s.exited
		}
	})
	select {
	case <-s.ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("service printed no address; stderr:\n%s", s.stderr)
	}
	return s
}

// lockedBuffer collects the service's stderr for failure messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func get(t *testing.T, url string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestServiceRoutesMetricsAndTraces(t *testing.T) {
	dep, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := dep.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	rcv := otlptest.StartHTTP(t) // http/protobuf, the specification's default
	s := startService(t, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.Addr,
		"OTEL_TRACES_SAMPLER=always_on",
	}, "-dep", dep.Addr().String(), "-drain", "0")

	code, hdr, _ := get(t, s.url+"/hello")
	traceID := hdr.Get("X-Trace-Id")
	if code != 200 || len(traceID) != 32 {
		t.Fatalf("/hello: %d, trace id %q", code, traceID)
	}
	for path, want := range map[string]int{"/fail": 500, "/slow?ms=30": 200, "/slow?ms=x": 400, "/nowhere": 404} {
		if code, _, _ := get(t, s.url+path); code != want {
			t.Errorf("%s: %d, want %d", path, code, want)
		}
	}

	code, hdr, body := get(t, s.url+"/readyz")
	if code != 200 || hdr.Get("Content-Type") != "application/json" ||
		strings.TrimSpace(body) != `{"status":"ok","checks":{"dep":"ok","shutdown":"ok"}}` {
		t.Errorf("/readyz with the dependency up: %d %q %s", code, hdr.Get("Content-Type"), body)
	}
	dep.Close()
	code, _, body = get(t, s.url+"/readyz")
	var rep struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &rep); err != nil || code != 503 || rep.Status != "failure" ||
		!strings.Contains(rep.Checks["dep"], "connection refused") {
		t.Errorf("/readyz with the dependency down: %d %s", code, body)
	}
	if code, _, _ := get(t, s.url+"/healthz"); code != 200 {
		t.Errorf("/healthz with the dependency down: %d; liveness must not look at dependencies", code)
	}

	code, hdr, body = get(t, s.url+"/metrics", "Accept", "application/openmetrics-text;version=1.0.0")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/openmetrics-text") {
		t.Fatalf("/metrics: %d %s", code, hdr.Get("Content-Type"))
	}
	ex := regexp.MustCompile(`(?m)^http_server_request_duration_seconds_bucket\{[^}]*http_route="/hello"[^}]*\} 1 # \{[^}]*trace_id="` + traceID + `"`)
	if !ex.MatchString(body) {
		t.Errorf("no exemplar with trace_id %s for /hello in the scrape", traceID)
	}
	for _, want := range []string{
		`http_requests_total{host_name="`, `service_name="example"`, "go_gc_stw_pause_average_seconds{", "go_goroutines{", "process_cpu_seconds_total{",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if strings.Contains(body, `http_route="/metrics"`) || strings.Contains(body, `http_route="/readyz"`) {
		t.Error("probes and scrapes are counted as requests")
	}

	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.exited:
		if err != nil {
			t.Fatalf("service exited with %v; stderr:\n%s", err, s.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("service did not exit after SIGTERM")
	}
	// Shutdown flushed the spans of every request.
	spans, ok := rcv.WaitFor(5*time.Second, func(sp []otlptest.Span) bool {
		for _, s := range sp {
			if s.TraceID == traceID {
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no span of trace %s among %d received", traceID, len(spans))
	}
	for _, sp := range spans {
		if sp.TraceID == traceID && (sp.Name != "GET /hello" || sp.Resource["service.name"] != "example" || sp.Resource["obsd.manual"] != "true") {
			t.Errorf("span %q resource %v", sp.Name, sp.Resource)
		}
	}
}

func TestServiceDrainsOnSIGTERM(t *testing.T) {
	const drain = 1500 * time.Millisecond
	s := startService(t, nil, "-drain", drain.String())
	if code, _, _ := get(t, s.url+"/readyz"); code != 200 {
		t.Fatalf("/readyz before SIGTERM: %d", code)
	}
	sent := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Poll until readiness turns; it must do so well within the drain.
	for {
		code, _, body := get(t, s.url+"/readyz")
		if code == 503 {
			if !strings.Contains(body, `"shutdown":"process is shutting down"`) {
				t.Errorf("/readyz while draining: %s", body)
			}
			break
		}
		if time.Since(sent) > drain/2 {
			t.Fatalf("/readyz still %d %s after SIGTERM", code, time.Since(sent))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Still serving traffic and alive while draining.
	if code, _, _ := get(t, s.url+"/healthz"); code != 200 {
		t.Errorf("/healthz while draining: %d", code)
	}
	if code, _, _ := get(t, s.url+"/hello"); code != 200 {
		t.Errorf("/hello while draining: %d", code)
	}
	select {
	case err := <-s.exited:
		if err != nil {
			t.Fatalf("exit: %v; stderr:\n%s", err, s.stderr)
		}
	case <-time.After(drain + 10*time.Second):
		t.Fatal("service did not exit after the drain")
	}
	if took := time.Since(sent); took < drain {
		t.Errorf("exited %s after SIGTERM, before the %s drain ended", took, drain)
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(s.url, "http://"), time.Second); err == nil {
		t.Error("port still open after exit")
	}
}

func TestServiceRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-drain", "-1s"}, {"-addr", "127.0.0.1:notaport"}, {"extra"}} {
		out, err := exec.Command(serviceBinary(t), args...).CombinedOutput()
		if err == nil {
			t.Errorf("%v: exit 0, want failure", args)
		}
		if len(out) == 0 {
			t.Errorf("%v: no message", args)
		}
	}
}
