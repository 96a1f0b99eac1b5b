package main

import (
	"strings"
	"testing"
	"time"
)

// Output of wrk 4.1 against testdata/httpserver.
const wrkOK = `Running 1s test @ http://127.0.0.1:18555/hello
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   488.19us    1.01ms   8.50ms   89.87%
    Req/Sec    91.81k     5.61k   98.64k    50.00%
  90980 requests in 1.00s, 10.59MB read
Requests/sec:  90951.80
Transfer/sec:     10.58MB
`

const wrkErrors = `Running 1s test @ http://127.0.0.1:18555/nope
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   555.59us    1.05ms   9.41ms   88.91%
    Req/Sec    75.02k     5.67k   81.65k    54.55%
  82078 requests in 1.10s, 13.78MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 82078
Requests/sec:  74607.82
Transfer/sec:     12.52MB
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    wrkResult
		wantErr string
	}{
		{"ok", wrkOK, wrkResult{Requests: 90980, RPS: 90951.80}, ""},
		{"errors", wrkErrors, wrkResult{Requests: 82078, RPS: 74607.82, SocketErrors: 10, Non2xx: 82078}, ""},
		{"no requests line", "Requests/sec: 1.0\n", wrkResult{}, `no "N requests in" line`},
		{"no rps line", "  5 requests in 1.00s, 1KB read\n", wrkResult{}, `no "Requests/sec:" line`},
		{"nothing completed", "  0 requests in 1.00s, 0B read\nRequests/sec:      0.00\n", wrkResult{}, "no request completed"},
		{"connection refused", "unable to connect to 127.0.0.1:1 Connection refused\n", wrkResult{}, `no "N requests in" line`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrk(tt.out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseWrk error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseWrk: %v", err)
			}
			if got != tt.want {
				t.Errorf("parseWrk = %+v, want %+v", got, tt.want)
			}
		})
	}
}

const metricsText = `# HELP obsd_events_lost_total Requests observed but not reported, by probe and reason.
# TYPE obsd_events_lost_total counter
obsd_events_lost_total{probe="net/http server",reason="ringbuf_full"} 3
obsd_events_lost_total{probe="net/http server",reason="inflight_map_full"} 0
obsd_events_lost_total{probe="odd} \"label",reason="x"} 2
# TYPE obsd_instrumented_processes gauge
obsd_instrumented_processes 1
http_server_request_duration_seconds_bucket{http_request_method="GET",le="+Inf"} 12
http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200"} 10
http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="404"} 2
http_server_request_duration_seconds_count_total 99
sci_notation 1.5e+06 1700000000000
`

func TestSumMetric(t *testing.T) {
	tests := []struct {
		name   string
		want   float64
		wantOK bool
	}{
		{"obsd_events_lost_total", 5, true},
		{"obsd_instrumented_processes", 1, true},
		{"http_server_request_duration_seconds_count", 12, true},
		{"sci_notation", 1.5e6, true},
		{"obsd_events", 0, false},
		{"absent", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := sumMetric(metricsText, tt.name)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("sumMetric(%q) = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    uint64
		wantErr bool
	}{
		// utime 250 and stime 30 are fields 14 and 15.
		{"plain", "1234 (obsd) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 30 0 0 20 0 9 0 100 2000000 3000 18446744073709551615", 280, false},
		{"name with spaces and parens", "1234 (a) b (c) R 1 1 1 0 -1 0 0 0 0 0 7 8 0 0 20 0 1 0 1 1 1", 15, false},
		{"no paren", "1234 obsd S 1", 0, true},
		{"short", "1234 (obsd) S 1 2 3", 0, true},
		{"not a number", "1234 (obsd) S 1 1234 1234 0 -1 4194560 1000 0 0 0 x 30 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU(tt.stat)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatCPU = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseStatusMemory(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    memory
		wantErr bool
	}{
		{"ok", "Name:\tobsd\nVmPeak:\t 1300000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   18432 kB\nThreads:\t9\n", memory{RSS: 18432, HWM: 20480}, false},
		{"missing HWM", "VmRSS:\t 10 kB\n", memory{RSS: 10}, true},
		{"bad unit", "VmRSS:\t 10 MB\nVmHWM:\t 10 kB\n", memory{}, true},
		{"kernel thread", "Name:\tkthreadd\nThreads:\t1\n", memory{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatusMemory(tt.status)
			if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
				t.Errorf("parseStatusMemory = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseFdinfoProgID(t *testing.T) {
	tests := []struct {
		name   string
		fdinfo string
		want   uint32
		wantOK bool
	}{
		{"prog", "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2061\nprog_type:\t2\nprog_jited:\t1\nprog_tag:\tabc\nmemlock:\t4096\nprog_id:\t42\nrun_time_ns:\t0\nrun_cnt:\t0\n", 42, true},
		{"link", "pos:\t0\nflags:\t02000000\nlink_type:\tuprobe_multi\nlink_id:\t7\nprog_tag:\tabc\nprog_id:\t43\n", 43, true},
		{"map", "pos:\t0\nmap_type:\t27\nmap_id:\t5\n", 0, false},
		{"file", "pos:\t0\nflags:\t0100000\nmnt_id:\t20\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseFdinfoProgID(tt.fdinfo)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("parseFdinfoProgID = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"defaults", nil, ""},
		{"rounds", []string{"-rounds", "0"}, "-rounds"},
		{"fractional duration", []string{"-duration", "1500ms"}, "whole seconds"},
		{"same CPUs", []string{"-server-cpu", "1"}, "two different CPUs"},
		{"rate", []string{"-rate", "0"}, "-rate"},
		{"extra", []string{"x"}, "unexpected arguments"},
		{"obsd CPUs", []string{"-obsd-cpus", "1:2"}, "-obsd-cpus: parse CPU list"},
		{"obsd CPUs all", []string{"-obsd-cpus", "all"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if o.rounds != 3 || o.obsd != "bin/obsd" || o.duration.Seconds() != 5 || !o.spans {
					t.Errorf("defaults = %+v", o)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseFlags error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestIsObsdProg(t *testing.T) {
	for name, want := range map[string]bool{
		"http_server_start": true, "http_server_sta": true, "http_server_end": true,
		"http_server_st": false, "floor_probe": false, "http_server_startx": false,
	} {
		if got := isObsdProg(name); got != want {
			t.Errorf("isObsdProg(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestParseSchedstat(t *testing.T) {
	if d, err := parseSchedstat("87905 11481791 2\n"); err != nil || d != 87905 {
		t.Errorf("parseSchedstat = %v, %v; want 87905ns", d, err)
	}
	for _, bad := range []string{"", "1 2", "x 2 3"} {
		if _, err := parseSchedstat(bad); err == nil {
			t.Errorf("parseSchedstat(%q) succeeded", bad)
		}
	}
}

func TestParseCPUTimes(t *testing.T) {
	const stat = "cpu  78752 0 21343 173981 1147 0 642 89 0 0\ncpu0 38906 1 10254 88382 166 2 260 41 0 0\ncpu1 39846 0 11089 85598 981 0 381 47 0 0\nintr 1\n"
	got, err := parseCPUTimes(stat, 0)
	want := cpuTimes{busy: (38906 + 1 + 10254 + 2 + 260) * 10 * time.Millisecond, steal: 410 * time.Millisecond}
	if err != nil || got != want {
		t.Errorf("parseCPUTimes(cpu0) = %+v, %v; want %+v", got, err, want)
	}
	if _, err := parseCPUTimes(stat, 2); err == nil {
		t.Error("parseCPUTimes(cpu2) succeeded on a 2-CPU host")
	}
	if _, err := parseCPUTimes("cpu0 1 2 3\n", 0); err == nil {
		t.Error("parseCPUTimes accepted a short line")
	}
}
