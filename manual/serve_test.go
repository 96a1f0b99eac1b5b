package manual_test

import (
	"context"
	"net"
	"net/http"
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
		done <- manual.Serve(ctx, &http.Server{Handler: mux}, ln, h, manual.ServeOpts{Drain: drain, Logger: quietLogger()})
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
