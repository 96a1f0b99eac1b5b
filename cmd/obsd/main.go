// Command obsd instruments Go services with eBPF uprobes and exports their
// RED metrics and spans, without changes to their code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"

	"github.com/obsd-dev/obsd/internal/agent"
	"github.com/obsd-dev/obsd/internal/discover"
	otelexport "github.com/obsd-dev/obsd/internal/export/otel"
	"github.com/obsd-dev/obsd/internal/kube"
	"github.com/obsd-dev/obsd/internal/propagate"
)

func main() {
	if err := run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "obsd:", err)
		os.Exit(1)
	}
}

// config is everything flags and environment say.
type config struct {
	agent    agent.Config
	logLevel slog.Level
	// showVersion is --version: print the version and exit.
	showVersion bool
}

// parse reads flags, each with an OBSD_* environment equivalent; a flag
// given on the command line wins over the environment.
func parse(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var (
		c      config
		pids   intList
		ports  intList
		exes   strList
		traces string
		level  string
		keep   string
		slow   string
		k8s    kubeMode
		node   string
		prop   propagateFlag
	)
	fs := flag.NewFlagSet("obsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(&pids, "pid", "instrument this process ID (repeatable; env OBSD_PID, comma-separated)")
	fs.Var(&exes, "exe", "instrument processes whose executable path matches this glob (repeatable; env OBSD_EXE, comma-separated)")
	fs.Var(&ports, "port", "instrument the process listening on this TCP port (repeatable; env OBSD_PORT, comma-separated)")
	fs.StringVar(&c.agent.Listen, "listen", envOr(getenv, "OBSD_LISTEN", ":9400"), "address of /metrics, /healthz, /readyz (env OBSD_LISTEN)")
	fs.StringVar(&traces, "traces", getenv("OBSD_TRACES"), "span export: otlp, stdout or none (env OBSD_TRACES; default otlp when OTEL_EXPORTER_OTLP_*ENDPOINT is set, else none)")
	fs.StringVar(&keep, "keep-exited", envOr(getenv, "OBSD_KEEP_EXITED", "1m"), "how long an exited process's series stay exported, so the last scrapes see its final counts (env OBSD_KEEP_EXITED)")
	fs.StringVar(&slow, "keep-slow", envOr(getenv, "OBSD_KEEP_SLOW", "2s"), "export the span of a request head sampling dropped when it took at least this long; 0 turns it off (env OBSD_KEEP_SLOW)")
	keepErrors := true
	if v := getenv("OBSD_KEEP_ERRORS"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("OBSD_KEEP_ERRORS %q: want true or false", v)
		}
		keepErrors = b
	}
	fs.BoolVar(&c.agent.KeepErrors, "keep-errors", keepErrors, "export the span of a request head sampling dropped when it failed (HTTP 5xx, a gRPC error) (env OBSD_KEEP_ERRORS)")
	fs.BoolVar(&c.showVersion, "version", false, "print obsd's version and exit")
	if err := k8s.init(getenv); err != nil {
		return c, err
	}
	fs.Var(&k8s, "kubernetes", "instrument the pods of this node annotated obsd.dev/instrument=true (env OBSD_KUBERNETES; default on when KUBERNETES_SERVICE_HOST is set)")
	fs.StringVar(&node, "node-name", getenv("NODE_NAME"), "this node's name in Kubernetes mode (env NODE_NAME, from the downward API)")
	fs.Var(&prop, "propagate", "carry trace context between services: "+propagate.Accepted+" (env OBSD_PROPAGATE; default none)")
	fs.StringVar(&level, "log-level", envOr(getenv, "OBSD_LOG_LEVEL", "info"), "debug, info, warn or error (env OBSD_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.showVersion {
		return c, nil
	}
	for _, env := range []struct {
		name string
		into flag.Value
		set  bool
	}{{"OBSD_PID", &pids, len(pids) > 0}, {"OBSD_EXE", &exes, len(exes) > 0}, {"OBSD_PORT", &ports, len(ports) > 0}} {
		v := getenv(env.name)
		if v == "" || env.set {
			continue
		}
		for _, item := range strings.Split(v, ",") {
			if err := env.into.Set(strings.TrimSpace(item)); err != nil {
				return c, fmt.Errorf("%s: %w", env.name, err)
			}
		}
	}
	c.agent.Criteria = discover.Criteria{PIDs: pids, ExeGlobs: exes, Ports: ports}
	switch {
	case k8s.on && k8s.explicit && !c.agent.Criteria.Empty():
		return c, errors.New("--kubernetes selects pods by annotation; it does not combine with --pid, --exe or --port")
	case k8s.on && !c.agent.Criteria.Empty():
		// Only defaulted on (KUBERNETES_SERVICE_HOST): selectors given on
		// purpose win.
		k8s.on = false
	case !k8s.on && c.agent.Criteria.Empty():
		return c, errors.New("nothing to instrument: give --pid, --exe or --port (or OBSD_PID, OBSD_EXE, OBSD_PORT), or --kubernetes")
	}
	if k8s.on {
		if node == "" {
			return c, errors.New("--kubernetes needs this node's name: set NODE_NAME (downward API spec.nodeName) or --node-name")
		}
		c.agent.Kubernetes = &kube.Options{Node: node, Kubeconfig: getenv("KUBECONFIG")}
	}
	if err := c.agent.Criteria.Validate(); err != nil {
		return c, err
	}
	var err error
	c.agent.Propagate = prop.mode
	if v := getenv("OBSD_PROPAGATE"); v != "" && !prop.set {
		if c.agent.Propagate, err = propagate.Parse(v); err != nil {
			return c, fmt.Errorf("OBSD_PROPAGATE=%q: %w", v, err)
		}
	}
	mode, err := otelexport.ModeFromEnv(traces, getenv)
	if err != nil {
		return c, err
	}
	c.agent.Traces = mode
	if c.agent.Forget, err = time.ParseDuration(keep); err != nil || c.agent.Forget <= 0 {
		return c, fmt.Errorf("--keep-exited %q: want a positive duration such as 1m or 30s", keep)
	}
	if c.agent.KeepSlow, err = time.ParseDuration(slow); err != nil || c.agent.KeepSlow < 0 {
		return c, fmt.Errorf("--keep-slow %q: want a duration such as 2s, or 0 to keep no slow span that sampling dropped", slow)
	}
	if err := c.logLevel.UnmarshalText([]byte(level)); err != nil {
		return c, fmt.Errorf("--log-level: %w", err)
	}
	return c, nil
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	if c.showVersion {
		_, err := fmt.Fprintln(stdout, versionLine())
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: c.logLevel}))
	c.agent.Logger = log
	c.agent.Version = version()

	// The OTel SDK reports through globals: route its errors to our log
	// (export failures are counted and rate-limited by the exporter) and
	// turn on its self-observability, so spans its batch queue drops are
	// counted in obsd_spans_dropped_total instead of vanishing.
	otel.SetErrorHandler(otelexport.ErrorHandler(log))
	otel.SetLogger(logr.FromSlogHandler(log.Handler()))
	if os.Getenv("OTEL_GO_X_OBSERVABILITY") == "" {
		os.Setenv("OTEL_GO_X_OBSERVABILITY", "true")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := agent.New(ctx, c.agent)
	if err != nil {
		return err
	}
	otel.SetMeterProvider(a.MeterProvider())
	return a.Run(ctx)
}

// versionLine is what --version prints: obsd's version, the Go toolchain
// that built it and, when the build recorded them, the commit and whether
// the tree had uncommitted changes.
func versionLine() string {
	line := "obsd " + version() + " " + runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			line += " commit " + rev
			if modified == "true" {
				line += " (modified)"
			}
		}
	}
	return line
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// kubeMode is --kubernetes: a boolean whose default comes from the
// environment, remembering whether it was asked for or only defaulted.
type kubeMode struct{ on, explicit bool }

func (k *kubeMode) init(getenv func(string) string) error {
	k.on = getenv("KUBERNETES_SERVICE_HOST") != ""
	if v := getenv("OBSD_KUBERNETES"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("OBSD_KUBERNETES: %w", err)
		}
		k.on, k.explicit = b, true
	}
	return nil
}

func (k *kubeMode) String() string   { return strconv.FormatBool(k.on) }
func (k *kubeMode) IsBoolFlag() bool { return true }
func (k *kubeMode) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	k.on, k.explicit = b, true
	return nil
}

// propagateFlag is --propagate, remembering whether it was given so that
// it wins over OBSD_PROPAGATE.
type propagateFlag struct {
	mode propagate.Mode
	set  bool
}

func (p *propagateFlag) String() string { return p.mode.String() }
func (p *propagateFlag) Set(s string) error {
	m, err := propagate.Parse(s)
	if err != nil {
		return err
	}
	p.mode, p.set = m, true
	return nil
}

type intList []int

func (l *intList) String() string { return fmt.Sprint([]int(*l)) }
func (l *intList) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return fmt.Errorf("not a positive number: %q", s)
	}
	*l = append(*l, n)
	return nil
}

type strList []string

func (l *strList) String() string { return strings.Join(*l, ",") }
func (l *strList) Set(s string) error {
	if s == "" {
		return errors.New("empty value")
	}
	*l = append(*l, s)
	return nil
}
