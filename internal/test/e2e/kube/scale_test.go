package kube

import (
	"fmt"
	"os"
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

// TestKubeScale puts 200 annotated running pods on the node (their
// processes are not started: this measures the informer, the rules and
// the /proc scans, not the probes) and reports obsd's memory and CPU,
// which must stay bounded.
func TestKubeScale(t *testing.T) {
	e2e.RequireRoot(t)
	cl := kubetest.Start(t)
	e := &env{t: t, cl: cl}
	if _, err := cl.Client.CoreV1().Namespaces().Create(ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const pods = 200
	on := map[string]string{"obsd.dev/instrument": "true"}
	for i := 0; i < pods; i++ {
		name := fmt.Sprintf("p%03d", i)
		e.pod(name, thisNode, on, map[string]string{"app": "scale"}, nil, "app", "sidecar")
		e.running(name, map[string]string{"app": kubetest.NewContainerID(), "sidecar": kubetest.NewContainerID()}, 0)
	}
	o := e2e.StartObsd(t, builds.Obsd(t), []string{"OBSD_KUBERNETES=true", "NODE_NAME=" + thisNode, "KUBECONFIG=" + cl.Kubeconfig})
	o.WaitScrape(t, 20*time.Second, "every container selected", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_kubernetes_containers", nil) == 2*pods
	})
	pid := o.Cmd.Process.Pid
	cpu0, start := cpuTicks(t, pid), time.Now()
	// Churn: relabel a pod every 50 ms for 10 s.
	for i := 0; time.Since(start) < 10*time.Second; i++ {
		e.annotate(fmt.Sprintf("p%03d", i%pods), `"true"`)
		patch := fmt.Sprintf(`{"metadata":{"labels":{"churn":"%d"}}}`, i)
		if _, err := cl.Client.CoreV1().Pods(ns).Patch(ctx(), fmt.Sprintf("p%03d", i%pods), "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu := float64(cpuTicks(t, pid)-cpu0) / 100 / elapsed.Seconds()
	rss := rssKiB(t, pid)
	t.Logf("%d annotated pods (%d containers), churn every 50 ms: obsd CPU %.1f%% of a core, RSS %.1f MiB", pods, 2*pods, 100*cpu, float64(rss)/1024)
	if cpu > 0.25 || rss > 200*1024 {
		t.Errorf("obsd not bounded: CPU %.1f%%, RSS %d KiB", 100*cpu, rss)
	}
	o.Stop(t)
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
