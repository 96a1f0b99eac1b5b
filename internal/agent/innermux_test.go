package agent

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/bpf/net/http/servemux"
	"github.com/obsd-dev/obsd/bpf/probe"
)

// TestInnerMuxAsks: which requests and series make obsd attach the inner
// ServeMux probe to their process, once per process.
func TestInnerMuxAsks(t *testing.T) {
	tests := []struct {
		name string
		r    *probe.Request
		h    *probe.Histogram
		ask  bool
	}{
		{"no pattern, 200", &probe.Request{Status: 200, Path: "/users/bob"}, nil, true},
		{"no pattern, 500", &probe.Request{Status: 500, Path: "/x"}, nil, true},
		{"no pattern, 404", &probe.Request{Status: 404, Path: "/nope"}, nil, false},
		{"no pattern, 405", &probe.Request{Status: 405, Path: "/nope"}, nil, false},
		{"no pattern, redirect", &probe.Request{Status: 301, Path: "/dir"}, nil, false},
		{"a router's route", &probe.Request{Status: 200, Router: "chi", Pattern: "/api/*"}, nil, false},
		{"a router's no-match", &probe.Request{Status: 200, Router: "gin"}, nil, false},
		{"a pattern", &probe.Request{Status: 200, Pattern: "GET /items/{id}"}, nil, false},
		{"the catch-all", &probe.Request{Status: 200, Pattern: "/"}, nil, false},
		{"a subtree pattern", &probe.Request{Status: 200, Pattern: "/api/"}, nil, true},
		{"a subtree with method and host", &probe.Request{Status: 200, Pattern: "GET example.com/api/"}, nil, true},
		{"a subtree counted in the kernel", nil, &probe.Histogram{Pattern: "/static/"}, true},
		{"a pattern counted in the kernel", nil, &probe.Histogram{Pattern: "/items/{id}"}, false},
		{"a router's route in the kernel", nil, &probe.Histogram{Router: "chi", Pattern: "/api/*/"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var asked []string
			done := make(chan struct{}, 4)
			m := newInnerMux(func(pid int, name string) error {
				mu.Lock()
				asked = append(asked, name)
				mu.Unlock()
				done <- struct{}{}
				return nil
			}, slog.New(slog.DiscardHandler))
			for range 3 { // asked once per process, however often shown
				if tt.r != nil {
					m.request(7, *tt.r)
				} else {
					m.kernel(7, *tt.h)
				}
			}
			if tt.ask {
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					t.Fatal("not asked")
				}
			}
			time.Sleep(20 * time.Millisecond) // a wrong second ask would show
			mu.Lock()
			defer mu.Unlock()
			want := 0
			if tt.ask {
				want = 1
			}
			if len(asked) != want || (want == 1 && asked[0] != servemux.Name) {
				t.Errorf("asked %v, want %d ask for %s", asked, want, servemux.Name)
			}
		})
	}
}
