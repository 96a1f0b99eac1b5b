package main

import (
	"fmt"
	"regexp"
	"strings"
)

// Template is one route as a user-space matcher sees it: the template the
// router would report, the methods it serves ("" all), and how it matches.
type Template struct {
	Route   string // what the router reports, e.g. "/orders/{oid}"
	Methods []string
	// Prefix: gorilla PathPrefix, matching any path that starts with it.
	Prefix bool
	// Paths are the patterns the request path is matched with, when not
	// Route itself: a chi mounted router's "/" route is reached both as
	// "/orders" and "/orders/" and reported as "/orders".
	Paths []string
	// Mount (chi): not a route but a mounted sub-router's prefix; chi
	// reports it (e.g. "/orders/{oid}/*") for a request under it that no
	// route of the sub-router takes (its 404 and 405).
	Mount bool
}

// segKind ranks what a path segment of a template matches; a higher rank
// wins in the radix-tree routers (chi, gin, echo): static before regexp
// parameter before parameter before catch-all.
type segKind uint8

const (
	segCatchAll segKind = iota
	segParam
	segRegexp
	segStatic
)

type seg struct {
	kind segKind
	text string         // segStatic
	re   *regexp.Regexp // segRegexp
}

type compiled struct {
	t       Template
	alts    [][]seg // the template's path and its Alt, parsed
	order   int
	methods map[string]bool // nil: any
}

// Matcher picks, for a request, the template its router would: the
// registered template set of one router, in that router's syntax.
type Matcher struct {
	router string
	ts     []compiled
}

// NewMatcher compiles templates written in router's syntax: chi "{id}",
// "{id:re}", "*"; gin ":id", "*path"; echo ":id", "*"; gorillamux "{id}",
// "{id:re}" (and Prefix templates). Errors name the bad template.
func NewMatcher(router string, ts []Template) (*Matcher, error) {
	m := &Matcher{router: router}
	for i, t := range ts {
		c := compiled{t: t, order: i}
		paths := t.Paths
		if len(paths) == 0 {
			paths = []string{t.Route}
		}
		for _, p := range paths {
			segs, err := parse(router, p)
			if err != nil {
				return nil, fmt.Errorf("template %q: %w", p, err)
			}
			c.alts = append(c.alts, segs)
		}
		if len(t.Methods) > 0 {
			c.methods = map[string]bool{}
			for _, me := range t.Methods {
				c.methods[me] = true
			}
		}
		m.ts = append(m.ts, c)
	}
	return m, nil
}

// parse splits a template into segments; the leading "/" gives an empty
// first segment, a trailing "/" an empty last one, as in a request path.
func parse(router, p string) ([]seg, error) {
	parts := strings.Split(p, "/")
	segs := make([]seg, 0, len(parts))
	for i, s := range parts {
		last := i == len(parts)-1
		switch {
		case (router == "chi" || router == "echo") && s == "*" && last,
			router == "gin" && strings.HasPrefix(s, "*") && last:
			segs = append(segs, seg{kind: segCatchAll})
		case (router == "gin" || router == "echo") && strings.HasPrefix(s, ":"):
			segs = append(segs, seg{kind: segParam})
		case (router == "chi" || router == "gorillamux") && strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			name := s[1 : len(s)-1]
			if k := strings.IndexByte(name, ':'); k >= 0 {
				re, err := regexp.Compile("^(?:" + name[k+1:] + ")$")
				if err != nil {
					return nil, err
				}
				segs = append(segs, seg{kind: segRegexp, re: re})
			} else {
				segs = append(segs, seg{kind: segParam})
			}
		default:
			segs = append(segs, seg{kind: segStatic, text: s})
		}
	}
	return segs, nil
}

// match reports whether path's segments match segs (prefix: any path
// starting with the template), and the ranks of the segments matched.
func match(segs []seg, path []string, prefix bool, rank []segKind) ([]segKind, bool) {
	rank = rank[:0]
	for i, s := range segs {
		if s.kind == segCatchAll {
			return append(rank, segCatchAll), true
		}
		if i >= len(path) {
			return nil, false
		}
		if prefix && i == len(segs)-1 {
			// gorilla PathPrefix: a literal prefix of the segment (a
			// template ending in "/" has an empty last segment).
			if s.kind == segStatic && strings.HasPrefix(path[i], s.text) {
				return append(rank, segStatic), true
			}
		}
		switch s.kind {
		case segStatic:
			if path[i] != s.text {
				return nil, false
			}
		case segParam:
			if path[i] == "" {
				return nil, false
			}
		case segRegexp:
			if !s.re.MatchString(path[i]) {
				return nil, false
			}
		}
		rank = append(rank, s.kind)
	}
	return rank, len(segs) == len(path) || prefix
}

// better compares segment ranks left to right: the radix trees try a
// static child before a parameter before a catch-all.
func better(a, b []segKind) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return len(a) > len(b)
}

// Match returns the route the router would report for method and path,
// and whether it matched one. Gorilla takes the first registered template
// that matches path and method; chi, gin and echo the most specific
// template (static segments before parameters before catch-alls) whose
// methods include method. No template with the method is no route (the
// router's 404 or 405).
func (m *Matcher) Match(method, path string) (string, bool) {
	parts := strings.Split(path, "/")
	if route, ok := m.find(method, parts, false); ok {
		return route, true
	}
	switch m.router {
	case "echo":
		// echo reports the template whose path matched for its 405.
		if route, ok := m.find(method, parts, true); ok {
			return route, false
		}
	case "chi":
		// chi reports the deepest mount the request went into for its
		// 404 and 405 there.
		var best string
		for i := range m.ts {
			c := &m.ts[i]
			if !c.t.Mount {
				continue
			}
			for _, a := range c.alts {
				if _, ok := match(a, parts, false, nil); ok && len(c.t.Route) > len(best) {
					best = c.t.Route
				}
			}
		}
		return best, false
	}
	return "", false
}

// find returns the route of the best template matching parts, among those
// serving method (any method with anyMethod).
func (m *Matcher) find(method string, parts []string, anyMethod bool) (string, bool) {
	var rank [16]segKind
	var best *compiled
	var bestRank []segKind
	for i := range m.ts {
		c := &m.ts[i]
		if c.t.Mount || !anyMethod && c.methods != nil && !c.methods[method] {
			continue
		}
		for _, a := range c.alts {
			r, ok := match(a, parts, c.t.Prefix, rank[:0])
			if !ok {
				continue
			}
			if m.router == "gorillamux" {
				return c.t.Route, true
			}
			if best == nil || better(r, bestRank) {
				best, bestRank = c, append(bestRank[:0], r...)
			}
		}
	}
	if best == nil {
		return "", false
	}
	return best.t.Route, true
}

// MatchTemplates turns a harvest's route registrations of router into the
// matcher's templates.
func (r *Result) MatchTemplates(router string) []Template {
	var out []Template
	for _, g := range r.Templates(router) {
		if g.obj != nil && g.obj.hasSub {
			continue // gorilla: the sub-router's routes are reported, never this one
		}
		t := Template{Route: g.Full}
		if g.Method != "" {
			t.Methods = strings.Split(g.Method, ",")
		}
		switch router {
		case "chi":
			// chi matches the joined patterns with the mounts' "/*"
			// removed; a mounted router's "/" route is reached with or
			// without the slash, and reports the pattern without it.
			p, _ := g.obj.full()
			raw := p + g.Literal
			match := raw
			for strings.Contains(match, "/*/") {
				match = strings.ReplaceAll(match, "/*/", "/")
			}
			t.Paths = []string{match}
			if strings.HasSuffix(raw, "/*/") {
				t.Paths = append(t.Paths, strings.TrimSuffix(match, "/"))
			}
		case "gorillamux":
			t.Prefix = g.obj != nil && g.obj.prefixRoute
		}
		out = append(out, t)
	}
	if router == "chi" {
		for _, g := range r.Registrations {
			if g.Router != "chi" || (g.kind != kGroup && g.kind != kMount) || g.obj == nil || !g.Known {
				continue
			}
			p, _ := g.obj.full() // "/orders/*/{oid}/*"
			for strings.Contains(p, "/*/") {
				p = strings.ReplaceAll(p, "/*/", "/")
			}
			out = append(out, Template{Route: p, Mount: true})
		}
	}
	return out
}
