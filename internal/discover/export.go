package discover

// ParseEnviron parses /proc/PID/environ as Watcher does (first of a
// duplicated key wins); other discovery sources (Kubernetes) share it.
func ParseEnviron(data []byte) map[string]string { return parseEnviron(data) }

// ParseResourceAttrs parses OTEL_RESOURCE_ATTRIBUTES as Watcher and the
// OpenTelemetry Go SDK do; see parseResourceAttrs.
func ParseResourceAttrs(s string) (map[string]string, error) { return parseResourceAttrs(s) }
