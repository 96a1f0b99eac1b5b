package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkResult is wrk's summary.
type wrkResult struct {
	Requests int64   // "N requests in"
	RPS      float64 // "Requests/sec:"
	// SocketErrors sums connect, read, write and timeout errors; Non2xx
	// counts responses outside 2xx/3xx. Both should be zero.
	SocketErrors int64
	Non2xx       int64
}

var (
	wrkRequestsRE = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkRPSRE      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)\s*$`)
	wrkSocketRE   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xxRE   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRequestsRE.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New(`parse wrk output: no "N requests in" line`)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	m = wrkRPSRE.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New(`parse wrk output: no "Requests/sec:" line`)
	}
	rps, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return r, fmt.Errorf("parse wrk output: Requests/sec %q: %w", m[1], err)
	}
	r.RPS = rps
	if m := wrkSocketRE.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.SocketErrors += n
		}
	}
	if m := wrkNon2xxRE.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if r.Requests == 0 || r.RPS == 0 {
		return r, errors.New("parse wrk output: no request completed")
	}
	return r, nil
}

// sumMetric sums every sample of the family name in Prometheus text format;
// ok is false when there is none. Only samples named exactly name count, so
// "x_count" does not match "x_count_total".
func sumMetric(text, name string) (sum float64, ok bool) {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		switch {
		case strings.HasPrefix(rest, "{"):
			end := labelsEnd(rest)
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum += v
		ok = true
	}
	return sum, ok
}

// labelsEnd returns the index of the '}' closing the label set that s starts
// with, skipping quoted label values (which may hold '}' and escaped quotes).
func labelsEnd(s string) int {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '}':
			return i
		}
	}
	return -1
}

// procCPUTicks returns utime+stime, in clock ticks, from /proc/PID/stat.
func procCPUTicks(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of %d: %w", pid, err)
	}
	return parseStatCPU(string(data))
}

func parseStatCPU(stat string) (uint64, error) {
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted from the last ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("parse /proc/PID/stat: no ')'")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/PID/stat: %d fields after the name, want at least 13", len(f))
	}
	u, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/PID/stat utime: %w", err)
	}
	s, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/PID/stat stime: %w", err)
	}
	return u + s, nil
}

// procRunTime returns the CPU time of every thread of pid, summed from each
// /proc/PID/task/TID/schedstat: nanosecond-exact, where utime and stime are
// sampled at clock ticks. Threads that exited earlier are not counted, which
// suits a Go server whose threads live as long as it.
func procRunTime(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read run time of %d: %w", pid, err)
	}
	var sum time.Duration
	for _, e := range ents {
		data, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue // thread exited meanwhile
		}
		d, err := parseSchedstat(string(data))
		if err != nil {
			return 0, fmt.Errorf("read run time of %d: %w", pid, err)
		}
		sum += d
	}
	return sum, nil
}

// parseSchedstat reads the first field of /proc/.../schedstat: time spent
// on a CPU, in ns.
func parseSchedstat(s string) (time.Duration, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return 0, fmt.Errorf("parse schedstat %q: want 3 fields", s)
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse schedstat: %w", err)
	}
	return time.Duration(n), nil
}

// cpuTimes is one CPU's line of /proc/stat, as durations.
type cpuTimes struct{ busy, steal time.Duration }

// readCPUTimes returns the times of CPU n from /proc/stat.
func readCPUTimes(n int) (cpuTimes, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, fmt.Errorf("read CPU times: %w", err)
	}
	return parseCPUTimes(string(data), n)
}

func parseCPUTimes(stat string, n int) (cpuTimes, error) {
	prefix := fmt.Sprintf("cpu%d ", n)
	for _, line := range strings.Split(stat, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		// user nice system idle iowait irq softirq steal ..., in USER_HZ.
		f := strings.Fields(line)[1:]
		if len(f) < 8 {
			return cpuTimes{}, fmt.Errorf("parse /proc/stat cpu%d: %d fields, want at least 8", n, len(f))
		}
		var v [8]uint64
		for i := range v {
			x, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("parse /proc/stat cpu%d: %w", n, err)
			}
			v[i] = x
		}
		tick := time.Second / userHZ
		return cpuTimes{
			busy:  time.Duration(v[0]+v[1]+v[2]+v[5]+v[6]) * tick,
			steal: time.Duration(v[7]) * tick,
		}, nil
	}
	return cpuTimes{}, fmt.Errorf("parse /proc/stat: no cpu%d line", n)
}

// memory is a process's resident set now and at its peak, in KiB.
type memory struct{ RSS, HWM uint64 }

func procMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("read memory of %d: %w", pid, err)
	}
	return parseStatusMemory(string(data))
}

func parseStatusMemory(status string) (memory, error) {
	var m memory
	var seen int
	for _, line := range strings.Split(status, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("parse /proc/PID/status %s: %q", key, val)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("parse /proc/PID/status %s: %w", key, err)
		}
		if key == "VmRSS" {
			m.RSS = n
		} else {
			m.HWM = n
		}
		seen++
	}
	if seen != 2 {
		return m, errors.New("parse /proc/PID/status: VmRSS or VmHWM missing")
	}
	return m, nil
}

// parseFdinfoProgID returns the prog_id of a bpf-prog or bpf-link fd's
// /proc/PID/fdinfo text.
func parseFdinfoProgID(fdinfo string) (uint32, bool) {
	for _, line := range strings.Split(fdinfo, "\n") {
		if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			return uint32(n), err == nil && n > 0
		}
	}
	return 0, false
}

func countPrefix(text, prefix string) int {
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	return n
}
