package manual_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual"
)

func TestServeDrainsThenShutsDown(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
	defer h.Close()
	mux := http.NewServeMux()
	h.Routes(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	const drain = 400 * time.Millisecond
	go func() {
		done <- manual.Serve(ctx, &http.Server{Handler: mux}, ln, h, manual.ServeOpts{Drain: new(drain), Logger: quietLogger()})
	}()

	if a := probe(t, url+"/readyz"); a.code != 200 {
		t.Fatalf("readyz before stop: %d", a.code)
	}
	stopped := time.Now()
	stop()
	waitFor(t, time.Second, func() bool { return h.Draining() })
	// While draining: still serving, readiness 503, liveness 200.
	if a := probe(t, url+"/readyz"); a.code != 503 {
		t.Errorf("readyz while draining: %d", a.code)
	}
	if a := probe(t, url+"/healthz"); a.code != 200 {
		t.Errorf("healthz while draining: %d", a.code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if took := time.Since(stopped); took < drain {
		t.Errorf("Serve returned %s after stop, before the %s drain", took, drain)
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Error("server still answers after Serve returned")
	}
}

func TestServeDrainZeroMeansNone(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
	defer h.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	stop()
	start := time.Now()
	if err := manual.Serve(ctx, &http.Server{Handler: http.NewServeMux()}, ln, h, manual.ServeOpts{Drain: new(time.Duration(0)), Logger: quietLogger()}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("a configured drain of 0 took %s", took)
	}
}

func TestServeLogsTheDrainAsADuration(t *testing.T) {
	h := manual.NewHealth(manual.HealthOpts{Logger: quietLogger()})
	defer h.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	ctx, stop := context.WithCancel(context.Background())
	stop()
	if err := manual.Serve(ctx, &http.Server{Handler: http.NewServeMux()}, ln, h, manual.ServeOpts{Drain: new(20 * time.Millisecond), Logger: log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"drain":"20ms"`) {
		t.Errorf("drain logged as %s, want \"20ms\"", buf.String())
	}
}
