package kube

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// The annotations by which a pod opts in (see README, "Kubernetes").
const (
	// AnnotationInstrument "true" opts the pod in; any other value or none
	// leaves it alone.
	AnnotationInstrument = "obsd.dev/instrument"
	// AnnotationContainers limits instrumentation to the containers named,
	// comma-separated; unset means every Go container.
	AnnotationContainers = "obsd.dev/containers"
	// AnnotationServiceName overrides service_name for every container of
	// the pod (the container's own OTEL_SERVICE_NAME still wins).
	AnnotationServiceName = "obsd.dev/service-name"
	// LabelAppName is the recommended label service_name falls back to.
	LabelAppName = "app.kubernetes.io/name"
)

// Optedin reports whether a pod asked to be instrumented.
func Optedin(pod *corev1.Pod) bool {
	return strings.EqualFold(strings.TrimSpace(pod.Annotations[AnnotationInstrument]), "true")
}

// container is one running container of an opted-in pod that obsd should
// instrument, with everything its series and spans are labelled with.
type container struct {
	ID        string // runtime's ID, 64 hex digits
	Namespace string
	Pod       string
	PodUID    types.UID
	Name      string
	Node      string
	// Service is service_name before the process's own environment is
	// read: annotation, app.kubernetes.io/name, owner, pod name.
	Service string
	// EnvService is a literal OTEL_SERVICE_NAME in the container spec;
	// the process's environment, read later, normally agrees.
	EnvService string
	Workload   workload
}

// InstanceID is service.instance.id as semantic conventions suggest for
// Kubernetes: stable across restarts of the container.
func (c *container) InstanceID() string { return c.Namespace + "." + c.Pod + "." + c.Name }

// workload is the chain of controllers that owns a pod, by kind.
type workload struct {
	ReplicaSet, Deployment, StatefulSet, DaemonSet, Job, CronJob string
}

// top is the name of the outermost controller, "" for a bare pod.
func (w workload) top() string {
	for _, n := range []string{w.Deployment, w.CronJob, w.StatefulSet, w.DaemonSet, w.Job, w.ReplicaSet} {
		if n != "" {
			return n
		}
	}
	return ""
}

// containers returns the running containers of an opted-in pod that its
// annotations select; names in obsd.dev/containers that the pod lacks are
// returned as unknown, for the caller to report once.
func containers(pod *corev1.Pod, w workload) (out []container, unknown []string) {
	if !Optedin(pod) {
		return nil, nil
	}
	var only map[string]bool
	if v := strings.TrimSpace(pod.Annotations[AnnotationContainers]); v != "" {
		only = map[string]bool{}
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				only[n] = true
			}
		}
	}
	specEnv := map[string]string{}
	names := map[string]bool{}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			names[c.Name] = true
			for _, e := range c.Env {
				if e.Name == "OTEL_SERVICE_NAME" && e.ValueFrom == nil {
					specEnv[c.Name] = e.Value
				}
			}
		}
	}
	for n := range only {
		if !names[n] {
			unknown = append(unknown, n)
		}
	}
	svc := strings.TrimSpace(pod.Annotations[AnnotationServiceName])
	if svc == "" {
		svc = pod.Labels[LabelAppName]
	}
	if svc == "" {
		svc = w.top()
	}
	if svc == "" {
		svc = pod.Name
	}
	// Restartable init containers (sidecars) run beside the others.
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, st := range list {
			if st.State.Running == nil || (only != nil && !only[st.Name]) {
				continue
			}
			id, ok := ParseContainerID(st.ContainerID)
			if !ok {
				continue
			}
			out = append(out, container{
				ID: id, Namespace: pod.Namespace, Pod: pod.Name, PodUID: pod.UID, Name: st.Name,
				Node: pod.Spec.NodeName, Service: svc, EnvService: specEnv[st.Name], Workload: w,
			})
		}
	}
	return out, unknown
}

// owners resolves a pod's controllers. A ReplicaSet's or Job's own owner
// takes a GET of that object, cached by UID (owners do not change).
type owners struct {
	client kubernetes.Interface
	log    *slog.Logger
	// retry is how long a failed lookup stands before it is tried again.
	retry time.Duration

	mu    sync.Mutex
	cache map[types.UID]ownerEntry
}

type ownerEntry struct {
	kind, name string // the object's controller; "" for none
	err        error
	at         time.Time
}

func newOwners(client kubernetes.Interface, log *slog.Logger) *owners {
	return &owners{client: client, log: log, retry: 30 * time.Second, cache: map[types.UID]ownerEntry{}}
}

// resolve returns the pod's workload. When the API server cannot say whose
// a ReplicaSet is, its name minus the pod-template-hash is the
// Deployment's, the way the Deployment controller names it.
func (o *owners) resolve(ctx context.Context, pod *corev1.Pod) workload {
	var w workload
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return w
	}
	switch ref.Kind {
	case "ReplicaSet":
		w.ReplicaSet = ref.Name
		kind, name, err := o.ownerOf(ctx, "ReplicaSet", pod.Namespace, ref)
		if err != nil {
			if h := pod.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
				w.Deployment = strings.TrimSuffix(ref.Name, "-"+h)
			}
		} else if kind == "Deployment" {
			w.Deployment = name
		}
	case "Job":
		w.Job = ref.Name
		if kind, name, err := o.ownerOf(ctx, "Job", pod.Namespace, ref); err == nil && kind == "CronJob" {
			w.CronJob = name
		}
	case "StatefulSet":
		w.StatefulSet = ref.Name
	case "DaemonSet":
		w.DaemonSet = ref.Name
	}
	return w
}

func (o *owners) ownerOf(ctx context.Context, kind, ns string, ref *metav1.OwnerReference) (string, string, error) {
	o.mu.Lock()
	e, ok := o.cache[ref.UID]
	o.mu.Unlock()
	if ok && (e.err == nil || time.Since(e.at) < o.retry) {
		return e.kind, e.name, e.err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var meta metav1.Object
	var err error
	switch kind {
	case "ReplicaSet":
		meta, err = o.client.AppsV1().ReplicaSets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
	case "Job":
		meta, err = o.client.BatchV1().Jobs(ns).Get(ctx, ref.Name, metav1.GetOptions{})
	}
	e = ownerEntry{at: time.Now()}
	if err != nil {
		e.err = fmt.Errorf("getting %s %s/%s: %w", kind, ns, ref.Name, err)
		if !ok || ok && e.err.Error() != o.cache[ref.UID].err.Error() {
			o.log.Warn("cannot resolve the owner of a pod's controller; using what its name says", "err", e.err)
		}
	} else if c := metav1.GetControllerOf(meta); c != nil {
		e.kind, e.name = c.Kind, c.Name
	}
	o.mu.Lock()
	o.cache[ref.UID] = e
	o.mu.Unlock()
	return e.kind, e.name, e.err
}

// forget drops cached owners not in keep.
func (o *owners) forget(keep map[types.UID]bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for uid := range o.cache {
		if !keep[uid] {
			delete(o.cache, uid)
		}
	}
}
