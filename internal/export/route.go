package export

import (
	"log/slog"
	"strings"
	"sync"

	"github.com/obsd-dev/obsd/bpf/probe"
)

// Route limits. Each process gets at most MaxRoutes distinct http_route
// values, whatever their source; past it, new values are OverflowRoute.
const (
	MaxRoutes = 100
	// OverflowRoute labels the requests of a process that has used up
	// MaxRoutes with a route not seen before; it is also the tail of a
	// fallback route whose path went deeper than FallbackDepth.
	OverflowRoute = "/*"
	// Param replaces a path segment that identifies rather than names.
	Param = "{param}"
	// FallbackDepth is how many path segments a fallback route keeps.
	FallbackDepth = 4
	// LearnAfter is how many distinct words one path position may take in
	// the fallback before it becomes Param for new ones.
	LearnAfter = 20
	// maxRouteNodes bounds the memory of one process's fallback tree.
	maxRouteNodes = 2048
)

// Route sources, exported on spans as obsd.route.source.
const (
	SourcePattern  = "pattern"  // the ServeMux pattern the request carried
	SourceFallback = "fallback" // learned from paths no router named
	SourceOverflow = "overflow" // the process has MaxRoutes routes already
	// A third-party router's route has the router's name as its source
	// (probe.RouterName: "chi", "gin", "echo", "gorilla/mux").
)

// Route is the http_route of one request and where it came from. Metrics
// and spans of the request carry the same Value.
type Route struct {
	Value  string
	Source string
}

// Routes derives http_route for every request, through one bounded path:
// every value, from a pattern or the fallback, passes the process's
// LabelSet of MaxRoutes. Safe for concurrent use.
type Routes struct {
	set *Bounded

	mu    sync.Mutex
	procs map[string]*procRoutes // by Service.InstanceID
}

type procRoutes struct {
	mu  sync.Mutex
	set *LabelSet
	// patterns caches admitted pattern routes by raw pattern; only
	// admitted ones, so it holds at most MaxRoutes entries.
	patterns map[string]string
	tree     *learner
}

// NewRoutes returns an empty Routes; log (nil: slog.Default()) gets one line
// per process that reaches MaxRoutes.
func NewRoutes(log *slog.Logger) *Routes {
	return &Routes{set: NewBounded("http_route", MaxRoutes, OverflowRoute, log), procs: map[string]*procRoutes{}}
}

func (rt *Routes) proc(svc Service) *procRoutes {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	p := rt.procs[svc.InstanceID]
	if p == nil {
		p = &procRoutes{set: rt.set.Set(svc), patterns: map[string]string{}, tree: newLearner()}
		rt.procs[svc.InstanceID] = p
	}
	return p
}

// Route returns r's route: the path part of its ServeMux pattern when it
// has one, else the learned fallback of its path (see learner).
func (rt *Routes) Route(svc Service, r probe.Request) Route {
	if r.Router != "" {
		return rt.Router(svc, r.Router, r.Pattern, r.PatternTruncated, 1)
	}
	if r.Pattern != "" {
		return rt.pattern(svc, r.Pattern, r.PatternTruncated, 1)
	}
	p := rt.proc(svc)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tree.route(r.Path, r.PathTruncated, p.set)
}

// ProbePatternMax is how many bytes of a pattern the probe records
// (PATTERN_MAX in bpf/net/http/server/probe.bpf.c).
const ProbePatternMax = 128

// Pattern returns the route of a pattern counted in the kernel, which
// obsd reads whole from the executable. It is cut as the probe cuts the
// patterns it records, so that a request gets the same route whether it
// was counted in the kernel or sent as a record (sampled for a span).
//
// n is how many requests the series counted since it was last labelled:
// what an overflow adds to the process's count.
func (rt *Routes) Pattern(svc Service, pattern string, n uint64) Route {
	if len(pattern) > ProbePatternMax {
		return rt.pattern(svc, pattern[:ProbePatternMax], true, n)
	}
	return rt.pattern(svc, pattern, false, n)
}

func (rt *Routes) pattern(svc Service, pattern string, cut bool, n uint64) Route {
	p := rt.proc(svc)
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := p.patterns[pattern]; ok && !cut {
		return Route{Value: v, Source: SourcePattern}
	}
	v := PatternRoute(pattern)
	if v == "" {
		// ServeMux validates patterns; a malformed one still gets a
		// bounded label.
		return Route{Value: OverflowRoute, Source: SourceOverflow}
	}
	v = Clean(v, MaxValueLen, cut)
	if v, ok := p.set.AdmitN(v, n); !ok {
		return Route{Value: v, Source: SourceOverflow}
	}
	if !cut {
		p.patterns[pattern] = v
	}
	return Route{Value: v, Source: SourcePattern}
}

// Router returns the route a third-party router reported for a request,
// raw as the probe recorded it (probe.Request.Pattern), finished as the
// router finishes it for its own middleware: chi's RoutePattern() cleaning
// (chiRoutePattern), the others as they are. Empty raw means the router
// matched no route (its 404 or 405): the route is then "", which is what
// the router's middleware sees, and http_route is left out of spans. Like
// every route, it is bounded by the process's MaxRoutes.
// n is as Pattern's.
func (rt *Routes) Router(svc Service, router, raw string, cut bool, n uint64) Route {
	if raw == "" {
		return Route{Source: router}
	}
	p := rt.proc(svc)
	p.mu.Lock()
	defer p.mu.Unlock()
	key := router + "\x00" + raw
	if v, ok := p.patterns[key]; ok && !cut {
		return Route{Value: v, Source: router}
	}
	v := raw
	if router == "chi" {
		v = ChiRoutePattern(v)
	}
	v = Clean(v, MaxValueLen, cut)
	if v, ok := p.set.AdmitN(v, n); !ok {
		return Route{Value: v, Source: SourceOverflow}
	}
	if !cut {
		p.patterns[key] = v
	}
	return Route{Value: v, Source: router}
}

// chiRoutePattern finishes chi's joined route patterns as chi v5's
// (*Context).RoutePattern() does (context.go, v5.2.3 through v5.5.0):
// "/*/" left by mounts becomes "/", and a trailing "/" or "//" goes,
// except for the root.
func ChiRoutePattern(p string) string {
	for strings.Contains(p, "/*/") {
		p = strings.ReplaceAll(p, "/*/", "/")
	}
	if p != "/" {
		p = strings.TrimSuffix(p, "//")
		p = strings.TrimSuffix(p, "/")
	}
	return p
}

// Forget drops an exited process's routes.
func (rt *Routes) Forget(instance string) {
	rt.mu.Lock()
	delete(rt.procs, instance)
	rt.mu.Unlock()
	rt.set.Forget(instance)
}

// Overflows returns the processes whose routes overflowed.
func (rt *Routes) Overflows() []Overflow { return rt.set.Overflows() }

// learner is the fallback for requests no router named: a tree of the path
// segments seen, where each node is a route prefix.
//
//   - A segment that does not look like a word (digits beyond a short
//     version like v1, a UUID, a hash, non-ASCII or escaped bytes, more than
//     32 bytes) is Param at once: /orders/8f3a9c → /orders/{param}.
//   - A word is kept as itself until its position has held LearnAfter
//     distinct words; from then on a new word there is Param, so slugs
//     (/users/aa-smith, /users/ab-jones, …) never become labels one by one.
//     Words seen before keep their routes: a known route is never relabelled.
//   - At most FallbackDepth segments are kept; a deeper path ends in /*.
//     A trailing slash is kept (/items/).
//
// Each node caches the label it was admitted under, so a known route costs a
// few map lookups and no allocation.
type learner struct {
	root  *node
	nodes int
}

type node struct {
	route    string // the route of the path up to here; "" at the root
	words    map[string]*node
	param    *node
	variants [3]*Route // exact, trailing slash, deeper; admitted labels
}

const (
	variantExact = iota
	variantSlash
	variantDeeper
)

func newLearner() *learner { return &learner{root: &node{}} }

func (l *learner) route(path string, cut bool, set *LabelSet) Route {
	if cut {
		// The last segment is partial: keep what is whole, and say the
		// path went on.
		if i := strings.LastIndexByte(path, '/'); i >= 0 {
			path = path[:i] + "/…"
		}
	}
	n, variant := l.root, variantExact
	rest := strings.TrimPrefix(path, "/")
	for depth := 0; rest != ""; depth++ {
		if depth == FallbackDepth || (cut && rest == "…") {
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
	if r := n.variants[variant]; r != nil {
		return *r
	}
	v := n.route
	switch {
	case variant == variantSlash:
		v += "/"
	case variant == variantDeeper:
		v += OverflowRoute
	case v == "":
		v = "/"
	}
	r := Route{Value: v, Source: SourceFallback}
	if label, ok := set.Admit(v); !ok {
		r = Route{Value: label, Source: SourceOverflow}
	}
	n.variants[variant] = &r
	return r
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
