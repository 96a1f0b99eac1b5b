package otelexport

import (
	"fmt"
	"strconv"
	"strings"
)

// checkSamplerEnv validates OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
// sdktrace.NewTracerProvider applies them itself when no sampler option is
// given (sdk/trace/provider.go, tracerProviderOptionsFromEnv), but a bad
// value there only reaches otel.Handle and falls back to sampling
// everything; checking up front turns that into a start-up error.
func checkSamplerEnv(getenv func(string) string) error {
	s := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG"))
	switch s {
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
		// The spec says an argument a sampler does not take is ignored.
		return nil
	case "traceidratio", "parentbased_traceidratio":
		if arg == "" {
			return nil // the SDK uses ratio 1
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil {
			return fmt.Errorf("parsing OTEL_TRACES_SAMPLER_ARG %q: %w", arg, err)
		}
		if !(r >= 0 && r <= 1) { // also refuses NaN
			return fmt.Errorf("parsing OTEL_TRACES_SAMPLER_ARG: ratio %v is outside [0, 1]", r)
		}
		return nil
	}
	return fmt.Errorf("parsing OTEL_TRACES_SAMPLER: %q is not supported by the Go SDK "+
		"(want always_on, always_off, traceidratio, parentbased_always_on, "+
		"parentbased_always_off or parentbased_traceidratio)", s)
}
