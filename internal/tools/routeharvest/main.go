// Command routeharvest measures the design issue 12 §4 asks to compare with
// obsd's router probes: route templates harvested from the executable
// without running it (the string literals passed to chi, gin, echo and
// gorilla/mux registration calls, found by disassembling every call site),
// and each request's path matched against them in user space. It is a
// measurement tool, not part of obsd; see docs/route-harvest.md.
//
//	go run ./internal/tools/routeharvest BINARY...                 # templates, counts, time
//	go run ./internal/tools/routeharvest -match 'GET /orders/7' BINARY
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	matchReq := flag.String("match", "", `a request "METHOD PATH" to match against each binary's templates`)
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: routeharvest [-match 'METHOD PATH'] BINARY...")
		os.Exit(2)
	}
	failed := false
	for _, path := range flag.Args() {
		if err := report(path, *matchReq); err != nil {
			fmt.Fprintln(os.Stderr, "routeharvest:", err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func report(path, req string) error {
	start := time.Now()
	res, err := Harvest(path)
	if err != nil {
		return err
	}
	took := time.Since(start)
	fmt.Printf("%s: routers %v, %d functions disassembled, %d registrations, %d unreadable arguments, %.1f ms\n",
		path, res.Routers, res.Funcs, len(res.Registrations), res.Unresolved, float64(took.Microseconds())/1000)
	for _, g := range res.Registrations {
		full := g.Full
		if !g.FullKnown && g.kind == kRoute {
			full = "(parts only) " + full
		}
		lit := fmt.Sprintf("%q", g.Literal)
		if !g.Known {
			lit = "?"
		}
		fmt.Printf("  %-10s %-32s %-8s %-24s %s   [%s]\n", g.Router, g.Callee, g.Method, lit, full, g.Caller)
	}
	if req == "" {
		return nil
	}
	method, p, ok := strings.Cut(req, " ")
	if !ok {
		return fmt.Errorf("-match %q: want \"METHOD PATH\"", req)
	}
	for _, r := range res.Routers {
		m, err := NewMatcher(r, res.MatchTemplates(r))
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		route, matched := m.Match(method, p)
		fmt.Printf("  match %s %s (%s): %q matched=%v\n", method, p, r, route, matched)
	}
	return nil
}
