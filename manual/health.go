package manual

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultCheckTimeout is the deadline of one check when neither HealthOpts
// nor CheckOpts set one: 800 ms, a little under the Kubernetes probe
// default (timeoutSeconds: 1), so that the 503 of a hung check reaches the
// kubelet before the kubelet gives up (at exactly 1 s it arrived at
// 1.001 s, too late, and the probe counted as a timeout instead of an
// answer). With another timeoutSeconds, set HealthOpts.Timeout about
// 200 ms below it.
const DefaultCheckTimeout = 800 * time.Millisecond

// ShutdownCheckName is the readiness check that every Health has. It passes
// until [Health.Drain] is called and fails from then on.
const ShutdownCheckName = "shutdown"

// Check reports whether one thing is healthy: nil means healthy. It must
// honour ctx, whose deadline is the check's timeout; a check that does not is
// still reported as timed out when the deadline passes.
type Check func(ctx context.Context) error

// Kind tells liveness checks from readiness checks.
type Kind int

const (
	// Liveness checks look only at the process itself (goroutines, heap,
	// a stuck loop). Kubernetes restarts the container when they fail, so a
	// dependency must never be one: a database outage would restart every
	// replica and fix nothing.
	Liveness Kind = iota
	// Readiness checks look at dependencies (database, cache, loaded
	// configuration). Kubernetes stops routing traffic to the pod while one
	// fails.
	Readiness
)

// String returns "liveness" or "readiness".
func (k Kind) String() string {
	switch k {
	case Liveness:
		return "liveness"
	case Readiness:
		return "readiness"
	default:
		return fmt.Sprintf("Kind(%d)", int(k))
	}
}

// Status values used in [Report].
const (
	StatusOK      = "ok"
	StatusFailure = "failure"
)

// Report is the answer of a probe: the JSON body of /healthz and /readyz.
type Report struct {
	// Status is "ok" when every critical check that ran passed, else
	// "failure".
	Status string `json:"status"`
	// Checks maps the name of every check that ran to "ok" or its error
	// text, passing checks included, so that a probe log or an alert says
	// what was checked. A check whose failures are still tolerated
	// (CheckOpts.FailureThreshold) reads "ok"; a failing non-critical
	// check reads its error while Status stays "ok".
	Checks map[string]string `json:"checks"`
	// Details, present only with ?verbose (and always from [Health.Run]),
	// tells per check when and how long it last ran.
	Details map[string]CheckDetail `json:"details,omitempty"`
}

// CheckDetail is what ?verbose adds for one check.
type CheckDetail struct {
	// Status is "ok" or "failure": the verdict after FailureThreshold and
	// before NonCritical.
	Status string `json:"status"`
	// Error is the last run's error text; empty when it passed.
	Error string `json:"error,omitempty"`
	// Critical is false for checks added with CheckOpts.NonCritical.
	Critical bool `json:"critical"`
	// DurationSeconds is how long the last run took, in seconds (the
	// timeout when it timed out).
	DurationSeconds float64 `json:"duration_seconds"`
	// CheckedAt is when the last run ended (RFC 3339, UTC); absent before
	// the first run.
	CheckedAt *time.Time `json:"checked_at,omitempty"`
	// LastSuccess is when the check last passed; absent if never.
	LastSuccess *time.Time `json:"last_success,omitempty"`
	// ConsecutiveFailures counts the failed runs since the last success.
	ConsecutiveFailures int `json:"consecutive_failures"`
}

// OK reports whether every check passed.
func (r Report) OK() bool { return r.Status == StatusOK }

// HealthOpts configures [NewHealth]. The zero value is ready to use.
type HealthOpts struct {
	// Timeout is the default deadline of each check. Zero means
	// DefaultCheckTimeout (800 ms); keep it below the probe's
	// timeoutSeconds. Negative is treated as zero.
	Timeout time.Duration
	// Logger receives failing checks and recovered panics. Nil means
	// slog.Default().
	Logger *slog.Logger
	// Registerer, when set, receives two series per check, labelled
	// kind ("liveness", "readiness") and check (the name):
	//   health_check_status            gauge, 1 passing, 0 failing (the
	//                                  verdict after FailureThreshold)
	//   health_check_duration_seconds  histogram of run durations, seconds
	// Nil registers nothing. NewHealth panics if the names are taken, as
	// prometheus.MustRegister does: a start-up programming error.
	Registerer prometheus.Registerer
}

// CheckOpts configures one check.
type CheckOpts struct {
	// Timeout is this check's deadline. Zero means HealthOpts.Timeout.
	Timeout time.Duration
	// Interval, when positive, runs the check in the background every
	// Interval and lets probes serve the cached result: for checks too
	// expensive to run on every probe. Until the first run finishes the
	// check reports failure. Zero runs the check on every probe.
	Interval time.Duration
	// FailureThreshold is how many consecutive failed runs it takes before
	// the check reports failure; earlier failures show in ?verbose details
	// only. Zero or one means the first failure counts; negative is an
	// error from Add. A success resets the count.
	FailureThreshold int
	// NonCritical checks are run, shown and measured, but their failure
	// does not fail the probe: for a dependency the service can do
	// without (a cache, a recommendation service).
	NonCritical bool
}

// Health is a registry of named liveness and readiness checks that serves
// Kubernetes probes. Its methods are safe for concurrent use.
type Health struct {
	timeout time.Duration
	log     *slog.Logger
	metrics *healthMetrics

	draining  atomic.Bool
	drainOnce sync.Once
	drained   chan struct{}

	mu     sync.RWMutex
	checks [2]map[string]*checkEntry // indexed by Kind
	closed bool

	bgCtx    context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup
}

// NewHealth returns a Health with the built-in readiness check "shutdown".
// Call Close to stop background checks.
func NewHealth(opts HealthOpts) *Health {
	h := &Health{timeout: opts.Timeout, log: opts.Logger, drained: make(chan struct{})}
	if h.timeout <= 0 {
		h.timeout = DefaultCheckTimeout
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if opts.Registerer != nil {
		h.metrics = newHealthMetrics(opts.Registerer)
	}
	h.checks[Liveness] = map[string]*checkEntry{}
	h.checks[Readiness] = map[string]*checkEntry{}
	h.bgCtx, h.bgCancel = context.WithCancel(context.Background())
	h.checks[Readiness][ShutdownCheckName] = h.newEntry(Readiness, ShutdownCheckName, func(context.Context) error {
		if h.draining.Load() {
			return errors.New("process is shutting down")
		}
		return nil
	}, CheckOpts{})
	return h
}

func (h *Health) newEntry(kind Kind, name string, check Check, opts CheckOpts) *checkEntry {
	e := &checkEntry{
		kind: kind, name: name, check: check, timeout: opts.Timeout, log: h.log,
		threshold: max(opts.FailureThreshold, 1), critical: !opts.NonCritical,
	}
	if e.timeout == 0 {
		e.timeout = h.timeout
	}
	if h.metrics != nil {
		e.status = h.metrics.status.WithLabelValues(kind.String(), name)
		e.duration = h.metrics.duration.WithLabelValues(kind.String(), name)
		e.status.Set(1) // unknown until the first run: do not alert on start-up
	}
	return e
}

var checkNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Add registers a check of the given kind. The name becomes a URL path
// segment (/readyz/NAME), so it must match [A-Za-z0-9][A-Za-z0-9_.-]* and
// be unique within its kind. It returns an error, naming the check, for an
// unknown kind, a bad or duplicate name, a nil check, a negative timeout,
// interval or failure threshold, or a Health already closed.
func (h *Health) Add(kind Kind, name string, check Check, opts CheckOpts) error {
	if kind != Liveness && kind != Readiness {
		return fmt.Errorf("adding health check %q: unknown kind %d", name, int(kind))
	}
	if !checkNameRE.MatchString(name) {
		return fmt.Errorf("adding %s check %q: name must match %s", kind, name, checkNameRE)
	}
	if check == nil {
		return fmt.Errorf("adding %s check %q: check is nil", kind, name)
	}
	if opts.Timeout < 0 || opts.Interval < 0 || opts.FailureThreshold < 0 {
		return fmt.Errorf("adding %s check %q: negative timeout, interval or failure threshold", kind, name)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return fmt.Errorf("adding %s check %q: health is closed", kind, name)
	}
	if _, dup := h.checks[kind][name]; dup {
		return fmt.Errorf("adding %s check %q: name already registered", kind, name)
	}
	e := h.newEntry(kind, name, check, opts)
	h.checks[kind][name] = e
	if opts.Interval > 0 {
		e.cached = &checkResult{err: errors.New("check has not completed yet")}
		h.bgWG.Add(1)
		go func() {
			defer h.bgWG.Done()
			e.loop(h.bgCtx, opts.Interval)
		}()
	}
	return nil
}

// AddLiveness is Add(Liveness, name, check, opts).
func (h *Health) AddLiveness(name string, check Check, opts CheckOpts) error {
	return h.Add(Liveness, name, check, opts)
}

// AddReadiness is Add(Readiness, name, check, opts).
func (h *Health) AddReadiness(name string, check Check, opts CheckOpts) error {
	return h.Add(Readiness, name, check, opts)
}

// MustAdd is like Add but panics on error, for start-up code.
func (h *Health) MustAdd(kind Kind, name string, check Check, opts CheckOpts) {
	if err := h.Add(kind, name, check, opts); err != nil {
		panic(err)
	}
}

// Drain marks the process as shutting down: from now on readiness fails
// (the "shutdown" check) while liveness is unaffected, so Kubernetes stops
// sending traffic without restarting the container. It cannot be undone;
// calling it again does nothing.
func (h *Health) Drain() {
	h.draining.Store(true)
	h.drainOnce.Do(func() { close(h.drained) })
}

// Drained returns a channel closed by Drain, for code that must react at
// once (manualgrpc's Watch pushes NOT_SERVING on it).
func (h *Health) Drained() <-chan struct{} { return h.drained }

// Draining reports whether Drain was called.
func (h *Health) Draining() bool { return h.draining.Load() }

// Close stops background checks and waits for their loops to end; later
// Adds fail. A check stuck ignoring its context is not waited for. It
// always returns nil.
func (h *Health) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.bgCancel()
	h.bgWG.Wait()
	return nil
}

// Names returns the sorted names of the checks of a kind ("shutdown"
// included for Readiness); nil for an unknown kind.
func (h *Health) Names(kind Kind) []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if kind != Liveness && kind != Readiness {
		return nil
	}
	names := make([]string, 0, len(h.checks[kind]))
	for n := range h.checks[kind] {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ErrUnknownCheck is returned by RunOne for a name that is not registered.
var ErrUnknownCheck = errors.New("unknown check")

// Run runs every check of a kind concurrently, each under its own deadline
// (background checks answer from their cache), and reports all of them,
// with Details. It returns no later than the longest check timeout,
// whatever the checks do. Names in exclude are skipped.
func (h *Health) Run(ctx context.Context, kind Kind, exclude ...string) Report {
	h.mu.RLock()
	var entries []*checkEntry
	if kind == Liveness || kind == Readiness {
		for name, e := range h.checks[kind] {
			if !slices.Contains(exclude, name) {
				entries = append(entries, e)
			}
		}
	}
	h.mu.RUnlock()

	details := make([]CheckDetail, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		wg.Go(func() { details[i] = e.result(ctx) })
	}
	wg.Wait()

	rep := Report{Status: StatusOK, Checks: make(map[string]string, len(entries)), Details: make(map[string]CheckDetail, len(entries))}
	for i, e := range entries {
		rep.add(e.name, details[i])
	}
	return rep
}

// add puts one check's verdict into the report.
func (rep *Report) add(name string, d CheckDetail) {
	rep.Details[name] = d
	switch {
	case d.Status == StatusOK:
		rep.Checks[name] = StatusOK
	case d.Critical:
		rep.Status = StatusFailure
		rep.Checks[name] = d.Error
	default: // a failing non-critical check is shown, not counted
		rep.Checks[name] = d.Error
	}
}

// RunOne runs the named check of a kind and reports only it, with
// Details. It returns an error wrapping ErrUnknownCheck when there is no
// such check. A failing non-critical check reports status "ok".
func (h *Health) RunOne(ctx context.Context, kind Kind, name string) (Report, error) {
	h.mu.RLock()
	var e *checkEntry
	if kind == Liveness || kind == Readiness {
		e = h.checks[kind][name]
	}
	h.mu.RUnlock()
	if e == nil {
		return Report{}, fmt.Errorf("running %s check %q: %w", kind, name, ErrUnknownCheck)
	}
	rep := Report{Status: StatusOK, Checks: map[string]string{}, Details: map[string]CheckDetail{}}
	rep.add(name, e.result(ctx))
	return rep, nil
}

// Handler returns the probe handler of a kind. It answers 200 when every
// critical check passes and 503 otherwise, with Content-Type
// application/json and a [Report] body that lists every check with "ok" or
// its error. Query parameters, as on the Kubernetes API server: ?verbose
// adds Details (durations, timestamps, consecutive failures);
// ?exclude=NAME (repeatable) skips a check. When the request's route has a
// {check} wildcard (see Routes), only that check runs; an unknown name
// answers 404.
func (h *Health) Handler(kind Kind) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		_, verbose := q["verbose"]
		var rep Report
		if name := r.PathValue("check"); name != "" {
			var err error
			rep, err = h.RunOne(r.Context(), kind, name)
			if err != nil {
				writeJSON(w, http.StatusNotFound, Report{Status: StatusFailure, Checks: map[string]string{name: ErrUnknownCheck.Error()}})
				return
			}
		} else {
			rep = h.Run(r.Context(), kind, q["exclude"]...)
		}
		code := http.StatusOK
		if !rep.OK() {
			code = http.StatusServiceUnavailable
		}
		if !verbose {
			rep.Details = nil
		}
		writeJSON(w, code, rep)
	})
}

// LivenessHandler is Handler(Liveness).
func (h *Health) LivenessHandler() http.Handler { return h.Handler(Liveness) }

// ReadinessHandler is Handler(Readiness).
func (h *Health) ReadinessHandler() http.Handler { return h.Handler(Readiness) }

// Routes registers GET /healthz, /healthz/{check}, /readyz and
// /readyz/{check} on mux.
func (h *Health) Routes(mux *http.ServeMux) {
	live, ready := h.LivenessHandler(), h.ReadinessHandler()
	mux.Handle("GET /healthz", live)
	mux.Handle("GET /healthz/{check}", live)
	mux.Handle("GET /readyz", ready)
	mux.Handle("GET /readyz/{check}", ready)
}

func writeJSON(w http.ResponseWriter, code int, rep Report) {
	body, err := json.Marshal(rep)
	if err != nil { // cannot happen for map[string]string; keep the probe honest anyway
		body = []byte(`{"status":"failure","checks":{}}`)
		code = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// checkEntry runs one check. At most one run of a check is in flight: a
// probe arriving while one runs waits for that run instead of starting
// another, so a check that hangs costs one goroutine, not one per probe.
type checkEntry struct {
	kind      Kind
	name      string
	check     Check
	timeout   time.Duration
	log       *slog.Logger
	threshold int
	critical  bool
	status    prometheus.Gauge    // nil without HealthOpts.Registerer
	duration  prometheus.Observer // nil without HealthOpts.Registerer

	mu       sync.Mutex
	inflight *checkRun
	cached   *checkResult // non-nil for background checks
	state    checkState
}

// checkState is what the entry remembers between runs.
type checkState struct {
	lastErr     error
	failures    int
	duration    time.Duration
	checkedAt   time.Time
	lastSuccess time.Time
}

type checkRun struct {
	done     chan struct{}
	err      error
	started  time.Time
	recorded sync.Once // the outcome is recorded once: at return or at the deadline
}

type checkResult struct {
	err error
	at  time.Time
}

// result answers for a probe: the verdict after the cached result of a
// background check or after a (possibly shared) run bounded by the
// check's timeout.
func (e *checkEntry) result(ctx context.Context) CheckDetail {
	e.mu.Lock()
	c := e.cached
	e.mu.Unlock()
	if c == nil {
		if err := e.run(ctx); err != nil && ctx.Err() != nil {
			// The prober went away: not an outcome of the check.
			return CheckDetail{Status: StatusFailure, Error: trimErr(err.Error()), Critical: e.critical}
		}
	} else if c.at.IsZero() {
		return CheckDetail{Status: StatusFailure, Error: c.err.Error(), Critical: e.critical}
	}
	return e.detail()
}

// detail is the verdict from the recorded state.
func (e *checkEntry) detail() CheckDetail {
	e.mu.Lock()
	st := e.state
	e.mu.Unlock()
	d := CheckDetail{Status: StatusOK, Critical: e.critical, DurationSeconds: st.duration.Seconds(), ConsecutiveFailures: st.failures}
	if st.lastErr != nil {
		d.Error = trimErr(st.lastErr.Error())
		if st.failures >= e.threshold {
			d.Status = StatusFailure
		}
	}
	if !st.checkedAt.IsZero() {
		t := st.checkedAt.UTC()
		d.CheckedAt = &t
	}
	if !st.lastSuccess.IsZero() {
		t := st.lastSuccess.UTC()
		d.LastSuccess = &t
	}
	return d
}

// record updates the state with one run's outcome, logs a change of
// verdict and feeds the metrics.
func (e *checkEntry) record(err error, took time.Duration) {
	now := time.Now()
	e.mu.Lock()
	wasFailing := e.state.lastErr != nil && e.state.failures >= e.threshold
	e.state.lastErr, e.state.duration, e.state.checkedAt = err, took, now
	if err == nil {
		e.state.failures, e.state.lastSuccess = 0, now
	} else {
		e.state.failures++
	}
	failing := err != nil && e.state.failures >= e.threshold
	e.mu.Unlock()
	if e.duration != nil {
		e.duration.Observe(took.Seconds())
		e.status.Set(map[bool]float64{true: 0, false: 1}[failing])
	}
	switch {
	case failing && !wasFailing && e.log != nil:
		e.log.Warn("health check failing", "kind", e.kind.String(), "check", e.name, "error", err, "critical", e.critical)
	case !failing && wasFailing && e.log != nil:
		e.log.Info("health check passing again", "kind", e.kind.String(), "check", e.name)
	}
}

// run runs the check, or joins the run in flight, and returns its error.
// Every run's outcome is recorded once; a probe that finds a run stuck
// past its deadline records a timeout of its own, so consecutive failures
// keep counting while a check hangs.
func (e *checkEntry) run(ctx context.Context) error {
	e.mu.Lock()
	run := e.inflight
	if run != nil && time.Since(run.started) >= e.timeout {
		e.mu.Unlock()
		err := errTimeout(e.timeout)
		e.record(err, e.timeout)
		return err
	}
	if run == nil {
		run = &checkRun{done: make(chan struct{}), started: time.Now()}
		e.inflight = run
		// The check's own context is detached from the caller's so that a
		// run shared by several probes is not cut short when the first
		// prober goes away; its deadline still bounds it.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.timeout)
		go func() {
			defer cancel()
			err := e.call(cctx)
			took := time.Since(run.started)
			if cctx.Err() != nil {
				// Past the deadline the answer is "timed out", whatever
				// the check made of it, so probes read the same text
				// whether they waited for the check or for the timer.
				err, took = errTimeout(e.timeout), e.timeout
			}
			run.err = err
			run.recorded.Do(func() { e.record(err, took) })
			e.mu.Lock()
			e.inflight = nil
			e.mu.Unlock()
			close(run.done)
		}()
	}
	e.mu.Unlock()

	// Wait no longer than the time left of the run's deadline, whatever
	// the check does with its context.
	wait := time.Until(run.started.Add(e.timeout))
	timer := time.NewTimer(max(wait, 0))
	defer timer.Stop()
	select {
	case <-run.done:
		return run.err
	case <-timer.C:
		select {
		case <-run.done: // finished at the deadline: take its answer
			return run.err
		default:
		}
		err := errTimeout(e.timeout)
		run.recorded.Do(func() { e.record(err, e.timeout) })
		return err
	case <-ctx.Done():
		return fmt.Errorf("probe cancelled: %w", ctx.Err())
	}
}

// call runs the check, turning a panic into an error so that a buggy check
// fails its probe instead of crashing the process.
func (e *checkEntry) call(ctx context.Context) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("check panicked: %v", p)
			if e.log != nil {
				e.log.Error("health check panicked", "check", e.name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
		}
	}()
	return e.check(ctx)
}

func errTimeout(d time.Duration) error { return fmt.Errorf("timed out after %s", d) }

func (e *checkEntry) loop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := e.run(ctx)
		if ctx.Err() != nil {
			return
		}
		e.mu.Lock()
		e.cached = &checkResult{err: err, at: time.Now()}
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// trimErr keeps error texts single-line in JSON answers.
func trimErr(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// healthMetrics are the per-check series of HealthOpts.Registerer.
type healthMetrics struct {
	status   *prometheus.GaugeVec
	duration *prometheus.HistogramVec
}

func newHealthMetrics(reg prometheus.Registerer) *healthMetrics {
	m := &healthMetrics{
		status: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "health_check_status",
			Help: "1 when the health check passes (after its failure threshold), 0 when it fails.",
		}, []string{"kind", "check"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "health_check_duration_seconds",
			Help:    "Duration of health check runs, in seconds; a timed-out run counts as its timeout.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"kind", "check"}),
	}
	reg.MustRegister(m.status, m.duration)
	return m
}
