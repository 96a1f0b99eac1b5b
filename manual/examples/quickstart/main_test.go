package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/manual/internal/otlptest"
)

// redis answers every PING with +PONG, like a live Redis.
func redis(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					c.Write([]byte("+PONG\r\n"))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func status(t *testing.T, url string) int {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestQuickStartExitsZeroAndFlushesSpans runs the README's quick start as
// it is: a clean SIGTERM exits 0, and the span of a request served during
// the drain reaches a real OTLP/HTTP receiver.
func TestQuickStartExitsZeroAndFlushesSpans(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "quickstart")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building the quick start: %v\n%s", err, out)
	}
	rcv := otlptest.StartHTTP(t)
	cmd := exec.Command(bin)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "ADDR=127.0.0.1:0", "REDIS_ADDR="+redis(t),
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+rcv.Addr, "OTEL_TRACES_SAMPLER=always_on")
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no address printed: %v; stderr:\n%s", err, stderr.String())
	}
	url := "http://" + strings.TrimSpace(strings.TrimPrefix(line, "listening on "))

	if c := status(t, url+"/readyz"); c != 200 {
		t.Fatalf("readyz %d with Redis up", c)
	}
	if c := status(t, url+"/items/1"); c != 200 {
		t.Fatalf("/items/1: %d", c)
	}
	sigterm := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(3 * time.Second)
	for status(t, url+"/readyz") != 503 {
		if time.Now().After(deadline) {
			t.Fatal("readiness did not fail after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c := status(t, url+"/items/2"); c != 200 { // served during the drain
		t.Fatalf("/items/2 during the drain: %d", c)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("still running 15 s after SIGTERM")
	}
	if took := time.Since(sigterm); took < 5*time.Second || took > 8*time.Second {
		t.Errorf("exited %s after SIGTERM, want the 5 s drain and a quick shutdown", took)
	}
	// Exited: everything it exported has arrived.
	var items []otlptest.Span
	for _, s := range rcv.Spans() {
		if s.Name == "GET /items/{id}" && s.Attrs["http.route"] == "/items/{id}" && s.Resource["service.name"] == "shop" {
			items = append(items, s)
		}
	}
	if len(items) != 2 {
		t.Errorf("%d spans GET /items/{id} (route /items/{id}, service shop) at the receiver, want 2 (one served in the drain); got %+v", len(items), rcv.Spans())
	}
}
