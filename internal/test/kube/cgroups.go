package kubetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// Cgroups is a top-level cgroup directory of the test's own in the
// unified (v2) hierarchy and in the v1 pids hierarchy of this hybrid host,
// removed when the test ends.
type Cgroups struct {
	V2, V1 string
}

// NewCgroups creates the directories.
func NewCgroups(t testing.TB) *Cgroups {
	t.Helper()
	name := "obsd-test-" + randHex(4)
	c := &Cgroups{V2: filepath.Join("/sys/fs/cgroup/unified", name), V1: filepath.Join("/sys/fs/cgroup/pids", name)}
	for _, d := range []string{c.V2, c.V1} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("creating the test's cgroup: %v", err)
		}
		t.Cleanup(func() { removeCgroup(t, d) })
	}
	return c
}

// removeCgroup removes a cgroup tree, deepest first (rmdir of a cgroup
// fails while it has children or processes).
func removeCgroup(t testing.TB, dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		var err error
		for try := 0; try < 50; try++ {
			// Processes killed at cleanup leave the cgroup asynchronously.
			if err = syscall.Rmdir(dirs[i]); err == nil || err == syscall.ENOENT {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil && err != syscall.ENOENT {
			t.Errorf("removing cgroup %s: %v", dirs[i], err)
		}
	}
}

// ContainerdSystemd is where containerd with the systemd cgroup driver puts
// a container, in the v2 hierarchy.
func (c *Cgroups) ContainerdSystemd(podUID, id string) string {
	u := strings.ReplaceAll(podUID, "-", "_")
	return filepath.Join(c.V2, "kubepods.slice", "kubepods-besteffort.slice",
		"kubepods-besteffort-pod"+u+".slice", "cri-containerd-"+id+".scope")
}

// CRIOv1 is where CRI-O with the systemd driver puts a container, in the
// v1 pids hierarchy (the process stays at the v2 root, as on a v1 host).
func (c *Cgroups) CRIOv1(podUID, id string) string {
	u := strings.ReplaceAll(podUID, "-", "_")
	return filepath.Join(c.V1, "kubepods.slice", "kubepods-burstable.slice",
		"kubepods-burstable-pod"+u+".slice", "crio-"+id+".scope")
}

// StartIn runs bin inside the cgroup dir (created if needed) and waits for
// its first line of stdout, like e2e.Start; the process is killed at
// cleanup. A v2 cgroup is entered at clone (CLONE_INTO_CGROUP); a v1 one by
// a shell that moves itself and then execs bin, as runc moves its init.
func StartIn(t testing.TB, dir, bin string, env []string, args ...string) *e2e.Proc {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	if strings.HasPrefix(dir, "/sys/fs/cgroup/unified/") {
		fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		cmd = exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	} else {
		cmd = exec.Command("/bin/sh", append([]string{"-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, dir, bin}, args...)...)
	}
	cmd.Env = append(os.Environ(), env...)
	return e2e.StartCmd(t, cmd)
}
