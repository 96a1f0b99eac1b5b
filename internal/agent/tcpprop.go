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

// tcpPropagation is --propagate=tcp in the agent: the sock_ops program
// (internal/tcpctx), whose maps the HTTP probes share, and the instrumented
// processes registered with it. A process that exports obsd's spans sends
// context on the connections it opens and receives it on those accepted in
// its network namespace; the namespace stays a receiver while any such
// process runs in it.
type tcpPropagation struct {
	p    *tcpctx.Propagator
	log  *slog.Logger
	errs prometheus.Counter

	mu    sync.Mutex
	netns map[uint32]int // registered processes per network namespace
	procs map[int]uint32 // registered pid -> its network namespace
}

// openTCP starts the mechanism, or says why it cannot run here. It never
// fails obsd: the Result goes to propagate.Setup, which reports it.
func openTCP(spans bool, log *slog.Logger) (*tcpPropagation, propagate.Result) {
	r := propagate.Result{Mode: propagate.TCP}
	if !spans {
		r.State, r.Reason = propagate.Unavailable, propagate.ReasonTracesOff
		r.Detail = "--traces none: obsd makes no spans, so there is no trace context to carry"
		return nil, r
	}
	p, err := tcpctx.Open(tcpctx.Options{})
	if err != nil {
		r.State, r.Err = propagate.Unavailable, err
		switch {
		case errors.Is(err, tcpctx.ErrNoCgroupV2):
			r.Reason = propagate.ReasonNoCgroupV2
			r.Detail = "no cgroup v2 hierarchy is mounted (a hybrid host's /sys/fs/cgroup/unified is enough); no trace context crosses services"
		case errors.Is(err, tcpctx.ErrUnsupported):
			r.Reason = propagate.ReasonKernelUnsupported
			r.Detail = "the kernel lacks the sock_ops TCP header-option helpers (Linux 5.10 or newer); no trace context crosses services"
		default:
			r.Reason = propagate.ReasonKernelRefused
			r.Detail = "the kernel refused the TCP-option program; no trace context crosses services"
		}
		return nil, r
	}
	r.State = propagate.Active
	return &tcpPropagation{
		p:   p,
		log: log,
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "obsd_tcp_context_registration_errors_total",
			Help: "Processes that could not be registered with (or removed from) the TCP context program: their requests' context does not cross.",
		}),
		netns: map[uint32]int{},
		procs: map[int]uint32{},
	}, r
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
	return []prometheus.Collector{tcpctx.NewCollector(t.p, t.log), t.errs}
}

func (t *tcpPropagation) close() error { return t.p.Close() }

// closeTCP releases --propagate=tcp when New fails after opening it.
func (a *Agent) closeTCP() {
	if a.tcp != nil {
		a.tcp.close()
	}
}
