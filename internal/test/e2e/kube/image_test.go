package kube

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestKubeImage builds the container image with `make image`'s script
// (buildah, Debian's package) and runs it as the DaemonSet does: in its own
// container (runc: crun refuses this machine's hybrid cgroups), sharing the
// host's PID namespace and network, with the DaemonSet's capability list
// and seccomp profile and nothing else. obsd from the image must
// instrument a server on the host and count its requests exactly.
func TestKubeImage(t *testing.T) {
	e2e.RequireRoot(t)
	buildah := e2e.RequireTool(t, "buildah")
	runc := e2e.RequireTool(t, "runc")
	tag := fmt.Sprintf("localhost/obsd:e2e-%d", os.Getpid())
	archive := filepath.Join(t.TempDir(), "obsd-image.tar")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(buildah, args...).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("buildah %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return strings.TrimSpace(string(out))
	}
	build := exec.Command(filepath.Join(e2e.RepoRoot(), "scripts", "image.sh"), tag, archive)
	build.Dir = e2e.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/image.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(buildah, "rmi", "--force", tag).Run() })
	if st, err := os.Stat(archive); err != nil || st.Size() == 0 {
		t.Fatalf("no OCI archive written: %v", err)
	}

	// The image's configuration is what the DaemonSet expects.
	var img struct {
		OCIv1 struct {
			Config struct {
				User         string
				Entrypoint   []string
				ExposedPorts map[string]struct{}
			}
		}
	}
	if err := json.Unmarshal([]byte(run("inspect", "--type", "image", tag)), &img); err != nil {
		t.Fatal(err)
	}
	cfg := img.OCIv1.Config
	if cfg.User != "0:0" || !slices.Equal(cfg.Entrypoint, []string{"/obsd"}) {
		t.Errorf("image runs %q as %q, want [/obsd] as 0:0", cfg.Entrypoint, cfg.User)
	}
	data, err := os.ReadFile(filepath.Join(e2e.RepoRoot(), "deploy", "kubernetes", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(data, &ds); err != nil {
		t.Fatal(err)
	}
	c := ds.Spec.Template.Spec.Containers[0]
	for _, p := range c.Ports {
		if _, ok := cfg.ExposedPorts[fmt.Sprintf("%d/tcp", p.ContainerPort)]; !ok {
			t.Errorf("the DaemonSet's port %d is not exposed by the image (%v)", p.ContainerPort, cfg.ExposedPorts)
		}
	}
	var caps []string
	for _, cp := range c.SecurityContext.Capabilities.Add {
		caps = append(caps, "CAP_"+string(cp))
	}

	seccomp := "seccomp=" + filepath.Join("/usr/share/containers", "seccomp.json") // the runtime's default
	if p := c.SecurityContext.SeccompProfile; p != nil && p.Type == "Unconfined" {
		seccomp = "seccomp=unconfined"
	}

	// Run it: hostPID and host network as in the DaemonSet, every
	// capability dropped but the DaemonSet's (buildah applies them when the
	// container is created, not at run).
	ctr := run("from", "--pull-never", "--cap-drop=all", "--cap-add="+strings.Join(caps, ","), "--security-opt", seccomp, tag)
	t.Cleanup(func() { exec.Command(buildah, "rm", ctr).Run() })
	wrapper := filepath.Join(t.TempDir(), "obsd-in-image")
	script := fmt.Sprintf("#!/bin/sh\nexec %s run --runtime %s --pid=host --network=host %s -- /obsd \"$@\"\n", buildah, runc, ctr)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	srv := e2e.Start(t, builds.HTTPServer(t, e2e.Variant{Name: "current"}), nil)
	o := e2e.StartObsd(t, wrapper, nil, "--pid", strconv.Itoa(srv.PID()), "--traces", "none")
	o.WaitScrape(t, 20*time.Second, "the server instrumented from the image", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "obsd_instrumented_processes", nil) == 1
	})
	n := get(t, srv.First, 25)
	o.WaitScrape(t, 10*time.Second, "requests counted", func(f map[string]*dto.MetricFamily) bool {
		return e2e.Sum(f, "http_server_request_duration_seconds", nil) >= float64(n)
	})
	time.Sleep(200 * time.Millisecond)
	if got := e2e.Sum(e2e.Families(t, o.Scrape(t)), "http_server_request_duration_seconds", nil); got != float64(n) {
		t.Errorf("obsd from the image counted %v requests, client got %d", got, n)
	}
	// The kubelet stops a container by SIGTERM to its process; buildah
	// would kill it instead, so signal obsd in the container directly
	// (hostPID: it is in this namespace), and the container exits 0.
	pid := inImage(t, srv.PID())
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("obsd in the image still running 10 s after SIGTERM:\n%s", o.Log)
		}
	}
	// Its last lines reach the log once buildah, which relays them, has
	// exited too (a loaded machine showed the check racing the relay).
	if !o.Exited(10 * time.Second) {
		t.Fatalf("buildah run still running 10 s after obsd in the image exited:\n%s", o.Log)
	}
	// buildah reports the runtime's end as "signal: terminated" whatever
	// the container's status, so obsd's own last line is the verdict.
	if !strings.Contains(o.Log.String(), `msg="obsd stopped; all probes detached"`) {
		t.Errorf("obsd in the image did not stop cleanly:\n%s", o.Log)
	}
	e2e.WaitNoProbeLinks(t, "http_server", srv.PID())
}

// inImage returns the pid of the obsd started from the image for target.
func inImage(t *testing.T, target int) int {
	t.Helper()
	want := "--pid\x00" + strconv.Itoa(target) + "\x00"
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && strings.HasPrefix(string(cmdline), "/obsd\x00") && strings.Contains(string(cmdline), want) {
			return pid
		}
	}
	t.Fatal("obsd from the image not found in /proc")
	return 0
}
