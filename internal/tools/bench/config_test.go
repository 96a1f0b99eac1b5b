package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestBenchConfigs(t *testing.T) {
	const ep = "http://127.0.0.1:4317"
	otlp := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + ep, "OTEL_EXPORTER_OTLP_INSECURE=true"}
	base := []config{
		{name: "plain", label: "plain", kind: plain},
		{name: "floor", label: "floor (2 empty uprobes)", kind: floorKind},
	}
	none := config{name: "obsd", label: "obsd (--traces none)", kind: obsdKind, traces: "none"}
	tests := []struct {
		name string
		o    options
		want []config
	}{
		{"no obsd", options{obsd: "", spans: true}, base},
		{"no spans", options{obsd: "bin/obsd"}, append(base[:2:2], none)},
		{"spans", options{obsd: "bin/obsd", spans: true}, append(base[:2:2], none,
			config{name: "obsd+otlp 1%", label: "obsd (OTLP, 1% sampled)", kind: obsdKind, traces: "otlp", ratio: 0.01,
				env: append(otlp[:2:2], "OTEL_TRACES_SAMPLER=parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.01")},
			config{name: "obsd+otlp 1% tcp", label: "obsd (OTLP, 1% sampled, --propagate=tcp)", kind: obsdKind, traces: "otlp", ratio: 0.01,
				env: append(otlp[:2:2], "OTEL_TRACES_SAMPLER=parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.01"), args: []string{"--propagate=tcp"}},
			config{name: "obsd+otlp 100%", label: "obsd (OTLP, 100% sampled)", kind: obsdKind, traces: "otlp", ratio: 1,
				env: append(otlp[:2:2], "OTEL_TRACES_SAMPLER=always_on")},
		)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := benchConfigs(tt.o, ep)
			if !slices.EqualFunc(got, tt.want, func(a, b config) bool {
				return a.name == b.name && a.label == b.label && a.kind == b.kind && a.traces == b.traces &&
					a.ratio == b.ratio && slices.Equal(a.env, b.env) && slices.Equal(a.args, b.args)
			}) {
				t.Errorf("benchConfigs =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestObsdEnv(t *testing.T) {
	base := []string{"PATH=/usr/bin", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://10.0.0.1:4317", "OBSD_EXE=/bin/*",
		"OBSD_BENCH_PINNED=1", "OTEL_TRACES_SAMPLER=always_on", "HOME=/root", "MY_OTEL_X=1"}
	got := obsdEnv(base, []string{"OTEL_TRACES_SAMPLER=parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.01"})
	want := []string{"PATH=/usr/bin", "HOME=/root", "MY_OTEL_X=1", "OTEL_TRACES_SAMPLER=parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.01"}
	if !slices.Equal(got, want) {
		t.Errorf("obsdEnv = %q, want %q", got, want)
	}
}

func TestObsdCPUSet(t *testing.T) {
	tests := []struct {
		flag    string
		want    []int
		wantAll bool
		wantErr string
	}{
		{"", []int{1}, false, ""}, // the load CPU
		{"all", nil, true, ""},
		{"0", []int{0}, false, ""},
		{"3,0-1,1", []int{0, 1, 3}, false, ""},
		{" 2 - 3 ", nil, false, "not a CPU number or range"},
		{"1-0", nil, false, "not a CPU number or range"},
		{"0-7:2", nil, false, "not a CPU number or range"},
		{"x", nil, false, "not a CPU number or range"},
		{"-1", nil, false, "not a CPU number or range"},
		{"0,", nil, false, "not a CPU number or range"},
		{"0-100000", nil, false, "out of range"},
		{"any", nil, false, "-obsd-cpus"},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			got, all, err := options{loadCPU: 1, obsdCPUs: tt.flag}.obsdCPUSet()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("obsdCPUSet(%q) error = %v, want one containing %q", tt.flag, err, tt.wantErr)
				}
				return
			}
			if err != nil || all != tt.wantAll || !slices.Equal(got, tt.want) {
				t.Errorf("obsdCPUSet(%q) = %v, %v, %v; want %v, %v", tt.flag, got, all, err, tt.want, tt.wantAll)
			}
		})
	}
}

func TestObsdPlacement(t *testing.T) {
	tests := []struct {
		flag string
		want string
	}{
		{"", "obsd is pinned to the load CPU (1) so that it takes no CPU from the pinned server"},
		{"1", "obsd is pinned to the load CPU (1)"},
		{"all", "obsd ran unpinned on every CPU (-obsd-cpus all)"},
		{"0-1", "obsd was pinned to CPUs 0,1, which include the server's"},
		{"1-2", "obsd was pinned to CPUs 1,2, away from the server's"},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			got := options{serverCPU: 0, loadCPU: 1, obsdCPUs: tt.flag}.obsdPlacement()
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("obsdPlacement(%q) = %q, want it to start %q", tt.flag, got, tt.want)
			}
		})
	}
}

// TestReceiver sends spans through the OpenTelemetry SDK's own OTLP/gRPC
// exporter, as obsd does, and checks the receiver counts each one.
func TestReceiver(t *testing.T) {
	r, err := startReceiver()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	if !strings.HasPrefix(r.endpoint, "http://127.0.0.1:") {
		t.Fatalf("endpoint = %q, want http://127.0.0.1:PORT", r.endpoint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	x, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(r.endpoint), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	// Batches of 4 so that 10 spans take several Export calls.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(x, sdktrace.WithMaxExportBatchSize(4)))
	tr := tp.Tracer("bench-test")
	for range 10 {
		_, span := tr.Start(ctx, "GET /hello")
		span.End()
	}
	if err := tp.Shutdown(ctx); err != nil { // flushes
		t.Fatal(err)
	}
	if got := r.received(); got != 10 {
		t.Errorf("receiver counted %d spans, want 10", got)
	}
}
