package main

import (
	"testing"
)

// TestMatch: each router's syntax and priorities, on templates written by
// hand (not harvested), with the route the router itself would report.
func TestMatch(t *testing.T) {
	type tc struct{ method, path, want string }
	cases := []struct {
		router string
		ts     []Template
		reqs   []tc
	}{
		{"chi", []Template{
			{Route: "/users/{id}", Methods: []string{"GET"}},
			{Route: "/users/me", Methods: []string{"GET"}},
			{Route: "/users/{uid:[0-9]+}/posts", Methods: []string{"GET"}},
			{Route: "/users/{name}/posts", Methods: []string{"GET"}},
			{Route: "/files/*"},
			{Route: "/orders", Paths: []string{"/orders/", "/orders"}, Methods: []string{"GET"}},
			{Route: "/orders/{oid}/*", Mount: true},
		}, []tc{
			{"GET", "/users/me", "/users/me"},                       // static before parameter
			{"GET", "/users/42", "/users/{id}"},                     // parameter
			{"GET", "/users/42/posts", "/users/{uid:[0-9]+}/posts"}, // regexp before parameter
			{"GET", "/users/bob/posts", "/users/{name}/posts"},
			{"GET", "/files/a/b/c.txt", "/files/*"}, // catch-all, any method
			{"DELETE", "/files/x", "/files/*"},
			{"GET", "/orders/", "/orders"}, // mounted "/" route
			{"GET", "/orders", "/orders"},
			{"POST", "/users/42", ""},                    // 405 at the root: no route
			{"GET", "/orders/7/nope", "/orders/{oid}/*"}, // 404 inside a mount: the mount
			{"GET", "/nope", ""},
		}},
		{"gin", []Template{
			{Route: "/orders/", Methods: []string{"GET"}},
			{Route: "/orders/:oid", Methods: []string{"GET"}},
			{Route: "/orders/:oid/items/:iid", Methods: []string{"GET"}},
			{Route: "/files/*path", Methods: []string{"GET"}},
		}, []tc{
			{"GET", "/orders/", "/orders/"},
			{"GET", "/orders/9", "/orders/:oid"},
			{"GET", "/orders/9/items/3", "/orders/:oid/items/:iid"},
			{"GET", "/files/a/b", "/files/*path"},
			{"GET", "/orders/9/items", ""},
			{"POST", "/orders/9", ""}, // gin's 405: no route
		}},
		{"echo", []Template{
			{Route: "/orders", Methods: []string{"GET"}},
			{Route: "/orders/:oid", Methods: []string{"GET"}},
			{Route: "/orders/:oid/items", Methods: []string{"POST"}},
			{Route: "/files/*", Methods: []string{"GET"}},
		}, []tc{
			{"GET", "/orders", "/orders"},
			{"GET", "/orders/x", "/orders/:oid"},
			{"DELETE", "/orders/9/items", "/orders/:oid/items"}, // echo's 405 keeps the route
			{"GET", "/files/a/b", "/files/*"},
			{"GET", "/nope", ""},
		}},
		{"gorillamux", []Template{
			{Route: "/users/{uid:[0-9]+}"},
			{Route: "/users/{name}"},
			{Route: "/orders/{oid}", Methods: []string{"GET"}},
			{Route: "/files/", Prefix: true},
		}, []tc{
			{"GET", "/users/12", "/users/{uid:[0-9]+}"}, // first registered match
			{"GET", "/users/abc", "/users/{name}"},
			{"GET", "/orders/1", "/orders/{oid}"},
			{"PUT", "/orders/1", ""}, // gorilla's 405: no current route
			{"GET", "/files/a/b.txt", "/files/"},
			{"GET", "/nope", ""},
		}},
	}
	for _, c := range cases {
		t.Run(c.router, func(t *testing.T) {
			m, err := NewMatcher(c.router, c.ts)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range c.reqs {
				if got, _ := m.Match(r.method, r.path); got != r.want {
					t.Errorf("%s %s: %q, want %q", r.method, r.path, got, r.want)
				}
			}
		})
	}
}

func TestChiMethods(t *testing.T) {
	for _, c := range []struct{ version, bit9 string }{
		{"v5.2.3", "TRACE"}, {"v5.3.0", "TRACE"}, {"v5.4.0", "QUERY"}, {"v5.5.0", "QUERY"}, {"(devel)", "QUERY,TRACE"},
	} {
		if got := chiMethods(c.version)[512]; got != c.bit9 {
			t.Errorf("chi %s: bit 9 is %q, want %q", c.version, got, c.bit9)
		}
	}
}

func TestMatcherBadRegexp(t *testing.T) {
	if _, err := NewMatcher("chi", []Template{{Route: "/x/{id:[}"}}); err == nil {
		t.Error("a template with a bad regexp compiled")
	}
}

// BenchmarkMatch: user-space matching per request, per router, over the
// templates harvested from that router's test service and the routers e2e
// test's request mix (one Match per op).
func BenchmarkMatch(b *testing.B) {
	for _, s := range services {
		if s.toolchain != "" || s.stripped {
			continue
		}
		b.Run(s.router, func(b *testing.B) {
			res, err := Harvest(s.path(b))
			if err != nil {
				b.Fatal(err)
			}
			m, err := NewMatcher(s.router, res.MatchTemplates(s.router))
			if err != nil {
				b.Fatal(err)
			}
			reqs := mix()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := reqs[i%len(reqs)]
				m.Match(r.Method, r.Path)
			}
		})
	}
}

// BenchmarkHarvest: the harvest of one service executable.
func BenchmarkHarvest(b *testing.B) {
	for _, s := range services {
		if s.toolchain != "" || s.stripped {
			continue
		}
		b.Run(s.router, func(b *testing.B) {
			bin := s.path(b)
			for i := 0; i < b.N; i++ {
				if _, err := Harvest(bin); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
