package main

import (
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/obsd-dev/obsd/internal/discover"
	otelexport "github.com/obsd-dev/obsd/internal/export/otel"
	"github.com/obsd-dev/obsd/internal/propagate"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    discover.Criteria
		listen  string
		traces  otelexport.Mode
		prop    propagate.Mode
		wantErr string
	}{
		{name: "pid", args: []string{"--pid", "4242"},
			want: discover.Criteria{PIDs: []int{4242}}, listen: ":9400", traces: "none"},
		{name: "repeat and combine", args: []string{"--pid", "1", "--pid", "2", "--exe", "*/bin/*", "--port", "8080"},
			want: discover.Criteria{PIDs: []int{1, 2}, ExeGlobs: []string{"*/bin/*"}, Ports: []int{8080}}, listen: ":9400", traces: "none"},
		{name: "env equivalents", env: map[string]string{"OBSD_PID": "7, 8", "OBSD_EXE": "/a,/b", "OBSD_PORT": "80", "OBSD_LISTEN": "127.0.0.1:1", "OBSD_TRACES": "stdout"},
			want: discover.Criteria{PIDs: []int{7, 8}, ExeGlobs: []string{"/a", "/b"}, Ports: []int{80}}, listen: "127.0.0.1:1", traces: "stdout"},
		{name: "flag wins over env", args: []string{"--pid", "3", "--listen", ":1"}, env: map[string]string{"OBSD_PID": "9", "OBSD_LISTEN": ":2"},
			want: discover.Criteria{PIDs: []int{3}}, listen: ":1", traces: "none"},
		{name: "otlp when an endpoint is set", args: []string{"--port", "80"}, env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
			want: discover.Criteria{Ports: []int{80}}, listen: ":9400", traces: "otlp"},
		{name: "nothing selected", wantErr: "nothing to instrument"},
		{name: "bad pid", args: []string{"--pid", "x"}, wantErr: "not a positive number"},
		{name: "bad traces", args: []string{"--pid", "1", "--traces", "jaeger"}, wantErr: "jaeger"},
		{name: "bad env", env: map[string]string{"OBSD_PORT": "http"}, wantErr: "OBSD_PORT"},
		{name: "bad keep-exited", args: []string{"--pid", "1", "--keep-exited", "0s"}, wantErr: "--keep-exited"},
		{name: "propagate default none", args: []string{"--pid", "1"},
			want: discover.Criteria{PIDs: []int{1}}, listen: ":9400", traces: "none", prop: propagate.None},
		{name: "propagate flag", args: []string{"--pid", "1", "--propagate", "headers"},
			want: discover.Criteria{PIDs: []int{1}}, listen: ":9400", traces: "none", prop: propagate.Headers},
		{name: "propagate flag list", args: []string{"--pid", "1", "--propagate=tcp,headers"},
			want: discover.Criteria{PIDs: []int{1}}, listen: ":9400", traces: "none", prop: propagate.TCP | propagate.Headers},
		{name: "propagate env", args: []string{"--pid", "1"}, env: map[string]string{"OBSD_PROPAGATE": "tcp"},
			want: discover.Criteria{PIDs: []int{1}}, listen: ":9400", traces: "none", prop: propagate.TCP},
		{name: "propagate flag wins over env", args: []string{"--pid", "1", "--propagate", "headers"}, env: map[string]string{"OBSD_PROPAGATE": "tcp"},
			want: discover.Criteria{PIDs: []int{1}}, listen: ":9400", traces: "none", prop: propagate.Headers},
		{name: "propagate flag none wins over env", args: []string{"--pid", "1", "--propagate", "none"}, env: map[string]string{"OBSD_PROPAGATE": "tcp,headers"},
			want: discover.Criteria{PIDs: []int{1}}, listen: ":9400", traces: "none", prop: propagate.None},
		{name: "propagate flag wins over a bad env", args: []string{"--pid", "1", "--propagate", "tcp"}, env: map[string]string{"OBSD_PROPAGATE": "bogus"},
			want: discover.Criteria{PIDs: []int{1}}, listen: ":9400", traces: "none", prop: propagate.TCP},
		{name: "bad propagate", args: []string{"--pid", "1", "--propagate", "http"},
			wantErr: `invalid value "http" for flag -propagate: unknown mechanism "http"; want none, tcp, headers or a comma-separated list such as "tcp,headers"`},
		{name: "empty propagate", args: []string{"--pid", "1", "--propagate="}, wantErr: "flag -propagate: empty value; want none, tcp, headers"},
		{name: "propagate none combined", args: []string{"--pid", "1", "--propagate", "none,tcp"}, wantErr: "flag -propagate: none cannot be combined"},
		{name: "bad propagate env", args: []string{"--pid", "1"}, env: map[string]string{"OBSD_PROPAGATE": "tcp,tcp"},
			wantErr: `OBSD_PROPAGATE="tcp,tcp": tcp given twice`},
		{name: "version needs no target", args: []string{"--version"}, want: discover.Criteria{}, listen: ":9400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			c, err := parse(tt.args, getenv, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.agent.Criteria, tt.want) {
				t.Errorf("criteria = %+v, want %+v", c.agent.Criteria, tt.want)
			}
			if c.agent.Listen != tt.listen {
				t.Errorf("listen = %q, want %q", c.agent.Listen, tt.listen)
			}
			if c.agent.Traces != tt.traces {
				t.Errorf("traces = %q, want %q", c.agent.Traces, tt.traces)
			}
			if c.agent.Propagate != tt.prop {
				t.Errorf("propagate = %v, want %v", c.agent.Propagate, tt.prop)
			}
		})
	}
}

// TestVersion: --version prints one line naming obsd and the Go that built
// it, and starts nothing (no target, no root needed).
func TestVersion(t *testing.T) {
	var out strings.Builder
	if err := run([]string{"--version"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	line := out.String()
	if !strings.HasPrefix(line, "obsd ") || !strings.Contains(line, runtime.Version()) || strings.Count(line, "\n") != 1 {
		t.Errorf("--version printed %q, want one line: obsd <version> %s ...", line, runtime.Version())
	}
}
