package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/obsd-dev/obsd/internal/discover"
)

// fakeProc is a procfs tree in a temporary directory: each process has
// stat, cgroup, environ and an exe link to a real file (this Go test binary
// or /bin/sh, which is not Go).
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) *fakeProc {
	return &fakeProc{t: t, root: t.TempDir()}
}

func (f *fakeProc) add(pid int, container string, goExe bool, env ...string) {
	f.t.Helper()
	dir := filepath.Join(f.root, fmt.Sprint(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	exe := "/bin/sh"
	if goExe {
		exe, _ = os.Executable()
	}
	cg := "0::/system.slice/ssh.service\n"
	if container != "" {
		cg = "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice/cri-containerd-" + container + ".scope\n"
	}
	files := map[string]string{
		"stat":    fmt.Sprintf("%d (proc %d) S 1 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 %d 1000 100 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0", pid, pid, 1000+pid),
		"cgroup":  cg,
		"environ": strings.Join(env, "\x00"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(dir, "exe"))
	if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeProc) remove(pid int) { os.RemoveAll(filepath.Join(f.root, fmt.Sprint(pid))) }

// recorder is a discover.Handler keeping what it was told.
type recorder struct {
	mu     sync.Mutex
	live   map[int]discover.Process
	events []string
}

func (r *recorder) Added(p discover.Process) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live[p.PID] = p
	r.events = append(r.events, fmt.Sprintf("+%d", p.PID))
}

func (r *recorder) Removed(p discover.Process) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.live, p.PID)
	r.events = append(r.events, fmt.Sprintf("-%d", p.PID))
}

func (r *recorder) get(pid int) (discover.Process, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.live[pid]
	return p, ok
}

func (r *recorder) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.events, " ")
}

func cid(n int) string { return fmt.Sprintf("%064x", n) }

var yes = true

func pod(name, node string, ann, labels map[string]string, owner *metav1.OwnerReference, ids map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name), Annotations: ann, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node},
	}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	for c, id := range ids {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c})
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c, ContainerID: "containerd://" + id,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}})
	}
	return p
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSource runs the source against a fake API (client-go's fake
// clientset, through the real informer) and a fake procfs: the opt-in
// rules, owner resolution, service names, instance IDs, labels, and
// changes followed.
func TestSource(t *testing.T) {
	on := map[string]string{AnnotationInstrument: "true"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "uid-dep"}}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-5f7c", Namespace: "ns", UID: "uid-rs",
		OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "web", UID: "uid-dep", Controller: &yes}}}}
	cron := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "nightly-29000", Namespace: "ns", UID: "uid-job",
		OwnerReferences: []metav1.OwnerReference{{Kind: "CronJob", Name: "nightly", UID: "uid-cron", Controller: &yes}}}}
	pods := []runtime.Object{
		dep, rs, cron,
		pod("web-5f7c-a", "n1", on, map[string]string{"pod-template-hash": "5f7c"},
			&metav1.OwnerReference{Kind: "ReplicaSet", Name: "web-5f7c", UID: "uid-rs", Controller: &yes},
			map[string]string{"app": cid(1), "envoy": cid(2)}),
		pod("batch", "n1", map[string]string{AnnotationInstrument: "TRUE", AnnotationServiceName: "reports"},
			map[string]string{LabelAppName: "not-this"},
			&metav1.OwnerReference{Kind: "Job", Name: "nightly-29000", UID: "uid-job", Controller: &yes},
			map[string]string{"main": cid(3)}),
		pod("db", "n1", map[string]string{AnnotationInstrument: "true", AnnotationContainers: "api, nope"},
			map[string]string{LabelAppName: "database"},
			&metav1.OwnerReference{Kind: "StatefulSet", Name: "db", UID: "uid-sts", Controller: &yes},
			map[string]string{"api": cid(4), "side": cid(5)}),
		pod("plain", "n1", nil, nil, nil, map[string]string{"app": cid(6)}),
		pod("far", "n2", on, nil, nil, map[string]string{"app": cid(7)}),
		pod("off", "n1", map[string]string{AnnotationInstrument: "false"}, nil, nil, map[string]string{"app": cid(8)}),
	}
	client := fake.NewSimpleClientset(pods...)
	fp := newFakeProc(t)
	fp.add(101, cid(1), true, "PATH=/bin", "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod")
	fp.add(102, cid(2), false) // envoy: not Go
	fp.add(103, cid(2), false)
	fp.add(104, cid(3), true, "OTEL_SERVICE_NAME=from-env")
	fp.add(105, cid(4), true)
	fp.add(106, cid(5), true) // db's "side": not selected
	fp.add(107, cid(6), true) // plain
	fp.add(108, cid(7), true) // far
	fp.add(109, cid(8), true) // off
	fp.add(110, "", true)     // not in a container
	fp.add(111, cid(1), true) // a second Go process in web's app

	s, err := New(Options{Node: "n1", Client: client, ProcRoot: fp.root, Interval: 20 * time.Millisecond, Self: 1})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	rec := &recorder{live: map[int]discover.Process{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx, rec) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	eventually(t, "first processes", func() bool { _, ok := rec.get(105); return ok })
	if err := s.Check(ctx); err != nil {
		t.Errorf("not ready after a scan: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // a few more scans change nothing

	// envoy (102, 103) is handed over once so the agent counts not_go, and
	// never again; nothing else outside the selection appears.
	if got, want := rec.log(), "+101 +102 +104 +105 +111"; !sameSet(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	web, _ := rec.get(101)
	check(t, web, "web", "ns.web-5f7c-a.app", map[string]string{
		"k8s.namespace.name": "ns", "k8s.pod.name": "web-5f7c-a", "k8s.pod.uid": "uid-web-5f7c-a", "k8s.container.name": "app",
		"k8s.node.name": "n1", "k8s.replicaset.name": "web-5f7c", "k8s.deployment.name": "web", "container.id": cid(1),
		"deployment.environment": "prod"})
	second, _ := rec.get(111)
	if second.InstanceID != "ns.web-5f7c-a.app.111" {
		t.Errorf("second process of a container: instance %q", second.InstanceID)
	}
	job, _ := rec.get(104)
	check(t, job, "from-env", "ns.batch.main", map[string]string{"k8s.job.name": "nightly-29000", "k8s.cronjob.name": "nightly"})
	db, _ := rec.get(105)
	check(t, db, "database", "ns.db.api", map[string]string{"k8s.statefulset.name": "db"})

	// Series labels: a series of web's instance gains its pod's identity.
	inst, other := "ns.web-5f7c-a.app", "elsewhere"
	g := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		name, typ := "x_total", dto.MetricType_COUNTER
		v := 1.0
		mk := func(i string) *dto.Metric {
			n := instanceLabel
			return &dto.Metric{Label: []*dto.LabelPair{{Name: &n, Value: &i}}, Counter: &dto.Counter{Value: &v}}
		}
		return []*dto.MetricFamily{{Name: &name, Type: &typ, Metric: []*dto.Metric{mk(inst), mk(other)}}}, nil
	})
	mfs, err := s.Gatherer(g).Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]string{}
	for _, m := range mfs[0].Metric {
		ls := map[string]string{}
		for _, lp := range m.Label {
			ls[lp.GetName()] = lp.GetValue()
		}
		got[ls[instanceLabel]] = ls
	}
	want := map[string]string{instanceLabel: inst, "k8s_namespace_name": "ns", "k8s_pod_name": "web-5f7c-a", "k8s_container_name": "app",
		"k8s_node_name": "n1", "k8s_replicaset_name": "web-5f7c", "k8s_deployment_name": "web"}
	if fmt.Sprint(got[inst]) != fmt.Sprint(want) {
		t.Errorf("labels of web's series %v, want %v", got[inst], want)
	}
	if len(got[other]) != 1 {
		t.Errorf("a series of no container gained labels: %v", got[other])
	}

	// Unannotate db, annotate plain, restart web's app under a new ID,
	// delete the job's pod.
	p, _ := client.CoreV1().Pods("ns").Get(ctx, "db", metav1.GetOptions{})
	delete(p.Annotations, AnnotationInstrument)
	client.CoreV1().Pods("ns").Update(ctx, p, metav1.UpdateOptions{})
	p, _ = client.CoreV1().Pods("ns").Get(ctx, "plain", metav1.GetOptions{})
	p.Annotations = on
	client.CoreV1().Pods("ns").Update(ctx, p, metav1.UpdateOptions{})
	fp.remove(101)
	fp.remove(111)
	fp.add(120, cid(9), true)
	p, _ = client.CoreV1().Pods("ns").Get(ctx, "web-5f7c-a", metav1.GetOptions{})
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == "app" {
			p.Status.ContainerStatuses[i].ContainerID = "containerd://" + cid(9)
		}
	}
	client.CoreV1().Pods("ns").UpdateStatus(ctx, p, metav1.UpdateOptions{})
	client.CoreV1().Pods("ns").Delete(ctx, "batch", metav1.DeleteOptions{})
	eventually(t, "changes followed", func() bool {
		_, db := rec.get(105)
		_, plain := rec.get(107)
		_, web := rec.get(120)
		_, job := rec.get(104)
		_, old := rec.get(101)
		return !db && plain && web && !job && !old
	})
	restarted, _ := rec.get(120)
	if restarted.InstanceID != inst {
		t.Errorf("restarted container's instance %q, want %q (stable across restarts)", restarted.InstanceID, inst)
	}
	if n := strings.Count(rec.log(), "+102") + strings.Count(rec.log(), "+103"); n != 1 {
		t.Errorf("the non-Go container was handed over %d times, want once: %s", n, rec.log())
	}
}

func check(t *testing.T, p discover.Process, svc, inst string, attrs map[string]string) {
	t.Helper()
	if p.ServiceName != svc || p.InstanceID != inst {
		t.Errorf("pid %d: service %q instance %q, want %q %q", p.PID, p.ServiceName, p.InstanceID, svc, inst)
	}
	for k, v := range attrs {
		if p.ResourceAttrs[k] != v {
			t.Errorf("pid %d: %s = %q, want %q (all: %v)", p.PID, k, p.ResourceAttrs[k], v, p.ResourceAttrs)
		}
	}
}

func sameSet(a, b string) bool {
	x, y := strings.Fields(a), strings.Fields(b)
	if len(x) != len(y) {
		return false
	}
	m := map[string]int{}
	for _, s := range x {
		m[s]++
	}
	for _, s := range y {
		if m[s]--; m[s] < 0 {
			return false
		}
	}
	return true
}
