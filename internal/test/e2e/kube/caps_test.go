package kube

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// capBits are the capability numbers of linux/capability.h that the
// DaemonSet may name.
var capBits = map[string]uint{"DAC_READ_SEARCH": 2, "SYS_PTRACE": 19, "PERFMON": 38, "BPF": 39}

// TestKubeCapabilities proves on this kernel that the DaemonSet's
// capability list is enough: obsd as root with exactly those capabilities
// (bounding set; no CAP_SYS_ADMIN, no privileged) instruments a server
// running as another user (nobody) and counts its requests exactly.
func TestKubeCapabilities(t *testing.T) {
	e2e.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) not found")
	}
	data, err := os.ReadFile(filepath.Join(e2e.RepoRoot(), "deploy", "kubernetes", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(data, &ds); err != nil {
		t.Fatal(err)
	}
	sc := ds.Spec.Template.Spec.Containers[0].SecurityContext
	var names []string
	var mask uint64
	for _, c := range sc.Capabilities.Add {
		bit, ok := capBits[string(c)]
		if !ok {
			t.Fatalf("capability %s not known to this test", c)
		}
		mask |= 1 << bit
		names = append(names, "+"+strings.ToLower(string(c)))
	}

	// The server runs as nobody from a directory nobody can read.
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	srvBin := filepath.Join(dir, "httpserver")
	src, err := os.ReadFile(builds.HTTPServer(t, e2e.Variant{Name: "current"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(srvBin, src, 0o711); err != nil {
		t.Fatal(err)
	}
	srv := e2e.Start(t, setpriv, nil, "--reuid=65534", "--regid=65534", "--clear-groups", "--", srvBin)

	wrapper := filepath.Join(t.TempDir(), "obsd-capped")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --bounding-set=-all,%s --inh-caps=-all -- %s \"$@\"\n", setpriv, strings.Join(names, ","), builds.Obsd(t))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	o := e2e.StartObsd(t, wrapper, nil, "--pid", strconv.Itoa(srv.PID()))
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", o.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("CapEff:\t%016x", mask); !strings.Contains(string(status), want) {
		t.Fatalf("obsd's capabilities are not the DaemonSet's (%s):\n%s", want, status)
	}
	o.WaitScrape(t, 10*time.Second, "the server instrumented", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
	})
	n := get(t, srv.First, 25)
	o.WaitScrape(t, 10*time.Second, "requests counted", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "http_server_request_duration_seconds", nil) >= float64(n)
	})
	time.Sleep(200 * time.Millisecond)
	if got := e2e.Sum(e2e.Families(t, o.Scrape(t)), "http_server_request_duration_seconds", nil); got != float64(n) {
		t.Errorf("counted %v requests, client got %d", got, n)
	}
	o.Stop(t)
}
