package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestCallLoadFloors runs each call load's programs for real with the floor
// attached at the probe's sites, and checks the floor ran exactly twice per
// call the load generator itself counted (one entry and one end per call;
// for the HTTP client the end is the RET that runs), which is what the
// bench's "BPF runs/call" and per-call costs rest on.
func TestCallLoadFloors(t *testing.T) {
	e2e.RequireRoot(t)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ncpu, err := onlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	loadCPU := 1
	if ncpu < 2 {
		loadCPU = 0
	}
	ctx := context.Background()
	bins, err := buildCallBins(ctx, root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stats.Close() })
	o := options{serverCPU: 0, loadCPU: loadCPU, callConc: 4, httpLoop: 300}
	b := &bench{o: o, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		taskset: e2e.RequireTool(t, "taskset"), calls: bins, obsdOthers: map[string]bool{}}
	for _, l := range callLoads(o) {
		t.Run(l.name, func(t *testing.T) {
			bin := bins.grpcapp
			if l.name == "http-client" {
				bin = bins.httpclient
			}
			offs, err := floorSites(bin, l.probe)
			if err != nil {
				t.Fatal(err)
			}
			f, err := newFloorAt(bin, offs)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(f.close)
			rig, err := b.startRig(ctx, l)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(rig.close)
			lk, err := f.attach(rig.target.pid())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lk.Close() })
			set := &progSet{progs: []*ebpf.Program{f.prog}, names: []string{"floor_probe"}}
			before, err := set.read()
			if err != nil {
				t.Fatal(err)
			}
			cr, err := rig.round(ctx, 500*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			after, err := set.read()
			if err != nil {
				t.Fatal(err)
			}
			if cr.errors != 0 {
				t.Errorf("%d of %d calls failed", cr.errors, cr.calls)
			}
			if l.name == "http-client" && cr.calls != int64(o.httpLoop) {
				t.Errorf("a round counted %d requests, want %d", cr.calls, o.httpLoop)
			}
			if got := after.runs - before.runs; got != 2*uint64(cr.calls) {
				t.Errorf("the floor ran %d times for %d calls, want %d", got, cr.calls, 2*cr.calls)
			}
		})
	}
}
