package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseLoadLine(t *testing.T) {
	tests := []struct {
		line    string
		want    callRound
		wantErr bool
	}{
		{"calls 11548 errors 0 ns 1003003415", callRound{calls: 11548, elapsed: 1003003415}, false},
		{"calls 10 errors 3 ns 5\n", callRound{calls: 10, errors: 3, elapsed: 5}, false},
		{"calls 0 errors 0 ns 1000", callRound{}, true}, // an empty round
		{"calls 5 errors 6 ns 1000", callRound{}, true}, // more errors than calls
		{"calls 5 errors 0 ns 0", callRound{}, true},    // no time
		{"ready", callRound{}, true},                    // another line
		{"calls x errors 0 ns 1", callRound{}, true},    // not a number
		{"calls -5 errors 0 ns 100", callRound{}, true}, // negative
	}
	for _, tt := range tests {
		got, err := parseLoadLine(tt.line)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseLoadLine(%q) error = %v, want error %v", tt.line, err, tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("parseLoadLine(%q) = %+v, want %+v", tt.line, got, tt.want)
		}
	}
}

func TestParseLoopLine(t *testing.T) {
	got, err := parseLoopLine("ns_per_request 252525", 5000)
	if want := (callRound{calls: 5000, elapsed: 5000 * 252525}); err != nil || got != want {
		t.Errorf("parseLoopLine = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{"ns_per_request 0", "ns_per_request", "ready h2c=true", "ns_per_request -3"} {
		if _, err := parseLoopLine(bad, 5000); err == nil {
			t.Errorf("parseLoopLine(%q) accepted it", bad)
		}
	}
}

func TestParseLoads(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"http-server,grpc-server,grpc-client,http-client,chi-server", knownLoads, ""},
		{" grpc-client , grpc-client,http-client", []string{"grpc-client", "http-client"}, ""},
		{"grpc", nil, `unknown load "grpc"`},
		{",", nil, "no load named"},
	}
	for _, tt := range tests {
		got, err := parseLoads(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseLoads(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("parseLoads(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// callSampleAt is a round of n calls at rate/s, with runs BPF runs taking
// bpfNS in all, during which the target used cpuUS µs per call.
func callSampleAt(n int64, rate float64, runs uint64, bpfNS int64, cpuUS float64) callSample {
	return callSample{
		round:     callRound{calls: n, elapsed: callElapsed(n, rate)},
		runs:      runs,
		runtime:   time.Duration(bpfNS),
		targetCPU: time.Duration(cpuUS * 1e3 * float64(n)),
	}
}

func TestCallsMarkdown(t *testing.T) {
	o := options{rounds: 1, duration: 5 * time.Second, warmup: time.Second, loadCPU: 1, obsd: "bin/obsd",
		loads: []string{"grpc-server", "http-client"}, callConc: 16, httpLoop: 20000}
	r := &report{o: o, callConfigs: callConfigs(o), calls: map[string]map[string][]callSample{}}
	for _, l := range callLoads(o) {
		if o.has(l.name) {
			r.callLoads = append(r.callLoads, l)
		}
	}
	// gRPC server: the floor adds 10 µs of CPU per call, obsd 2 more (a
	// pass: 30% of 10 is 3); HTTP client: floor 20, obsd 9 more (a fail:
	// the limit is 6).
	r.calls["grpc-server"] = map[string][]callSample{
		"plain": {callSampleAt(100000, 20000, 0, 0, 40)},
		"floor": {callSampleAt(80000, 16000, 160000, 160000*100, 50)},
		"obsd":  {callSampleAt(75000, 15000, 150000, 75000*1000, 52)},
	}
	r.calls["http-client"] = map[string][]callSample{
		"plain": {callSampleAt(20000, 4000, 0, 0, 100)},
		"floor": {callSampleAt(20000, 3000, 40000, 20000*300, 120)},
		"obsd":  {callSampleAt(20000, 2500, 40000, 20000*4300, 129)},
	}
	var b strings.Builder
	r.callsMarkdown(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) })
	md := b.String()
	for _, want := range []string{
		"#### gRPC unary, server side",
		"| plain | 20,000 | 20,000 | 1.000 | — | — | — | 40.00 | — |",
		"| floor (empty programs at the probes' sites) | 16,000 | 16,000 | 0.800 | 12.50 | 2.000 | 200 | 50.00 | 10.00 |",
		"| obsd (--traces none) | 15,000 | 15,000 | 0.750 | 16.67 | 2.000 | 1000 | 52.00 | 12.00 |",
		// added 2.00 of a 10 µs floor; throughput: 16.67 − 12.50.
		"| gRPC unary, server side | 10.00 | 12.00 | 2.00 | 20% | PASS (limit 3.00 µs) | 0.00 | 4.17 | 800 | 2.00 (2.00) |",
		"| HTTP client (net/http), sequential keep-alive GETs | 20.00 | 29.00 | 9.00 | 45% | FAIL (limit 6.00 µs) | 0.00 | 66.67 | 4000 | 9.00 (9.00) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("calls report lacks %q; report:\n%s", want, md)
		}
	}
	if strings.Contains(md, "gRPC unary, client side") {
		t.Errorf("calls report shows a load not run:\n%s", md)
	}
}

func TestOverFloorCellsNoise(t *testing.T) {
	// Below 1 µs of floor the limit is 1 µs; noise at or above it makes
	// the verdict inconclusive.
	got := overFloorCells(0.5, 1.2, 1.0, 0.6, 400)
	if want := "0.70 | 140% | PASS (limit 1.00 µs), inconclusive: noise ≥ limit | 1.00 | 0.60 | 400"; got != want {
		t.Errorf("overFloorCells = %q, want %q", got, want)
	}
}

func TestPairedAdded(t *testing.T) {
	// Rounds drift: the floor's and obsd's medians are from different
	// rounds, their difference (60 − 50 = 10) is not any round's; paired
	// by round obsd adds 21.1, 5.07 and 3.26 µs, median 5.07.
	r := &report{calls: map[string]map[string][]callSample{"grpc-server": {
		"floor": {callSampleAt(1000, 1000, 0, 0, 50.14), callSampleAt(1000, 1000, 0, 0, 66.92), callSampleAt(1000, 1000, 0, 0, 61.02)},
		"obsd":  {callSampleAt(1000, 1000, 0, 0, 71.24), callSampleAt(1000, 1000, 0, 0, 71.99), callSampleAt(1000, 1000, 0, 0, 64.28)},
	}}}
	if got, want := r.pairedAdded("grpc-server"), "5.07 (21.10 / 5.07 / 3.26)"; got != want {
		t.Errorf("pairedAdded = %q, want %q", got, want)
	}
	if got := r.pairedAdded("http-client"); got != "—" {
		t.Errorf("pairedAdded of a load not run = %q, want —", got)
	}
}
