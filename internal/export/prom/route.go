package prom

import (
	"strings"
	"sync"

	"github.com/obsd-dev/obsd/bpf/probe"
	"github.com/obsd-dev/obsd/internal/export"
)

// MaxFallbackRoutes bounds the distinct fallback routes per process; past it
// every unrouted request is labelled OverflowRoute.
const MaxFallbackRoutes = 100

// OverflowRoute is the route of unrouted requests once a process has used
// up MaxFallbackRoutes, and of paths with no usable segment.
const OverflowRoute = "/*"

// routes derives http_route. A request routed by a Go 1.22+ ServeMux pattern
// gets the pattern's path part. Any other request gets a fallback made of at
// most the first two path segments, each kept only if it looks like a word
// (not an ID), followed by "/*" when the path went deeper:
// /api/users/42 -> /api/users/*, /orders/8f3a9c -> /orders/*, /42 -> /*.
type routes struct {
	mu       sync.Mutex
	seen     map[string]map[string]struct{} // per service instance
	overflow map[string]*overflowCount
}

type overflowCount struct {
	svc export.Service
	n   uint64
}

func newRoutes() *routes {
	return &routes{seen: map[string]map[string]struct{}{}, overflow: map[string]*overflowCount{}}
}

func (rt *routes) route(svc export.Service, r probe.Request) string {
	if p := export.PatternRoute(r.Pattern); p != "" {
		return p
	}
	fb := fallbackRoute(r.Path)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	seen := rt.seen[svc.InstanceID]
	if seen == nil {
		seen = map[string]struct{}{}
		rt.seen[svc.InstanceID] = seen
	}
	if _, ok := seen[fb]; ok {
		return fb
	}
	if len(seen) >= MaxFallbackRoutes {
		oc := rt.overflow[svc.InstanceID]
		if oc == nil {
			oc = &overflowCount{svc: svc}
			rt.overflow[svc.InstanceID] = oc
		}
		oc.n++
		return OverflowRoute
	}
	seen[fb] = struct{}{}
	return fb
}

func (rt *routes) forget(instance string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	delete(rt.seen, instance)
	delete(rt.overflow, instance)
}

func fallbackRoute(path string) string {
	if path == "" || path == "/" {
		return "/"
	}
	var b strings.Builder
	rest := strings.TrimPrefix(path, "/")
	for i := 0; i < 2 && rest != ""; i++ {
		seg, tail, _ := strings.Cut(rest, "/")
		if !wordLike(seg) {
			break
		}
		b.WriteByte('/')
		b.WriteString(seg)
		rest = tail
	}
	switch {
	case rest != "" || b.Len() == 0:
		b.WriteString("/*")
	case strings.HasSuffix(path, "/"):
		b.WriteByte('/')
	}
	return b.String()
}

// wordLike accepts segments that name a resource rather than identify one:
// letters, '-', '_', '.', and digits only in short version-like words (v1).
func wordLike(seg string) bool {
	if seg == "" || len(seg) > 32 {
		return false
	}
	digits := 0
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_', c == '.':
		case c >= '0' && c <= '9':
			digits++
		default:
			return false
		}
	}
	if digits == 0 {
		return true
	}
	c := seg[0]
	return len(seg) <= 3 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z')
}
