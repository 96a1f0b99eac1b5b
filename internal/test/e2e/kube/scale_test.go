package kube

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/obsd-dev/obsd/internal/test/e2e"
	kubetest "github.com/obsd-dev/obsd/internal/test/kube"
)

// TestKubeScale puts 200 annotated running pods on the node, each with a
// real Go server process in its containerd cgroup (plus a sidecar
// container without a process). It measures what a node at that scale
// asks of obsd: the time to attach to every process, exact counts on
// every one of them, memory and CPU under pod churn, and a shutdown that
// detaches everything well within a pod's default 30 s termination grace.
func TestKubeScale(t *testing.T) {
	e2e.RequireRoot(t)
	cl := kubetest.Start(t)
	e := &env{t: t, cl: cl, cg: kubetest.NewCgroups(t), srvBin: builds.HTTPServer(t, e2e.Variant{Name: "current"})}
	if _, err := cl.Client.CoreV1().Namespaces().Create(ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const pods = 200
	on := map[string]string{"obsd.dev/instrument": "true"}
	srvs := make([]*e2e.Proc, pods)
	for i := range pods {
		name := fmt.Sprintf("p%03d", i)
		p := e.pod(name, thisNode, on, map[string]string{"app": "scale"}, nil, "app", "sidecar")
		app := kubetest.NewContainerID()
		srvs[i] = e.server(p, app, false)
		e.running(name, map[string]string{"app": app, "sidecar": kubetest.NewContainerID()}, 0)
	}
	obsdBin := builds.Obsd(t)
	start := time.Now()
	o := e2e.StartObsd(t, obsdBin, []string{"OBSD_KUBERNETES=true", "NODE_NAME=" + thisNode, "KUBECONFIG=" + cl.Kubeconfig})
	o.WaitScrape(t, 60*time.Second, "every process instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_kubernetes_containers", nil) == 2*pods && e2e.Sum(f, "obsd_instrumented_processes", nil) == pods
	})
	attach := time.Since(start)
	first, last := attachSpan(t, o.Log.String())

	t.Logf("attaches logged from %v to %v after obsd's start", first.Sub(start).Round(time.Millisecond), last.Sub(start).Round(time.Millisecond))
	if attach > 10*time.Second {
		t.Errorf("%d processes instrumented %v after obsd's start, want a few seconds", pods, attach)
	}

	// One request to each pod, counted under its own pod exactly.
	for _, s := range srvs {
		if n := get(t, s.First, 1); n != 1 {
			t.Fatalf("GET /hello on %s answered %d times 200", s.First, n)
		}
	}
	fams := e2e.Families(t, o.WaitScrape(t, 10*time.Second, "one request per pod", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "http_server_request_duration_seconds", nil) == pods
	}))
	perPod := map[string]float64{}
	for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
		perPod[e2e.Labels(m)["k8s_pod_name"]] += float64(m.GetHistogram().GetSampleCount())
	}
	for i := range pods {
		if name := fmt.Sprintf("p%03d", i); perPod[name] != 1 {
			t.Errorf("pod %s: %v requests counted, want 1", name, perPod[name])
		}
	}

	pid := o.Cmd.Process.Pid
	cpu0, churnStart := cpuTicks(t, pid), time.Now()
	// Churn: relabel a pod every 50 ms for 10 s.
	for i := 0; time.Since(churnStart) < 10*time.Second; i++ {
		e.annotate(fmt.Sprintf("p%03d", i%pods), `"true"`)
		patch := fmt.Sprintf(`{"metadata":{"labels":{"churn":"%d"}}}`, i)
		if _, err := cl.Client.CoreV1().Pods(ns).Patch(ctx(), fmt.Sprintf("p%03d", i%pods), "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(churnStart)
	cpu := float64(cpuTicks(t, pid)-cpu0) / 100 / elapsed.Seconds()
	rss := rssKiB(t, pid)

	stop := time.Now()
	o.Stop(t)
	shutdown := time.Since(stop)
	t.Logf("%d annotated pods (%d containers, %d Go processes): all attached %v after start; churn every 50 ms: obsd CPU %.1f%% of a core, RSS %.1f MiB; shutdown (every probe detached) %v",
		pods, 2*pods, pods, attach.Round(time.Millisecond), 100*cpu, float64(rss)/1024, shutdown.Round(time.Millisecond))
	if cpu > 0.25 || rss > 250*1024 {
		t.Errorf("obsd not bounded: CPU %.1f%%, RSS %d KiB", 100*cpu, rss)
	}
	if shutdown > 10*time.Second {
		t.Errorf("shutdown took %v with %d processes, want well within the 30 s grace", shutdown, pods)
	}
	for _, s := range srvs {
		e2e.WaitNoProbeLinks(t, "http_server", s.PID())
	}
}

// attachSpan returns the times of the first and last "instrumented
// process" lines of obsd's log.
func attachSpan(t *testing.T, log string) (first, last time.Time) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^time=(\S+) level=INFO msg="instrumented process"`)
	for _, m := range re.FindAllStringSubmatch(log, -1) {
		ts, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatalf("log time %q: %v", m[1], err)
		}
		if first.IsZero() {
			first = ts
		}
		last = ts
	}
	return first, last
}

// cpuTicks is utime+stime of pid in clock ticks (USER_HZ, 100 on Linux).
func cpuTicks(t *testing.T, pid int) uint64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s
}

func rssKiB(t *testing.T, pid int) uint64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
