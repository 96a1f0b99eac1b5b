package manual

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// DefaultDrain is ServeOpts.Drain when unset: one readiness period (5 s in
// the README's probe) for the kubelet to see the 503, plus the time the
// endpoints controller and kube-proxy take to stop routing to the pod.
const DefaultDrain = 5 * time.Second

// ServeOpts configures Serve. The zero value is ready to use.
type ServeOpts struct {
	// Drain is how long to keep serving, with readiness failing, after ctx
	// ends. It lets Kubernetes see the 503 and take the pod out of its
	// endpoints before connections close. Nil means DefaultDrain (5 s);
	// new(time.Duration(0)) or a negative duration means no drain. (A
	// pointer, so that a configured 0 is not mistaken for "unset".)
	Drain *time.Duration
	// ShutdownTimeout bounds http.Server.Shutdown after the drain: requests
	// still running then are cut. Zero means 10 s.
	ShutdownTimeout time.Duration
	// Logger reports the drain. Nil means slog.Default().
	Logger *slog.Logger
}

// Serve runs srv on ln until ctx ends (typically signal.NotifyContext on
// SIGTERM), then drains: it calls h.Drain so /readyz answers 503 while
// /healthz stays 200, keeps serving for opts.Drain, and shuts srv down
// gracefully. It returns nil after a clean shutdown, so the caller's
// deferred functions (flushing spans) run and the process exits 0; an
// error says which step failed (serving, draining, shutting down).
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, h *Health, opts ServeOpts) error {
	drain := DefaultDrain
	if opts.Drain != nil {
		drain = *opts.Drain
	}
	shutdownTimeout := opts.ShutdownTimeout
	if shutdownTimeout <= 0 {
		shutdownTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serving http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	if h != nil {
		h.Drain()
	}
	if drain > 0 {
		log.Info("draining: readiness now fails", "drain", drain.String())
		select {
		case err := <-served:
			return fmt.Errorf("serving http during drain: %w", err)
		case <-time.After(drain):
		}
	}

	log.Info("shutting down http server", "timeout", shutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down http server: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving http: %w", err)
	}
	return nil
}
