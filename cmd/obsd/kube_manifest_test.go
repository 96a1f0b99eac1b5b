package main

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/obsd-dev/obsd/internal/health"
)

const manifests = "../../deploy/kubernetes"

// decodeManifests decodes every document of every manifest strictly (an
// unknown or duplicated field is an error) into the client-go types.
func decodeManifests(t *testing.T) []runtime.Object {
	t.Helper()
	var kust struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
		Images     []struct {
			Name   string `json:"name"`
			NewTag string `json:"newTag"`
		} `json:"images"`
	}
	data, err := os.ReadFile(filepath.Join(manifests, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(manifests, "*.yaml"))
	var listed []string
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" {
			listed = append(listed, filepath.Base(f))
		}
	}
	slices.Sort(listed)
	res := slices.Clone(kust.Resources)
	slices.Sort(res)
	if !slices.Equal(listed, res) {
		t.Errorf("kustomization lists %v, directory has %v", res, listed)
	}
	ser := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	var out []runtime.Object
	for _, name := range kust.Resources {
		data, err := os.ReadFile(filepath.Join(manifests, name))
		if err != nil {
			t.Fatal(err)
		}
		r := yamlutil.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			obj, _, err := ser.Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			out = append(out, obj)
		}
	}
	return out
}

// TestManifestsAgreeWithFlags decodes the manifests strictly and checks the
// DaemonSet against obsd itself: its env and args parse, in Kubernetes
// mode, on the port its probes, container port and Service use, with probe
// paths obsd serves.
func TestManifestsAgreeWithFlags(t *testing.T) {
	objs := decodeManifests(t)
	var ds *appsv1.DaemonSet
	var svc *corev1.Service
	var sa *corev1.ServiceAccount
	var role *rbacv1.ClusterRole
	var binding *rbacv1.ClusterRoleBinding
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.DaemonSet:
			ds = o
		case *corev1.Service:
			svc = o
		case *corev1.ServiceAccount:
			sa = o
		case *rbacv1.ClusterRole:
			role = o
		case *rbacv1.ClusterRoleBinding:
			binding = o
		}
	}
	if ds == nil || svc == nil || sa == nil || role == nil || binding == nil {
		t.Fatalf("missing objects: daemonset %v service %v serviceaccount %v clusterrole %v binding %v", ds != nil, svc != nil, sa != nil, role != nil, binding != nil)
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostPID {
		t.Error("DaemonSet without hostPID: containers' processes would be invisible")
	}
	if pod.ServiceAccountName != sa.Name || binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != sa.Namespace || binding.RoleRef.Name != role.Name {
		t.Error("ServiceAccount, ClusterRoleBinding and ClusterRole do not refer to each other")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.Name == "NODE_NAME" && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			env[e.Name] = "node-from-downward-api"
		default:
			t.Errorf("env %s from an unexpected source", e.Name)
		}
	}
	// What the kubelet adds to every container.
	env["KUBERNETES_SERVICE_HOST"] = "10.0.0.1"
	cfg, err := parse(append(slices.Clone(c.Command[min(len(c.Command), 1):]), c.Args...), func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("obsd rejects the DaemonSet's configuration: %v", err)
	}
	if cfg.agent.Kubernetes == nil || cfg.agent.Kubernetes.Node != "node-from-downward-api" || cfg.agent.Kubernetes.Kubeconfig != "" {
		t.Errorf("Kubernetes mode = %+v, want on, node from NODE_NAME, in-cluster config", cfg.agent.Kubernetes)
	}
	if !cfg.agent.Criteria.Empty() {
		t.Errorf("DaemonSet selects processes beside pods: %+v", cfg.agent.Criteria)
	}
	_, portStr, _ := strings.Cut(cfg.agent.Listen, ":")
	port, _ := strconv.Atoi(portStr)
	var named string
	for _, p := range c.Ports {
		if int(p.ContainerPort) == port {
			named = p.Name
		}
	}
	if named == "" {
		t.Fatalf("obsd listens on %q, no container port says so (%v)", cfg.agent.Listen, c.Ports)
	}
	// Probe paths: the ones obsd's health checker serves.
	mux := http.NewServeMux()
	health.New(time.Second).Register(mux)
	for _, p := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no %s probe", p.what)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || (p.probe.HTTPGet.Port.String() != named && p.probe.HTTPGet.Port.IntValue() != port) {
			t.Errorf("%s probe %s on %s, want %s on %s", p.what, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, named)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", p.probe.HTTPGet.Path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("obsd answers %s with %d", p.probe.HTTPGet.Path, rec.Code)
		}
	}
	if svc.Spec.Ports[0].TargetPort.String() != named || svc.Spec.Selector["app.kubernetes.io/name"] != ds.Spec.Template.Labels["app.kubernetes.io/name"] {
		t.Errorf("Service does not select obsd's %s port", named)
	}
	if ds.Spec.Template.Annotations["prometheus.io/port"] != portStr {
		t.Errorf("prometheus.io/port = %q, obsd listens on %s", ds.Spec.Template.Annotations["prometheus.io/port"], portStr)
	}
	// The security context is the one TestKubeCapabilities proves enough.
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil {
		t.Fatal("DaemonSet must run unprivileged with an explicit capability list")
	}
	var add []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	if !slices.Equal(add, DaemonSetCapabilities) || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("capabilities drop %v add %v, want drop [ALL] add %v", sc.Capabilities.Drop, add, DaemonSetCapabilities)
	}
	// RBAC: exactly what the informer and owner lookups use.
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"replicasets"}, Verbs: []string{"get"}},
		{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"get"}},
	}
	if len(role.Rules) != len(want) {
		t.Fatalf("ClusterRole rules %v, want %v", role.Rules, want)
	}
	for i := range want {
		g, w := role.Rules[i], want[i]
		if !slices.Equal(g.APIGroups, w.APIGroups) || !slices.Equal(g.Resources, w.Resources) || !slices.Equal(g.Verbs, w.Verbs) || len(g.ResourceNames) > 0 || len(g.NonResourceURLs) > 0 {
			t.Errorf("ClusterRole rule %d = %+v, want %+v", i, g, w)
		}
	}
}

// DaemonSetCapabilities are the capabilities the DaemonSet grants obsd
// (see deploy/kubernetes/daemonset.yaml).
var DaemonSetCapabilities = []string{"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"}
