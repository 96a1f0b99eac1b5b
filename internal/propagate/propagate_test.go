package propagate

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSetup(t *testing.T) {
	active := func() Result { return Result{State: Active} }
	noSkMsg := func() Result {
		return Result{State: Unavailable, Reason: ReasonKernelUnsupported, Detail: "the kernel lacks the sk_msg helpers"}
	}
	tests := []struct {
		name   string
		opts   Options
		metric string // exposition of obsd_trace_propagation_info after its HELP/TYPE
		check  string // "" when Check is nil
		warns  []string
	}{
		{name: "none asks nothing", opts: Options{Mode: None, TCP: active, Headers: active}},
		{name: "headers not wired", opts: Options{Mode: Headers},
			metric: `obsd_trace_propagation_info{mode="headers",reason="not_wired",state="unavailable"} 1`,
			check:  "headers unavailable (not_wired): this build of obsd has no header injection",
			warns:  []string{"trace propagation unavailable"}},
		{name: "headers active", opts: Options{Mode: Headers, Headers: active},
			metric: `obsd_trace_propagation_info{mode="headers",reason="",state="active"} 1`},
		{name: "tcp not wired", opts: Options{Mode: TCP},
			metric: `obsd_trace_propagation_info{mode="tcp",reason="not_wired",state="unavailable"} 1`,
			check:  "tcp unavailable (not_wired): this build of obsd has no TCP-option propagation",
			warns:  []string{"trace propagation unavailable"}},
		{name: "tcp wired and active", opts: Options{Mode: TCP, TCP: active},
			metric: `obsd_trace_propagation_info{mode="tcp",reason="",state="active"} 1`},
		{name: "both, headers unsupported", opts: Options{Mode: TCP | Headers, TCP: active, Headers: noSkMsg},
			metric: `obsd_trace_propagation_info{mode="headers",reason="kernel_unsupported",state="unavailable"} 1` + "\n" +
				`obsd_trace_propagation_info{mode="tcp",reason="",state="active"} 1`,
			check: "headers unavailable (kernel_unsupported): the kernel lacks the sk_msg helpers",
			warns: []string{"trace propagation unavailable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			tt.opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			p := Setup(tt.opts)

			want := ""
			if tt.metric != "" {
				want = "# HELP obsd_trace_propagation_info " + infoHelp + "\n# TYPE obsd_trace_propagation_info gauge\n" + tt.metric + "\n"
			}
			if err := testutil.CollectAndCompare(p.Collector(), strings.NewReader(want)); err != nil {
				t.Error(err)
			}
			err := p.Check()
			switch {
			case tt.check == "" && err != nil:
				t.Errorf("Check() = %v, want nil", err)
			case tt.check != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.check) || !strings.HasSuffix(err.Error(), "metrics, spans and other probes unaffected")):
				t.Errorf("Check() = %v, want it to start %q", err, tt.check)
			}
			// One warning per mechanism that is off, and nothing else at warn.
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				if strings.Contains(line, "level=WARN") {
					got = append(got, line)
				}
			}
			if len(got) != len(tt.warns) {
				t.Fatalf("%d warnings, want %d:\n%s", len(got), len(tt.warns), logs.String())
			}
			for i, w := range tt.warns {
				if !strings.Contains(got[i], w) || !strings.Contains(got[i], "still_working=") {
					t.Errorf("warning %q lacks %q or what still works", got[i], w)
				}
			}
			// Setup decides once: asking again changes nothing.
			if err2 := p.Check(); fmt.Sprint(err2) != fmt.Sprint(err) {
				t.Errorf("second Check() = %v, first %v", err2, err)
			}
		})
	}
}
