package manual

import (
	"context"
	"net/http"
	"strings"
	"sync"
)

// The route and method rules below are obsd's (internal/export and
// internal/export/prom), copied because this module may not import obsd's
// internal packages; testdata/routes.json specifies both, and the tests of
// both read it.

// MaxFallbackRoutes bounds the distinct fallback routes one HTTPMetrics or
// one TraceHandler labels; past it every request no pattern matched is
// labelled OverflowRoute. It is obsd's limit.
const MaxFallbackRoutes = 100

// OverflowRoute is the route of unmatched requests once MaxFallbackRoutes
// are in use, and of paths with no usable segment ("/42").
const OverflowRoute = "/*"

// OtherMethod is the semantic conventions' method label for any method
// outside the nine standard ones: clients cannot create series at will.
const OtherMethod = "_OTHER"

// semconvMethod returns the http.request.method label for a raw method.
func semconvMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return OtherMethod
}

// patternPath returns the path part of a ServeMux pattern
// ("[METHOD ][HOST]/path"), or "" when pattern is empty or malformed.
func patternPath(pattern string) string {
	if pattern == "" {
		return ""
	}
	if i := strings.IndexAny(pattern, " \t"); i >= 0 {
		pattern = strings.TrimLeft(pattern[i:], " \t")
	}
	i := strings.IndexByte(pattern, '/')
	if i < 0 {
		return ""
	}
	return pattern[i:]
}

// fallbackRoute is the route of a request no pattern matched: at most the
// first two path segments, each kept only if it looks like a word (not an
// ID), then "/*" when the path went deeper: /api/users/42 -> /api/users/*,
// /orders/8f3a9c -> /orders/*, /42 -> /*.
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

// routeSet derives routes as obsd does, remembering the fallback routes it
// handed out so that their number stays bounded.
type routeSet struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

func newRouteSet() *routeSet { return &routeSet{seen: map[string]struct{}{}} }

// route is the pattern's path when a ServeMux pattern matched, else a
// bounded fallback. Call it after routing: r.Pattern is set by the mux.
func (rs *routeSet) route(r *http.Request) string {
	if p := patternPath(r.Pattern); p != "" {
		return p
	}
	fb := fallbackRoute(r.URL.Path)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if _, ok := rs.seen[fb]; ok {
		return fb
	}
	if len(rs.seen) >= MaxFallbackRoutes {
		return OverflowRoute
	}
	rs.seen[fb] = struct{}{}
	return fb
}

// routeKey carries a *routeHolder from TraceHandler to HTTPMetrics, so that
// the span and the metrics of one request carry one route even when the
// application chose its own HTTPMetricsOpts.Route.
type routeKey struct{}

type routeHolder struct{ route string }

func withRouteHolder(ctx context.Context) (context.Context, *routeHolder) {
	h := &routeHolder{}
	return context.WithValue(ctx, routeKey{}, h), h
}

func routeHolderFrom(ctx context.Context) *routeHolder {
	h, _ := ctx.Value(routeKey{}).(*routeHolder)
	return h
}
