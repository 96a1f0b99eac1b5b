package discover

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// These tests run the Watcher on a fake procfs: testdata/proc copied to a
// temp dir plus the symlinks (exe, fd/*, ns/net, net) procfs has, which are
// made here rather than stored, as module zips drop symlinks.

const (
	hostNS  = "net:[4026531840]"
	otherNS = "net:[4026532999]"
)

func newFakeProc(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	err := os.CopyFS(root, os.DirFS(filepath.Join("testdata", "proc")))
	if err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"101/exe":  "/usr/local/bin/myservice",
		"101/fd/0": "/dev/null",
		"101/fd/1": "pipe:[999]",
		"101/fd/3": "socket:[5001]", // LISTEN on 8080
		"101/fd/4": "socket:[5010]", // a connection on 8080, not a listener
		"102/exe":  "/opt/app/bin/worker (deleted)",
		"102/fd/5": "socket:[5002]", // LISTEN on [::]:9090
		"104/exe":  "/usr/bin/sleep",
		"104/fd/0": "/dev/null",
		// 105 is in its own network namespace, with its own tables.
		"105/exe":    "/app/server",
		"105/fd/7":   "socket:[6001]",
		"105/ns/net": otherNS,
		// 103 is a kernel thread and 106 a zombie: neither has an exe.
	}
	for _, pid := range []string{"101", "102", "103", "104"} {
		links[pid+"/ns/net"] = hostNS
		links[pid+"/net"] = "../net"
	}
	for name, target := range links {
		symlink(t, root, name, target)
	}
	if err := os.MkdirAll(filepath.Join(root, "103", "fd"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// symlink makes root/name point at target, replacing what was there.
func symlink(t *testing.T, root, name, target string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, root, name, content string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fixtureStack is the start of stack (field 28) in testdata/proc stat files.
const fixtureStack = 140722840412480

// writeStat writes a stat file with fields up to startstack (28).
func writeStat(t *testing.T, root string, pid int, comm string, state byte, start, stack uint64) {
	t.Helper()
	writeFile(t, root, fmt.Sprintf("%d/stat", pid), fmt.Sprintf(
		"%d (%s) %c 1 %d %d 0 -1 4194560 1520 0 0 0 12 7 0 0 20 0 9 0 %d 1270059008 2301 18446744073709551615 4194304 9573613 %d\n",
		pid, comm, state, pid, pid, start, stack))
}

func pidsOf(ps []Process) []int {
	out := []int{}
	for _, p := range ps {
		out = append(out, p.PID)
	}
	return out
}

// scan runs one Scan and checks the pids added and removed.
func scan(t *testing.T, w *Watcher, wantAdded, wantRemoved []int) (added, removed []Process) {
	t.Helper()
	added, removed, err := w.Scan()
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if got := pidsOf(added); !slices.Equal(got, wantAdded) {
		t.Errorf("added %v, want %v", got, wantAdded)
	}
	if got := pidsOf(removed); !slices.Equal(got, wantRemoved) {
		t.Errorf("removed %v, want %v", got, wantRemoved)
	}
	return added, removed
}

func TestScanFixture(t *testing.T) {
	root := newFakeProc(t)
	tests := []struct {
		name string
		c    Criteria
		want []int
	}{
		{"empty criteria", Criteria{}, []int{}},
		// 103 has no exe (kernel thread), 106 is a zombie, 999 is absent.
		{"pids", Criteria{PIDs: []int{101, 103, 106, 999}}, []int{101}},
		{"base name", Criteria{ExeGlobs: []string{"myservice"}}, []int{101}},
		{"deleted exe by base name", Criteria{ExeGlobs: []string{"worker"}}, []int{102}},
		{"star crosses slash", Criteria{ExeGlobs: []string{"*/bin/*"}}, []int{101, 102, 104}},
		{"whole path", Criteria{ExeGlobs: []string{"/app/*"}}, []int{105}},
		{"every exe", Criteria{ExeGlobs: []string{"*"}}, []int{101, 102, 104, 105}},
		{"no match", Criteria{ExeGlobs: []string{"/usr/bin/nothing"}}, []int{}},
		// 8080 listens in two namespaces: the host's (101) and 105's own.
		{"port in two namespaces", Criteria{Ports: []int{8080}}, []int{101, 105}},
		{"ipv6 port", Criteria{Ports: []int{9090}}, []int{102}},
		{"listener without owner", Criteria{Ports: []int{3306, 8081}}, []int{}},
		{"port nobody listens on", Criteria{Ports: []int{54000}}, []int{}},
		{"union", Criteria{PIDs: []int{104}, ExeGlobs: []string{"/app/server"}, Ports: []int{9090}}, []int{102, 104, 105}},
		{"overlapping criteria report once", Criteria{PIDs: []int{101}, ExeGlobs: []string{"myservice"}, Ports: []int{8080}}, []int{101, 105}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := New(tt.c, Options{ProcRoot: root, Self: 1})
			scan(t, w, tt.want, []int{})
			scan(t, w, []int{}, []int{})
			if w.Scans() != 2 {
				t.Errorf("Scans() = %d, want 2", w.Scans())
			}
		})
	}
}

func TestScanFixtureProcesses(t *testing.T) {
	root := newFakeProc(t)
	w := New(Criteria{ExeGlobs: []string{"*"}}, Options{ProcRoot: root, Self: 1})
	added, _ := scan(t, w, []int{101, 102, 104, 105}, []int{})
	want := []Process{{
		PID: 101, StartTime: 4242, Exe: "/usr/local/bin/myservice", ExePath: root + "/101/exe",
		ServiceName:   "checkout",
		ResourceAttrs: map[string]string{"deployment.environment": "prod", "service.namespace": "shop front"},
	}, {
		PID: 102, StartTime: 5000, Exe: "/opt/app/bin/worker", ExeDeleted: true, ExePath: root + "/102/exe",
		ServiceName:   "from-attrs",
		ResourceAttrs: map[string]string{"service.name": "from-attrs", "team": "core,infra"},
	}, {
		// OTEL_SERVICE_NAME is set but empty.
		PID: 104, StartTime: 6000, Exe: "/usr/bin/sleep", ExePath: root + "/104/exe",
		ServiceName: "sleep",
	}, {
		PID: 105, StartTime: 7000, Exe: "/app/server", ExePath: root + "/105/exe",
		ServiceName: "inner",
	}}
	seqs := map[uint64]bool{}
	for i := range added {
		if seqs[added[i].Seq] || added[i].Seq == 0 || added[i].Seq > uint64(len(added)) {
			t.Errorf("added[%d].Seq = %d, want one of 1..%d unused (one per incarnation)", i, added[i].Seq, len(added))
		}
		seqs[added[i].Seq] = true
		added[i].Seq = 0
	}
	if !reflect.DeepEqual(added, want) {
		t.Errorf("added\n%+v\nwant\n%+v", added, want)
	}
}

func TestScanExcludesSelf(t *testing.T) {
	root := newFakeProc(t)
	w := New(Criteria{PIDs: []int{101}, ExeGlobs: []string{"*"}, Ports: []int{8080}}, Options{ProcRoot: root, Self: 101})
	scan(t, w, []int{102, 104, 105}, []int{})
}

func TestScanEnvironUnreadable(t *testing.T) {
	root := newFakeProc(t)
	if err := os.Remove(filepath.Join(root, "101", "environ")); err != nil {
		t.Fatal(err)
	}
	w := New(Criteria{PIDs: []int{101}}, Options{ProcRoot: root, Self: 1})
	added, _ := scan(t, w, []int{101}, []int{})
	if p := added[0]; p.ServiceName != "myservice" || p.ResourceAttrs != nil {
		t.Errorf("got service %q attrs %v, want the exe base name and none", p.ServiceName, p.ResourceAttrs)
	}
}

func TestScanPIDReuse(t *testing.T) {
	root := newFakeProc(t)
	w := New(Criteria{ExeGlobs: []string{"*/bin/*"}}, Options{ProcRoot: root, Self: 1})
	before, _ := scan(t, w, []int{101, 102, 104}, []int{})

	// 104 exits and its pid goes to a new process running the same file:
	// only the start time tells them apart.
	writeStat(t, root, 104, "sleep", 'S', 9000, fixtureStack)
	added, removed := scan(t, w, []int{104}, []int{104})
	if !reflect.DeepEqual(removed[0], before[2]) {
		t.Errorf("removed %+v, want the process added before, %+v", removed[0], before[2])
	}
	if added[0].StartTime != 9000 {
		t.Errorf("added start time %d, want 9000", added[0].StartTime)
	}
	scan(t, w, []int{}, []int{})

	// Reused by a process that does not match: only a removal.
	writeStat(t, root, 104, "bash", 'S', 9500, fixtureStack)
	symlink(t, root, "104/exe", "/home/u/bash")
	scan(t, w, []int{}, []int{104})
}

func TestScanExec(t *testing.T) {
	root := newFakeProc(t)
	w := New(Criteria{PIDs: []int{101}}, Options{ProcRoot: root, Self: 1})
	scan(t, w, []int{101}, []int{})

	// Renaming the thread (prctl PR_SET_NAME) changes comm, not the exe:
	// nothing to report.
	writeStat(t, root, 101, "myservice-main", 'S', 4242, fixtureStack)
	scan(t, w, []int{}, []int{})

	// exec keeps pid and start time but runs another file.
	writeStat(t, root, 101, "newbin", 'S', 4242, fixtureStack+4096)
	symlink(t, root, "101/exe", "/usr/local/bin/newbin")
	added, removed := scan(t, w, []int{101}, []int{101})
	if removed[0].Exe != "/usr/local/bin/myservice" || added[0].Exe != "/usr/local/bin/newbin" {
		t.Errorf("exec: removed %q, added %q", removed[0].Exe, added[0].Exe)
	}

	// exec of the same path (say an upgraded binary re-executing itself):
	// same name, same exe link, but a new image, told by its new stack.
	writeStat(t, root, 101, "newbin", 'S', 4242, fixtureStack+8192)
	added, removed = scan(t, w, []int{101}, []int{101})
	if removed[0].Exe != added[0].Exe {
		t.Errorf("re-exec: removed %q, added %q", removed[0].Exe, added[0].Exe)
	}
	scan(t, w, []int{}, []int{})
}

func TestScanExitAndZombie(t *testing.T) {
	root := newFakeProc(t)
	w := New(Criteria{ExeGlobs: []string{"*"}}, Options{ProcRoot: root, Self: 1})
	scan(t, w, []int{101, 102, 104, 105}, []int{})

	// A zombie still has its stat, but nothing to instrument.
	writeStat(t, root, 105, "server", 'Z', 7000, fixtureStack)
	scan(t, w, []int{}, []int{105})

	if err := os.RemoveAll(filepath.Join(root, "102")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "105")); err != nil {
		t.Fatal(err)
	}
	scan(t, w, []int{}, []int{102})
}

func TestScanRequestedPIDAppearsLater(t *testing.T) {
	root := newFakeProc(t)
	w := New(Criteria{PIDs: []int{200}}, Options{ProcRoot: root, Self: 1})
	scan(t, w, []int{}, []int{})
	writeStat(t, root, 200, "late", 'S', 8000, fixtureStack)
	symlink(t, root, "200/exe", "/usr/bin/late")
	scan(t, w, []int{200}, []int{})
}

// TestScanPortCache checks that fds are walked only when needed: for new
// processes, for a namespace that gained a listening socket, and for
// matched processes every portRecheckEvery scans.
func TestScanPortCache(t *testing.T) {
	root := newFakeProc(t)
	w := New(Criteria{Ports: []int{8080}}, Options{ProcRoot: root, Self: 1})
	sweeps := func(want uint64) {
		t.Helper()
		if w.fdSweeps != want {
			t.Errorf("fd sweeps = %d, want %d", w.fdSweeps, want)
		}
		w.fdSweeps = 0
	}

	// Every live process: 101-104 in the host namespace, 105 in its own.
	scan(t, w, []int{101, 105}, []int{})
	sweeps(5)
	scan(t, w, []int{}, []int{})
	sweeps(0)

	// A new process in the host namespace: only it is walked.
	writeStat(t, root, 107, "client", 'S', 8100, fixtureStack)
	symlink(t, root, "107/exe", "/usr/bin/client")
	symlink(t, root, "107/ns/net", hostNS)
	symlink(t, root, "107/net", "../net")
	symlink(t, root, "107/fd/3", "socket:[5011]")
	scan(t, w, []int{}, []int{})
	sweeps(1)

	// 104 starts listening on 8080 too (SO_REUSEPORT): the host set
	// gained a socket, so the host namespace's processes are walked again,
	// and not 105.
	symlink(t, root, "104/fd/9", "socket:[5020]")
	tcp := string(readFixture(t, "proc/net/tcp")) +
		"   5: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5020 1 0000000000000000 100 0 0 10 0\n"
	writeFile(t, root, "net/tcp", tcp)
	scan(t, w, []int{104}, []int{})
	sweeps(5)

	// 101 closes its listener but the socket stays open elsewhere (say a
	// forked child holds it), so the set does not change: the cache keeps
	// 101 until the periodic recheck.
	if err := os.Remove(filepath.Join(root, "101", "fd", "3")); err != nil {
		t.Fatal(err)
	}
	for w.scanNo+1 < portRecheckEvery {
		scan(t, w, []int{}, []int{})
	}
	sweeps(0)
	scan(t, w, []int{}, []int{101})
	sweeps(3) // 101, 104 and 105, the processes matched by port

	// 104 closes its listener: a socket going away needs no fd walk.
	writeFile(t, root, "net/tcp", string(readFixture(t, "proc/net/tcp")))
	scan(t, w, []int{}, []int{104})
	sweeps(0)

	// The namespace's last process exits: its state goes with it.
	if err := os.RemoveAll(filepath.Join(root, "105")); err != nil {
		t.Fatal(err)
	}
	scan(t, w, []int{}, []int{105})
	if _, ok := w.nets[otherNS]; ok {
		t.Error("state of a vanished namespace kept")
	}
	if len(w.procs) != 5 {
		t.Errorf("cache holds %d processes, want 5 (101-104, 107)", len(w.procs))
	}
}

func TestScanBadTCPTableKeepsLastSet(t *testing.T) {
	root := newFakeProc(t)
	var log strings.Builder
	w := New(Criteria{Ports: []int{8080}}, Options{ProcRoot: root, Self: 1, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	scan(t, w, []int{101, 105}, []int{})
	writeFile(t, root, "net/tcp", "garbage\n")
	scan(t, w, []int{}, []int{})
	scan(t, w, []int{}, []int{})
	// Warned about once, not at every scan.
	if n := strings.Count(log.String(), "level=WARN msg=\"reading listening sockets"); n != 1 {
		t.Errorf("%d warnings, want 1; log:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), `header \"garbage\" does not start with`) {
		t.Errorf("warning does not say what is wrong; log:\n%s", log.String())
	}
}

func TestScanBadStatWarns(t *testing.T) {
	root := newFakeProc(t)
	writeFile(t, root, "104/stat", "104 sleep S\n")
	var log strings.Builder
	w := New(Criteria{ExeGlobs: []string{"*"}}, Options{ProcRoot: root, Self: 1, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	scan(t, w, []int{101, 102, 105}, []int{})
	if !strings.Contains(log.String(), "level=WARN msg=\"skipping process with unparsable stat\" pid=104") {
		t.Errorf("no warning; log:\n%s", log.String())
	}
}

func TestScanProcRootMissing(t *testing.T) {
	root := filepath.Join(t.TempDir(), "nope")
	w := New(Criteria{ExeGlobs: []string{"*"}}, Options{ProcRoot: root})
	if _, _, err := w.Scan(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Scan error %v, want not-exist", err)
	}
	if err := w.Run(t.Context(), nil); err == nil {
		t.Error("Run did not return the first scan's error")
	}
	if n := w.Scans(); n != 0 {
		t.Errorf("Scans() = %d after failed scans, want 0", n)
	}
}

// TestScanExecOfAnotherFile: an exec that keeps pid, start time, name and
// path, and that stat cannot reveal (no address randomization), but runs
// another file (an upgrade renamed over the old one) is a new image: the
// file's device and inode tell.
func TestScanExecOfAnotherFile(t *testing.T) {
	root := newFakeProc(t)
	bin := filepath.Join(t.TempDir(), "myservice")
	if err := os.WriteFile(bin, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "101", "exe")); err != nil {
		t.Fatal(err)
	}
	symlink(t, root, "101/exe", bin)
	w := New(Criteria{PIDs: []int{101}}, Options{ProcRoot: root, Self: 1})
	before, _ := scan(t, w, []int{101}, []int{})
	scan(t, w, []int{}, []int{})

	upgrade := bin + ".new"
	if err := os.WriteFile(upgrade, []byte("v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(upgrade, bin); err != nil {
		t.Fatal(err)
	}
	added, removed := scan(t, w, []int{101}, []int{101})
	if removed[0].Seq != before[0].Seq || added[0].Seq == before[0].Seq {
		t.Errorf("removed Seq %d, added Seq %d; want the old image's %d removed and a new one added", removed[0].Seq, added[0].Seq, before[0].Seq)
	}
	scan(t, w, []int{}, []int{})
}
