package otelexport

import (
	"context"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"math"
	"strings"
	"testing"
)

func TestModeFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		flag    string
		env     map[string]string
		want    Mode
		wantErr string
	}{
		{name: "nothing set", want: ModeNone},
		{name: "flag otlp", flag: "otlp", want: ModeOTLP},
		{name: "flag stdout", flag: "stdout", want: ModeStdout},
		{name: "flag none beats endpoint", flag: "none",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, want: ModeNone},
		{name: "flag beats OTEL_TRACES_EXPORTER", flag: "stdout",
			env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}, want: ModeStdout},
		{name: "unknown flag", flag: "jaeger", wantErr: `unknown mode "jaeger"`},
		{name: "flag is case-sensitive", flag: "OTLP", wantErr: `unknown mode "OTLP"`},
		{name: "generic endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, want: ModeOTLP},
		{name: "traces endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "127.0.0.1:4317"}, want: ModeOTLP},
		{name: "blank endpoint is unset", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, want: ModeNone},
		{name: "other OTLP variables do not enable", env: map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "true"}, want: ModeNone},
		{name: "exporter console", env: map[string]string{"OTEL_TRACES_EXPORTER": "console"}, want: ModeStdout},
		{name: "exporter OTLP any case", env: map[string]string{"OTEL_TRACES_EXPORTER": " OTLP "}, want: ModeOTLP},
		{name: "exporter none beats endpoint", env: map[string]string{
			"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, want: ModeNone},
		{name: "exporter unsupported", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"},
			wantErr: `OTEL_TRACES_EXPORTER: unsupported value "zipkin"`},
		{name: "exporter list unsupported", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp,console"},
			wantErr: `unsupported value "otlp,console"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ModeFromEnv(tt.flag, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ModeFromEnv() = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ModeFromEnv() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestSampleRatio(t *testing.T) {
	tests := []struct {
		sampler, arg string
		want         float64
		wantErr      string
	}{
		{"", "", 1, ""},
		{"always_on", "", 1, ""},
		{"ALWAYS_OFF", "ignored", 0, ""},
		{"parentbased_always_on", "", 1, ""},
		{"parentbased_always_off", "", 0, ""},
		{"traceidratio", "", 1, ""},
		{"parentbased_traceidratio", "0.01", 0.01, ""},
		{"traceidratio", "1", 1, ""},
		{"traceidratio", "0", 0, ""},
		{"parentbased_traceidratio", "1.5", 0, "outside [0, 1]"},
		{"traceidratio", "-0.1", 0, "outside [0, 1]"},
		{"traceidratio", "NaN", 0, "outside [0, 1]"},
		{"traceidratio", "one percent", 0, `OTEL_TRACES_SAMPLER_ARG "one percent"`},
		{"jaeger_remote", "", 0, `"jaeger_remote" is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.sampler+"/"+tt.arg, func(t *testing.T) {
			env := map[string]string{"OTEL_TRACES_SAMPLER": tt.sampler, "OTEL_TRACES_SAMPLER_ARG": tt.arg}
			got, err := SampleRatio(func(k string) string { return env[k] })
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("SampleRatio() = %v, %v; want %v", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("SampleRatio() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestIDGeneratorAgreesWithRatioSampler: a trace ID built from a draw the
// probe's test kept, (x >> 1) < ratio * 2^63, is sampled by the SDK's
// TraceIDRatioBased with that ratio, and one it refused is not.
func TestIDGeneratorAgreesWithRatioSampler(t *testing.T) {
	const ratio = 0.25
	bound := uint64(ratio * (1 << 63))
	sampler := sdktrace.TraceIDRatioBased(ratio)
	for _, x := range []uint64{0, 1, 2*bound - 2, 2*bound - 1, 2 * bound, 2*bound + 1, math.MaxUint64} {
		ctx := context.WithValue(context.Background(), traceIDLowKey{}, x)
		tid, sid := idGenerator{}.NewIDs(ctx)
		if !tid.IsValid() || !sid.IsValid() {
			t.Fatalf("invalid IDs %v %v", tid, sid)
		}
		res := sampler.ShouldSample(sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: tid})
		if got, want := res.Decision == sdktrace.RecordAndSample, (x>>1) < bound; got != want {
			t.Errorf("x=%#x: SDK samples %v, probe's test says %v", x, got, want)
		}
	}
}

func TestCollectorFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    collector
		wantErr string
	}{
		{name: "default", want: collector{"tcp", "localhost:4317"}},
		{name: "http URL", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"},
			want: collector{"tcp", "127.0.0.1:4317"}},
		{name: "https URL without port", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example"},
			want: collector{"tcp", "collector.example:443"}},
		{name: "IPv6 URL", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1]:4317/"},
			want: collector{"tcp", "[::1]:4317"}},
		{name: "traces wins", env: map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://127.0.0.1:1",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:2"},
			want: collector{"tcp", "127.0.0.1:2"}},
		{name: "bare host:port", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317"},
			want: collector{"tcp", "localhost:4317"}},
		{name: "unix socket", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "unix:///run/otel.sock"},
			want: collector{"unix", "/run/otel.sock"}},
		{name: "gRPC resolver target is not dialled", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "dns:///collector:4317"},
			want: collector{}},
		{name: "bad URL", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1"},
			wantErr: "parsing OTEL_EXPORTER_OTLP_ENDPOINT"},
		{name: "URL without host", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http:///v1/traces"},
			wantErr: "parsing OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: no host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := collectorFromEnv(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("collectorFromEnv() = %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("collectorFromEnv() = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
