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
		loads: []string{"grpc-server", "http-client", "chi-server"}, callConc: 16, httpLoop: 20000}
	r := &report{o: o, callConfigs: callConfigs(o, ""), calls: map[string]map[string][]callSample{}}
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
	// chi: three runs per request; floor 12 µs, obsd 3.5 more (a pass:
	// the limit is 3.6).
	r.calls["chi-server"] = map[string][]callSample{
		"plain": {callSampleAt(20000, 5000, 0, 0, 100)},
		"floor": {callSampleAt(20000, 4500, 60000, 20000*450, 112)},
		"obsd":  {callSampleAt(20000, 4400, 60000, 20000*2100, 115.5)},
	}
	r.calls["chi-server"]["obsd"][0].progs = map[string]progCount{
		"chi_route":       {runs: 20000, runtime: 20000 * 700},
		"http_server_sta": {runs: 20000, runtime: 20000 * 450},
		"http_server_end": {runs: 20000, runtime: 20000 * 950},
		"http_server_clo": {}, // attached, never ran
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
		"| HTTP client (net/http), concurrent keep-alive GETs | 20.00 | 29.00 | 9.00 | 45% | FAIL (limit 6.00 µs) | 0.00 | 66.67 | 4000 | 9.00 (9.00) |",
		"#### chi router (HTTP server with a chi v5 route)",
		"`wrk -t1 -c16 /orders/42/items/7`",
		"| floor (empty programs at the probes' sites) | 4,500 | 4,500 | 0.900 | 22.22 | 3.000 | 450 | 112.00 | 12.00 |",
		"| obsd (--traces none) | 4,400 | 4,400 | 0.880 | 27.27 | 3.000 | 2100 | 115.50 | 15.50 |",
		"obsd's BPF programs per call (median over rounds; programs that did not run are left out): " +
			"`chi_route` 1.000 runs, 700 ns; `http_server_end` 1.000 runs, 950 ns; `http_server_sta` 1.000 runs, 450 ns.\n",
		// added 3.50 of a 12 µs floor; throughput: 27.27 − 22.22.
		"| chi router (HTTP server with a chi v5 route) | 12.00 | 15.50 | 3.50 | 29% | PASS (limit 3.60 µs) | 0.00 | 5.05 | 1650 | 3.50 (3.50) |",
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
	if got, want := r.pairedAdded("grpc-server", "floor", "obsd"), "5.07 (21.10 / 5.07 / 3.26)"; got != want {
		t.Errorf("pairedAdded = %q, want %q", got, want)
	}
	if got := r.pairedAdded("http-client", "floor", "obsd"); got != "—" {
		t.Errorf("pairedAdded of a load not run = %q, want —", got)
	}
}

func TestHitsOff(t *testing.T) {
	tests := []struct {
		hits  int
		runs  uint64
		calls int64
		want  string // "" when within 0.5%
	}{
		{2, 40000, 20000, ""},
		{3, 60000, 20000, ""},
		{3, 60290, 20000, ""}, // 3.0145: within 0.5%
		{3, 40000, 20000, "2.000 BPF runs per call (40000 runs, 20000 calls), want 3"}, // the chi site missed
		{2, 60000, 20000, "3.000 BPF runs per call (60000 runs, 20000 calls), want 2"},
		{3, 60400, 20000, "3.020 BPF runs per call (60400 runs, 20000 calls), want 3"},
	}
	for _, tt := range tests {
		got, off := hitsOff(tt.hits, tt.runs, tt.calls)
		if got != tt.want || off != (tt.want != "") {
			t.Errorf("hitsOff(%d, %d, %d) = %q, %v; want %q", tt.hits, tt.runs, tt.calls, got, off, tt.want)
		}
	}
}

func TestParseRouterListening(t *testing.T) {
	tests := []struct {
		line, addr, admin string
		wantErr           bool
	}{
		{"listening 127.0.0.1:41234 127.0.0.1:41235", "127.0.0.1:41234", "127.0.0.1:41235", false},
		{"listening [::1]:80 127.0.0.1:81", "[::1]:80", "127.0.0.1:81", false},
		{"listening 127.0.0.1:41234", "", "", true},          // no admin address
		{"listening 0.0.0.0:80 127.0.0.1:81", "", "", true},  // not loopback
		{"listening 127.0.0.1:80 10.0.0.1:81", "", "", true}, // admin not loopback
		{"ready 127.0.0.1:80 127.0.0.1:81", "", "", true},    // another line
		{"listening 127.0.0.1 127.0.0.1:81", "", "", true},   // no port
	}
	for _, tt := range tests {
		addr, admin, err := parseRouterListening(tt.line)
		if (err != nil) != tt.wantErr || addr != tt.addr || admin != tt.admin {
			t.Errorf("parseRouterListening(%q) = %q, %q, %v; want %q, %q, error %v", tt.line, addr, admin, err, tt.addr, tt.admin, tt.wantErr)
		}
	}
}
