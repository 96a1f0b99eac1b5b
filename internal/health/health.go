// Package health serves obsd's own liveness and readiness endpoints.
//
// Both answer JSON, {"status":"ok"|"failure","checks":{"name":"ok"|"error"}},
// with 200 or 503, listing every check that ran, passing ones included, so
// that a probe log says what was checked. A check that returns
// Degraded(err) reports "degraded: <err>" and does not fail the response:
// something the operator should see that neither a restart nor withheld
// traffic would fix. Checks run concurrently, each under one deadline
// (800 ms by default, a little under the Kubernetes probe default of 1 s,
// so the 503 of a hung check arrives in time); a check that overruns is
// reported as a timeout without holding up the response, and a panicking check is a
// failure, not a crash.
//
// Liveness checks must look only at the process itself (goroutines, heap,
// a stalled event loop): restarting obsd cannot fix a dependency.
// Readiness checks may look outward (the OTLP collector, BPF attachment).
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Check reports a problem as an error. It should return when ctx is done.
type Check func(ctx context.Context) error

// Degraded marks err as informational: returned as is by a check, its
// entry reads "degraded: " followed by err's text, and the response keeps
// its status and code. nil stays nil.
func Degraded(err error) error {
	if err == nil {
		return nil
	}
	return degradedError{err}
}

type degradedError struct{ err error }

func (d degradedError) Error() string { return "degraded: " + d.err.Error() }
func (d degradedError) Unwrap() error { return d.err }

// isDegraded holds for Degraded's error itself only: one wrapped into or
// joined with another error may carry a real failure.
func isDegraded(err error) bool {
	_, ok := err.(degradedError)
	return ok
}

// Status values of a response.
const (
	StatusOK      = "ok"
	StatusFailure = "failure"
)

// Response is the JSON body of both endpoints.
type Response struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// Checker holds named liveness and readiness checks. Add checks at
// start-up; the handlers are safe for concurrent use.
type Checker struct {
	timeout time.Duration

	mu    sync.RWMutex
	live  []*check
	ready []*check
}

type check struct {
	name string
	f    Check
	// running is set while a run is in flight; a check that ignores its
	// context is not started again on top of itself by every probe.
	running atomic.Bool
}

// DefaultTimeout is the deadline of New(0): a little under the kubelet's
// default timeoutSeconds of 1, so a hung check's 503 reaches the kubelet
// before it gives up. With timeoutSeconds T, pass about T - 200 ms.
const DefaultTimeout = 800 * time.Millisecond

// New returns a Checker whose checks each get timeout; 0 or less means
// DefaultTimeout.
func New(timeout time.Duration) *Checker {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Checker{timeout: timeout}
}

// AddLiveness adds a check to Healthz. Like http.ServeMux with a bad
// pattern, it panics on an empty name, a name containing '/', a nil check
// or a name used twice: those are programming errors found at start-up.
func (c *Checker) AddLiveness(name string, f Check) { c.add(&c.live, "liveness", name, f) }

// AddReadiness adds a check to Readyz; see AddLiveness for what panics.
func (c *Checker) AddReadiness(name string, f Check) { c.add(&c.ready, "readiness", name, f) }

func (c *Checker) add(list *[]*check, kind, name string, f Check) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case name == "":
		panic(fmt.Sprintf("health: %s check with an empty name", kind))
	case strings.Contains(name, "/"):
		panic(fmt.Sprintf("health: %s check name %q contains '/'", kind, name))
	case f == nil:
		panic(fmt.Sprintf("health: %s check %q is nil", kind, name))
	}
	for _, ch := range *list {
		if ch.name == name {
			panic(fmt.Sprintf("health: %s check %q added twice", kind, name))
		}
	}
	*list = append(*list, &check{name: name, f: f})
}

// Healthz serves the liveness checks. Mounted on a pattern with a {check}
// wildcard (e.g. "GET /healthz/{check}") it runs only the named check and
// answers 404 for an unknown name.
func (c *Checker) Healthz() http.Handler { return c.handler(&c.live) }

// Readyz serves the readiness checks, like Healthz.
func (c *Checker) Readyz() http.Handler { return c.handler(&c.ready) }

// Register mounts both handlers and their per-check sub-paths on mux at
// /healthz and /readyz.
func (c *Checker) Register(mux *http.ServeMux) {
	mux.Handle("GET /healthz", c.Healthz())
	mux.Handle("GET /healthz/{check}", c.Healthz())
	mux.Handle("GET /readyz", c.Readyz())
	mux.Handle("GET /readyz/{check}", c.Readyz())
}

func (c *Checker) handler(list *[]*check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.RLock()
		checks := *list
		c.mu.RUnlock()

		code := http.StatusOK
		if name := r.PathValue("check"); name != "" {
			var one []*check
			for _, ch := range checks {
				if ch.name == name {
					one = append(one, ch)
				}
			}
			if one == nil {
				writeJSON(w, http.StatusNotFound, Response{
					Status: StatusFailure,
					Checks: map[string]string{name: "unknown check"},
				})
				return
			}
			checks = one
		}
		resp := c.run(r.Context(), checks)
		if resp.Status != StatusOK {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, resp)
	})
}

// run runs checks concurrently and collects what each said by the deadline.
func (c *Checker) run(parent context.Context, checks []*check) Response {
	ctx, cancel := context.WithTimeout(parent, c.timeout)
	defer cancel()

	results := make([]string, len(checks))
	failed := make([]bool, len(checks))
	var wg sync.WaitGroup
	for i, ch := range checks {
		wg.Go(func() { results[i], failed[i] = c.runOne(ctx, ch) })
	}
	wg.Wait()

	resp := Response{Status: StatusOK, Checks: make(map[string]string, len(checks))}
	for i, ch := range checks {
		resp.Checks[ch.name] = results[i]
		if failed[i] {
			resp.Status = StatusFailure
		}
	}
	return resp
}

// runOne returns "ok", the text of a Degraded error (failed false) or the
// failure text, never later than ctx's deadline.
func (c *Checker) runOne(ctx context.Context, ch *check) (text string, failed bool) {
	if !ch.running.CompareAndSwap(false, true) {
		// Still running from an earlier probe: as manual/ says, a timeout.
		return c.timeoutText(), true
	}
	done := make(chan error, 1) // buffered: a late check must not block forever
	go func() {
		defer ch.running.Store(false)
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		done <- ch.f(ctx)
	}()
	select {
	case err := <-done:
		switch {
		case err == nil:
			return StatusOK, false
		case errors.Is(err, context.DeadlineExceeded) && errors.Is(ctx.Err(), context.DeadlineExceeded):
			return c.timeoutText(), true
		case isDegraded(err):
			return err.Error(), false
		}
		return err.Error(), true
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return c.timeoutText(), true
		}
		return ctx.Err().Error(), true
	}
}

// timeoutText, like the panic and unknown-check texts, is manual/'s
// wording; manual/testdata/health_rules.json holds them for both.
func (c *Checker) timeoutText() string { return fmt.Sprintf("timed out after %v", c.timeout) }

func writeJSON(w http.ResponseWriter, code int, resp Response) {
	b, err := json.Marshal(resp)
	if err != nil {
		// A map of strings always marshals; keep the contract anyway.
		code = http.StatusInternalServerError
		b = []byte(`{"status":"failure","checks":{}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
