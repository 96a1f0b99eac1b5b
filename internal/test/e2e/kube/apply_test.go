package kube

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/internal/test/e2e"
	kubetest "github.com/obsd-dev/obsd/internal/test/kube"
)

// basicUser is what every authenticated user may do (the bootstrap role
// system:basic-user), which can-i lists too.
var basicUser = map[string]string{
	"selfsubjectaccessreviews.authorization.k8s.io": "create",
	"selfsubjectrulesreviews.authorization.k8s.io":  "create",
	"selfsubjectreviews.authentication.k8s.io":      "create",
}

var canIRow = regexp.MustCompile(`^(\S+)\s+\[\]\s+\[[^\]]*\]\s+\[([^\]]*)\]\s*$`)

// TestKubeApply applies deploy/kubernetes with kubectl, then acts as the
// DaemonSet's ServiceAccount: `kubectl auth can-i --list` shows exactly the
// verbs obsd needs and no more, and obsd running with that token becomes
// ready (it can list and watch the pods of its node).
func TestKubeApply(t *testing.T) {
	e2e.RequireRoot(t)
	cl := kubetest.Start(t)
	out, err := cl.Kubectl(t, "apply", "-k", filepath.Join(e2e.RepoRoot(), "deploy", "kubernetes"))
	if err != nil {
		t.Fatalf("kubectl apply -k: %v\n%s", err, out)
	}
	for _, want := range []string{"namespace/obsd", "serviceaccount/obsd", "clusterrole.rbac.authorization.k8s.io/obsd",
		"clusterrolebinding.rbac.authorization.k8s.io/obsd", "daemonset.apps/obsd", "service/obsd"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply -k did not create %s:\n%s", want, out)
		}
	}
	token, err := cl.Kubectl(t, "create", "token", "obsd", "-n", "obsd")
	if err != nil {
		t.Fatalf("kubectl create token: %v\n%s", err, token)
	}
	sa := filepath.Join(t.TempDir(), "sa.kubeconfig")
	if err := os.WriteFile(sa, []byte(kubetest.Kubeconfig(cl.URL, strings.TrimSpace(token))), 0o600); err != nil {
		t.Fatal(err)
	}

	// What any ServiceAccount may do without a binding of its own (the
	// bootstrap roles for authenticated users): a second account says.
	if out, err := cl.Kubectl(t, "create", "serviceaccount", "bare", "-n", "obsd"); err != nil {
		t.Fatalf("kubectl create serviceaccount: %v\n%s", err, out)
	}
	bareToken, err := cl.Kubectl(t, "create", "token", "bare", "-n", "obsd")
	if err != nil {
		t.Fatalf("kubectl create token: %v\n%s", err, bareToken)
	}
	bare := filepath.Join(t.TempDir(), "bare.kubeconfig")
	if err := os.WriteFile(bare, []byte(kubetest.Kubeconfig(cl.URL, strings.TrimSpace(bareToken))), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"obsd", "default"} {
		baseline := canI(t, bare, ns)
		for k, v := range basicUser {
			if baseline[k] != v {
				t.Errorf("baseline lacks %s %s: %v", k, v, baseline)
			}
		}
		got := canI(t, sa, ns)
		want := map[string]string{"pods": "list watch", "replicasets.apps": "get", "jobs.batch": "get"}
		for k, v := range baseline {
			want[k] = v
		}
		if !mapsEqual(got, want) {
			t.Errorf("namespace %s: the ServiceAccount may do %v, want exactly %v", ns, got, want)
		}
	}

	o := e2e.StartObsd(t, builds.Obsd(t), []string{"OBSD_KUBERNETES=true", "NODE_NAME=node-a", "KUBECONFIG=" + sa})
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := o.Get(t, "/readyz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("obsd with the ServiceAccount's token not ready: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(o.Log.String(), "forbidden") {
		t.Errorf("obsd was refused something:\n%s", o.Log)
	}
	o.Stop(t)
}

// canI returns `kubectl auth can-i --list` as resource -> verbs.
func canI(t *testing.T, kubeconfig, ns string) map[string]string {
	t.Helper()
	out, err := kubetest.KubectlAs(t, kubeconfig, "auth", "can-i", "--list", "-n", ns)
	if err != nil {
		t.Fatalf("kubectl auth can-i --list: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if m := canIRow.FindStringSubmatch(line); m != nil {
			got[m[1]] = m[2]
		}
	}
	return got
}

func mapsEqual(a, b map[string]string) bool {
	ka, kb := keys(a), keys(b)
	if !slices.Equal(ka, kb) {
		return false
	}
	for k := range a {
		if a[k] != b[k] {
			return false
		}
	}
	return true
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
