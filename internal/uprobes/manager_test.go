package uprobes

import (
	"bytes"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/inspect"
	"github.com/obsd-dev/obsd/internal/test/e2e"
)

type discard struct{}

func (discard) Event(probe.Event) {}

func newManager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(Options{Sink: discard{}})
	if err != nil {
		t.Fatalf("loading every probe through the verifier: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestProbesLoad puts every enabled probe through the kernel verifier.
func TestProbesLoad(t *testing.T) {
	e2e.RequireRoot(t)
	m := newManager(t)
	if len(m.probes) != len(Probes()) {
		t.Fatalf("loaded %d probes, want %d", len(m.probes), len(Probes()))
	}
	for _, lp := range m.probes {
		// Each counter the probe declares is a slot of enum obsd_counter
		// in C, named once (the probe names those its C code counts).
		n := lp.maps["obsd_counters"].MaxEntries()
		named := map[uint32]bool{}
		for _, c := range lp.Counters {
			if c.Index >= n || named[c.Index] {
				t.Errorf("probe %s: counter %s at slot %d of %d (or named twice)", lp.Name, c.Reason, c.Index, n)
			}
			named[c.Index] = true
		}
		if len(named) == 0 {
			t.Errorf("probe %s names none of its %d counters", lp.Name, n)
		}
	}
}

// TestAttachRefusals checks that processes obsd cannot instrument are
// refused with the right reason, counted, and left running.
func TestAttachRefusals(t *testing.T) {
	e2e.RequireRoot(t)
	m := newManager(t)
	tests := []struct {
		name   string
		bin    string
		args   []string
		reason string
	}{
		{"not Go", "sleep", []string{"30"}, inspect.ReasonNotGo},
		{"Go 1.19 from Debian", "promtool", []string{"--help"}, inspect.ReasonGoVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := e2e.RequireTool(t, tt.bin)
			// Attach through a file path: the refusal is about the binary.
			_, err := m.Attach(os.Getpid(), path)
			if err == nil {
				t.Fatal("attached")
			}
			if got := inspect.ReasonOf(err); got != tt.reason {
				t.Errorf("reason %q (%v), want %q", got, err, tt.reason)
			}
			if m.stats.attachErrs[tt.reason] == 0 {
				t.Errorf("refusal not counted")
			}
		})
	}
	if _, err := m.Attach(1<<22+1, "/proc/"+strconv.Itoa(1<<22+1)+"/exe"); inspect.ReasonOf(err) != ReasonExited {
		t.Errorf("attach to a missing process: %v, want reason %s", err, ReasonExited)
	}
}

// TestCountersLoggedOnce: a BPF counter that becomes non-zero is logged
// once per probe and reason, however often it grows.
func TestCountersLoggedOnce(t *testing.T) {
	e2e.RequireRoot(t)
	var logs bytes.Buffer
	m, err := New(Options{Sink: discard{}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	lp := m.probes[0]
	set := func(idx uint32, n uint64) {
		t.Helper()
		perCPU := make([]uint64, ebpf.MustPossibleCPU())
		perCPU[0] = n
		if err := lp.maps["obsd_counters"].Put(idx, perCPU); err != nil {
			t.Fatal(err)
		}
	}
	m.stats.logCounters()
	if logs.Len() != 0 {
		t.Fatalf("logged with every counter at zero:\n%s", &logs)
	}
	set(0, 3) // ringbuf_full: a loss
	set(2, 1) // end_without_start: an anomaly
	m.stats.logCounters()
	set(0, 5)
	m.stats.logCounters()
	out := logs.String()
	if n := strings.Count(out, "reason=ringbuf_full"); n != 1 || !strings.Contains(out, "level=WARN") {
		t.Errorf("ringbuf_full logged %d times, want once as a warning:\n%s", n, out)
	}
	if n := strings.Count(out, "reason=end_without_start"); n != 1 {
		t.Errorf("end_without_start logged %d times, want once:\n%s", n, out)
	}
}

// TestProgramsVerify loads every program of every probe into the running
// kernel in each mode obsd runs in, with every field offset known, so that
// the verifier sees every code path: a kernel that counts differently
// fails here, not in a user's process (Linux 6.18.44 refused the HTTP
// server probe with spans on, a 576-byte call chain that earlier 6.18
// releases took).
func TestProgramsVerify(t *testing.T) {
	e2e.RequireRoot(t)
	for _, p := range Probes() {
		for _, mode := range []struct {
			name string
			on   []string
		}{
			{"spans off", nil},
			{"spans on", []string{withSpans, parentBasedConst, keepErrorsConst}},
			{"propagate tcp and headers", []string{withSpans, probe.TCPPropagateConst, probe.TCPHeadersConst}},
		} {
			t.Run(p.Name+"/"+mode.name, func(t *testing.T) {
				spec, err := p.Spec()
				if err != nil {
					t.Fatal(err)
				}
				for name, v := range spec.Variables {
					var val uint64
					switch {
					case !v.Constant():
						continue
					case strings.HasPrefix(name, "off_"):
						val = 8
					case slices.Contains(mode.on, name):
						val = 1
					default:
						continue
					}
					b := make([]byte, v.Size())
					b[0] = byte(val)
					if err := v.Set(b); err != nil {
						t.Fatalf("setting %s: %v", name, err)
					}
				}
				coll, err := ebpf.NewCollection(spec)
				if err != nil {
					t.Fatalf("the verifier refused a program: %v", err)
				}
				coll.Close()
			})
		}
	}
}
