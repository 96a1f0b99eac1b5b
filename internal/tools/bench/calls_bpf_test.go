package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// TestCallLoadFloors runs each call load's programs for real with the floor
// attached at the probes' sites, and checks the floor ran exactly as often
// per call, as the load generator itself counted calls, as the load's
// probes hit (one entry and one end per call, for the HTTP client the end
// being the RET that runs; for the chi service those two and chi's call of
// sync.(*Pool).Put), which is what the bench's "BPF runs/call" and per-call
// costs rest on. For the chi service, its own tally (what chi reported to
// its middleware) must show every request on the one route.
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
	bins, err := buildCallBins(ctx, root, t.TempDir(), knownLoads)
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
	o := options{serverCPU: 0, loadCPU: loadCPU, callConc: 4, httpLoop: 300, wrk: e2e.RequireTool(t, "wrk")}
	b := &bench{o: o, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		taskset: e2e.RequireTool(t, "taskset"), calls: bins, obsdOthers: map[string]bool{}}
	for _, l := range callLoads(o) {
		t.Run(l.name, func(t *testing.T) {
			bin, err := bins.targetBin(l.name)
			if err != nil {
				t.Fatal(err)
			}
			offs, err := floorSites(bin, l.probes, false)
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
			if l.name == "chi-server" {
				// Let the service finish what wrk left in flight and see
				// its connections close, so that all of it is counted.
				time.Sleep(300 * time.Millisecond)
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
			served := cr.calls
			if l.name == "chi-server" {
				// wrk counts the responses it read; the service also served
				// those in flight when wrk stopped (at most one per
				// connection) and, before the round, startRig's check.
				seen := routerTally(t, rig.admin)
				if len(seen) != 1 || seen[0] != (routerSeen{Method: "GET", Route: chiRoute, Matched: true, Status: 200, Count: seen[0].Count}) {
					t.Fatalf("the chi service saw %+v, want only GET %s answered 200", seen, chiRoute)
				}
				served = int64(seen[0].Count - 1)
				if served < cr.calls || served > cr.calls+16 {
					t.Errorf("the chi service served %d requests in the round, wrk counted %d", served, cr.calls)
				}
			}
			// Each of wrk's 16 connections runs the server probe's close
			// site once when wrk ends it, startRig's check's may close
			// within the round, and a request wrk cut off may have run a
			// site or two without being served.
			closes := map[string][2]uint64{"chi-server": {16, 16 + 1 + 2}}[l.name]
			want := uint64(l.hits) * uint64(served)
			if got := after.runs - before.runs; got < want+closes[0] || got > want+closes[1] {
				t.Errorf("the floor ran %d times for %d calls, want %d (%d per call) plus %d..%d connection closes", got, served, want, l.hits, closes[0], closes[1])
			}
		})
	}
}

// routerSeen is testdata/routers/common's Seen: one route as the router
// reported it, with its count.
type routerSeen struct {
	Method  string `json:"method"`
	Route   string `json:"route"`
	Matched bool   `json:"matched"`
	Status  int    `json:"status"`
	Count   int    `json:"count"`
}

// routerTally reads a router service's own tally from its admin address.
func routerTally(t *testing.T, admin string) []routerSeen {
	t.Helper()
	resp, err := http.Get(admin + "/tally")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var seen []routerSeen
	if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil {
		t.Fatalf("decode the tally: %v", err)
	}
	return seen
}
