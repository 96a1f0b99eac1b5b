package kube

import (
	"debug/buildinfo"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/obsd-dev/obsd/internal/discover"
)

type metav1ListOptions = metav1.ListOptions

func parseEnviron(data []byte) map[string]string { return discover.ParseEnviron(data) }

func parseResourceAttrs(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	return discover.ParseResourceAttrs(s)
}

// isGoExecutable reports whether the file has Go build info, which every
// Go binary since 1.13 carries, stripped or not. The agent inspects it in
// full when it attaches; this only tells Go containers from the rest.
func isGoExecutable(path string) bool {
	_, err := buildinfo.ReadFile(path)
	return err == nil
}

// trimPod keeps what the opt-in rules, identity and owner resolution read,
// so the informer's cache stays small at hundreds of pods.
func trimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone
	}
	out := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID,
			ResourceVersion: pod.ResourceVersion, Labels: pod.Labels,
			Annotations: pod.Annotations, OwnerReferences: pod.OwnerReferences,
			DeletionTimestamp: pod.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{NodeName: pod.Spec.NodeName},
		Status: corev1.PodStatus{
			Phase:                 pod.Status.Phase,
			ContainerStatuses:     pod.Status.ContainerStatuses,
			InitContainerStatuses: pod.Status.InitContainerStatuses,
		},
	}
	trim := func(cs []corev1.Container) []corev1.Container {
		out := make([]corev1.Container, len(cs))
		for i, c := range cs {
			out[i] = corev1.Container{Name: c.Name}
			for _, e := range c.Env {
				if e.Name == "OTEL_SERVICE_NAME" {
					out[i].Env = []corev1.EnvVar{e}
				}
			}
		}
		return out
	}
	out.Spec.Containers = trim(pod.Spec.Containers)
	out.Spec.InitContainers = trim(pod.Spec.InitContainers)
	return out, nil
}
