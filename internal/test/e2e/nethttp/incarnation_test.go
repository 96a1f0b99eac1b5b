package nethttp

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// A process is an incarnation: pid, start time and exec image. A re-exec in
// place and a pid reused within --keep-exited must neither mix their series
// nor let the forget timer of the earlier one delete the later one's: no
// counter obsd exports may ever go backwards.

// monotonic scrapes obsd every 50 ms in the background and records every
// http_server_request_duration_seconds series of one pid whose count went
// down between two scrapes.
type monotonic struct {
	o      *e2e.Obsd
	prefix string // service_instance_id prefix of the pid: "host:pid:"
	stop   chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	last    map[string]float64
	backs   []string
	scrapes int
}

func watchMonotonic(t *testing.T, o *e2e.Obsd, pid int) *monotonic {
	t.Helper()
	host, _ := os.Hostname()
	m := &monotonic{o: o, prefix: fmt.Sprintf("%s:%d:", host, pid), stop: make(chan struct{}),
		done: make(chan struct{}), last: map[string]float64{}}
	go m.run(t)
	t.Cleanup(m.halt)
	return m
}

func (m *monotonic) run(t *testing.T) {
	defer close(m.done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		resp, err := http.Get(m.o.Base + "/metrics")
		if err != nil {
			continue // obsd stopping; the test's own scrapes fail loudly
		}
		fams, perr := parseScrape(resp)
		if perr != nil {
			continue
		}
		m.mu.Lock()
		m.scrapes++
		for _, s := range fams["http_server_request_duration_seconds"].GetMetric() {
			l := e2e.Labels(s)
			if !strings.HasPrefix(l["service_instance_id"], m.prefix) {
				continue
			}
			key := labelKey(l)
			v := e2e.Value(s)
			if prev, ok := m.last[key]; ok && v < prev {
				m.backs = append(m.backs, fmt.Sprintf("%s went from %v to %v", key, prev, v))
			}
			m.last[key] = v
		}
		m.mu.Unlock()
	}
}

func (m *monotonic) halt() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

// check stops the watcher and fails t if any counter went backwards.
func (m *monotonic) check(t *testing.T) {
	t.Helper()
	m.halt()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.scrapes < 10 {
		t.Errorf("only %d background scrapes succeeded; the monotonicity check saw too little", m.scrapes)
	}
	for _, b := range m.backs {
		t.Errorf("counter went backwards: %s", b)
	}
}

func parseScrape(resp *http.Response) (fams map[string]*dto.MetricFamily, err error) {
	defer resp.Body.Close()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	var body strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		body.Write(buf[:n])
		if rerr != nil {
			break
		}
	}
	return e2e.Families(&panicTB{}, []byte(body.String())), nil
}

// panicTB lets e2e.Families run outside the test goroutine: a parse error
// panics and parseScrape turns it into an error.
type panicTB struct{ testing.TB }

func (*panicTB) Helper()                   {}
func (*panicTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

func labelKey(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q,", k, l[k])
	}
	return b.String()
}

// countByInstance adds the request counts of every series by instance.
func countByInstance(fams map[string]*dto.MetricFamily, prefix string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range fams["http_server_request_duration_seconds"].GetMetric() {
		id := e2e.Labels(s)["service_instance_id"]
		if strings.HasPrefix(id, prefix) {
			out[id] += e2e.Value(s)
		}
	}
	return out
}

// hello sends n requests on fresh connections and returns how many got a
// 200: the client's own tally.
func hello(t *testing.T, addr string, n int) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	ok := 0
	for i := 0; i < n; i++ {
		resp, err := c.Get("http://" + addr + "/hello")
		if err != nil {
			t.Fatalf("GET /hello: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			ok++
		}
	}
	return ok
}

// waitLog waits until obsd's log matches re.
func waitLog(t *testing.T, o *e2e.Obsd, re *regexp.Regexp, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !re.MatchString(o.Log.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("obsd did not log %v within %v", re, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReexecInPlace: a server that executes itself again under the same pid
// (hot restart) is a new incarnation. The first image's series keep their
// final counts for --keep-exited and then go; the second image's series,
// under their own service_instance_id, keep counting through and after
// that, and no counter ever goes backwards.
func TestReexecInPlace(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srv := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), nil, "-reexec-on-hup")
	pid := srv.PID()
	first := instance(pid)
	const keep = 3 * time.Second
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(pid), "--traces", "none", "--keep-exited", keep.String())
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))
	mono := watchMonotonic(t, o, pid)
	prefix := fmt.Sprintf("%s:%d:", hostname(), pid)

	before := hello(t, srv.First, 20)
	o.WaitScrape(t, 5*time.Second, "the first image's requests", func(f map[string]*dto.MetricFamily) bool {
		return countByInstance(f, prefix)[first] == float64(before)
	})

	if err := srv.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	second := first + ":2"
	waitLog(t, o, regexp.MustCompile(`msg="instrumented process" pid=`+itoa(pid)+` .*instance=`+regexp.QuoteMeta(second)+` `), 30*time.Second)
	exited := time.Now()
	if id := instance(pid); id != first {
		t.Fatalf("instance after exec %q, want the same pid and start time as before (%q)", id, first)
	}

	after := hello(t, srv.First, 10)
	fams := e2e.Families(t, o.WaitScrape(t, 5*time.Second, "the second image's requests", func(f map[string]*dto.MetricFamily) bool {
		return countByInstance(f, prefix)[second] == float64(after)
	}))
	if got := countByInstance(fams, prefix); got[first] != float64(before) || len(got) != 2 {
		t.Errorf("while the first image is kept: counts by instance %v, want %s=%d and %s=%d", got, first, before, second, after)
	}

	// Past --keep-exited the first image's series go; the second's stay.
	time.Sleep(time.Until(exited.Add(keep + time.Second)))
	more := hello(t, srv.First, 5)
	fams = e2e.Families(t, o.WaitScrape(t, 5*time.Second, "the first image forgotten", func(f map[string]*dto.MetricFamily) bool {
		_, kept := countByInstance(f, prefix)[first]
		return !kept
	}))
	time.Sleep(200 * time.Millisecond)
	fams = e2e.Families(t, o.Scrape(t))
	if got := countByInstance(fams, prefix); len(got) != 1 || got[second] != float64(after+more) {
		t.Errorf("after the first image was forgotten: counts by instance %v, want only %s=%d", got, second, after+more)
	}
	if n := e2e.Sum(fams, "obsd_instrumented_processes", nil); n != 1 {
		t.Errorf("obsd_instrumented_processes = %v, want 1", n)
	}
	mono.check(t)
	o.Stop(t)
	e2e.WaitNoProbeLinks(t, "http_server", pid)
}

// TestPIDReuse: a process that exits and whose pid a new process gets
// within --keep-exited (forced: /proc/sys/kernel/ns_last_pid is set to the
// pid before it, then the next fork takes it). The two are different
// incarnations with their own series; the first's forget timer leaves the
// second's alone.
func TestPIDReuse(t *testing.T) {
	e2e.RequireRoot(t)
	obsdBin := builds.Obsd(t)
	srvBin := builds.HTTPServer(t, e2e.Variant{Name: "current"})
	a := e2e.Start(t, srvBin, nil)
	pid := a.PID()
	first := instance(pid)
	const keep = 4 * time.Second
	o := e2e.StartObsd(t, obsdBin, nil, "--pid", itoa(pid), "--traces", "none", "--keep-exited", keep.String())
	o.WaitScrape(t, 10*time.Second, "instrumented", instrumented(1))
	mono := watchMonotonic(t, o, pid)
	prefix := fmt.Sprintf("%s:%d:", hostname(), pid)

	before := hello(t, a.First, 20)
	o.WaitScrape(t, 5*time.Second, "the first process's requests", func(f map[string]*dto.MetricFamily) bool {
		return countByInstance(f, prefix)[first] == float64(before)
	})
	a.Cmd.Process.Kill()
	a.Cmd.Wait()
	exited := time.Now()

	b := startWithPID(t, srvBin, pid)
	second := instance(pid)
	if second == first {
		t.Fatalf("the new process has the old one's instance %q", first)
	}
	waitLog(t, o, regexp.MustCompile(`msg="instrumented process" pid=`+itoa(pid)+` .*instance=`+regexp.QuoteMeta(second)+` `), 5*time.Second)
	if time.Since(exited) >= keep {
		t.Fatalf("the pid was reused %v after the exit, not within --keep-exited %v", time.Since(exited), keep)
	}
	after := hello(t, b.First, 10)
	fams := e2e.Families(t, o.WaitScrape(t, 5*time.Second, "the second process's requests", func(f map[string]*dto.MetricFamily) bool {
		return countByInstance(f, prefix)[second] == float64(after)
	}))
	if got := countByInstance(fams, prefix); got[first] != float64(before) || len(got) != 2 {
		t.Errorf("within --keep-exited: counts by instance %v, want %s=%d and %s=%d", got, first, before, second, after)
	}

	time.Sleep(time.Until(exited.Add(keep + time.Second)))
	more := hello(t, b.First, 5)
	o.WaitScrape(t, 5*time.Second, "the first process forgotten", func(f map[string]*dto.MetricFamily) bool {
		_, kept := countByInstance(f, prefix)[first]
		return !kept
	})
	time.Sleep(200 * time.Millisecond)
	fams = e2e.Families(t, o.Scrape(t))
	if got := countByInstance(fams, prefix); len(got) != 1 || got[second] != float64(after+more) {
		t.Errorf("after the first process was forgotten: counts by instance %v, want only %s=%d", got, second, after+more)
	}
	mono.check(t)
	o.Stop(t)
}

// startWithPID starts bin so that it gets pid, which must be free: it sets
// the kernel's last allocated pid to pid-1 and forks at once. Another fork
// on the machine can take the pid first, so it tries a few times.
func startWithPID(t *testing.T, bin string, pid int) *e2e.Proc {
	t.Helper()
	const lastPID = "/proc/sys/kernel/ns_last_pid"
	for try := 0; try < 50; try++ {
		if err := os.WriteFile(lastPID, []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Fatalf("forcing pid reuse through %s: %v", lastPID, err)
		}
		p := e2e.Start(t, bin, nil)
		if p.PID() == pid {
			return p
		}
		p.Cmd.Process.Kill()
		p.Cmd.Wait()
	}
	t.Fatalf("could not get pid %d again in 50 tries", pid)
	return nil
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
