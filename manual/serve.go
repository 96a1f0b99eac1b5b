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

// ServeOpts configures Serve. The zero value is ready to use.
type ServeOpts struct {
	// Drain is how long to keep serving, with readiness failing, after ctx
	// ends. It lets Kubernetes see the 503 and take the pod out of its
	// endpoints before connections close. Zero means 5 s; negative means
	// no drain.
	Drain time.Duration
	// ShutdownTimeout bounds http.Server.Shutdown after the drain: requests
	// still running then are cut. Zero means 10 s.
	ShutdownTimeout time.Duration
	// Logger reports the drain. Nil means slog.Default().
	Logger *slog.Logger
}

// Serve runs srv on ln until ctx ends (typically signal.NotifyContext on
// SIGTERM), then drains: it calls h.Drain so /readyz answers 503 while
// /healthz stays 200, keeps serving for opts.Drain, and shuts srv down
// gracefully. It returns nil after a clean shutdown.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, h *Health, opts ServeOpts) error {
	drain := opts.Drain
	if drain == 0 {
		drain = 5 * time.Second
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
		log.Info("draining: readiness now fails", "drain", drain)
		select {
		case err := <-served:
			return fmt.Errorf("serving http during drain: %w", err)
		case <-time.After(drain):
		}
	}

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
