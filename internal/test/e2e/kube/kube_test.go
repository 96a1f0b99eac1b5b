// Package kube tests obsd's Kubernetes mode against a real kube-apiserver:
// pods are written with spec.nodeName and their container statuses through
// the status subresource (no kubelet runs), and their processes are real
// Go servers started in cgroups named as containerd and CRI-O name them.
package kube

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/obsd-dev/obsd/internal/test/e2e"
	kubetest "github.com/obsd-dev/obsd/internal/test/kube"
)

var builds *e2e.Builds

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obsd-e2e-kube-")
	if err != nil {
		panic(err)
	}
	builds = e2e.NewBuilds(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	ns       = "shop"
	thisNode = "node-a"
	prefix   = "http_server"
	// followWithin is the promise: a change is acted on within 2 s.
	followWithin = 2 * time.Second
)

// env is one test's cluster, cgroups and binaries.
type env struct {
	t      *testing.T
	cl     *kubetest.Cluster
	cg     *kubetest.Cgroups
	srvBin string
}

func ctx() context.Context { return context.Background() }

// pod creates a pod of one or more containers on node; ann are its
// annotations, owner its controller (nil: none).
func (e *env) pod(name, node string, ann, labels map[string]string, owner *metav1.OwnerReference, containers ...string) *corev1.Pod {
	e.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node},
	}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	for _, c := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c, Image: "registry.invalid/" + c})
	}
	p, err := e.cl.Client.CoreV1().Pods(ns).Create(ctx(), p, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating pod %s: %v", name, err)
	}
	return p
}

// running writes the pod's container statuses as a kubelet would: each
// container running under the given containerd ID.
func (e *env) running(name string, ids map[string]string, restarts int32) {
	e.t.Helper()
	p, err := e.cl.Client.CoreV1().Pods(ns).Get(ctx(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.ContainerStatuses = nil
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, ContainerID: "containerd://" + ids[c.Name], Image: c.Image, ImageID: c.Image,
			Ready: true, RestartCount: restarts,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		})
	}
	if _, err := e.cl.Client.CoreV1().Pods(ns).UpdateStatus(ctx(), p, metav1.UpdateOptions{}); err != nil {
		e.t.Fatalf("writing status of pod %s: %v", name, err)
	}
}

func (e *env) annotate(name, value string) {
	e.t.Helper()
	patch := `{"metadata":{"annotations":{"obsd.dev/instrument":` + value + `}}}`
	if _, err := e.cl.Client.CoreV1().Pods(ns).Patch(ctx(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		e.t.Fatalf("annotating pod %s: %v", name, err)
	}
}

// server starts the test HTTP server as the container's process in a
// containerd (cgroup v2) or CRI-O (cgroup v1) cgroup.
func (e *env) server(pod *corev1.Pod, id string, crio bool, environ ...string) *e2e.Proc {
	e.t.Helper()
	dir := e.cg.ContainerdSystemd(string(pod.UID), id)
	if crio {
		dir = e.cg.CRIOv1(string(pod.UID), id)
	}
	return kubetest.StartIn(e.t, dir, e.srvBin, environ)
}

// held starts bin as the container's process in a containerd cgroup
// (v2), with a pipe on its stdin, and waits for its first line ("ready"):
// testdata's clients send nothing until a line arrives and exit when
// stdin closes (at cleanup).
func (e *env) held(pod *corev1.Pod, id, bin string, args ...string) io.WriteCloser {
	e.t.Helper()
	dir := e.cg.ContainerdSystemd(string(pod.UID), id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer syscall.Close(fd)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	in, err := cmd.StdinPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { in.Close() })
	e2e.StartCmd(e.t, cmd)
	return in
}

// grpcApp builds testdata/grpc (its own module) with the Go at hand.
func grpcApp(t *testing.T) string {
	t.Helper()
	return builds.Get(t, "grpcapp", func(out string) error {
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = filepath.Join(e2e.RepoRoot(), "testdata", "grpc")
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building testdata/grpc: %w\n%s", err, b)
		}
		return nil
	})
}

// get sends n GET /hello and returns how many were answered 200: the
// client's own tally.
func get(t *testing.T, addr string, n int) int {
	t.Helper()
	ok := 0
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < n; i++ {
		resp, err := client.Get("http://" + addr + "/hello")
		if err != nil {
			t.Fatalf("GET /hello: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			ok++
		}
	}
	return ok
}

// within fails unless cond holds within followWithin of now, and returns
// how long it took.
func within(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			d := time.Since(start)
			t.Logf("%s after %v", what, d.Round(time.Millisecond))
			return d
		}
		if time.Since(start) > followWithin {
			t.Fatalf("%s: not within %v", what, followWithin)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func seriesOf(fams map[string]*dto.MetricFamily, instance string) []*dto.Metric {
	var out []*dto.Metric
	for _, m := range fams["http_server_request_duration_seconds"].GetMetric() {
		if e2e.Labels(m)["service_instance_id"] == instance {
			out = append(out, m)
		}
	}
	return out
}

// TestKubernetes runs obsd in Kubernetes mode against a real API server:
// exact metrics with the pods' identity for annotated pods of this node,
// nothing for the rest, and every change followed within 2 s.
func TestKubernetes(t *testing.T) {
	e2e.RequireRoot(t)
	cl := kubetest.Start(t)
	e := &env{t: t, cl: cl, cg: kubetest.NewCgroups(t), srvBin: builds.HTTPServer(t, e2e.Variant{Name: "current"})}
	obsdBin := builds.Obsd(t)
	if _, err := cl.Client.CoreV1().Namespaces().Create(ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// web: Deployment -> ReplicaSet -> pod, a Go container and a non-Go one.
	dep, err := cl.Client.AppsV1().Deployments(ns).Create(ctx(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	rs, err := cl.Client.AppsV1().ReplicaSets(ns).Create(ctx(), &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-7d9f", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: &yes}}},
		Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: dep.Spec.Template,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rsRef := &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &yes}
	on := map[string]string{"obsd.dev/instrument": "true"}

	web := e.pod("web-7d9f-a", thisNode, on, map[string]string{"app": "web", "pod-template-hash": "7d9f"}, rsRef, "app", "sidecar")
	webID, sideID := kubetest.NewContainerID(), kubetest.NewContainerID()
	webSrv := e.server(web, webID, false)
	// The sidecar is not Go: a shell that becomes sleep.
	kubetest.StartIn(t, e.cg.ContainerdSystemd(string(web.UID), sideID), "/bin/sh", nil, "-c", "echo up; exec sleep 600")
	e.running(web.Name, map[string]string{"app": webID, "sidecar": sideID}, 0)

	// named: CRI-O on cgroup v1, service name from the annotation (over
	// the app.kubernetes.io/name label), only container "app" selected.
	named := e.pod("named", thisNode, map[string]string{"obsd.dev/instrument": "true", "obsd.dev/service-name": "checkout", "obsd.dev/containers": "app"},
		map[string]string{"app.kubernetes.io/name": "not-this"}, nil, "app", "other")
	namedID, namedOtherID := kubetest.NewContainerID(), kubetest.NewContainerID()
	namedSrv := e.server(named, namedID, true)
	namedOther := e.server(named, namedOtherID, true)
	e.running(named.Name, map[string]string{"app": namedID, "other": namedOtherID}, 0)

	// plain: not annotated. far: annotated, but on another node.
	plain := e.pod("plain", thisNode, nil, nil, nil, "app")
	plainID := kubetest.NewContainerID()
	plainSrv := e.server(plain, plainID, false)
	e.running(plain.Name, map[string]string{"app": plainID}, 0)
	far := e.pod("far", "node-b", on, nil, nil, "app")
	farID := kubetest.NewContainerID()
	farSrv := e.server(far, farID, false)
	e.running(far.Name, map[string]string{"app": farID}, 0)

	// rpc: a gRPC server, a gRPC client and an HTTP client in one pod
	// (containerd, cgroup v2). The clients wait for a line on stdin before
	// calling; they serve the dashboard's RPC and HTTP client panels.
	rpc := e.pod("rpc", thisNode, on, map[string]string{"app.kubernetes.io/name": "rpc"}, nil, "server", "client", "fetch")
	rpcIDs := map[string]string{"server": kubetest.NewContainerID(), "client": kubetest.NewContainerID(), "fetch": kubetest.NewContainerID()}
	grpcBin := grpcApp(t)
	rpcSrv := kubetest.StartIn(t, e.cg.ContainerdSystemd(string(rpc.UID), rpcIDs["server"]), grpcBin, nil, "-listen", "127.0.0.1:0")
	rpcCall := e.held(rpc, rpcIDs["client"], grpcBin, "-call", strings.TrimPrefix(rpcSrv.First, "listening "), "-hold")
	fetch := e.held(rpc, rpcIDs["fetch"], builds.TestdataProgram(t, "httpclient", e2e.Variant{Name: "current"}), "-http", "http://"+webSrv.First, "-loop", "5")
	e.running(rpc.Name, rpcIDs, 0)

	recv := e2e.StartReceiver(t)
	o := e2e.StartObsd(t, obsdBin, []string{
		"OBSD_KUBERNETES=true", "NODE_NAME=" + thisNode, "KUBECONFIG=" + cl.Kubeconfig,
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint, "OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100",
	})
	o.WaitScrape(t, 15*time.Second, "web, named and rpc's three instrumented, the sidecar refused", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 5 &&
			e2e.Sum(f, "obsd_instrumentation_errors_total", map[string]string{"reason": "not_go"}) == 1
	})
	if code, body := o.Get(t, "/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %s", code, body)
	}

	nWeb, nNamed := get(t, webSrv.First, 37), get(t, namedSrv.First, 23)
	get(t, plainSrv.First, 11)
	get(t, farSrv.First, 13)
	get(t, namedOther.First, 7)
	webInst, namedInst := ns+".web-7d9f-a.app", ns+".named.app"
	o.WaitScrape(t, 10*time.Second, "all requests counted", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "http_server_request_duration_seconds", nil) >= float64(nWeb+nNamed)
	})
	time.Sleep(300 * time.Millisecond) // anything extra would show now
	scrape := o.Scrape(t)
	fams := e2e.Families(t, scrape)
	e2e.Promtool(t, scrape)
	if got := e2e.Sum(fams, "http_server_request_duration_seconds", nil); got != float64(nWeb+nNamed) {
		t.Errorf("requests counted in all = %v, want %d (web %d + named %d; plain, far and named/other not at all)", got, nWeb+nNamed, nWeb, nNamed)
	}
	for _, tc := range []struct {
		inst   string
		n      int
		labels map[string]string
	}{
		{webInst, nWeb, map[string]string{
			"service_name": "web", "k8s_namespace_name": ns, "k8s_pod_name": "web-7d9f-a", "k8s_container_name": "app",
			"k8s_node_name": thisNode, "k8s_deployment_name": "web", "k8s_replicaset_name": "web-7d9f",
			"http_route": "/hello", "http_request_method": "GET", "http_response_status_code": "200"}},
		{namedInst, nNamed, map[string]string{
			"service_name": "checkout", "k8s_namespace_name": ns, "k8s_pod_name": "named", "k8s_container_name": "app",
			"k8s_node_name": thisNode, "http_route": "/hello"}},
	} {
		ms := seriesOf(fams, tc.inst)
		if len(ms) != 1 {
			t.Fatalf("%d series of %s, want 1:\n%s", len(ms), tc.inst, scrape)
		}
		got := e2e.Labels(ms[0])
		if e2e.Value(ms[0]) != float64(tc.n) {
			t.Errorf("%s: %v requests, want %d", tc.inst, e2e.Value(ms[0]), tc.n)
		}
		for k, v := range tc.labels {
			if got[k] != v {
				t.Errorf("%s: label %s = %q, want %q (all: %v)", tc.inst, k, got[k], v, got)
			}
		}
		if tc.inst == namedInst && got["k8s_deployment_name"] != "" {
			t.Errorf("bare pod labelled with a deployment: %v", got)
		}
	}
	for _, p := range []*e2e.Proc{plainSrv, farSrv, namedOther} {
		if n := e2e.ProbeLinks(t, prefix, p.PID()); n != 0 {
			t.Errorf("pid %d, not selected, has %d probe links", p.PID(), n)
		}
	}
	spans := recv.WaitSpans(t, nWeb+nNamed, 15*time.Second)
	bySvc := map[string]int{}
	for _, s := range spans {
		bySvc[s.Resource["service.name"]]++
		if s.Resource["service.name"] == "web" {
			for k, v := range map[string]string{"k8s.namespace.name": ns, "k8s.pod.name": "web-7d9f-a", "k8s.pod.uid": string(web.UID),
				"k8s.container.name": "app", "k8s.node.name": thisNode, "k8s.deployment.name": "web", "k8s.replicaset.name": "web-7d9f",
				"container.id": webID, "service.instance.id": webInst} {
				if s.Resource[k] != v {
					t.Fatalf("web span resource %s = %q, want %q (all: %v)", k, s.Resource[k], v, s.Resource)
				}
			}
		}
	}
	if bySvc["web"] != nWeb || bySvc["checkout"] != nNamed || len(spans) != nWeb+nNamed {
		t.Errorf("spans by service %v, want web %d, checkout %d and no other", bySvc, nWeb, nNamed)
	}

	// The rpc pod's clients call now (their spans would have counted
	// above): gRPC calls both ways and HTTP client requests, under the
	// rpc pod's identity.
	rpcCall.Write([]byte("go\n"))
	fetch.Write([]byte("go\n"))
	o.WaitScrape(t, 10*time.Second, "the rpc pod's calls", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "rpc_server_call_duration_seconds", map[string]string{"k8s_pod_name": "rpc", "k8s_container_name": "server"}) > 0 &&
			e2e.Sum(f, "rpc_client_call_duration_seconds", map[string]string{"k8s_pod_name": "rpc", "k8s_container_name": "client"}) > 0 &&
			e2e.Sum(f, "http_client_request_duration_seconds", map[string]string{"k8s_pod_name": "rpc", "k8s_container_name": "fetch"}) > 0
	})

	// The dashboard against a real scrape, taken while a request is in
	// flight so that http_server_active_requests has a series.
	pr, pw := io.Pipe()
	echoed := make(chan struct{})
	go func() {
		defer close(echoed)
		if resp, err := http.Post("http://"+webSrv.First+"/echo", "text/plain", pr); err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write([]byte("in flight"))
	dash := o.WaitScrape(t, 5*time.Second, "a request in flight", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "http_server_active_requests", map[string]string{"service_instance_id": webInst}) == 1
	})
	checkDashboard(t, e2e.Families(t, dash))
	pw.Close()
	<-echoed

	// Every change is followed within 2 s.
	linked := func(p *e2e.Proc) func() bool { return func() bool { return e2e.ProbeLinks(t, prefix, p.PID()) > 0 } }
	unlinked := func(p *e2e.Proc) func() bool { return func() bool { return e2e.ProbeLinks(t, prefix, p.PID()) == 0 } }

	e.annotate(named.Name, "null")
	within(t, "unannotated pod released", unlinked(namedSrv))
	e.annotate(plain.Name, `"true"`)
	within(t, "newly annotated pod instrumented", linked(plainSrv))

	// Container restart: the old process exits, a new one runs under a new ID.
	webSrv.Cmd.Process.Kill()
	webSrv.Cmd.Wait()
	webID2 := kubetest.NewContainerID()
	webSrv2 := e.server(web, webID2, false)
	e.running(web.Name, map[string]string{"app": webID2, "sidecar": sideID}, 1)
	within(t, "restarted container instrumented", linked(webSrv2))
	n2 := get(t, webSrv2.First, 9)
	o.WaitScrape(t, 5*time.Second, "restarted container's requests under the same instance", func(f map[string]*dto.MetricFamily) bool {
		for _, m := range seriesOf(f, webInst) {
			if e2e.Labels(m)["k8s_pod_name"] == "web-7d9f-a" && e2e.Value(m) >= float64(n2) {
				return true
			}
		}
		return false
	})

	// A new replica, then its deletion.
	web2 := e.pod("web-7d9f-b", thisNode, on, map[string]string{"app": "web", "pod-template-hash": "7d9f"}, rsRef, "app")
	web2ID := kubetest.NewContainerID()
	web2Srv := e.server(web2, web2ID, false)
	e.running(web2.Name, map[string]string{"app": web2ID}, 0)
	within(t, "new replica instrumented", linked(web2Srv))
	// No kubelet confirms a graceful deletion: delete at once.
	zero := int64(0)
	if err := cl.Client.CoreV1().Pods(ns).Delete(ctx(), web2.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	within(t, "deleted pod released", unlinked(web2Srv))
	for _, p := range []*e2e.Proc{farSrv, namedOther, namedSrv} {
		if n := e2e.ProbeLinks(t, prefix, p.PID()); n != 0 {
			t.Errorf("pid %d, not selected, has %d probe links", p.PID(), n)
		}
	}
	o.Stop(t)
}
