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

// Route limits, obsd's (internal/export/route.go).
const (
	// MaxRoutes bounds the distinct routes one HTTPMetrics or one
	// TraceHandler labels, patterns and fallbacks alike; past it a route
	// not seen before is labelled OverflowRoute, and routes seen before
	// keep their labels.
	MaxRoutes = 100
	// OverflowRoute labels requests past MaxRoutes; it is also the tail of
	// a fallback route whose path went deeper than FallbackDepth.
	OverflowRoute = "/*"
	// Param replaces a fallback path segment that identifies rather than
	// names (an ID, a UUID, a hash, a slug past LearnAfter).
	Param = "{param}"
	// FallbackDepth is how many path segments a fallback route keeps.
	FallbackDepth = 4
	// LearnAfter is how many distinct words one path position may take in
	// the fallback before new words there become Param.
	LearnAfter = 20
	// maxRouteNodes bounds the memory of the fallback tree.
	maxRouteNodes = 2048
)

// MaxFallbackRoutes is MaxRoutes.
//
// Deprecated: the limit covers every route, not only fallbacks; use
// MaxRoutes.
const MaxFallbackRoutes = MaxRoutes

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

// routeSet derives routes as obsd does (internal/export/route.go): the
// pattern's path when a ServeMux pattern matched, else the learned fallback
// (see learner); every value passes one set of MaxRoutes.
type routeSet struct {
	mu       sync.Mutex
	admitted map[string]struct{}
	tree     learner
}

func newRouteSet() *routeSet {
	return &routeSet{admitted: map[string]struct{}{}, tree: learner{root: &node{}}}
}

// route is r's route. Call it after routing: r.Pattern is set by the mux.
func (rs *routeSet) route(r *http.Request) string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	v := patternPath(r.Pattern)
	if v == "" {
		n, variant := rs.tree.walk(r.URL.Path)
		if r := n.variants[variant]; r != "" {
			return r
		}
		v = n.label(variant)
		v = rs.admit(v)
		n.variants[variant] = v
		return v
	}
	return rs.admit(v)
}

// admit returns v when it is known or there is room for it, else
// OverflowRoute.
func (rs *routeSet) admit(v string) string {
	if _, ok := rs.admitted[v]; ok {
		return v
	}
	if len(rs.admitted) >= MaxRoutes {
		return OverflowRoute
	}
	rs.admitted[v] = struct{}{}
	return v
}

// learner is the fallback for requests no pattern matched: a tree of the
// path segments seen, where each node is a route prefix.
//
//   - A segment that does not look like a word (see wordLike) is Param at
//     once: /orders/8f3a9c -> /orders/{param}.
//   - A word is kept as itself until its position has held LearnAfter
//     distinct words; from then on a new word there is Param, so slugs never
//     become labels one by one, and words seen before keep their routes.
//   - At most FallbackDepth segments are kept; a deeper path ends in /*. A
//     trailing slash is kept (/items/).
type learner struct {
	root  *node
	nodes int
}

type node struct {
	route    string // the route of the path up to here; "" at the root
	words    map[string]*node
	param    *node
	variants [3]string // exact, trailing slash, deeper: labels handed out
}

const (
	variantExact = iota
	variantSlash
	variantDeeper
)

func (l *learner) walk(path string) (*node, int) {
	n, variant := l.root, variantExact
	rest := strings.TrimPrefix(path, "/")
	for depth := 0; rest != ""; depth++ {
		if depth == FallbackDepth {
			variant = variantDeeper
			break
		}
		seg, tail, slash := strings.Cut(rest, "/")
		n = l.child(n, seg)
		rest = tail
		if slash && tail == "" {
			variant = variantSlash
		}
	}
	return n, variant
}

func (n *node) label(variant int) string {
	v := n.route
	switch {
	case variant == variantSlash:
		v += "/"
	case variant == variantDeeper:
		v += OverflowRoute
	case v == "":
		v = "/"
	}
	return v
}

func (l *learner) child(n *node, seg string) *node {
	if wordLike(seg) {
		if c, ok := n.words[seg]; ok {
			return c
		}
		if len(n.words) < LearnAfter && l.nodes < maxRouteNodes {
			if n.words == nil {
				n.words = map[string]*node{}
			}
			c := &node{route: n.route + "/" + seg}
			n.words[seg] = c
			l.nodes++
			return c
		}
	}
	if n.param == nil {
		n.param = &node{route: n.route + "/" + Param}
		l.nodes++
	}
	return n.param
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
