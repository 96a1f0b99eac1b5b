package otelexport

import (
	"fmt"
	"os"
	"strings"
)

// Mode selects where spans go.
type Mode string

const (
	// ModeOTLP sends spans over OTLP/gRPC, configured by the standard
	// OTEL_EXPORTER_OTLP_* variables.
	ModeOTLP Mode = "otlp"
	// ModeStdout writes one JSON object per span, for debugging.
	ModeStdout Mode = "stdout"
	// ModeNone makes no spans at all.
	ModeNone Mode = "none"
)

// ModeFromEnv resolves the --traces flag. A non-empty flag wins. An empty
// flag falls back to OTEL_TRACES_EXPORTER ("otlp", "console" or "none"),
// then to "otlp" when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, else to "none": unlike an
// application, a node daemon should not send to localhost:4317 merely
// because nobody said otherwise. A nil getenv means os.Getenv.
func ModeFromEnv(flag string, getenv func(string) string) (Mode, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	switch m := Mode(strings.TrimSpace(flag)); m {
	case ModeOTLP, ModeStdout, ModeNone:
		return m, nil
	case "":
	default:
		return "", fmt.Errorf("parsing --traces: unknown mode %q (want otlp, stdout or none)", flag)
	}
	// The spec's variable; "console" is its name for stdout.
	switch v := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); v {
	case "otlp":
		return ModeOTLP, nil
	case "console":
		return ModeStdout, nil
	case "none":
		return ModeNone, nil
	case "":
	default:
		return "", fmt.Errorf("parsing OTEL_TRACES_EXPORTER: unsupported value %q (want otlp, console or none)", v)
	}
	// The spec treats an empty value as unset.
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if strings.TrimSpace(getenv(k)) != "" {
			return ModeOTLP, nil
		}
	}
	return ModeNone, nil
}
