package propagate

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// State is what became of one requested mechanism.
type State string

// The states, the "state" label of obsd_trace_propagation_info.
const (
	// Active: the mechanism carries trace context.
	Active State = "active"
	// Unavailable: obsd cannot do it here; the reason says why (the
	// kernel lacks or refuses what it needs, no cgroup v2, no spans, not
	// wired in this build).
	Unavailable State = "unavailable"
)

// Reasons, the "reason" label of obsd_trace_propagation_info.
const (
	ReasonKernelRefused     = "kernel_refused"     // the kernel refused the mechanism's programs
	ReasonKernelUnsupported = "kernel_unsupported" // the kernel lacks helpers the mechanism needs (tcp: 5.10, headers: 5.17)
	ReasonNoCgroupV2        = "no_cgroup_v2"       // no cgroup v2 hierarchy to attach the sock_ops program at
	ReasonTracesOff         = "traces_off"         // --traces none: no spans, no context to carry
	ReasonNotWired          = "not_wired"          // this build has no such mechanism
)

// Result is the decision about one requested mechanism, taken once at
// start-up.
type Result struct {
	Mode   Mode // exactly one mechanism
	State  State
	Reason string // "" when Active
	// Detail is one sentence for the log and /readyz: what happened and
	// why.
	Detail string
	// Err is the underlying error, e.g. the verifier's line; may be nil.
	Err error
}

func (r Result) String() string {
	s := fmt.Sprintf("%s %s", r.Mode, r.State)
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	if r.Detail != "" {
		s += ": " + r.Detail
	}
	return s
}

// Options configure Setup. The zero value requests nothing.
type Options struct {
	Mode Mode
	// TCP and Headers start their mechanism and say how that went; nil
	// means this build has none, and a requested one is reported
	// unavailable with reason not_wired.
	TCP, Headers func() Result
	// Logger gets one line per mechanism that is not active; nil is
	// slog.Default().
	Logger *slog.Logger
}

// infoHelp is the HELP of obsd_trace_propagation_info.
const infoHelp = "1 for each trace propagation mechanism asked for with --propagate, labelled with what became of it: " +
	"state active or unavailable, and why. Alert on state!=\"active\"."

// Propagation is what became of --propagate.
type Propagation struct {
	results []Result
	info    *prometheus.GaugeVec
}

// Setup decides, once, what each requested mechanism can do here, logs
// every one that is not active once at warn level, and returns the
// results for the metric and the readiness detail. It never fails: a
// mechanism that cannot work is reported, and everything else in obsd
// keeps working.
func Setup(o Options) *Propagation {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	p := &Propagation{
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "obsd_trace_propagation_info",
			Help: infoHelp,
		}, []string{"mode", "state", "reason"}),
	}
	for _, m := range []struct {
		mode  Mode
		start func() Result
		what  string
	}{{TCP, o.TCP, "TCP-option propagation"}, {Headers, o.Headers, "header injection"}} {
		if !o.Mode.Has(m.mode) {
			continue
		}
		r := Result{State: Unavailable, Reason: ReasonNotWired,
			Detail: "this build of obsd has no " + m.what + "; no trace context crosses services that way"}
		if m.start != nil {
			r = m.start()
		}
		r.Mode = m.mode
		p.results = append(p.results, r)
	}
	for _, r := range p.results {
		p.info.WithLabelValues(r.Mode.String(), string(r.State), r.Reason).Set(1)
		if r.State == Active {
			o.Logger.Info("trace propagation on", "mode", r.Mode.String())
			continue
		}
		args := []any{"mode", r.Mode.String(), "state", string(r.State), "reason", r.Reason, "detail", r.Detail}
		if r.Err != nil {
			args = append(args, "err", r.Err)
		}
		args = append(args, "still_working", "metrics, spans and every other probe; only this mechanism is off")
		o.Logger.Warn("trace propagation "+string(r.State), args...)
	}
	return p
}

// Results returns one Result per requested mechanism, tcp first.
func (p *Propagation) Results() []Result { return append([]Result(nil), p.results...) }

// Collector exports obsd_trace_propagation_info: one series of value 1
// per requested mechanism, none when --propagate is none.
func (p *Propagation) Collector() prometheus.Collector { return p.info }

// Check is a readiness detail: nil when every requested mechanism is
// active, else what is off and why. It never changes after Setup. The
// caller shows it without failing readiness: obsd's other work does not
// depend on it.
func (p *Propagation) Check() error {
	var off []string
	for _, r := range p.results {
		if r.State != Active {
			off = append(off, r.String())
		}
	}
	if len(off) == 0 {
		return nil
	}
	return errors.New(strings.Join(off, "; ") + "; metrics, spans and other probes unaffected")
}
