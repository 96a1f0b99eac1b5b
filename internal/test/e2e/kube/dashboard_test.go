package kube

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/obsd-dev/obsd/internal/test/e2e"
)

// dashboardExprs returns every PromQL expression of the Grafana dashboard:
// panel targets, and the series selectors of its label_values() variables
// with the label they read.
func dashboardExprs(t *testing.T) (exprs []string, varLabels map[string]string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e2e.RepoRoot(), "deploy", "grafana", "obsd.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("deploy/grafana/obsd.json: %v", err)
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	varLabels = map[string]string{}
	lv := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_]\w*)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := lv.FindStringSubmatch(v.Query)
		if m == nil {
			t.Fatalf("variable query %q is not label_values(selector, label)", v.Query)
		}
		exprs = append(exprs, m[1])
		varLabels[m[1]] = m[2]
	}
	return exprs, varLabels
}

// grafanaVars replaces the dashboard's variables with values PromQL takes.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$namespace", ".*", "$service", ".*")

var (
	quoted   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	grouping = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
	matchers = regexp.MustCompile(`\{([^}]*)\}`)
	ranges   = regexp.MustCompile(`\[[^\]]*\]`)
	ident    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	keywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true}
)

// namesIn returns the metric names and label names an expression uses.
// promtool has already parsed it, so this only needs to find them.
func namesIn(expr string) (metrics, labels []string) {
	s := quoted.ReplaceAllString(expr, `""`)
	for _, m := range grouping.FindAllStringSubmatch(s, -1) {
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	s = grouping.ReplaceAllString(s, " ")
	for _, m := range matchers.FindAllStringSubmatch(s, -1) {
		for _, l := range ident.FindAllString(m[1], -1) {
			labels = append(labels, l)
		}
	}
	s = matchers.ReplaceAllString(s, " ")
	s = ranges.ReplaceAllString(s, " ")
	for _, loc := range ident.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		if keywords[strings.ToLower(name)] || strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " "), "(") {
			continue // a function or aggregation
		}
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // part of a number such as 1e9
		}
		metrics = append(metrics, name)
	}
	return metrics, labels
}

// checkDashboard checks every expression of the dashboard against a real
// scrape: it parses (promtool), and every metric and label it names is one
// obsd exported. Target labels Prometheus adds (instance, job) and le are
// allowed.
func checkDashboard(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	exprs, varLabels := dashboardExprs(t)
	if len(exprs) < 10 {
		t.Fatalf("only %d expressions in the dashboard", len(exprs))
	}
	promtoolCheck(t, exprs)
	for _, raw := range exprs {
		expr := grafanaVars.Replace(raw)
		metrics, labels := namesIn(expr)
		if l := varLabels[raw]; l != "" {
			labels = append(labels, l)
		}
		if len(metrics) == 0 {
			t.Errorf("no metric in %q", raw)
		}
		have := map[string]bool{"instance": true, "job": true, "le": true}
		for _, m := range metrics {
			fam := fams[m]
			if fam == nil {
				for _, suf := range []string{"_bucket", "_count", "_sum"} {
					if f := fams[strings.TrimSuffix(m, suf)]; strings.HasSuffix(m, suf) && f != nil && f.GetType() == dto.MetricType_HISTOGRAM {
						fam = f
					}
				}
			}
			if fam == nil {
				t.Errorf("dashboard uses %s, which the scrape lacks (in %q)", m, raw)
				continue
			}
			for _, s := range fam.Metric {
				for _, lp := range s.Label {
					have[lp.GetName()] = true
				}
			}
		}
		for _, l := range labels {
			if !have[l] {
				t.Errorf("dashboard uses label %s, which no series of %v has (in %q)", l, metrics, raw)
			}
		}
	}
}

// promtoolCheck parses every expression with Prometheus's own parser, as
// recording rules through `promtool check rules`.
func promtoolCheck(t *testing.T, exprs []string) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		if os.Getenv("OBSD_REQUIRE_BPF") == "1" {
			t.Fatal("promtool not installed (Debian package prometheus)")
		}
		t.Log("promtool not installed; dashboard expressions not parsed")
		return
	}
	var b strings.Builder
	b.WriteString("groups:\n- name: dashboard\n  rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(grafanaVars.Replace(e))
		b.WriteString("  - record: dashboard:expr" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + "\n    expr: " + string(q) + "\n")
	}
	f := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "rules", f).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s\n%s", err, out, b.String())
	}
}
