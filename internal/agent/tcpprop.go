package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/obsd-dev/obsd/internal/propagate"
	"github.com/obsd-dev/obsd/internal/tcpctx"
)

// tcpPropagation is --propagate=tcp and/or headers in the agent: the
// tcpctx programs (the sock_ops program and the sk_msg header injector),
// whose maps the HTTP probes share, and the instrumented processes
// registered with them. A process that exports obsd's spans sends
// context on the connections it opens and receives it on those accepted in
// its network namespace; the namespace stays a receiver while any such
// process runs in it.
type tcpPropagation struct {
	p    *tcpctx.Propagator
	log  *slog.Logger
	errs prometheus.Counter
	// adopted counts connections opened before their process was
	// registered and given the callbacks since; adoptErrs, processes whose
	// older connections could not be (they carry nothing).
	adopted, adoptErrs prometheus.Counter

	mu    sync.Mutex
	netns map[uint32]int // registered processes per network namespace
	procs map[int]uint32 // registered pid -> its network namespace
}

// openTCP starts what --propagate asks of the tcpctx programs (the TCP
// option, traceparent headers, or both: one Propagator), or says why it
// cannot run here. It never fails obsd: the Results go to propagate.Setup,
// which reports them; a mechanism not asked for gets a zero Result.
func openTCP(mode propagate.Mode, spans bool, log *slog.Logger) (t *tcpPropagation, tcpRes, hdrRes propagate.Result) {
	if !spans {
		r := propagate.Result{State: propagate.Unavailable, Reason: propagate.ReasonTracesOff,
			Detail: "--traces none: obsd makes no spans, so there is no trace context to carry"}
		return nil, r, r
	}
	opts := tcpctx.Options{Headers: mode.Has(propagate.Headers), NoOptions: !mode.Has(propagate.TCP)}
	p, err := tcpctx.Open(opts)
	if err != nil && opts.Headers && !opts.NoOptions && errors.Is(err, tcpctx.ErrHeadersUnsupported) {
		// The option works on kernels the injector does not (5.10–5.16).
		hdrRes = unavailable(err)
		opts.Headers = false
		p, err = tcpctx.Open(opts)
	}
	if err != nil {
		r := unavailable(err)
		if hdrRes.State == "" {
			hdrRes = r
		}
		return nil, r, hdrRes
	}
	tcpRes.State = propagate.Active
	if opts.Headers {
		hdrRes.State = propagate.Active
	}
	if err := p.AdoptErr(); err != nil {
		log.Warn("TCP connections opened before obsd instruments their process will not carry trace context (new ones will)", "err", err)
	}
	return &tcpPropagation{
		p:   p,
		log: log,
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "obsd_tcp_context_registration_errors_total",
			Help: "Processes that could not be registered with (or removed from) the TCP context program: their requests' context does not cross.",
		}),
		adopted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "obsd_tcp_context_adopted_connections_total",
			Help: "TCP connections opened or accepted before obsd registered their process, given the context callbacks when it did (Linux 6.12+).",
		}),
		adoptErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "obsd_tcp_context_adopt_errors_total",
			Help: "Processes whose connections opened before obsd registered them could not all be given the context callbacks: those carry no context.",
		}),
		netns: map[uint32]int{},
		procs: map[int]uint32{},
	}, tcpRes, hdrRes
}

// unavailable is the Result of a tcpctx.Open error.
func unavailable(err error) propagate.Result {
	r := propagate.Result{State: propagate.Unavailable, Err: err}
	const off = "; no trace context crosses services this way"
	switch {
	case errors.Is(err, tcpctx.ErrNoCgroupV2):
		r.Reason = propagate.ReasonNoCgroupV2
		r.Detail = "no cgroup v2 hierarchy is mounted (a hybrid host's /sys/fs/cgroup/unified is enough)" + off
	case errors.Is(err, tcpctx.ErrHeadersUnsupported):
		r.Reason = propagate.ReasonKernelUnsupported
		r.Detail = "the kernel lacks the sk_msg helpers the header injector needs (Linux 5.17 or newer)" + off
	case errors.Is(err, tcpctx.ErrUnsupported):
		r.Reason = propagate.ReasonKernelUnsupported
		r.Detail = "the kernel lacks the sock_ops TCP header-option helpers (Linux 5.10 or newer)" + off
	default:
		r.Reason = propagate.ReasonKernelRefused
		r.Detail = "the kernel refused the context programs" + off
	}
	return r
}

// add registers process pid as a sender and its namespace as a receiver;
// on failure, neither (a sender left behind would outlive the pid).
func (t *tcpPropagation) add(pid int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ns, err := tcpctx.NetnsOf(pid)
	if err == nil {
		err = t.p.AddSender(uint32(pid))
	}
	if err == nil && t.netns[ns] == 0 {
		if err = t.p.AddReceiver(ns, 0); err != nil {
			err = errors.Join(err, t.p.RemoveSender(uint32(pid)))
		}
	}
	if err != nil {
		t.errs.Inc()
		t.log.Warn("process not registered for TCP trace propagation; its services' spans will not connect to their callers and callees",
			"pid", pid, "err", err)
		return
	}
	t.netns[ns]++
	t.procs[pid] = ns
	t.adoptOld(pid)
}

// adoptOld gives pid's connections (and its namespace's accepted ones)
// opened before registration the callbacks: a gRPC ClientConn or an HTTP
// keep-alive pool dialled at start-up, before obsd attached, would
// otherwise never carry context. Nothing to do where the kernel cannot
// (logged once at start).
func (t *tcpPropagation) adoptOld(pid int) {
	if t.p.AdoptErr() != nil {
		return
	}
	got, err := t.p.Adopt(pid)
	t.adopted.Add(float64(got.Connections))
	if err == nil && got.Failed > 0 {
		err = fmt.Errorf("the kernel refused %d connections: %w", got.Failed, got.LastErr)
	}
	if err != nil {
		t.adoptErrs.Inc()
		t.log.Warn("connections opened before obsd instrumented the process will not carry trace context", "pid", pid, "err", err)
		return
	}
	if got.Connections > 0 {
		t.log.Debug("older connections given the TCP context callbacks", "pid", pid, "connections", got.Connections)
	}
}

// remove undoes add when pid was registered, and deletes what its probes
// left in the maps. Under the lock throughout: an add in the same
// namespace must not see it registered while this unregisters it.
func (t *tcpPropagation) remove(pid int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ns, ok := t.procs[pid]
	if !ok {
		return
	}
	delete(t.procs, pid)
	_, err := t.p.ForgetSender(uint32(pid))
	if t.netns[ns]--; t.netns[ns] == 0 {
		delete(t.netns, ns)
		err = errors.Join(err, t.p.RemoveReceiver(ns, 0))
	}
	if err != nil {
		t.errs.Inc()
		t.log.Warn("removing an exited process from TCP trace propagation", "pid", pid, "err", fmt.Errorf("netns %d: %w", ns, err))
	}
}

// collectors are the mechanism's metrics.
func (t *tcpPropagation) collectors() []prometheus.Collector {
	return []prometheus.Collector{tcpctx.NewCollector(t.p, t.log), t.errs, t.adopted, t.adoptErrs}
}

func (t *tcpPropagation) close() error { return t.p.Close() }

// closeTCP releases --propagate=tcp when New fails after opening it.
func (a *Agent) closeTCP() {
	if a.tcp != nil {
		a.tcp.close()
	}
}
