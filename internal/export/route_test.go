package export

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/obsd-dev/obsd/bpf/probe"
)

// TestLearnedFallback feeds a sequence of unrouted paths to one process and
// checks each route, in order: the learning rule is a function of history.
func TestLearnedFallback(t *testing.T) {
	type step struct{ path, want string }
	slugs := func(prefix string, from, n int, want func(i int) string) []step {
		var s []step
		for i := from; i < from+n; i++ {
			p := fmt.Sprintf("%s/%c%c-smith", prefix, 'a'+i/26, 'a'+i%26)
			s = append(s, step{p, want(i)})
		}
		return s
	}
	concat := func(parts ...[]step) []step {
		var out []step
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"shapes", []step{
			{"", "/"},
			{"/", "/"},
			{"/health", "/health"},
			{"/api/users", "/api/users"},
			{"/api/users/42", "/api/users/{param}"},
			{"/api/v1/users/42", "/api/v1/users/{param}"},
			{"/api/v1/users/42/orders", "/api/v1/users/{param}/*"},
			{"/orders/8f3a9c21", "/orders/{param}"},
			{"/orders/0b6a2a4e-9f7e-4c2b-8d3f-5a9e0c1d2b3f", "/orders/{param}"},
			{"/42", "/{param}"},
			{"/42/edit", "/{param}/edit"},
			{"/items/", "/items/"},
			{"/items", "/items"},
			{"/wp-login.php", "/wp-login.php"},
			{"/a b/c", "/{param}/c"},
			{"/日本/x", "/{param}/x"},
			{"/a\xffb", "/{param}"},
			{"//x", "/{param}/x"},
			{"/0123456789012345678901234567890123456789", "/{param}"},
		}},
		{"slugs become a parameter after LearnAfter distinct words", concat(
			[]step{{"/healthz", "/healthz"}},
			slugs("/users", 0, LearnAfter, func(i int) string { return fmt.Sprintf("/users/%c%c-smith", 'a'+i/26, 'a'+i%26) }),
			slugs("/users", LearnAfter, 30, func(int) string { return "/users/{param}" }),
			// Known words keep their routes; /healthz is unaffected.
			[]step{{"/users/aa-smith", "/users/aa-smith"}, {"/healthz", "/healthz"}},
			// Below a learned position, words are learned afresh.
			[]step{{"/users/zz-top/orders", "/users/{param}/orders"}, {"/users/42/orders", "/users/{param}/orders"}},
		)},
		{"each position learns on its own", concat(
			slugs("/a", 0, LearnAfter+1, func(i int) string {
				if i < LearnAfter {
					return fmt.Sprintf("/a/%c%c-smith", 'a'+i/26, 'a'+i%26)
				}
				return "/a/{param}"
			}),
			[]step{{"/b/aa-smith", "/b/aa-smith"}},
		)},
		{"cut paths end in /*", []step{
			// probe-cut paths are marked with a trailing "\x00cut" below
			{"/users/aa-sm\x00cut", "/users/*"},
			{"/日\xe6\x9c\x00cut", "/*"},
			{"/a/b/\x00cut", "/a/b/*"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := NewRoutes(slog.New(slog.DiscardHandler))
			svc := Service{InstanceID: "h:1"}
			for i, s := range tt.steps {
				path, cut := strings.CutSuffix(s.path, "\x00cut")
				got := rt.Route(svc, probe.Request{Path: path, Truncated: cut, PathTruncated: cut})
				if got.Value != s.want || got.Source != SourceFallback {
					t.Fatalf("step %d: route(%q) = %+v, want %q from the fallback", i, s.path, got, s.want)
				}
			}
		})
	}
}

func TestRoutePatterns(t *testing.T) {
	rt := NewRoutes(slog.New(slog.DiscardHandler))
	svc := Service{InstanceID: "h:1"}
	long := "/" + strings.Repeat("日本", 21) + "x" // 128 bytes: the probe's limit
	tests := []struct {
		pattern string
		cut     bool
		want    Route
	}{
		{"GET /items/{id}", false, Route{"/items/{id}", SourcePattern}},
		{"/status/{code}", false, Route{"/status/{code}", SourcePattern}},
		{"example.com/x/{y}", false, Route{"/x/{y}", SourcePattern}},
		{"GET\t/tab", false, Route{"/tab", SourcePattern}},
		{"GET nohost", false, Route{OverflowRoute, SourceOverflow}},
		{"/a\xffb/", false, Route{"/a\uFFFDb/", SourcePattern}},
		{long[:125], true, Route{long[:124] + CutMark, SourcePattern}},
	}
	for _, tt := range tests {
		got := rt.Route(svc, probe.Request{Pattern: tt.pattern, Path: "/ignored/1", Truncated: tt.cut, PatternTruncated: tt.cut})
		if got != tt.want {
			t.Errorf("Route(pattern %q) = %+v, want %+v", tt.pattern, got, tt.want)
		}
		// The kernel's patterns, read whole, take the same way.
		if !tt.cut {
			if got := rt.Pattern(svc, tt.pattern, 1); got != tt.want {
				t.Errorf("Pattern(%q) = %+v, want %+v", tt.pattern, got, tt.want)
			}
		}
	}
}

// TestRoutesBounded sends every source of routes past the limit: Go 1.23–1.25
// ServeMux redirects and CONNECT put concrete paths in Request.Pattern, so
// patterns are request data too.
func TestRoutesBounded(t *testing.T) {
	var log bytes.Buffer
	rt := NewRoutes(slog.New(slog.NewTextHandler(&log, nil)))
	a, b := Service{Name: "a", InstanceID: "h:1"}, Service{Name: "b", InstanceID: "h:2"}
	known := rt.Route(a, probe.Request{Path: "/healthz"})
	distinct := map[string]bool{}
	overflowed := 0
	for i := range 300 {
		var r probe.Request
		switch i % 3 {
		case 0: // a mux redirect: /users/{id}/ requested as /users/N
			r = probe.Request{Pattern: fmt.Sprintf("/users/%d/", i), Status: 301}
		case 1: // the fallback: every word its own route until learned
			r = probe.Request{Path: fmt.Sprintf("/p%c%c/x", 'a'+i/26%26, 'a'+i%26)}
		case 2: // a pattern counted in the kernel
			got := rt.Pattern(a, fmt.Sprintf("GET /k%d", i), 1)
			distinct[got.Value] = true
			if got.Source == SourceOverflow {
				overflowed++
			}
			continue
		}
		got := rt.Route(a, r)
		distinct[got.Value] = true
		if got.Source == SourceOverflow {
			overflowed++
		}
	}
	if len(distinct) > MaxRoutes+1 {
		t.Errorf("%d distinct routes, want at most %d and the overflow value", len(distinct), MaxRoutes)
	}
	if got := rt.Route(a, probe.Request{Path: "/healthz"}); got != known {
		t.Errorf("known route after the limit = %+v, want %+v", got, known)
	}
	ov := rt.Overflows()
	if len(ov) != 1 || ov[0].Service.InstanceID != "h:1" || ov[0].N != uint64(overflowed) || overflowed == 0 {
		t.Errorf("overflows = %+v, want one for h:1 with %d", ov, overflowed)
	}
	if n := strings.Count(log.String(), "too many distinct label values"); n != 1 {
		t.Errorf("overflow logged %d times, want once:\n%s", n, log.String())
	}
	// Another process has its own budget.
	if got := rt.Route(b, probe.Request{Path: "/new"}); got.Value != "/new" {
		t.Errorf("other process: route = %+v", got)
	}
	rt.Forget("h:1")
	if got := rt.Route(a, probe.Request{Path: "/fresh"}); got.Value != "/fresh" {
		t.Errorf("after Forget: route = %+v", got)
	}
	if ov := rt.Overflows(); len(ov) != 0 {
		t.Errorf("after Forget: overflows = %+v", ov)
	}
}

func TestLabelSet(t *testing.T) {
	firsts := 0
	s := NewLabelSet(2, "other", func() { firsts++ })
	steps := []struct {
		in, want string
		ok       bool
	}{
		{"a", "a", true}, {"other", "other", true}, {"b", "b", true}, {"c", "other", false},
		{"a", "a", true}, {"d", "other", false}, {"b", "b", true},
	}
	for i, st := range steps {
		if got, ok := s.Admit(st.in); got != st.want || ok != st.ok {
			t.Errorf("step %d: Admit(%q) = %q, %v; want %q, %v", i, st.in, got, ok, st.want, st.ok)
		}
	}
	if s.Len() != 2 || s.Overflowed() != 2 || firsts != 1 {
		t.Errorf("Len %d, Overflowed %d, first called %d times; want 2, 2, 1", s.Len(), s.Overflowed(), firsts)
	}
}

func BenchmarkRouteFallbackKnown(b *testing.B) {
	rt := NewRoutes(slog.New(slog.DiscardHandler))
	svc := Service{InstanceID: "h:1"}
	r := probe.Request{Path: "/api/v1/users/42"}
	rt.Route(svc, r)
	b.ReportAllocs()
	for b.Loop() {
		rt.Route(svc, r)
	}
}

// TestKernelPatternCutAsRecords: a request must get the same route whether
// it was counted in the kernel (whole pattern) or sent as a record (the
// probe's first ProbePatternMax bytes, flagged as cut).
func TestKernelPatternCutAsRecords(t *testing.T) {
	long := "/" + strings.Repeat("日本語", 15) + "/" // 137 bytes; byte 128 is inside a character
	rt := NewRoutes(slog.New(slog.DiscardHandler))
	svc := Service{InstanceID: "h:1"}
	kernel := rt.Pattern(svc, long, 1)
	record := rt.Route(svc, probe.Request{Pattern: long[:ProbePatternMax], Truncated: true, PatternTruncated: true})
	want := Route{Value: long[:127] + CutMark, Source: SourcePattern}
	if kernel != want || record != want {
		t.Errorf("kernel route %+v, record route %+v, want both %+v", kernel, record, want)
	}
}

// TestProbePatternMax: ProbePatternMax restates the probe's PATTERN_MAX.
func TestProbePatternMax(t *testing.T) {
	src, err := os.ReadFile("../../bpf/net/http/server/probe.bpf.c")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^#define PATTERN_MAX (\d+)$`).FindSubmatch(src)
	if m == nil || string(m[1]) != strconv.Itoa(ProbePatternMax) {
		t.Errorf("probe.bpf.c defines PATTERN_MAX %q, ProbePatternMax is %d", m, ProbePatternMax)
	}
}

// TestRouterRoutes: a router's route is taken as the router reports it;
// chi's parts are cleaned as chi v5's RoutePattern() cleans them (the
// expected values are chi's own outputs for these RoutePatterns, from
// context.go); an empty route is the router's "no match"; every router
// route counts against the process's MaxRoutes.
func TestRouterRoutes(t *testing.T) {
	tests := []struct {
		router, raw string
		cut         bool
		want        Route
	}{
		{"chi", "/", false, Route{"/", "chi"}},
		{"chi", "/orders/*/{oid}/*/items/{iid}", false, Route{"/orders/{oid}/items/{iid}", "chi"}},
		{"chi", "/orders/*/", false, Route{"/orders", "chi"}},
		{"chi", "/orders/*/{oid}/*", false, Route{"/orders/{oid}/*", "chi"}},
		{"chi", "/api/v1/*/*/*/x//", false, Route{"/api/v1/x", "chi"}},
		{"chi", "/files/*", false, Route{"/files/*", "chi"}},
		{"gin", "/users/:id/*rest", false, Route{"/users/:id/*rest", "gin"}},
		{"gin", "/orders/", false, Route{"/orders/", "gin"}},
		{"echo", "/orders/:oid", false, Route{"/orders/:oid", "echo"}},
		{"gorilla/mux", "/users/{uid:[0-9]+}", false, Route{"/users/{uid:[0-9]+}", "gorilla/mux"}},
		{"gin", "", false, Route{"", "gin"}},
		{"chi", "/a\xffb", false, Route{"/a\uFFFDb", "chi"}},
		{"gin", "/" + strings.Repeat("x", 127), true, Route{"/" + strings.Repeat("x", 127) + CutMark, "gin"}},
	}
	rt := NewRoutes(slog.New(slog.DiscardHandler))
	svc := Service{InstanceID: "h:1"}
	for _, tt := range tests {
		r := probe.Request{Router: tt.router, Pattern: tt.raw, Path: "/ignored/1", PatternTruncated: tt.cut, Truncated: tt.cut}
		if got := rt.Route(svc, r); got != tt.want {
			t.Errorf("Route(%s %q) = %+v, want %+v", tt.router, tt.raw, got, tt.want)
		}
		// Counted in the kernel, the same route.
		if got := rt.Router(svc, tt.router, tt.raw, tt.cut, 1); got != tt.want {
			t.Errorf("Router(%s %q) = %+v, want %+v", tt.router, tt.raw, got, tt.want)
		}
	}

	// Bounded: routes from a router past MaxRoutes overflow; earlier ones
	// keep their labels.
	b := Service{InstanceID: "h:2"}
	first := rt.Router(b, "gin", "/first/:id", false, 1)
	for i := range MaxRoutes + 20 {
		rt.Router(b, "gin", fmt.Sprintf("/r%d", i), false, 1)
	}
	if got := rt.Router(b, "gin", "/late", false, 1); got.Value != OverflowRoute || got.Source != SourceOverflow {
		t.Errorf("past MaxRoutes: %+v, want the overflow", got)
	}
	if got := rt.Router(b, "gin", "/first/:id", false, 1); got != first {
		t.Errorf("known route after the limit = %+v, want %+v", got, first)
	}
}
