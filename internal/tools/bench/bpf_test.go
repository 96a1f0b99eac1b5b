package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestFloor attaches the empty program to a real server and checks that
// every request runs it exactly twice, and that obsdPrograms finds programs
// through a process's fds.
func TestFloor(t *testing.T) {
	e2e.RequireRoot(t)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "httpserver")
	build := exec.Command("go", "build", "-o", bin, "./testdata/httpserver")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build httpserver: %v\n%s", err, out)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	f, err := loadFloor(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	taskset := e2e.RequireTool(t, "taskset") // util-linux
	ctx := context.Background()
	srv, addr, err := startServer(ctx, taskset, bin, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop(2 * time.Second)
	l, err := f.attach(srv.pid())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	set := &progSet{progs: []*ebpf.Program{f.prog}, names: []string{"floor_probe"}}
	before, err := set.read()
	if err != nil {
		t.Fatal(err)
	}
	res := fixedRate(ctx, "http://"+addr+"/hello", 500, time.Second, 2)
	after, err := set.read()
	if err != nil {
		t.Fatal(err)
	}
	if res.Responses != 500 {
		t.Fatalf("fixedRate = %+v, want 500 responses", res)
	}
	if got := after.runs - before.runs; got != 1000 {
		t.Errorf("floor_probe ran %d times for 500 requests, want 1000", got)
	}

	// This process holds floor_probe only: obsdPrograms must see it and
	// refuse it by name.
	_, others, err := obsdPrograms(os.Getpid())
	if err == nil || !strings.Contains(err.Error(), "floor_probe") {
		t.Errorf("obsdPrograms(self) error = %v, want one listing floor_probe", err)
	}
	if len(others) != 1 {
		t.Errorf("obsdPrograms(self) others = %q, want floor_probe only", others)
	}
}
