// Package e2e holds what the end-to-end tests share: building the binaries,
// starting real processes, a real OTLP/gRPC receiver, and reading obsd's
// scrape.
//
// # Building test programs
//
// A suite keeps one Builds (NewBuilds in TestMain) and asks it for every
// binary; each is built at most once per test run, and test programs come
// from the shared, content-keyed build cache of internal/test/testenv, so
// each toolchain × flavour build happens once per machine, whichever test
// package (inspect's included) asks first:
//
//	bin := builds.Program(t, e2e.Program{
//		Name:      "grpcserver",
//		Src:       filepath.Join(e2e.RepoRoot(), "testdata", "grpcserver"),
//		Toolchain: "go1.22.12",                        // "" is the go on PATH
//		Flavour:   e2e.Flavour{PIE: true},
//		Require:   []string{"google.golang.org/grpc v1.70.0"},
//	})
//
// builds.HTTPServer(t, v) is the same for testdata/httpserver, and
// e2e.Toolchains lists one release per supported Go minor version. Every
// build but an External or CGO one is CGO_ENABLED=0, so that programs of one
// toolchain and flavour share one compilation of the standard library; PGO
// builds share one recorded profile per toolchain. builds.GoInstall installs
// a third-party command from the module proxy through the same cache.
// builds.Obsd builds obsd; Builds.Get remains for what the cache does not
// describe (a build inside the root module).
package e2e

import (
	"bufio"
	"bytes"
	"context"
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

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/obsd-dev/obsd/internal/test/testenv"
)

// RequireRoot skips a test that attaches BPF programs when not root, and
// fails it instead when OBSD_REQUIRE_BPF=1 (CI).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	Skip(t, "needs root to attach BPF programs")
}

// Required reports whether OBSD_REQUIRE_BPF=1 (CI): every test must then
// run, so whatever would skip one is a failure.
func Required() bool { return testenv.Required() }

// Skip skips the test with the reason given, or fails it when
// OBSD_REQUIRE_BPF=1. Every skip in obsd's tests goes through here,
// testenv.Skip or RequireRoot, so CI never reports a test as passed that did
// not run.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	testenv.Skip(t, format, args...)
}

// RequireTool returns the path of the command name, or skips the test (fails
// it when OBSD_REQUIRE_BPF=1) when it is not installed. .ci/run installs
// every tool a test asks for.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Skip(t, "%s is not installed: %v", name, err)
	}
	return path
}

// RepoRoot finds the directory holding the root go.mod.
func RepoRoot() string { return testenv.RepoRoot() }

// The build cache's types, here so that a suite needs only this package.
type (
	Flavour    = testenv.Flavour
	Program    = testenv.Program
	BuildCache = testenv.BuildCache
)

// SharedBuildCache is testenv.SharedBuildCache.
func SharedBuildCache() *BuildCache { return testenv.SharedBuildCache() }

// Builds caches binaries by name for the whole test binary run, so each is
// built at most once however many tests use it.
type Builds struct {
	Dir string
	mu  sync.Mutex
	m   map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// NewBuilds returns a cache writing into dir.
func NewBuilds(dir string) *Builds { return &Builds{Dir: dir, m: map[string]*build{}} }

// Get builds name once with fn, which writes the binary to the path given
// (in b.Dir).
func (b *Builds) Get(t testing.TB, name string, fn func(out string) error) string {
	t.Helper()
	out := filepath.Join(b.Dir, name)
	return b.memo(t, name, func() (string, error) { return out, fn(out) })
}

// memo runs fn once per name and Builds, and fails the test if it failed.
func (b *Builds) memo(t testing.TB, name string, fn func() (string, error)) string {
	t.Helper()
	b.mu.Lock()
	bd := b.m[name]
	if bd == nil {
		bd = &build{}
		b.m[name] = bd
	}
	b.mu.Unlock()
	bd.once.Do(func() { bd.path, bd.err = fn() })
	if bd.err != nil {
		t.Fatalf("building %s: %v", name, bd.err)
	}
	return bd.path
}

// GoBuild runs `go build` in dir with extra environment.
func GoBuild(dir string, env []string, args ...string) error {
	return testenv.GoBuild(dir, env, args...)
}

// Obsd builds cmd/obsd.
func (b *Builds) Obsd(t testing.TB) string {
	t.Helper()
	return b.Get(t, "obsd", func(out string) error {
		return GoBuild(RepoRoot(), nil, "-o", out, "./cmd/obsd")
	})
}

// Variant is one way of building testdata/httpserver.
type Variant struct {
	Name string
	// Toolchain is a GOTOOLCHAIN value such as "go1.21.13"; "" is the Go
	// running the tests.
	Toolchain string
	Stripped  bool // -ldflags='-s -w': no symbols, no DWARF
	PIE       bool
	// External links with the C linker (CGO_ENABLED=1, -linkmode=external),
	// as distributions build: with PIE, the line table of Go 1.21–1.24 is
	// in .data.rel.ro.gopclntab. Needs gcc.
	External bool
	// CGO builds with CGO_ENABLED=1 and the linker's default mode, as a
	// plain `go build` does where a C compiler is installed (runtime/cgo
	// linked in). Other variants are CGO_ENABLED=0 (see Program).
	CGO bool
	// PGO builds with a CPU profile in which net/http's server path is hot
	// (recorded from ./pgoprofile built by the same toolchain), so the
	// compiler may inline the probed functions.
	PGO bool
}

// Flavour returns how v is built.
func (v Variant) Flavour() Flavour {
	return Flavour{Stripped: v.Stripped, PIE: v.PIE, External: v.External, CGO: v.CGO, PGO: v.PGO}
}

// Toolchains are the releases the flavour tests build with, one per
// supported minor version ("" is the Go running the tests).
var Toolchains = testenv.Toolchains

// HTTPServer builds testdata/httpserver as v, through the shared build
// cache, and returns it as b.Dir/httpserver-<v.Name> (a hard link, or a
// copy), so that the executable's name (--exe globs, the default service
// name) stays the variant's.
func (b *Builds) HTTPServer(t testing.TB, v Variant) string {
	t.Helper()
	cached := b.Program(t, Program{
		Name:      "httpserver",
		Src:       filepath.Join(RepoRoot(), "testdata", "httpserver"),
		Toolchain: v.Toolchain,
		Flavour:   v.Flavour(),
	})
	return b.Get(t, "httpserver-"+v.Name, func(out string) error { return linkOrCopy(cached, out) })
}

// linkOrCopy makes dst the same executable as src: a hard link, or a copy
// across file systems.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// Program returns p's executable from the shared build cache
// (SharedBuildCache), building it the first time any test package asks.
// An External or CGO build without gcc skips the test (fails it under
// OBSD_REQUIRE_BPF=1).
func (b *Builds) Program(t testing.TB, p Program) string {
	t.Helper()
	if p.External || p.CGO {
		if _, err := exec.LookPath("gcc"); err != nil {
			Skip(t, "building %s with cgo needs gcc: %v", p.Name, err)
		}
	}
	return b.memo(t, fmt.Sprintf("program %+v", p), func() (string, error) {
		return SharedBuildCache().Build(p)
	})
}

// GoInstall returns the executable `go install pkg` makes (pkg is
// "path@vX.Y.Z"), from the shared build cache (BuildCache.GoInstall),
// installing it the first time any test package asks.
func (b *Builds) GoInstall(t testing.TB, pkg string) string {
	t.Helper()
	return b.memo(t, "install "+pkg, func() (string, error) {
		return SharedBuildCache().GoInstall(pkg)
	})
}

// Proc is a started process whose first stdout line was read.
type Proc struct {
	Cmd   *exec.Cmd
	First string
	Out   *SyncBuffer // rest of stdout and stderr
}

// PID returns the process ID.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Start runs bin, waits for its first line of stdout, and kills it at
// cleanup.
func Start(t testing.TB, bin string, env []string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	return StartCmd(t, cmd)
}

// StartCmd is Start for a command the caller prepared (environment,
// SysProcAttr, a wrapper such as a shell that joins a cgroup first).
func StartCmd(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	bin := cmd.Path
	out := &SyncBuffer{}
	cmd.Stderr = out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	first := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		first <- strings.TrimSpace(line)
		io.Copy(out, r)
	}()
	select {
	case line := <-first:
		if line == "" {
			t.Fatalf("%s printed nothing; output:\n%s", bin, out)
		}
		return &Proc{Cmd: cmd, First: line, Out: out}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start; output:\n%s", bin, out)
	}
	return nil
}

// SyncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Obsd is a running obsd.
type Obsd struct {
	Cmd  *exec.Cmd
	Base string // http://host:port
	Log  *SyncBuffer
	done chan error
}

var listenRE = regexp.MustCompile(`msg="obsd running" listen=(\S+)`)

// StartObsd runs obsd with args (plus --listen on a free loopback port) and
// waits until it serves.
func StartObsd(t testing.TB, bin string, env []string, args ...string) *Obsd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--listen", "127.0.0.1:0", "--log-level", "debug"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	log := &SyncBuffer{}
	cmd.Stderr = log
	cmd.Stdout = log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting obsd: %v", err)
	}
	o := &Obsd{Cmd: cmd, Log: log, done: make(chan error, 1)}
	go func() { o.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-o.done
		if t.Failed() {
			t.Logf("obsd log:\n%s", log)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := listenRE.FindStringSubmatch(log.String()); m != nil {
			o.Base = "http://" + m[1]
			return o
		}
		select {
		case err := <-o.done:
			o.done <- err
			t.Fatalf("obsd exited: %v\n%s", err, log)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("obsd did not start serving:\n%s", log)
	return nil
}

// Get fetches path from obsd and returns status and body.
func (o *Obsd) Get(t testing.TB, path string, header ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", o.Base+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return resp.StatusCode, body
}

// Scrape returns /metrics in the Prometheus text format.
func (o *Obsd) Scrape(t testing.TB) []byte {
	t.Helper()
	code, body := o.Get(t, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics answered %d: %s", code, body)
	}
	return body
}

// InstanceID is the service.instance.id obsd gives the first image it
// instruments of process pid: "host:pid:starttime", starttime being field
// 22 of /proc/PID/stat, parsed here independently of obsd. It returns ""
// when the process is gone.
func InstanceID(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// Fields after the command name, which ends at the last ')'.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(fields) < 20 {
		return ""
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d:%s", host, pid, fields[19]) // field 22 is the 20th after the name
}

// Families parses a text-format scrape.
func Families(t testing.TB, scrape []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(scrape))
	if err != nil {
		t.Fatalf("parsing scrape: %v\n%s", err, scrape)
	}
	return fams
}

// Labels returns a metric's labels as a map.
func Labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// Value returns a counter's or gauge's value, or a histogram's count.
func Value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// Sum adds Value over the metrics of family name whose labels include want.
func Sum(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var total float64
	for _, m := range fams[name].GetMetric() {
		l := Labels(m)
		ok := true
		for k, v := range want {
			if l[k] != v {
				ok = false
				break
			}
		}
		if ok {
			total += Value(m)
		}
	}
	return total
}

// WaitScrape polls /metrics until cond holds or timeout passes, and returns
// the last scrape.
func (o *Obsd) WaitScrape(t testing.TB, timeout time.Duration, what string, cond func(map[string]*dto.MetricFamily) bool) []byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := o.Scrape(t)
		if cond(Families(t, s)) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last scrape:\n%s", what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Exited waits up to d for the obsd command to exit (its output then all
// in Log) and says whether it did.
func (o *Obsd) Exited(d time.Duration) bool {
	select {
	case err := <-o.done:
		o.done <- err
		return true
	case <-time.After(d):
		return false
	}
}

// Stop sends SIGTERM and requires a clean exit within 10 s.
func (o *Obsd) Stop(t testing.TB) {
	t.Helper()
	o.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-o.done:
		o.done <- err
		if err != nil {
			t.Fatalf("obsd exited with %v after SIGTERM:\n%s", err, o.Log)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("obsd did not exit within 10 s of SIGTERM:\n%s", o.Log)
	}
}

// Promtool runs `promtool check metrics` on a scrape. Missing promtool skips
// the check, unless OBSD_REQUIRE_BPF=1 (CI installs it).
func Promtool(t testing.TB, scrape []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("OBSD_REQUIRE_BPF") == "1" {
			t.Fatal("promtool not installed (Debian package prometheus)")
		}
		t.Log("promtool not installed; skipping the lint")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// ProbeLinks counts the uprobe-multi links filtered to target pid whose
// program's name starts with prefix (the kernel keeps 15 characters). Only
// links on this test's own target count: any other eBPF user on the machine,
// another obsd included, is left out.
func ProbeLinks(t testing.TB, prefix string, pid int) int {
	t.Helper()
	n := 0
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil || info.Type != link.UprobeMultiType {
			continue
		}
		if um := info.UprobeMulti(); um == nil {
			continue
		} else if p, ok := um.Pid(); !ok || int(p) != pid {
			continue
		}
		prog, err := ebpf.NewProgramFromID(info.Program)
		if err != nil {
			continue
		}
		pi, err := prog.Info()
		prog.Close()
		if err == nil && strings.HasPrefix(pi.Name, prefix) {
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Fatalf("listing BPF links: %v", err)
	}
	return n
}

// WaitNoProbeLinks fails unless every link of programs named prefix* on
// target pid is gone within 5 s (the kernel releases a closed link
// asynchronously).
func WaitNoProbeLinks(t testing.TB, prefix string, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := ProbeLinks(t, prefix, pid)
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d uprobe-multi links of %s* programs still attached after obsd stopped", n, prefix)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Receiver is a real OTLP/gRPC trace receiver on loopback.
type Receiver struct {
	collectortrace.UnimplementedTraceServiceServer
	Endpoint string
	mu       sync.Mutex
	spans    []*tracepb.ResourceSpans
}

// StartReceiver serves OTLP/gRPC on 127.0.0.1 until cleanup.
func StartReceiver(t testing.TB) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{Endpoint: "http://" + ln.Addr().String()}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, r)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return r
}

// Export implements the OTLP trace service.
func (r *Receiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	r.spans = append(r.spans, req.GetResourceSpans()...)
	r.mu.Unlock()
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// Span is a received span with its resource's attributes.
type Span struct {
	*tracepb.Span
	Resource map[string]string
}

// Spans returns every span received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Span
	for _, rs := range r.spans {
		res := map[string]string{}
		for _, kv := range rs.GetResource().GetAttributes() {
			res[kv.GetKey()] = AnyString(kv.GetValue())
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				out = append(out, Span{Span: s, Resource: res})
			}
		}
	}
	return out
}

// Attr returns a span attribute as a string.
func (s Span) Attr(key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return AnyString(kv.GetValue())
		}
	}
	return ""
}

// AnyString formats an OTLP value.
func AnyString(v interface {
	GetStringValue() string
	GetIntValue() int64
	GetBoolValue() bool
}) string {
	if s := v.GetStringValue(); s != "" {
		return s
	}
	if i := v.GetIntValue(); i != 0 {
		return fmt.Sprint(i)
	}
	if v.GetBoolValue() {
		return "true"
	}
	return ""
}

// WaitSpans polls until the receiver holds at least n spans.
func (r *Receiver) WaitSpans(t testing.TB, n int, timeout time.Duration) []Span {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := r.Spans()
		if len(s) >= n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d spans, want %d", len(s), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestdataProgram builds the program in testdata/<dir> (std only, or with
// its own go.mod) as v, through the shared build cache.
func (b *Builds) TestdataProgram(t testing.TB, dir string, v Variant) string {
	t.Helper()
	return b.Program(t, Program{Name: dir, Src: filepath.Join(RepoRoot(), "testdata", dir), Toolchain: v.Toolchain, Flavour: v.Flavour()})
}
