package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// mix is e2e.RouterMix, one of each request.
func mix() []e2e.RouterRequest { return e2e.RouterMix() }

// seen is a line of the service's tally (testdata/routers/common).
type seen struct {
	Method  string `json:"method"`
	Route   string `json:"route"`
	Matched bool   `json:"matched"`
	Status  int    `json:"status"`
	Count   int    `json:"count"`
}

type seenKey struct {
	method, route string
	status        int
}

func tally(t *testing.T, c *http.Client, admin string) map[seenKey]int {
	t.Helper()
	resp, err := c.Get("http://" + admin + "/tally")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []seen
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	m := map[seenKey]int{}
	for _, s := range out {
		m[seenKey{s.Method, s.Route, s.Status}] += s.Count
	}
	return m
}

// outcome is one request of the mix: what the router reported (from the
// service's own tally) and what the user-space match of the harvested
// templates gave.
type outcome struct {
	e2e.RouterRequest
	status          int
	router, matched string
}

// routerRoutes sends the mix to a running build of the service, one
// request at a time, and reads the route its router reported for each
// from the service's tally (the difference after each request).
func routerRoutes(t *testing.T, bin string) []outcome {
	t.Helper()
	svc := e2e.Start(t, bin, nil)
	f := strings.Fields(svc.First)
	if len(f) != 3 || f[0] != "listening" {
		t.Fatalf("service said %q", svc.First)
	}
	addr, admin := f[1], f[2]
	c := &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	before := tally(t, c, admin)
	var out []outcome
	for _, r := range mix() {
		hr, _ := http.NewRequest(r.Method, "http://"+addr+r.Path, nil)
		resp, err := c.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		after := tally(t, c, admin)
		var got []seenKey
		for k, n := range after {
			if n != before[k] {
				got = append(got, k)
			}
		}
		if len(got) != 1 || after[got[0]]-before[got[0]] != 1 {
			t.Fatalf("%s %s: the tally changed by %v, want one request", r.Method, r.Path, got)
		}
		before = after
		out = append(out, outcome{RouterRequest: r, status: got[0].status, router: got[0].route})
	}
	return out
}

// mismatches are the requests whose harvested user-space match differs
// from the router's own route, per router: "METHOD PATH -> harvested |
// router". Each is explained in docs/route-harvest.md; any change fails
// TestAccuracy.
var mismatches = map[string][]string{
	"chi":        {},
	"gin":        {},
	"echo":       {},
	"gorillamux": {},
}

// TestAccuracy: for each service build, the routers e2e test's request mix
// is sent to the running service, and each request's route as the router
// reported it to its own middleware is compared with the user-space match
// of the templates harvested from the same executable. It logs the
// accuracy; the mismatches must be exactly the documented ones.
func TestAccuracy(t *testing.T) {
	var table []string
	for _, b := range services {
		t.Run(b.name(), func(t *testing.T) {
			bin := b.path(t)
			res, err := Harvest(bin)
			if err != nil {
				t.Fatal(err)
			}
			m, err := NewMatcher(b.router, res.MatchTemplates(b.router))
			if err != nil {
				t.Fatal(err)
			}
			outs := routerRoutes(t, bin)
			var bad []string
			for i := range outs {
				o := &outs[i]
				o.matched, _ = m.Match(o.Method, o.Path)
				if o.matched != o.router {
					bad = append(bad, fmt.Sprintf("%s %s -> %q | %q (%d)", o.Method, o.Path, o.matched, o.router, o.status))
				}
			}
			sort.Strings(bad)
			want := append([]string(nil), mismatches[b.router]...)
			sort.Strings(want)
			if strings.Join(bad, "\n") != strings.Join(want, "\n") {
				t.Errorf("mismatches (METHOD PATH -> harvested | router (status)):\n%s\nwant:\n%s",
					strings.Join(bad, "\n"), strings.Join(want, "\n"))
			}
			line := fmt.Sprintf("| %s | %d/%d | %.1f%% |", b.name(), len(outs)-len(bad), len(outs),
				100*float64(len(outs)-len(bad))/float64(len(outs)))
			table = append(table, line)
		})
	}
	if out := os.Getenv("ROUTEHARVEST_TABLE"); out != "" {
		os.WriteFile(out, []byte(strings.Join(table, "\n")+"\n"), 0o644)
	}
	t.Log("\n" + strings.Join(table, "\n"))
}
