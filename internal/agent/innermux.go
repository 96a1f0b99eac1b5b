package agent

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/obsd-dev/obsd/bpf/net/http/servemux"
	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/uprobes"
)

// innerMux enables the net/http/servemux probe (one more hit per request
// and mux) for a process whose requests show that a ServeMux may route them
// behind middleware that copied the request (otelhttp, http.StripPrefix,
// any r.WithContext), where the server probe cannot see its pattern:
//   - a request no pattern or router named that its server did not answer
//     as unrouted (404, 405, or a redirect, which ServeMux sends itself);
//   - a pattern that hands a subtree on ("/api/"; not "/", the catch-all).
//
// Asked once per process; the attach runs off the reader's path. Requests
// before it keep their fallback or subtree routes.
type innerMux struct {
	enable func(pid int, probe string) error
	log    *slog.Logger

	mu    sync.Mutex
	asked map[int]bool
}

func newInnerMux(enable func(pid int, probe string) error, log *slog.Logger) *innerMux {
	return &innerMux{enable: enable, log: log, asked: map[int]bool{}}
}

// request looks at one request of pid sent as a record.
func (m *innerMux) request(pid int, r probe.Request) {
	switch {
	case r.Router != "":
	case r.Pattern == "" && !unroutedAnswer(r.Status):
		m.ask(pid, "a request routed by no pattern", r.Path)
	case r.Pattern != "":
		m.pattern(pid, r.Pattern)
	}
}

// kernel looks at one series pid counted in the kernel.
func (m *innerMux) kernel(pid int, h probe.Histogram) {
	if h.Router == "" && h.Pattern != "" {
		m.pattern(pid, h.Pattern)
	}
}

func (m *innerMux) pattern(pid int, pattern string) {
	if i := strings.IndexByte(pattern, '/'); i >= 0 && strings.HasSuffix(pattern, "/") && pattern[i:] != "/" {
		m.ask(pid, "a subtree pattern", pattern)
	}
}

// unroutedAnswer: statuses a server sends for what it could not route.
func unroutedAnswer(status int) bool {
	return status == http.StatusNotFound || status == http.StatusMethodNotAllowed ||
		(status >= 300 && status < 400)
}

func (m *innerMux) ask(pid int, why, what string) {
	m.mu.Lock()
	if m.asked[pid] {
		m.mu.Unlock()
		return
	}
	m.asked[pid] = true
	m.mu.Unlock()
	go func() {
		err := m.enable(pid, servemux.Name)
		switch {
		case err == nil:
			m.log.Info("routes: watching for a ServeMux behind middleware (one more probe hit per request and mux)",
				"pid", pid, "because", why, "seen", what)
		case errors.Is(err, uprobes.ErrNotAttached):
		default:
			m.log.Debug("routes: no inner ServeMux probe for this process", "pid", pid, "err", err)
		}
	}()
}

// forget drops pid (its process is gone; the pid may come back as another).
func (m *innerMux) forget(pid int) {
	m.mu.Lock()
	delete(m.asked, pid)
	m.mu.Unlock()
}
