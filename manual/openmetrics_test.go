package manual_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/obsd-dev/obsd/manual"
)

// strictOpenMetrics checks the rules of the OpenMetrics 1.0 text format
// that Prometheus's own parser lets pass and strict parsers (the
// reference Python parser, for one) reject: every family is declared
// once, no two families claim the same sample name (a gauge "x" beside a
// counter "x" whose sample is x_total), samples follow their family and
// use only the suffixes of its type, and the exposition ends in # EOF.
func strictOpenMetrics(body string) error {
	if !strings.HasSuffix(body, "# EOF\n") {
		return fmt.Errorf("does not end in # EOF")
	}
	suffixes := map[string][]string{
		"counter":        {"_total", "_created"},
		"gauge":          {""},
		"histogram":      {"_bucket", "_count", "_sum", "_created"},
		"summary":        {"", "_count", "_sum", "_created"},
		"info":           {"_info"},
		"stateset":       {""},
		"unknown":        {""},
		"gaugehistogram": {"_bucket", "_gcount", "_gsum"},
	}
	families := map[string]bool{}
	claimed := map[string]string{} // sample name -> family
	current := ""
	typeRE := regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$`)
	sampleRE := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]`)
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	for i, l := range lines[:len(lines)-1] {
		switch {
		case strings.HasPrefix(l, "# TYPE "):
			m := typeRE.FindStringSubmatch(l)
			if m == nil {
				return fmt.Errorf("line %d: bad TYPE %q", i+1, l)
			}
			name, typ := m[1], m[2]
			sfx, ok := suffixes[typ]
			if !ok {
				return fmt.Errorf("line %d: unknown type %q", i+1, typ)
			}
			if families[name] {
				return fmt.Errorf("line %d: family %s declared twice", i+1, name)
			}
			if f, ok := claimed[name]; ok {
				return fmt.Errorf("line %d: family %s clashes with a sample of family %s", i+1, name, f)
			}
			families[name] = true
			for _, s := range sfx {
				if f, ok := claimed[name+s]; ok {
					return fmt.Errorf("line %d: family %s (%s) clashes with family %s on sample %s", i+1, name, typ, f, name+s)
				}
				claimed[name+s] = name
			}
			current = name
		case strings.HasPrefix(l, "# HELP "), strings.HasPrefix(l, "# UNIT "):
		case strings.HasPrefix(l, "#"):
			return fmt.Errorf("line %d: unexpected comment %q", i+1, l)
		case l == "":
			return fmt.Errorf("line %d: empty line", i+1)
		default:
			m := sampleRE.FindStringSubmatch(l)
			if m == nil {
				return fmt.Errorf("line %d: bad sample %q", i+1, l)
			}
			if claimed[m[1]] != current || current == "" {
				return fmt.Errorf("line %d: sample %s outside its family (current %s)", i+1, m[1], current)
			}
		}
	}
	return nil
}

func TestStrictOpenMetricsCatchesTheClash(t *testing.T) {
	clash := "# TYPE go_memstats_alloc_bytes gauge\ngo_memstats_alloc_bytes 1\n# TYPE go_memstats_alloc_bytes counter\ngo_memstats_alloc_bytes_total 2\n# EOF\n"
	if err := strictOpenMetrics(clash); err == nil {
		t.Fatal("the checker accepts a gauge and a counter family of one name")
	}
}

func TestOpenMetricsScrapeIsStrictlyValid(t *testing.T) {
	reg := newTestRegistry(t)
	m, err := manual.NewHTTPMetrics(reg, manual.HTTPMetricsOpts{})
	if err != nil {
		t.Fatal(err)
	}
	h := manual.NewHealth(manual.HealthOpts{Registerer: reg, Logger: quietLogger()})
	t.Cleanup(func() { h.Close() })
	mux := http.NewServeMux()
	mux.HandleFunc("GET /x", func(http.ResponseWriter, *http.Request) {})
	h.Routes(mux)
	srv := httptest.NewServer(m.Middleware(mux))
	t.Cleanup(srv.Close)
	get(t, "GET", srv.URL+"/x")
	get(t, "GET", srv.URL+"/readyz")
	metricsSrv := httptest.NewServer(manual.Handler(reg))
	t.Cleanup(metricsSrv.Close)
	ct, body := scrape(t, metricsSrv.URL, true)
	if !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("Content-Type %q", ct)
	}
	if err := strictOpenMetrics(body); err != nil {
		t.Errorf("OpenMetrics scrape: %v", err)
	}
	for _, want := range []string{"go_memstats_heap_alloc_bytes{", "go_memstats_alloc_bytes_total{", "health_check_status{", "http_server_active_requests{"} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
}
