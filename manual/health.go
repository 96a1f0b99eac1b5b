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
)

// DefaultCheckTimeout is the deadline of one check when neither HealthOpts
// nor CheckOpts set one. It equals the Kubernetes probe default
// (timeoutSeconds: 1), so a check never outlives the kubelet's patience.
const DefaultCheckTimeout = time.Second

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
	// Status is "ok" when every check ran passed, else "failure".
	Status string `json:"status"`
	// Checks maps a check's name to "ok" or its error text. Probe answers
	// list failing checks only unless ?verbose is given, like the
	// Kubernetes API server; [Health.Run] always lists all.
	Checks map[string]string `json:"checks"`
}

// OK reports whether every check passed.
func (r Report) OK() bool { return r.Status == StatusOK }

// HealthOpts configures [NewHealth]. The zero value is ready to use.
type HealthOpts struct {
	// Timeout is the default deadline of each check. Zero means
	// DefaultCheckTimeout (1 s).
	Timeout time.Duration
	// Logger receives failing checks and recovered panics. Nil means
	// slog.Default().
	Logger *slog.Logger
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
}

// Health is a registry of named liveness and readiness checks that serves
// Kubernetes probes. Its methods are safe for concurrent use.
type Health struct {
	timeout time.Duration
	log     *slog.Logger

	draining atomic.Bool

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
	h := &Health{timeout: opts.Timeout, log: opts.Logger}
	if h.timeout <= 0 {
		h.timeout = DefaultCheckTimeout
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.checks[Liveness] = map[string]*checkEntry{}
	h.checks[Readiness] = map[string]*checkEntry{}
	h.bgCtx, h.bgCancel = context.WithCancel(context.Background())
	h.checks[Readiness][ShutdownCheckName] = &checkEntry{
		name:    ShutdownCheckName,
		timeout: h.timeout,
		check: func(context.Context) error {
			if h.draining.Load() {
				return errors.New("process is shutting down")
			}
			return nil
		},
	}
	return h
}

var checkNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Add registers a check of the given kind. The name becomes a URL path
// segment (/readyz/NAME), so it must match [A-Za-z0-9][A-Za-z0-9_.-]* and
// be unique within its kind.
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
	if opts.Timeout < 0 || opts.Interval < 0 {
		return fmt.Errorf("adding %s check %q: negative timeout or interval", kind, name)
	}
	e := &checkEntry{name: name, check: check, timeout: opts.Timeout, log: h.log}
	if e.timeout == 0 {
		e.timeout = h.timeout
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return fmt.Errorf("adding %s check %q: health is closed", kind, name)
	}
	if _, dup := h.checks[kind][name]; dup {
		return fmt.Errorf("adding %s check %q: name already registered", kind, name)
	}
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
// sending traffic without restarting the container. It cannot be undone.
func (h *Health) Drain() { h.draining.Store(true) }

// Draining reports whether Drain was called.
func (h *Health) Draining() bool { return h.draining.Load() }

// Close stops background checks and waits for their loops to end. A check
// stuck ignoring its context is not waited for.
func (h *Health) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.bgCancel()
	h.bgWG.Wait()
	return nil
}

// Names returns the sorted names of the checks of a kind.
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
// (background checks answer from their cache), and reports all of them.
// It returns no later than the longest check timeout, whatever the checks
// do. Names in exclude are skipped.
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

	results := make([]error, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = e.result(ctx)
		}()
	}
	wg.Wait()

	rep := Report{Status: StatusOK, Checks: make(map[string]string, len(entries))}
	for i, e := range entries {
		if results[i] != nil {
			rep.Status = StatusFailure
			rep.Checks[e.name] = trimErr(results[i].Error())
		} else {
			rep.Checks[e.name] = StatusOK
		}
	}
	return rep
}

// RunOne runs the named check of a kind and reports only it. It returns an
// error wrapping ErrUnknownCheck when there is no such check.
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
	rep := Report{Status: StatusOK, Checks: map[string]string{name: StatusOK}}
	if err := e.result(ctx); err != nil {
		rep.Status = StatusFailure
		rep.Checks[name] = trimErr(err.Error())
	}
	return rep, nil
}

// Handler returns the probe handler of a kind. It answers 200 when every
// check passes and 503 otherwise, with Content-Type application/json and a
// [Report] body. Query parameters, as on the Kubernetes API server:
// ?verbose lists passing checks too; ?exclude=NAME (repeatable) skips a
// check. When the request's route has a {check} wildcard (see Routes), only
// that check runs; an unknown name answers 404.
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
			verbose = true // a single check is always shown
		} else {
			rep = h.Run(r.Context(), kind, q["exclude"]...)
		}
		code := http.StatusOK
		if !rep.OK() {
			code = http.StatusServiceUnavailable
			for name, v := range rep.Checks {
				if v != StatusOK {
					h.log.Warn("health check failed", "kind", kind.String(), "check", name, "error", v)
				}
			}
		}
		if !verbose {
			for name, v := range rep.Checks {
				if v == StatusOK {
					delete(rep.Checks, name)
				}
			}
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
	name    string
	check   Check
	timeout time.Duration
	log     *slog.Logger

	mu       sync.Mutex
	inflight *checkRun
	cached   *checkResult // non-nil for background checks
}

type checkRun struct {
	done    chan struct{}
	err     error
	started time.Time
}

type checkResult struct {
	err error
	at  time.Time
}

// result answers for a probe: the cached result of a background check or
// the outcome of a (possibly shared) run bounded by the check's timeout.
func (e *checkEntry) result(ctx context.Context) error {
	e.mu.Lock()
	c := e.cached
	e.mu.Unlock()
	if c != nil {
		return c.err
	}
	return e.run(ctx)
}

func (e *checkEntry) run(ctx context.Context) error {
	e.mu.Lock()
	run := e.inflight
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
			if cctx.Err() != nil {
				// Past the deadline the answer is "timed out", whatever
				// the check made of it, so probes read the same text
				// whether they waited for the check or for the timer.
				err = errTimeout(e.timeout)
			}
			run.err = err
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
		return errTimeout(e.timeout)
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
