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
	// Refused: the kernel will not let obsd do it (e.g. lockdown).
	Refused State = "refused"
	// Unavailable: obsd cannot do it here for a reason of its own (not
	// implemented, not wired in this build, or the kernel's answer could
	// not be read).
	Unavailable State = "unavailable"
)

// Reasons, the "reason" label of obsd_trace_propagation_info.
const (
	ReasonLockdown       = "lockdown"         // kernel lockdown withholds bpf_probe_write_user
	ReasonNoCapSysAdmin  = "no_cap_sys_admin" // the helper is offered only to CAP_SYS_ADMIN
	ReasonKernelRefused  = "kernel_refused"   // refused, neither of the above explains it
	ReasonProbeFailed    = "probe_failed"     // asking the kernel failed; nothing is known
	ReasonNotImplemented = "not_implemented"  // the kernel allows it, obsd does not do it yet
	ReasonNotWired       = "not_wired"        // this build has no such mechanism
	// tcp only.
	ReasonNoCgroupV2        = "no_cgroup_v2"       // no cgroup v2 hierarchy to attach the sock_ops program at
	ReasonKernelUnsupported = "kernel_unsupported" // the kernel lacks the sock_ops header-option helpers (< 5.10)
	ReasonTracesOff         = "traces_off"         // --traces none: no spans, no context to carry
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
	// Kernel answers whether header injection is possible; nil is
	// HostKernel{}. Asked only when Mode has Headers.
	Kernel Kernel
	// TCP starts the TCP-option mechanism and says how that went; nil
	// means this build has none, and a requested tcp is reported
	// unavailable with reason not_wired.
	TCP func() Result
	// Logger gets one line per mechanism that is not active; nil is
	// slog.Default().
	Logger *slog.Logger
}

// infoHelp is the HELP of obsd_trace_propagation_info.
const infoHelp = "1 for each trace propagation mechanism asked for with --propagate, labelled with what became of it: " +
	"state active, refused (by the kernel) or unavailable, and why. Alert on state!=\"active\"."

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
	if o.Kernel == nil {
		o.Kernel = HostKernel{}
	}
	p := &Propagation{
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "obsd_trace_propagation_info",
			Help: infoHelp,
		}, []string{"mode", "state", "reason"}),
	}
	if o.Mode.Has(TCP) {
		r := Result{Mode: TCP, State: Unavailable, Reason: ReasonNotWired,
			Detail: "this build of obsd has no TCP-option propagation yet; no trace context crosses services"}
		if o.TCP != nil {
			r = o.TCP()
			r.Mode = TCP
		}
		p.results = append(p.results, r)
	}
	if o.Mode.Has(Headers) {
		p.results = append(p.results, decideHeaders(o.Kernel))
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

// decideHeaders asks k whether bpf_probe_write_user is allowed. The
// answer comes from loading a program that uses it, the one test that
// cannot be wrong about this kernel; lockdown and capabilities are read
// only to name the reason.
func decideHeaders(k Kernel) Result {
	r := Result{Mode: Headers}
	err := k.LoadWriteUser()
	switch {
	case err == nil:
		// Never pretend: the kernel would allow it, but nothing writes
		// the header yet.
		r.State, r.Reason = Unavailable, ReasonNotImplemented
		r.Detail = "the kernel allows bpf_probe_write_user, but header injection is not implemented in this obsd; no traceparent is added to outgoing requests"
		return r
	case !errors.Is(err, ErrWriteUserRefused):
		r.State, r.Reason, r.Err = Unavailable, ReasonProbeFailed, err
		r.Detail = "could not ask the kernel whether it allows bpf_probe_write_user; header injection stays off"
		return r
	}
	r.State, r.Err = Refused, err
	lock, lockErr := k.Lockdown()
	admin, capErr := k.CapSysAdmin()
	const off = "no traceparent is added to outgoing requests"
	switch {
	case lockErr == nil && lock != "none":
		r.Reason = ReasonLockdown
		r.Detail = fmt.Sprintf("the kernel refuses bpf_probe_write_user under lockdown=%s; %s", lock, off)
	case capErr == nil && !admin:
		r.Reason = ReasonNoCapSysAdmin
		r.Detail = "the kernel offers bpf_probe_write_user only to CAP_SYS_ADMIN, which obsd lacks"
		if lockErr != nil {
			// As in a container without securityfs: granting the
			// capability may not be enough.
			r.Detail += " (kernel lockdown, whose mode is unreadable here, may refuse it too)"
		}
		r.Detail += "; " + off
	case lockErr != nil && capErr == nil:
		// With CAP_SYS_ADMIN held, the kernel's one other gate on the
		// helper is security_locked_down(LOCKDOWN_BPF_WRITE_USER).
		r.Reason = ReasonLockdown
		r.Detail = fmt.Sprintf("the kernel refuses bpf_probe_write_user to obsd, which holds CAP_SYS_ADMIN: "+
			"kernel lockdown (its mode is unreadable: %v); %s", lockErr, off)
	default:
		r.Reason = ReasonKernelRefused
		r.Detail = "the kernel refuses bpf_probe_write_user; " + off
		if e := errors.Join(lockErr, capErr); e != nil {
			r.Detail += fmt.Sprintf(" (%v)", e)
		}
	}
	return r
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
