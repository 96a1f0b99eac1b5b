package kube

import (
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/obsd-dev/obsd/internal/test/e2e"
	kubetest "github.com/obsd-dev/obsd/internal/test/kube"
)

// outage is how long the API server stays down: long enough for client-go's
// retries to back off well past their first steps (0.8, 1.6, 3.2, 6.4,
// 12.8 s, each with up to as much again of jitter), so that catching up
// depends on the backoff, not on a lucky early retry. A longer outage only
// waits longer: the retry interval is capped at 30 s (at most 60 s with
// jitter), which the deadline below allows for. obsd keeps client-go's
// backoff on purpose: every node's obsd retrying faster would load an API
// server that is coming back.
const outage = 20 * time.Second

// TestKubeAPIServerDown stops the API server for a while: obsd keeps
// instrumenting and serving what it had, reconnects by itself, and then
// catches up with changes made as soon as the server is back (an
// annotation added, a pod deleted).
func TestKubeAPIServerDown(t *testing.T) {
	e2e.RequireRoot(t)
	cl := kubetest.Start(t)
	e := &env{t: t, cl: cl, cg: kubetest.NewCgroups(t), srvBin: builds.HTTPServer(t, e2e.Variant{Name: "current"})}
	if _, err := cl.Client.CoreV1().Namespaces().Create(ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	on := map[string]string{"obsd.dev/instrument": "true"}
	a := e.pod("a", thisNode, on, nil, nil, "app")
	aID := kubetest.NewContainerID()
	aSrv := e.server(a, aID, false)
	e.running("a", map[string]string{"app": aID}, 0)
	b := e.pod("b", thisNode, nil, nil, nil, "app")
	bID := kubetest.NewContainerID()
	bSrv := e.server(b, bID, false)
	e.running("b", map[string]string{"app": bID}, 0)

	o := e2e.StartObsd(t, builds.Obsd(t), []string{"OBSD_KUBERNETES=true", "NODE_NAME=" + thisNode, "KUBECONFIG=" + cl.Kubeconfig})
	o.WaitScrape(t, 15*time.Second, "a instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
	})
	aInst := ns + ".a.app"
	n1 := get(t, aSrv.First, 10)

	cl.StopAPIServer(t)
	stopped := time.Now()
	n2 := get(t, aSrv.First, 15)
	for time.Since(stopped) < outage {
		time.Sleep(time.Second)
	}
	// Still serving, still counting, still labelled, while the server is down.
	fams := e2e.Families(t, o.Scrape(t))
	if got := e2e.Sum(fams, "http_server_request_duration_seconds", map[string]string{"service_instance_id": aInst, "k8s_pod_name": "a"}); got != float64(n1+n2) {
		t.Errorf("during the outage: %v requests of a, want %d", got, n1+n2)
	}
	if e2e.ProbeLinks(t, prefix, aSrv.PID()) == 0 {
		t.Error("a lost its probes during the outage")
	}
	// client-go retries "connection refused" inside the watch and never
	// calls the watch error handler (reflector.go, isWatchErrorRetriable):
	// the client's transport sees it, counts it and logs it once.
	if n := e2e.Sum(fams, "obsd_kubernetes_api_errors_total", map[string]string{"reason": "unreachable"}); n < 1 {
		t.Errorf("obsd_kubernetes_api_errors_total{reason=\"unreachable\"} = %v during the outage, want at least 1", n)
	}
	if n := strings.Count(o.Log.String(), "Kubernetes API server request failed"); n != 1 {
		t.Errorf("the outage logged %d times, want once:\n%s", n, o.Log)
	}

	cl.StartAPIServer(t)
	back := time.Now()
	e.annotate("b", `"true"`)
	zero := int64(0)
	if err := cl.Client.CoreV1().Pods(ns).Delete(ctx(), "a", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	// client-go backs off up to 30 s between attempts (measured: 30.5 s
	// on a quiet machine; a cold CI run under load took over 45 s), so
	// allow three times the cap.
	deadline := back.Add(90 * time.Second)
	for e2e.ProbeLinks(t, prefix, bSrv.PID()) == 0 || e2e.ProbeLinks(t, prefix, aSrv.PID()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("changes made after the outage not followed within %v", deadline.Sub(back))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("caught up %v after the API server returned", time.Since(back).Round(time.Millisecond))
	if !strings.Contains(o.Log.String(), "Kubernetes API server answers again") {
		t.Errorf("the API server's return was not logged:\n%s", o.Log)
	}
	o.Stop(t)
}
